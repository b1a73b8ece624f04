"""The analysis settings: one typed object, passed in, shown wherever results are shown."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from analytics.outcomes.protocols import DEFAULT_INDUCTION_PROTOCOLS, InductionProtocol

RelapseDefinition = Literal["any", "heavy"]


@dataclass(frozen=True)
class DropoutRule:
    """When a patient without any follow-up is an early dropout rather than "no follow-up yet".

    Attributes
    ----------
    first_followup_day:
        Day of the first scheduled follow-up assessment (day 0 = first ketamine session).
    grace_days:
        Days after it during which a late assessment still counts as the first follow-up (default 14, the
        ± 14-day window of the 30-day follow-up in :class:`analytics.outcomes.qi.KpiOptions`).

    Part of :class:`Settings` (``dropout_rule``): the flow, the dropout sensitivity figure and the key indicators
    read it from there.
    """

    first_followup_day: int = 30
    grace_days: int = 14

    @property
    def closes_day(self) -> int:
        """The last day of the first follow-up window."""
        return self.first_followup_day + self.grace_days

    def __post_init__(self) -> None:
        if self.first_followup_day < 1 or self.grace_days < 0:
            raise ValueError(f"The first follow-up day must be at least 1 and the grace period at least 0 days "
                             f"(got day {self.first_followup_day}, {self.grace_days} days' grace).")

    def describe(self) -> str:
        return (f"Early dropout = started ketamine but no follow-up assessment at all although the first follow-up "
                f"window (day {self.first_followup_day} + {self.grace_days} days' grace, i.e. day "
                f"{self.closes_day}) has passed by the data end date.")



@dataclass(frozen=True)
class Settings:
    """Every changeable default of data-contract.md "Derived outcomes".

    Attributes
    ----------
    relapse:
        ``"any"``: first follow-up with any use, fewer abstinent days than the window, or a positive
        urine result. ``"heavy"``: first follow-up with ``heavy_days > 0`` (a heavy drinking day for alcohol:
        4+ standard drinks for women, 5+ for men, as the export counts it), a positive urine result or a recorded
        ``relapse_date`` (data-contract v2 "Heavy-use return"; the code in :mod:`analytics.outcomes.cohort` does
        exactly this). For drugs other than alcohol the export's ``heavy_days`` has no standard meaning: the text
        says so.
    dropout_as_relapse:
        Count ``lost_to_follow_up``/``withdrew`` as return to use at that assessment (the Dakwar 2019
        "use or dropout" event). Default False: such patients are censored.
    baseline_window_days:
        Baseline PHQ-9/GAD-7 is the last score on or before the index date, at most this many days before.
    suppress / min_cell:
        Counts from 1 to ``min_cell - 1`` are suppressed in shared outputs (default: 1–10).
    phq9_min_baseline:
        PHQ-9 response and remission are judged only for patients with a baseline PHQ-9 of at least this (default
        10, as the key indicator; a baseline of 0 never counts): :mod:`analytics.outcomes.response`.
    response_loss_rise:
        Loss of response: two consecutive PHQ-9 scores above half the baseline, or a rise of at least this many
        points from the response score (default 5, the PHQ-9's minimal important change).
    induction_protocols:
        Induction completion per program/route protocol (:mod:`analytics.outcomes.protocols`): the first entry
        whose programs and route match a patient applies; the last entry is the default for everyone else.
    heavy_drinks_women / heavy_drinks_men:
        A heavy drinking day in a daily use log (contract v2 ``daily_use.csv``): at least this many standard drinks
        (NIAAA: 4 for women, 5 for men; patients of other or unknown sex use the women's threshold).
    ketamine_urine_days:
        A urine result positive for ketamine within this many days after a ketamine session is the treatment, not a
        return to use (contract v2; default 7).
    dropout_gap_days:
        Retention (:mod:`analytics.outcomes.retention`): a patient drops out at the first contact followed by no
        contact in this many days (default 90).
    attention_active_days:
        Needing attention lists only patients with a contact in this many days before the data end date (default 90).
    dropout_rule:
        When a patient without any follow-up is an early dropout rather than "no follow-up yet"
        (:class:`DropoutRule`: first follow-up due on day 30, 14 days' grace); used by the patient flow, the
        dropout sensitivity analysis and the key indicators.
    """

    relapse: RelapseDefinition = "any"
    dropout_as_relapse: bool = False
    baseline_window_days: int = 30
    suppress: bool = True
    min_cell: int = 11
    phq9_min_baseline: float = 10.0
    response_loss_rise: float = 5.0
    induction_protocols: tuple[InductionProtocol, ...] = DEFAULT_INDUCTION_PROTOCOLS
    heavy_drinks_women: int = 4
    heavy_drinks_men: int = 5
    ketamine_urine_days: int = 7
    dropout_gap_days: int = 90
    attention_active_days: int = 90
    dropout_rule: DropoutRule = DropoutRule()

    def with_(self, **changes: object) -> "Settings":
        return replace(self, **changes)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One plain sentence for captions, the report and the JSON."""
        event = (
            "first follow-up with any use, fewer abstinent days than the window covers, or a positive urine test "
            "for a substance that is not prescribed"
            if self.relapse == "any"
            else f"first follow-up with at least one heavy-use day (for alcohol a heavy drinking day: "
                 f"{self.heavy_drinks_women}+ standard drinks for women, {self.heavy_drinks_men}+ for men; for other "
                 "drugs whatever the clinic records as heavy_days, which has no standard definition), a positive "
                 "urine test for a substance that is not prescribed, or a recorded relapse date"
        )
        urine = (f" A urine result positive only for the patient's prescribed medicines (patients.csv prescribed) or "
                 f"for ketamine within {self.ketamine_urine_days} days after a ketamine session is not a return to "
                 "use. For a patient with a daily use log, the log decides use (it is exact; their follow-ups' use "
                 "answers and urine results are not used for return to use): the first logged day of "
                 + ("use" if self.relapse == "any" else
                    f"heavy use ({self.heavy_drinks_women}+/{self.heavy_drinks_men}+ drinks for women/men, or any use "
                    "of another drug)") + " after day 0 is the return to use, else they are censored at their last "
                 "logged day or assessment.")
        dropout = (
            "dropping out (lost to follow-up or withdrew) counts as return to use"
            if self.dropout_as_relapse
            else "patients who drop out are censored at their last assessment"
        )
        return (
            f"Return to use = {event}; {dropout}; patients without return to use are censored at their last "
            f"assessment. Day 0 is the first ketamine session. Baseline scores: last on or before day 0, at most "
            f"{self.baseline_window_days} days before. Early dropout: no follow-up at all by day "
            f"{self.dropout_rule.closes_day} (first follow-up due day {self.dropout_rule.first_followup_day}, "
            f"{self.dropout_rule.grace_days} days' grace)." + urine
        )
