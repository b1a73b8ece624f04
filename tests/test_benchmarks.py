"""Published benchmarks: the registry against the reference sheets, and the like-for-like clinic metrics on
hand-built patients with known answers (plus golden numbers from R in tests/reference/benchmarks/)."""

from __future__ import annotations

import json
import math
import re
import tomllib
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analytics.outcomes import benchmarks as bm
from analytics.outcomes.cohort import Cohort, build_cohort
from analytics.privacy.suppression import render_note, render_notes
from analytics.sample import generate_clinic
from schemas.frames import ValidatedExports

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"
SHEETS = ("published-benchmarks.md", "published-benchmarks-2.md")
REFERENCE = Path(__file__).parent / "reference" / "benchmarks"
REGISTRY = bm.load_registry()
BY_ID = {b.id: b for b in REGISTRY}
RAW = tomllib.loads(bm.REGISTRY_PATH.read_text(encoding="utf-8"))

needs_sheets = pytest.mark.skipif(
    not all((SHARED / s).exists() for s in SHEETS),
    reason=f"reference sheets not found in {SHARED} (the shared/ folder beside the clone)")


# ------------------------------------------------------------------------------------------- sheet parsing


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("**", "").replace("`", "").replace("*", "")).strip()


def _sheet_rows() -> dict[str, dict]:
    """Rows of every table whose first column is ``id``: id → {"cells", "text", "sheet"}."""
    rows: dict[str, dict] = {}
    for sheet in SHEETS:
        header: list[str] | None = None
        for line in (SHARED / sheet).read_text(encoding="utf-8").splitlines():
            if not line.startswith("|"):
                header = None
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(line.replace("|", "").strip()) <= set("-: ") and header[0] == "id":
                rows[cells[0]] = {"cells": dict(zip(header, cells, strict=False)), "text": _norm(" | ".join(cells)),
                                  "sheet": sheet}
    return rows


def _section(sheet: str, start: str) -> str:
    text = (SHARED / sheet).read_text(encoding="utf-8")
    return _norm(text[text.index(start):])


_NUMBER = re.compile(r"(?P<sign>[−-]?)(?P<num>\d[\d,]*(?:\.\d+)?)")


def _numbers(text: str) -> tuple[set[float], set[float]]:
    """(absolute values, signed values) of the numbers in ``text``; a minus counts only after a non-digit."""
    absolute, signed = set(), set()
    for m in _NUMBER.finditer(text):
        value = float(m["num"].rstrip(",").replace(",", ""))
        absolute.add(value)
        before = text[m.start() - 1] if m.start() else " "
        negative = m["sign"] and not before.isalnum()
        signed.add(-value if negative else value)
    return absolute, signed


def _appears(value: float, text: str) -> bool:
    absolute, signed = _numbers(text)
    return (value in signed) if value < 0 else (abs(value) in absolute)


def _status_token(cell: str) -> str:
    found = [(cell.find(t), t) for t in ("yes", "secondary", "partial", "UNVERIFIED") if t in cell]
    return min(found)[1] if found else ""


@pytest.fixture(scope="module")
def sheet_rows() -> dict[str, dict]:
    if not all((SHARED / s).exists() for s in SHEETS):
        pytest.skip(f"reference sheets not found in {SHARED} (the shared/ folder beside the clone)")
    return _sheet_rows()


# Parts of rows whose overall status is "yes" but whose figure is secondary (the phrase must be in the cell).
SECONDARY_PARTS = {
    "KARE-4": "OR/CI secondary",
    "DAK20-1/": "per-arm % secondary",
    "MCP23/heavy-drinking/naltrexone": "heavy-drinking NNT from ACP summary",
    "HUL22/any-adverse-effect": "(b) secondary",
}
# Rows marked "partial" of which one part is verified and shown (the phrase must be in the cell).
PARTIAL_PARTS = {"AHU22": "59/2,532 seen"}


# ------------------------------------------------------------------------------------------ registry tests


def _value_errors(b: bm.Benchmark, row: dict | None) -> list[str]:
    if row is None:
        return [f"row {b.row} is not in the sheets"]
    errors, text = [], row["text"]
    if row["sheet"] != b.sheet:
        errors.append(f"sheet {b.sheet} but the row is in {row['sheet']}")
    if _norm(b.value_text) not in text:
        errors.append(f"value_text {b.value_text!r} is not in row {b.row}")
    if b.computed:
        if round(100 * b.events / b.n, 1) != pytest.approx(b.value, abs=0.051):
            errors.append(f"computed value {b.value} is not 100 × {b.events}/{b.n}")
    elif b.value is not None and not _appears(b.value, _norm(b.value_text)):
        errors.append(f"value {b.value} is not in {b.value_text!r}")
    for bound in (b.ci_low, b.ci_high):
        if bound is not None and not _appears(bound, _norm(b.value_text)):
            errors.append(f"interval end {bound} is not in {b.value_text!r}")
    for count in (b.n, b.events):
        if count is not None and not _appears(count, text):
            errors.append(f"count {count} is not in row {b.row}")
    if b.events is not None and b.n and not b.computed:
        digits = 0 if float(b.value).is_integer() else len(str(b.value).split(".")[1])
        if round(100 * b.events / b.n, digits) != pytest.approx(b.value, abs=0.51 * 10 ** -digits):
            errors.append(f"{b.events}/{b.n} does not round to {b.value}")
    return errors


@needs_sheets
def test_every_registry_value_interval_and_count_is_in_its_sheet_row(sheet_rows):
    errors = [f"{b.id}: {e}" for b in REGISTRY for e in _value_errors(b, sheet_rows.get(b.row))]
    assert not errors, "\n".join(errors)


