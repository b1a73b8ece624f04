"""One pipeline, three faces: the JSON of ``kap-outcomes analyze`` built from the same results the pages show."""

from __future__ import annotations

from typing import Any

from analytics.errors import OutcomesError
from analytics.outcomes.cohort import Cohort, build_cohort
from analytics.outcomes.settings import Settings
from schemas.frames import ValidatedExports


def _section(fn, *args, **kwargs) -> tuple[Any, str | None]:
    """Run one analysis; an OutcomesError becomes a null section plus its sentence (never a crash)."""
    try:
        return fn(*args, **kwargs), None
    except OutcomesError as err:
        return None, str(err)


GROUP_COLUMNS = ("program", "primary_substance", "route", "site", "clinician", "sex", "age_band", "baseline_band")
ALIASES = {"route": "index_route", "substance": "primary_substance", "depression_band": "baseline_band"}


def group_column(by: str | None) -> str | None:
    """A ``--by`` name → the cohort column (``route`` is the route of the first ketamine session)."""
    if by is None:
        return None
    column = ALIASES.get(by, by)
    if column not in GROUP_COLUMNS and column not in ALIASES.values():
        from analytics.errors import UnusableExport

        raise UnusableExport(f"--by '{by}' is not a patient column that can group patients; use one of: "
                             f"{', '.join(GROUP_COLUMNS)}.")
    return column


def analysis_json(data: ValidatedExports, settings: Settings, *, by: str | None = None,
                  reference: str | None = None) -> tuple[dict, list[str]]:
    """The ``analyze`` object of ../shared/cli.md (cohort, survival, trajectories, benchmarks).

    Returns the object and the sentences of sections that could not be estimated (their JSON is null).
    """
    cohort = build_cohort(data, settings)
    return analysis_json_from_cohort(cohort, by=by, reference=reference)


def analysis_json_from_cohort(cohort: Cohort, *, by: str | None = None,
                              reference: str | None = None) -> tuple[dict, list[str]]:
    from analytics.outcomes import benchmarks, survival, trajectories

    column = group_column(by)
    surv, surv_err = _section(survival.survival_json, cohort, by=column, reference=reference)
    traj, traj_err = _section(trajectories.trajectories_json, cohort)
    bench, bench_err = _section(benchmarks.benchmarks_json, cohort)
    if surv is not None and cohort.settings.suppress:
        surv = _suppress_survival(surv, cohort.settings.min_cell)
    cohort_section = survival.cohort_json(cohort)
    if cohort.settings.suppress:
        cohort_section = {k: (None if isinstance(v, int) and 0 < v < cohort.settings.min_cell else v)
                          for k, v in cohort_section.items()}
    out = {
        "cohort": cohort_section,
        "survival": surv,
        "trajectories": traj if traj is not None else {"phq9": None},
        "benchmarks": bench if bench is not None else [],
    }
    return out, [e for e in (surv_err, traj_err, bench_err) if e]


def _small(n: object, min_cell: int) -> bool:
    return isinstance(n, (int, float)) and 0 < n < min_cell


def _suppress_survival(section: dict, min_cell: int) -> dict:
    """Counts 1–10 become null; KM points once fewer than ``min_cell`` patients are at risk are left out
    (each step there would reveal a count below the threshold)."""
    groups = []
    for g in section.get("groups", []):
        g = dict(g)
        for key in ("n", "events"):
            if _small(g.get(key), min_cell):
                g[key] = None
        g["km"] = [p for p in g.get("km", []) if not _small(p.get("at_risk"), min_cell)]
        groups.append(g)
    return {**section, "groups": groups}
