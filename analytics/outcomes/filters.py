"""Global view filters shared by every page, the report and the URL: one typed object, applied in one place."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import date

import pandas as pd

from analytics.outcomes.cohort import Cohort, ids_in

# filter name → cohort.patients column
FILTER_COLUMNS = {"site": "site", "program": "program", "substance": "primary_substance",
                  "route": "index_route", "clinician": "clinician"}


@dataclass(frozen=True)
class Filters:
    """Which patients a view shows. Empty tuples mean "all"; dates bound the index date (first ketamine session)."""

    start: date | None = None
    end: date | None = None
    site: tuple[str, ...] = ()
    program: tuple[str, ...] = ()
    substance: tuple[str, ...] = ()
    route: tuple[str, ...] = ()
    clinician: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def describe(self) -> str:
        parts = []
        if self.start or self.end:
            parts.append(f"first ketamine session {self.start or '…'} to {self.end or '…'}")
        for name in FILTER_COLUMNS:
            values = getattr(self, name)
            if values:
                parts.append(f"{name}: {', '.join(values)}")
        return "All patients" if not parts else "Filtered to " + "; ".join(parts)

    def to_query(self) -> dict[str, str]:
        """Shareable URL parameters (only view choices, never patient data)."""
        out: dict[str, str] = {}
        if self.start:
            out["from"] = self.start.isoformat()
        if self.end:
            out["to"] = self.end.isoformat()
        for name in FILTER_COLUMNS:
            values = getattr(self, name)
            if values:
                out[name] = ",".join(values)
        return out

    @classmethod
    def from_query(cls, params: dict[str, str], *, allowed: dict[str, set[str]] | None = None) -> "Filters":
        """Parse URL parameters against an allow-list of known values; anything else is ignored."""
        def _date(text: str | None) -> date | None:
            try:
                return date.fromisoformat(text) if text else None
            except ValueError:
                return None

        kwargs: dict[str, object] = {"start": _date(params.get("from")), "end": _date(params.get("to"))}
        for name in FILTER_COLUMNS:
            raw = params.get(name)
            if not raw:
                continue
            values = tuple(v for v in str(raw).split(",") if v)
            if allowed is not None:
                values = tuple(v for v in values if v in allowed.get(name, set()))
            kwargs[name] = values
        return cls(**kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_view(cls, dates: object, lo: date, hi: date, **choices: object) -> Filters:
        """The filters of a view's widgets: ``dates`` is a date-range choice (one date while the range is being
        picked, or nothing) within the data's ``lo``–``hi``; a bound at the edge of the data is no bound."""
        picked = dates if isinstance(dates, (tuple, list)) else (dates,) if dates else ()
        start, end = (picked[0], picked[1]) if len(picked) == 2 else (picked[0], hi) if picked else (lo, hi)
        values = {name: tuple(choices.get(name) or ()) for name in FILTER_COLUMNS}
        return cls(start=start if start != lo else None, end=end if end != hi else None,
                   **values)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> "Filters":
        return replace(self, **changes)  # type: ignore[arg-type]


def filter_options(cohort: Cohort) -> dict[str, list[str]]:
    """The values each filter can take in this cohort (the URL allow-list)."""
    out = {}
    for name, col in FILTER_COLUMNS.items():
        values = cohort.patients[col].dropna().astype(str).unique() if col in cohort.patients else []
        out[name] = sorted(values)
    return out


def apply_filters(cohort: Cohort, filters: Filters) -> Cohort:
    """The same cohort restricted to the patients the filters keep (every table, consistently)."""
    if not filters.active:
        return cohort
    p = cohort.patients
    keep = pd.Series(True, index=p.index)
    if filters.start:
        keep &= p["index_date"] >= pd.Timestamp(filters.start)
    if filters.end:
        keep &= p["index_date"] <= pd.Timestamp(filters.end)
    for name, col in FILTER_COLUMNS.items():
        values = getattr(filters, name)
        if values:
            keep &= p[col].astype("string").isin(values).fillna(False)
    ids = p.loc[keep, "patient_id"]
    sub = {name: getattr(cohort, name) for name in ("measures", "followups", "sessions", "pretreatment", "daily_use",
                                                    "log_windows")}
    sub = {k: v[ids_in(v["patient_id"], ids)].reset_index(drop=True) for k, v in sub.items() if "patient_id" in v}
    excluded = int((~keep).sum())
    exclusions = dict(cohort.exclusions)
    if excluded:
        exclusions["patients outside the view filters"] = excluded
    return replace(cohort, patients=p[keep].reset_index(drop=True), exclusions=exclusions,
                   notes=cohort.notes + (filters.describe() + ".",), **sub)