def _expected_status(b: bm.Benchmark, cell: str) -> str:
    token = _status_token(cell)
    secondary_part = next((phrase for key, phrase in SECONDARY_PARTS.items() if b.id.startswith(key)), None)
    if token == "yes":
        return "secondary" if secondary_part and secondary_part in cell else "yes"
    if token == "secondary":
        return "secondary"
    if token == "partial" and b.row in PARTIAL_PARTS and PARTIAL_PARTS[b.row] in cell:
        return "yes"
    return f"not displayable ({cell})"


@needs_sheets
def test_every_registry_status_follows_the_verified_column(sheet_rows):
    errors = []
    for b in REGISTRY:
        expected = _expected_status(b, sheet_rows[b.row]["cells"]["verified"])
        label = "secondary source" if expected == "secondary" else "verified"
        if (b.status, b.status_label) != (expected, label):
            errors.append(f"{b.id}: status {b.status!r}, sheet says {expected!r}")
    assert not errors, "\n".join(errors)
    assert sum(b.status == "secondary" for b in REGISTRY) >= 20


@needs_sheets
def test_every_sheet_row_is_in_the_registry_or_excluded_with_a_reason(sheet_rows):
    shown = {b.row for b in REGISTRY}
    excluded = {e["row"] for e in RAW["excluded"]}
    assert set(sheet_rows) - shown - excluded == set()
    assert all(e["reason"] for e in RAW["excluded"])
    wholly_excluded = {e["row"] for e in RAW["excluded"] if "figure" not in e}
    assert wholly_excluded & shown == set()


# Numbers the sheets give from memory or mark UNVERIFIED, by row (transcribed from the sheets).
UNVERIFIED_NUMBERS = {
    "KRU97": (65.8, 73),
    "KRU02": (17, 2, 24, 6),
    "COMB-2": (66.6,),
    "COMB-3": (0.72, 0.53, 0.98),
    "MUR13": (64, 28, 2.18, 1.21, 4.14),
    "KARE-5": (87, 86, 90, 162),
    "SPR-AE": (222,),
}


@needs_sheets
def test_no_unverified_or_memory_figure_can_be_displayed(sheet_rows):
    for row_id, numbers in UNVERIFIED_NUMBERS.items():
        assert row_id in sheet_rows
        for b in (b for b in REGISTRY if b.row == row_id):
            shown = {b.value, b.ci_low, b.ci_high, b.n}
            assert not shown & set(numbers), f"{b.id} shows an UNVERIFIED number"
    # rows that are only qualitative, partial without a verified figure, or unverified have no entry at all
    for row_id in ("KRU02", "DAK20-3", "MUR13", "KARE-5", "KARE-6", "DAS19", "TRDSI-T1", "AZH21"):
        assert not [b for b in REGISTRY if b.row == row_id], row_id
    # generic: numbers inside "(memory ... )" / "(... UNVERIFIED)" spans that appear nowhere else in the row
    for row_id, row in sheet_rows.items():
        spans = re.findall(r"\(([^()]*(?:[Mm]emory|UNVERIFIED)[^()]*)\)", row["text"])
        spans += re.findall(r"Memory:[^|]*?UNVERIFIED", row["text"])
        outside = row["text"]
        for span in spans:
            outside = outside.replace(span, " ")
        memory_only = set().union(*(_numbers(s)[0] for s in spans)) - _numbers(outside)[0] if spans else set()
        for b in (b for b in REGISTRY if b.row == row_id):
            assert not {b.value, b.ci_low, b.ci_high} & memory_only, f"{b.id} shows a from-memory number"


@needs_sheets
def test_cautions_are_quoted_verbatim_from_the_sheets():
    sections = {"published-benchmarks.md": _section(SHEETS[0], "## 3. Comparability cautions"),
                "published-benchmarks-2.md": _section(SHEETS[1], "## 4. Most useful")}
    for key, caution in RAW["cautions"].items():
        sheet = caution["source"].split(",")[0]
        assert _norm(caution["text"]) in sections[sheet], key
    kare = BY_ID["KARE-1"].cautions
    assert any("cannot be drawn as an absolute level" in c for c in kare)
    assert any("historical" in c for c in BY_ID["KRU97/kpt"].cautions)


# Values typed again from the sheets, independently of the data file.
KNOWN = [
    ("KARE-1", "difference", 10.1, 1.1, 19.0), ("KARE-2", "difference", 15.9, 3.8, 28.1),
    ("KARE-3", "difference", 4.2, -6.7, 15.2), ("KARE-4", "ratio", 0.80, 0.31, 2.10),
    ("DAK19-1/ketamine", "level", 48.2, None, None), ("DAK19-1/midazolam", "level", 10.7, None, None),
    ("DAK19-2", "ratio", 0.47, 0.24, 0.92), ("DAK20-1/any/ketamine", "level", 47.1, None, None),
    ("DAK20-1/heavy/midazolam", "level", 40.9, None, None), ("KRU07/multiple", "level", 50, None, None),
    ("COMB-1/placebo+MM", "level", 75.1, None, None), ("MCL00", "level", None, 40, 60),
    ("MCI22-1/response", "level", 53.6, None, None), ("MCI22-1/remission", "level", 28.9, None, None),
    ("OLI22/10-infusions/response", "level", 72, None, None), ("VAN21/systolic", "level", 12.61, 10.40, 14.82),
    ("JPN-AUD/per-session", "level", 0, None, 0.15), ("SPR-AE/dissociation/esketamine", "level", 41, None, None),
    ("ROD20/hypertension", "level", 44.3, None, None), ("PIZ18/ICU-days", "difference", -2.83, -5.58, -0.089),
]


@pytest.mark.parametrize("entry_id, kind, value, low, high", KNOWN)
def test_key_figures_have_the_published_values(entry_id, kind, value, low, high):
    b = BY_ID[entry_id]
    assert (b.kind, b.value, b.ci_low, b.ci_high) == (kind, value, low, high)


def test_kare_contrasts_are_stored_as_differences_never_levels():
    kare = [b for b in REGISTRY if b.study == "KARE"]
    assert {b.id for b in kare} == {"KARE-1", "KARE-2", "KARE-3", "KARE-4"}
    assert all(b.kind in ("difference", "ratio") for b in kare)
    assert {b.unit for b in kare if b.kind == "difference"} == {"percentage points"}
    assert BY_ID["KARE-3"].clinic.function == "pda_difference"


def test_safety_figures_carry_their_unit_of_analysis():
    safety = [b for b in REGISTRY if b.domain == "safety"]
    assert len(safety) > 40
    assert {b.unit_of_analysis for b in safety} == {"per patient", "per session", "per patient-session-window"}
    assert BY_ID["AHU22"].unit_of_analysis == "per session"
    assert BY_ID["SPR-BP/esketamine"].unit_of_analysis == "per patient-session-window"


def _write_registry(tmp_path: Path, **changes) -> Path:
    figure = {"id": "X-1", "row": "X", "study": "X", "metric": "m", "kind": "level", "definition": "d",
              "timepoint": "t", "arms": "a", "value": 10.0, "interval": "none", "unit": "%", "value_text": "10%",
              "status": "yes", "clinic_reason": "no counterpart"}
    figure.update(changes)
    lines = ['[studies.X]', 'sheet = "s"', 'short = "X"', 'citation = "c"', 'address = "https://x"',
             'population = "p"', 'group = "alcohol"', 'domain = "efficacy"', "cautions = []", "", "[[figures]]"]
    for k, v in figure.items():
        if v is not None:
            lines.append(f"{k} = {json.dumps(v)}")
    path = tmp_path / f"reg-{abs(hash(str(changes)))}.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("changes, message", [
    ({"status": "UNVERIFIED"}, "only 'yes' or 'secondary'"),
    ({"status": "partial"}, "only 'yes' or 'secondary'"),
    ({"status": "from memory"}, "only 'yes' or 'secondary'"),
    ({"interval": "ci95"}, "inconsistent"),
    ({"clinic_reason": None}, "exactly one of"),
    ({"clinic_reason": "@nope"}, "not defined under [reasons]"),
    ({"kind": "absolute"}, "kind is 'absolute'"),
    ({"ci_hgih": 12.0}, "unknown field(s) ['ci_hgih']"),
])
def test_loader_refuses_entries_that_may_not_be_displayed(tmp_path, changes, message):
    with pytest.raises(bm.InvalidRegistry, match=re.escape(message)):
        bm.load_registry(_write_registry(tmp_path, **changes))


def test_loader_accepts_a_valid_entry(tmp_path):
    (b,) = bm.load_registry(_write_registry(tmp_path))
    assert (b.id, b.status_label, b.clinic, b.clinic_reason) == ("X-1", "verified", None, "no counterpart")


# ------------------------------------------------------------------------------------------ hand-built data

BASE = date(2024, 1, 1)
AS_OF = BASE + timedelta(days=600)


def _d(day: int) -> str:
    return (BASE + timedelta(days=day)).isoformat()


def _patient(pid: str, *, substance: str | None = "alcohol", program: str | None = None, start: int = 0,
             ketamine: tuple[int, ...] = (0,), route: str = "iv", baseline: float | None = None,
             followups: tuple[dict, ...] = (), sessions: tuple[dict, ...] = ()) -> dict:
    """One hand-built patient; days are relative to the patient's first ketamine session (``start``)."""
    sess = [{"patient_id": pid, "session_date": _d(start + k), "session_type": "ketamine", "route": route}
            for k in ketamine]
    if baseline is not None:
        sess.append({"patient_id": pid, "session_date": _d(start - 2), "session_type": "assessment",
                     "phq9": baseline})
    sess += [{"patient_id": pid, "session_type": "ketamine", "route": route, **s,
              "session_date": _d(start + s["day"])} for s in sessions]
    fus = []
    for f in followups:
        row = {"patient_id": pid, "assessment_date": _d(start + f["day"])}
        row.update({k: v for k, v in f.items() if k not in ("day", "relapse_day")})
        if "relapse_day" in f:
            row["relapse_date"] = _d(start + f["relapse_day"])
        fus.append(row)
    return {"sessions": sess, "followups": fus,
            "patient": {"patient_id": pid, "primary_substance": substance, "program": program}}


def _cohort(*patients: dict) -> Cohort:
    sessions = pd.DataFrame([s for p in patients for s in p["sessions"]])
    sessions = sessions.drop(columns=["day"], errors="ignore")
    followups = pd.DataFrame([f for p in patients for f in p["followups"]],
                             columns=["patient_id", "assessment_date"] if not any(p["followups"] for p in patients)
                             else None)
    return build_cohort(ValidatedExports.from_frames(sessions, followups, pd.DataFrame([p["patient"] for p in patients])))


def fu(day: int, window: int = 30, abst: int | None = None, **extra) -> dict:
    out = {"day": day, "window_days": window, **extra}
    if abst is not None:
        out["days_abstinent"] = abst
    return out


# ------------------------------------------------------------------------------------ PDA and its windows


def test_pda_over_six_months_uses_only_windows_inside_the_period_and_counts_attrition():
    cohort = _cohort(
        _patient("p1", followups=tuple(fu(d, 30, a) for d, a in zip((30, 60, 90, 120, 150, 180),
                                                                      (30, 27, 30, 30, 24, 30), strict=True))),
        # day-20 window reaches before day 0, day-181 window ends after day 180: both left out -> (15+60)/120
        _patient("p2", followups=(fu(20, 30, 30), fu(30, 30, 15), fu(120, 90, 60), fu(181, 30, 0))),
        _patient("p3", followups=(fu(30, 30, 30),)),  # 30 of 181 days: below half -> attrition
        _patient("p4", start=500, followups=(fu(30, 30, 30),)),  # day 180 not reached by the data end
        # the day-90 window overlaps the day-60 one and is left out -> (60+45)/150
        _patient("p5", followups=(fu(60, 60, 60), fu(90, 60, 0), fu(180, 90, 45))),
        _patient("p6", substance="cocaine", followups=(fu(180, 181, 0),)),
    )
    fig = bm.pda_in_window(cohort, start_day=0, end_day=180, substance="alcohol", as_of=AS_OF)
    values = [95.0, 62.5, 70.0]
    low, high = stats.t.interval(0.95, 2, loc=sum(values) / 3, scale=stats.sem(values))
    assert (fig.n, fig.n_eligible, fig.attrition, fig.unit) == (3, 4, 1, "%")
    assert fig.estimate == pytest.approx(sum(values) / 3)
    assert (fig.ci_low, fig.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert fig.reason is None
    assert any("not yet followed to day 180" in n for n in render_notes(fig.notes, enabled=False))
    assert any("overlapped" in n for n in render_notes(fig.notes, enabled=False))


def test_pda_coverage_threshold_is_an_option():
    cohort = _cohort(_patient("p3", followups=(fu(30, 30, 15),)))
    assert bm.pda_in_window(cohort, as_of=AS_OF).estimate is None
    assert bm.pda_in_window(cohort, as_of=AS_OF, min_coverage=0.1).estimate == pytest.approx(50.0)


def _golden() -> dict:
    return json.loads((REFERENCE / "reference.json").read_text())


def _pda_golden_cohort() -> Cohort:
    data = pd.read_csv(REFERENCE / "pda_input.csv", dtype={"patient_id": str})
    return _cohort(*(_patient(r.patient_id, program=r.program, followups=(fu(180, 181, int(r.days_abstinent)),))
                     for r in data.itertuples()))


def test_mean_pda_and_program_difference_match_r_t_tests():
    ref, cohort = _golden()["pda"], _pda_golden_cohort()
    mean = bm.pda_in_window(cohort, as_of=AS_OF)
    assert (mean.estimate, mean.ci_low, mean.ci_high) == pytest.approx((ref["mean"], ref["lower"], ref["upper"]),
                                                                         abs=1e-9)
    diff = bm.pda_difference(cohort, as_of=AS_OF)
    assert diff.unit == "percentage points" and (diff.n, diff.n_eligible) == (30, 30)
    assert (diff.estimate, diff.ci_low, diff.ci_high) == pytest.approx(
        (ref["diff"], ref["diff_lower"], ref["diff_upper"]), abs=1e-9)


def test_program_difference_says_why_when_programs_are_missing():
    no_program = _cohort(_patient("a", followups=(fu(180, 181, 100),)))
    assert "No patient has a program recorded" in bm.pda_difference(no_program, as_of=AS_OF).reason
    one_program = _cohort(*(_patient(f"a{i}", program="ketamine + therapy", followups=(fu(180, 181, 100),))
                            for i in range(3)))
    fig = bm.pda_difference(one_program, as_of=AS_OF)
    assert fig.estimate is None and "program 'ketamine only'" in fig.reason
    thin = _cohort(*(_patient(f"a{i}", program=p, followups=(fu(180, 181, 100),))
                     for i, p in enumerate(["Ketamine + Therapy ", "ketamine + therapy", "ketamine only"])))
    fig = bm.pda_difference(thin, as_of=AS_OF)
    assert "got 1 in 'ketamine only'" in render_note(fig.reason, enabled=False) and fig.n_eligible == 3


# ----------------------------------------------------------------------------- abstinence and use windows


def _cocaine_cohort() -> Cohort:
    c = "cocaine"
    return _cohort(
        _patient("a", substance=c, followups=(fu(30, 30, 30), fu(60, 30, 30))),  # covers 21-34: abstinent
        _patient("b", substance=c, followups=(fu(34, 14, 10),)),  # use inside days 21-34
        _patient("c", substance=c),  # no follow-up: missing
        _patient("d", substance=c, followups=(fu(30, 30, 30), fu(34, 4, 4, status="withdrew"))),  # dropped out
        _patient("e", substance=c, followups=(fu(30, 30, 30),)),  # days 31-34 not covered: missing
        _patient("f", substance=c, followups=(fu(30, 30, 30), fu(60, 30, 20, any_use="yes", relapse_day=33))),
        _patient("g", substance=c, followups=(fu(35, 15, 15),)),  # window 21-35 covers 21-34: abstinent
        _patient("h", substance=c, followups=(fu(34, 13, 13),)),  # window 22-34 misses day 21: missing
        _patient("i", substance=c, start=590, followups=(fu(5, 5, 5),)),  # day 34 not reached
        _patient("j", substance="alcohol", followups=(fu(30, 30, 30), fu(60, 30, 30))),
    )


def test_cocaine_abstinence_weeks_4_to_5_counts_use_dropout_and_missing_as_failure():
    fig = bm.abstinence_in_window(_cocaine_cohort(), start_day=21, end_day=34, substance="cocaine", as_of=AS_OF,
                                  min_share=0)
    assert (fig.n, fig.n_eligible, fig.events, fig.attrition) == (8, 8, 2, 3)  # a, g of a-h; c, e, h missing
    _, low, high = bm._wilson(2, 8, 0.95)
    assert (fig.estimate, fig.ci_low, fig.ci_high) == (pytest.approx(25.0), low, high)
    assert any("not yet followed to day 34" in n for n in render_notes(fig.notes, enabled=False))
    # both missing-data bounds, each with its n: as the trial (missing = use) 2 of 8; known status only 2 of 5
    itt, known = fig.bounds
    assert (itt.rule, itt.events, itt.n) == ("missing status counted as use", 2, 8)
    assert (known.events, known.n, known.estimate) == (2, 5, pytest.approx(40.0))
    assert (fig.n_covered, fig.coverage) == (5, pytest.approx(5 / 8))


def test_a_window_covered_for_fewer_than_70_percent_of_eligible_patients_gives_no_clinic_figure():
    fig = bm.abstinence_in_window(_cocaine_cohort(), start_day=21, end_day=34, substance="cocaine", as_of=AS_OF)
    assert fig.estimate is None and (fig.n_eligible, fig.n_covered) == (8, 5)
    reason = render_note(fig.reason, enabled=False)
    assert "only 5 of 8 eligible cocaine patients (62%)" in reason and "needs 70%" in reason


def test_cocaine_abstinence_among_known_statuses_when_asked():
    fig = bm.abstinence_in_window(_cocaine_cohort(), start_day=21, end_day=34, substance="cocaine", as_of=AS_OF,
                                  missing_as_use=False, dropout_as_use=False, min_share=0)
    assert (fig.n, fig.events, fig.attrition) == (5, 3, 3)  # a, d, g abstinent; b, f used


def test_wilson_interval_matches_r_prop_test():
    ref = _golden()["wilson"]
    patients = [_patient(f"w{i}", substance="cocaine", followups=(fu(35, 35, 35),) if i < 13 else ())
                for i in range(27)]
    fig = bm.abstinence_in_window(_cohort(*patients), as_of=AS_OF, min_share=0)
    assert (fig.events, fig.n) == (13, 27)
    assert (fig.estimate, fig.ci_low, fig.ci_high) == pytest.approx(
        (100 * ref["estimate"], 100 * ref["lower"], 100 * ref["upper"]), abs=1e-9)


def _drinking_cohort() -> Cohort:
    return _cohort(
        _patient("p", followups=(fu(30, 30, 30, heavy_days=0),)),  # no use over 1-30
        _patient("q", followups=(fu(21, 21, 18, heavy_days=2),)),  # use (heavy) inside 1-21
        _patient("r", followups=(fu(30, 30, 25, heavy_days=0),)),  # use somewhere in 1-30: unknown for 1-21
        _patient("s", followups=(fu(30, 30, any_use="yes", relapse_day=10),)),  # relapse on day 10
    )


def test_any_drinking_in_21_days_after_infusion_leaves_unknown_status_as_attrition():
    fig = bm.use_in_window(_drinking_cohort(), start_day=1, end_day=21, use="any", as_of=AS_OF)
    assert (fig.n, fig.events, fig.n_eligible, fig.attrition) == (3, 2, 4, 1)
    assert fig.estimate == pytest.approx(200 / 3)


def test_any_drinking_shows_both_bounds_with_their_n():
    fig = bm.use_in_window(_drinking_cohort(), start_day=1, end_day=21, use="any", as_of=AS_OF)
    known, missing_as_use = fig.bounds
    assert (known.events, known.n) == (2, 3) and known.estimate == pytest.approx(fig.estimate)
    assert (missing_as_use.events, missing_as_use.n) == (3, 4)  # r's unknown status counted as drinking


def test_a_schedule_that_cannot_see_days_1_to_21_gives_no_clinic_figure():
    # monthly 30-day recalls with some drinking: every window reaches past day 21, so whether the drinking fell in
    # days 1-21 is unknown for every patient (a fully abstinent month would rule it out: not this clinic)
    monthly = _cohort(*(_patient(f"m{i}", followups=(fu(30, 30, 27 - i % 3), fu(60, 30, 30))) for i in range(30)))
    fig = bm.use_in_window(monthly, start_day=1, end_day=21, use="any", as_of=AS_OF)
    assert fig.estimate is None and fig.n_covered == 0 and fig.n_eligible == 30
    assert "No follow-up falls inside days 1–21" in render_note(fig.reason, enabled=False)


def test_a_dense_schedule_recovers_the_true_rate_of_drinking_in_days_1_to_21():
    rng = np.random.default_rng(20261206)
    true_rate, patients = 0.40, []
    for i in range(400):  # weekly 7-day recalls; a drinker drinks on one random day of days 1-21
        day = int(rng.integers(1, 22)) if rng.random() < true_rate else None
        patients.append(_patient(f"d{i}", followups=tuple(
            fu(w, 7, 7 - (day is not None and w - 6 <= day <= w)) for w in (7, 14, 21, 28))))
    fig = bm.use_in_window(_cohort(*patients), start_day=1, end_day=21, use="any", as_of=AS_OF)
    assert fig.coverage == 1.0 and fig.n == 400
    assert fig.ci_low < 100 * true_rate < fig.ci_high


def test_heavy_drinking_day_in_21_days_uses_heavy_day_counts():
    fig = bm.use_in_window(_drinking_cohort(), start_day=1, end_day=21, use="heavy", as_of=AS_OF)
    assert (fig.n, fig.events, fig.attrition) == (3, 1, 1)  # q heavy; p, r none; s unknown


# ------------------------------------------------------------------------------------------- Kaplan-Meier


def _km_cohort(substance: str = "alcohol") -> Cohort:
    data = pd.read_csv(REFERENCE / "km_input.csv", dtype={"patient_id": str})
    patients = []
    for r in data.itertuples():
        last = fu(int(r.time), 30, 25, any_use="yes") if r.event else fu(int(r.time), 30, 30)
        patients.append(_patient(r.patient_id, substance=substance, followups=(last,)))
    patients.append(_patient("nofollowup", substance=substance))
    return _cohort(*patients)


def test_return_to_use_within_a_year_matches_r_survfit_log_log():
    ref, cohort = _golden()["km"], _km_cohort()
    fig = bm.return_to_use_by_day(cohort, day=365, as_of=AS_OF)
    assert (fig.estimate, fig.ci_low, fig.ci_high) == pytest.approx(
        (100 * (1 - ref["surv"]), 100 * (1 - ref["upper"]), 100 * (1 - ref["lower"])), abs=1e-9)
    assert (fig.n, fig.n_eligible, fig.attrition) == (40, 41, 1)
    notes = render_notes(fig.notes, enabled=False)
    assert any(f"{ref['n_risk']} patient(s) still followed at day 365" in n for n in notes)
    abst = bm.abstinent_through_day(cohort, day=365, substance="alcohol", as_of=AS_OF)
    assert (abst.estimate, abst.ci_low, abst.ci_high) == pytest.approx(
        (100 * ref["surv"], 100 * ref["lower"], 100 * ref["upper"]), abs=1e-9)


def test_kaplan_meier_uses_relapse_date_and_says_when_day_365_is_not_reached():
    cohort = _cohort(_patient("a", followups=(fu(90, 30, any_use="yes", relapse_day=40),)),
                     _patient("b", followups=(fu(200, 30, 30),)))
    fig = bm.return_to_use_by_day(cohort, day=100, as_of=AS_OF)
    assert fig.estimate == pytest.approx(50.0) and fig.events == 1
    fig = bm.return_to_use_by_day(cohort, day=365, as_of=AS_OF)
    assert fig.estimate is None and "followed to day 365" in fig.reason and "day 200" in fig.reason


def test_dropout_is_censored_unless_the_definition_counts_it():
    cohort = _cohort(_patient("a", followups=(fu(30, 30, 30, status="withdrew"),)),
                     _patient("b", followups=(fu(400, 30, 30),)))
    assert bm.return_to_use_by_day(cohort, day=365).estimate == pytest.approx(0.0)
    assert bm.return_to_use_by_day(cohort, day=365, dropout_as_use=True).estimate == pytest.approx(50.0)


# --------------------------------------------------------------------------------------------------- PHQ-9


def _phq(day: int, score: float) -> dict:
    return {"day": day, "window_days": 30, "phq9": score}


def _induction_cohort() -> Cohort:
    return _cohort(
        # induction ends day 21; day 34 is 13 days after (outside), day 35 is 14 days after (first inside)
        _patient("A", baseline=20, ketamine=(0, 7, 14, 21), followups=(_phq(34, 3), _phq(35, 9), _phq(40, 2))),
        _patient("B", baseline=18, ketamine=(0, 3, 6, 9, 12), followups=(_phq(43, 4),)),  # 31 days after: inside
        _patient("C", baseline=16, ketamine=(0, 7, 14, 21), followups=(_phq(53, 4),)),  # 32 days after: missing
        _patient("D", baseline=20, ketamine=(0, 7, 14), followups=(_phq(40, 4),)),  # 3 sessions: not completed
        _patient("E", baseline=6, ketamine=(0, 7, 14, 21), followups=(_phq(40, 1),)),  # not depressed
        _patient("F", baseline=20, start=560, ketamine=(0, 7, 14, 21), followups=(_phq(36, 4),)),  # not closed
        _patient("G", baseline=20, ketamine=(0, 7, 14, 28), followups=(_phq(50, 4),)),  # day 28 outside induction
    )


@pytest.mark.parametrize("outcome, events", [("response", 2), ("remission", 1)])
def test_phq9_after_induction_uses_days_14_to_31_after_the_last_induction_session(outcome, events):
    fig = bm.phq9_after_induction(_induction_cohort(), outcome=outcome, as_of=AS_OF, min_share=0)
    assert (fig.n, fig.n_eligible, fig.attrition, fig.events) == (2, 3, 1, events)
    completers, missing_as_not = fig.bounds
    assert (completers.events, completers.n) == (events, 2) and (missing_as_not.events, missing_as_not.n) == (events, 3)
    assert fig.estimate == pytest.approx(100 * events / 2)
    assert any("induction not completed" in n for n in render_notes(fig.notes, enabled=False))


def test_phq9_after_ten_infusions_takes_the_first_score_after_the_tenth_session():
    weekly = tuple(range(0, 70, 7))  # 10th session on day 63
    cohort = _cohort(
        _patient("A", baseline=20, ketamine=weekly, followups=(_phq(63, 2), _phq(70, 8), _phq(80, 3))),
        _patient("B", baseline=20, ketamine=weekly, followups=(_phq(92, 3),)),  # 29 days after: missing
        _patient("C", baseline=20, ketamine=weekly[:9], followups=(_phq(70, 3),)),  # 9 sessions
    )
    response = bm.phq9_after_infusions(cohort, outcome="response", infusions=10, as_of=AS_OF, min_share=0)
    assert (response.n, response.n_eligible, response.attrition, response.events) == (1, 2, 1, 1)
    remission = bm.phq9_after_infusions(cohort, outcome="remission", infusions=10, as_of=AS_OF, min_share=0)
    assert remission.events == 0


def test_phq9_within_six_weeks_counts_any_score_up_to_day_42():
    cohort = _cohort(_patient("A", baseline=20, followups=(_phq(42, 10),)),
                     _patient("B", baseline=20, followups=(_phq(20, 15), _phq(43, 5))),
                     _patient("C", baseline=20))
    fig = bm.phq9_within_days(cohort, outcome="response", end_day=42, as_of=AS_OF, min_share=0)
    assert (fig.n, fig.events, fig.n_eligible, fig.attrition) == (2, 1, 3, 1)
    below = bm.phq9_within_days(cohort, outcome="response", end_day=42, as_of=AS_OF)  # 2 of 3 < 70 %
    assert below.estimate is None and "Only 2 of 3 eligible patients have a PHQ-9 on days 1–42 (67%)" in render_note(
        below.reason, enabled=False)


def test_depression_benchmarks_of_iv_ketamine_compare_only_patients_who_started_on_iv():
    cohort = _cohort(_patient("A", baseline=20, followups=(_phq(42, 10),)),
                     _patient("B", baseline=20, route="im", followups=(_phq(20, 5),)),
                     _patient("C", baseline=20, followups=(_phq(30, 4),)))
    iv = bm.phq9_within_days(cohort, outcome="response", end_day=42, route="iv", as_of=AS_OF)
    assert (iv.n, iv.events) == (2, 2) and "first ketamine session IV" in iv.definition  # B (IM) left out
    im_only = _cohort(_patient("B", baseline=20, route="im", followups=(_phq(20, 5),)))
    none = bm.phq9_within_days(im_only, outcome="response", end_day=42, route="iv", as_of=AS_OF)
    assert none.estimate is None and "no clinic patient started on that route (routes found: im)" in none.reason
    registry = {b.id: b for b in bm.load_registry()}
    for rid, b in registry.items():
        if b.clinic is not None and b.clinic.function.startswith("phq9_"):
            assert dict(b.clinic.options).get("route") == "iv", rid


def test_figures_computed_once_per_cohort_never_answer_for_another_cohort():
    """The PHQ-9 rows and data end are kept once per cohort; alternating two cohorts gives each its own figure."""
    one = _cohort(_patient("A", baseline=20, followups=(_phq(42, 10),)),
                  _patient("B", baseline=20, followups=(_phq(20, 15), _phq(43, 5))), _patient("C", baseline=20))
    other = _cohort(_patient("A", baseline=20, followups=(_phq(30, 2),)), _patient("B", baseline=20,
                                                                               followups=(_phq(10, 3),)))
    for _ in range(2):
        a = bm.phq9_within_days(one, outcome="response", end_day=42, as_of=AS_OF, min_share=0)
        b = bm.phq9_within_days(other, outcome="response", end_day=42, as_of=AS_OF, min_share=0)
        assert (a.n, a.events, b.n, b.events) == (2, 1, 2, 2)
        assert bm._as_of(one, None) != bm._as_of(other, None)


# -------------------------------------------------------------------------------------------------- safety


def test_adverse_events_in_first_four_weeks_per_patient_and_per_session():
    cohort = _cohort(
        _patient("a", ketamine=(), sessions=({"day": 0, "adverse_events": "nausea;dissociation"},
                                             {"day": 27, "adverse_events": "dizziness"})),
        _patient("b", ketamine=(), sessions=({"day": 0}, {"day": 28, "adverse_events": "dissociation"})),
        _patient("c", ketamine=(), route="im", sessions=({"day": 0, "adverse_events": "sedation"}, {"day": 7})),
    )
    fig = bm.adverse_event_rate(cohort, event="dissociation", start_day=0, end_day=27, as_of=AS_OF)
    assert (fig.n, fig.events) == (3, 1)
    fig = bm.adverse_event_rate(cohort, event="dizziness", start_day=0, end_day=27, as_of=AS_OF)
    assert fig.events == 1  # day 27 is inside the first 4 weeks
    sessions = bm.adverse_event_rate(cohort, per="session", route="im", as_of=AS_OF)
    assert (sessions.n, sessions.events) == (2, 1)
    empty = _cohort(_patient("a"))
    assert "adverse_events" in bm.adverse_event_rate(empty).reason


def test_blood_pressure_elevation_threshold_is_inclusive_and_missing_readings_are_attrition():
    cohort = _cohort(
        _patient("a", ketamine=(), sessions=({"day": 0, "bp_systolic_max": 165, "bp_diastolic_max": 90},)),
        _patient("b", ketamine=(), sessions=({"day": 0, "bp_systolic_max": 164, "bp_diastolic_max": 99},)),
        _patient("c", ketamine=(), sessions=({"day": 0, "bp_systolic_max": 150, "bp_diastolic_max": 100},)),
        _patient("d", ketamine=(0, 7)),
    )
    fig = bm.bp_elevation_rate(cohort, systolic=165, diastolic=100, route="iv")
    assert (fig.n, fig.events, fig.n_eligible, fig.attrition) == (3, 2, 4, 1)


# --------------------------------------------------------------------------------------------------- reasons


def test_reasons_name_the_missing_substance_window_or_column():
    no_substance = _cohort(_patient("a", substance=None, followups=(fu(180, 181, 90),)))
    assert "primary substance" in bm.pda_in_window(no_substance, as_of=AS_OF).reason
    cocaine_only = _cohort(_patient("a", substance="cocaine", followups=(fu(180, 181, 90),)))
    reason = bm.pda_in_window(cocaine_only, as_of=AS_OF).reason
    assert "primary substance 'alcohol'" in reason and "0 of 1 " in render_note(reason, enabled=False)
    assert "0 of <11 " in render_note(reason)  # as a director sees it
    early = bm.pda_in_window(_cohort(_patient("a", followups=(fu(30, 30, 30),))), as_of=BASE + timedelta(days=100))
    assert early.estimate is None and "followed to day 180" in early.reason
    nobody = bm.abstinence_in_window(cocaine_only, as_of=BASE + timedelta(days=10))
    assert nobody.estimate is None and "day 34" in nobody.reason


# --------------------------------------------------------------------------------------- compare and JSON


def _mixed_cohort() -> Cohort:
    return _cohort(
        *(_patient(f"al{i}", program=["ketamine + therapy", "ketamine only"][i % 2], baseline=18,
                   ketamine=(0, 7, 14, 21), followups=(_phq(40, 8 + i % 5), fu(180, 181, 120 + 10 * i)))
          for i in range(6)),
        *(_patient(f"co{i}", substance="cocaine", followups=(fu(35, 35, 35 - 5 * (i % 2)),)) for i in range(4)),
    )


@pytest.fixture(scope="module")
def comparison() -> bm.BenchmarkComparison:
    return bm.compare(_mixed_cohort(), as_of=AS_OF)


def test_every_benchmark_shows_a_clinic_figure_or_a_reason(comparison):
    t = comparison.table
    assert len(t) == len(REGISTRY) and list(t.columns) == list(bm.COMPARISON_COLUMNS)
    has_figure = t["clinic_estimate"].notna()
    has_reason = t["clinic_reason"].fillna("").str.len() > 20
    assert (has_figure ^ has_reason).all()
    assert set(t.loc[t["status"] == "secondary", "status_label"]) == {"secondary source"}
    # ketamine + therapy 120, 140, 160 vs ketamine only 130, 150, 170 abstinent days of 181
    assert t.set_index("id").loc["KARE-3", "clinic_estimate"] == pytest.approx(-1000 / 181)


def test_clinic_figures_share_the_benchmark_unit(comparison):
    t = comparison.table[comparison.table["clinic_metric"].notna()]
    cohort = _mixed_cohort()
    for b in (BY_ID[i] for i in t["id"]):
        fig = bm.CLINIC_METRICS[b.clinic.function](cohort, as_of=AS_OF, **b.clinic.kwargs())
        assert fig.unit == b.unit, b.id


def test_substance_filter_keeps_that_substance_and_substance_free_benchmarks():
    t = bm.compare(_mixed_cohort(), substance="cocaine", as_of=AS_OF).table
    assert set(t["group"]) == {"cocaine", "any", "depression", "safety"}
    row = t.set_index("id").loc["MCI22-1/response"]
    assert "cocaine patients" in row["clinic_definition"]


def test_benchmarks_json_is_the_cli_shape_with_ranges_split():
    out = bm.benchmarks_json(_mixed_cohort(), as_of=AS_OF)
    text = json.dumps(out, allow_nan=False)
    assert all(list(d) == ["id", "metric", "clinic", "published", "source"] for d in out)
    by_id = {d["id"]: d for d in json.loads(text)}
    assert (by_id["MCL00/range-low"]["published"], by_id["MCL00/range-high"]["published"]) == (40.0, 60.0)
    assert by_id["KARE-1"] == {**by_id["KARE-1"], "published": 10.1, "clinic": None}
    assert by_id["KARE-3"]["source"].endswith("(secondary source)")
    assert all(isinstance(d["published"], float) for d in out)


def test_sample_clinic_gets_a_figure_or_a_reason_for_every_benchmark():
    sample = pytest.importorskip("analytics.sample")
    frames = sample.generate_clinic(200, seed=7)
    cohort = build_cohort(ValidatedExports.from_frames(frames["sessions"], frames["followups"], frames["patients"]))
    t = bm.compare(cohort).table
    assert (t["clinic_estimate"].notna() ^ t["clinic_reason"].notna()).all()
    assert t["clinic_estimate"].notna().sum() >= 20
    assert all(math.isfinite(x) for x in t["clinic_estimate"].dropna())


# ---------------------------------------------------------------------------------------------------- plot


def test_forest_puts_differences_and_ratios_on_their_own_axes(comparison):
    from analytics.report.plots.benchmarks import forest

    keep = ["KARE-1", "KARE-3", "DAK19-1/ketamine", "DAK19-2", "MCL00", "COMB-4/16-weeks", "SPR-AE/nausea/esketamine"]
    small = bm.BenchmarkComparison(table=comparison.table[comparison.table["id"].isin(keep)],
                                   conf_level=0.95, as_of=comparison.as_of, substance=None)
    fig = forest(small, domain="efficacy")
    axis_of: dict[str, str] = {}
    for trace in fig.data:
        for card in trace.customdata if trace.customdata is not None else ():
            if card is not None:
                axis_of.setdefault(card.split("</b>")[0].removeprefix("<b>"), trace.xaxis or "x")
    assert set(axis_of) == set(keep) - {"SPR-AE/nausea/esketamine"}
    assert axis_of["KARE-3"] != axis_of["DAK19-1/ketamine"]
    assert axis_of["KARE-1"] == axis_of["KARE-3"]
    assert axis_of["DAK19-2"] not in (axis_of["KARE-3"], axis_of["DAK19-1/ketamine"])
    ratio_axis = "xaxis" + axis_of["DAK19-2"].removeprefix("x")
    assert fig.layout[ratio_axis].type == "log"
    cards = [c.replace("<br>", " ") for tr in fig.data if tr.customdata is not None for c in tr.customdata
             if c is not None and c.startswith("<b>KARE-3")]
    assert cards and "Grabski" in cards[0] and "secondary source" in cards[0] and "Clinic:" in cards[0]
    assert "cannot be drawn as an absolute level" in cards[0]
    ranges = [t for t in fig.data if t.name == "Published range"]
    assert sorted(x for t in ranges for x in t.x if x is not None) == [40, 60, 67, 81]
    (safety,) = forest(small, domain="safety").data  # no adverse events in this cohort: published figure only
    assert "Clinic: no figure. No ketamine session" in safety.customdata[0]


def test_integer_patient_keys_give_exactly_the_figures_of_text_ids(monkeypatch):
    """compare() runs the clinic metrics on integer patient keys (bm._keyed); the figures must not change."""
    frames = generate_clinic(400, seed=5)
    cohort = build_cohort(ValidatedExports.from_frames(frames["sessions"], frames["followups"], frames["patients"]))
    keyed = bm.compare(cohort).table
    assert bm._keyed(cohort).patients["patient_id"].dtype == np.int64
    monkeypatch.setattr(bm, "_keyed", lambda c: c)
    plain = bm.compare(cohort).table
    assert keyed["clinic_estimate"].notna().sum() >= 15
    pd.testing.assert_frame_equal(keyed, plain)


def test_unsourced_three_in_four_row_is_excluded_and_witkiewitz_rows_are_medication_arms():
    shown = {b.id for b in bm.load_registry()}
    assert "AUD-1YR" not in shown
    assert any(e["row"] == "AUD-1YR" and "six months" in e["reason"] for e in RAW["excluded"])
    wit = [b for b in bm.load_registry() if b.id.startswith("WIT19/")]
    assert len(wit) >= 6
    for b in wit:
        assert "medication" in b.metric and "medication arm" in b.arms, b.id
