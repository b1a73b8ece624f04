"""One pipeline, three faces: the JSON of ``kap-outcomes analyze`` built from the same results the pages show."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from analytics.errors import OutcomesError
from analytics.outcomes.cohort import Cohort, build_cohort
from analytics.outcomes.settings import Settings
from analytics.privacy.counts import note_n
from analytics.privacy.suppression import SuppressedCells, suppress_cells, suppress_flow, suppress_km
from schemas.frames import ValidatedExports


def _section(fn, *args, **kwargs) -> tuple[Any, str | None]:
    """Run one analysis; an OutcomesError becomes a null section plus its sentence (never a crash)."""
    try:
        return fn(*args, **kwargs), None
    except OutcomesError as err:
        return None, str(err)


HISTORY_WITHOUT_LOG = ("Loaded and saved to the upload history without its daily use log: the history keeps sessions, "
                       "follow-ups and patients only, so reopening this upload there gives follow-up-based use "
                       "outcomes. Upload the log again with the files to use it.")


def upload_problem(sessions: object, followups: object, daily_use: object = None) -> str | None:
    """Why the chosen files cannot be loaded yet (None when they can): sessions.csv is required, and follow-ups or a
    daily use log (contract v2: with daily_use.csv a follow-up file is optional)."""
    if not sessions:
        return "Choose sessions.csv (required), and followups.csv or a daily use log; patients.csv is optional."
    if not followups and not daily_use:
        return ("Choose followups.csv, or a daily use log (daily_use.csv) instead; patients.csv is optional.")
    return None


# the session columns the analyses of analysis_json_from_cohort read (the trajectories' durability: patient_id,
# session_type, days; the benchmarks: benchmarks._USED_COLUMNS; data_end: session_date): the command line's analyze
# keeps only these in its cohort (build_cohort's session_columns), so a million patients' monitoring columns are freed
ANALYZE_SESSION_COLUMNS = ("patient_id", "session_date", "session_type", "route", "bp_systolic_max",
                           "bp_diastolic_max", "adverse_events")

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
                  reference: str | None = None, time: str = "auto") -> tuple[dict, list[str]]:
    """The ``analyze`` object of ../shared/cli.md (cohort, survival, trajectories, benchmarks).

    Returns the object and the sentences of sections that could not be estimated (their JSON is null), then
    those that say why a part of the survival section is null (:func:`analytics.outcomes.survival.survival_section`).
    cli.md has no notes key in this JSON, so these sentences go to stderr only.

    Raises
    ------
    UnusableExport
        ``reference`` without ``by``, or naming no group (or a group too small to compare):
        :func:`analytics.outcomes.survival.check_reference`.
    """
    cohort = build_cohort(data, settings)
    return analysis_json_from_cohort(cohort, by=by, reference=reference, time=time)


def analysis_json_from_cohort(cohort: Cohort, *, by: str | None = None, reference: str | None = None,
                              time: str = "auto") -> tuple[dict, list[str]]:
    """``time``: the PHQ-9 model's time shape (``auto``: chosen on the data by AIC; ``linear``, ``piecewise``,
    ``spline``): :func:`analytics.outcomes.trajectories.phq9_model`, the model of the report and the page too."""
    from analytics.outcomes import benchmarks, qi, survival, trajectories

    column = group_column(by)
    reference = survival.check_reference(cohort, by=column, reference=reference)  # a bad --reference: exit 2
    # the PHQ-9 model (mostly NumPy, which lets go of the GIL) is fitted on a second thread while the survival and
    # benchmark sections and the small-cell rule's patient flow run here: each reads the immutable cohort only, and
    # a value both need is computed once (analytics.outcomes.memo: the other thread waits for it). At a million
    # patients on two cores the analyses take 20-22 s instead of 32-35 s; the benchmarks' integer-keyed copy of the
    # cohort (GBs) is freed as soon as they end, so the peak memory stays near that of one after the other (7,648-7,927
    # MiB at a million patients, by how the two overlap; 7,644 MiB one after the other).
    with ThreadPoolExecutor(max_workers=1) as pool:
        traj_job = pool.submit(_section, trajectories.trajectories_json, cohort, time=time)
        surv_part, surv_err = _section(survival.survival_section, cohort, by=column, reference=reference)
        bench, bench_err = _section(benchmarks.benchmarks_json, cohort)
        benchmarks.release_keyed_copy(cohort)  # nothing here compares again
        if cohort.settings.suppress:
            _section(qi.patient_flow, cohort)  # kept with the cohort for suppress_analysis
        traj, traj_err = traj_job.result()
    surv, surv_why = surv_part if surv_part is not None else (None, [])
    cohort_section = survival.cohort_json(cohort)
    if cohort.settings.suppress:
        cohort_section, surv, traj = suppress_analysis(cohort_section, surv, traj, cohort, by=column)
    out = {
        "cohort": cohort_section,
        "survival": surv,
        "trajectories": traj if traj is not None else {"phq9": None},
        "benchmarks": bench if bench is not None else [],
    }
    return out, [e for e in (surv_err, traj_err, bench_err) if e] + surv_why


def _small(n: object, min_cell: int) -> bool:
    return isinstance(n, (int, float)) and 0 < n < min_cell


def _tied(values: dict[object, float | None], cells: SuppressedCells, ties: dict[object, object]
           ) -> tuple[list[object], list[object]]:
    """Cells here that another output shows as ``ties[key]`` (same number): (shown there, hidden there)."""
    known, hidden = [], []
    for key, other in ties.items():
        if key in values and other in cells.values and values[key] == cells.values[other]:
            (known if cells.shown(other) else hidden).append(key)
    return known, hidden


def count_cells(cohort: Cohort, groups: Sequence[tuple[str, float, float]] = (), *,
                traj_patients: float | None = None) -> SuppressedCells:
    """The counts of the outputs (``analyze`` JSON, the meeting pack's survival table), suppressed along every margin
    they share, the same whichever output shows them and whatever ``--by``.

    Keys: ``("cohort", name)`` (``patients``, ``with_followup``, ``events``, ``censored``), ``("n", group)`` and
    ``("events", group)`` for ``groups`` (group, patients, events), ``("traj", "n_patients")``.

    Three steps, each fixing what the next takes as given: the patient flow
    (:func:`analytics.privacy.suppression.suppress_flow`: its "Started ketamine" is ``patients`` and its
    "Analysed: time to return to use" is ``with_followup``), then the cohort section (events + censored = with a
    follow-up ≤ patients), then the groups (their patients add up to those with a follow-up, their events to all
    events; a group's events are part of its patients) and the PHQ-9 model's patients (part of all patients). A
    count shown by an earlier step is known to the reader; one it hides stays hidden. Pooled: hidden parts of a
    shown total do not add up to 1–10 either.
    """
    from analytics.outcomes import qi, survival

    s = cohort.settings
    opts = {"pooled": True, "min_cell": s.min_cell, "enabled": s.suppress}
    flow = qi.patient_flow(cohort)
    flow_cells = suppress_flow(flow.steps, flow.losses, min_cell=s.min_cell, enabled=s.suppress)
    top: dict[object, float | None] = {("cohort", k): v for k, v in survival.cohort_json(cohort).items()}
    known, hidden = _tied(top, flow_cells, {("cohort", "patients"): ("step", "started"),
                                            ("cohort", "with_followup"): ("step", "analysed_survival")})
    top_cells = suppress_cells(top, sums=[([("cohort", "events"), ("cohort", "censored")], ("cohort", "with_followup")),
                                          ([("cohort", "with_followup")], ("cohort", "patients"))],
                               known=known, hidden_elsewhere=hidden, **opts)
    values = dict(top)
    sums: list[tuple[list[object], object]] = []
    for g, n, e in groups:
        values[("n", g)], values[("events", g)] = n, e
        sums.append(([("events", g)], ("n", g)))
    if groups:
        sums.append(([("n", g) for g, _, _ in groups], ("cohort", "with_followup")))
        sums.append(([("events", g) for g, _, _ in groups], ("cohort", "events")))
    known = [k for k in top if top_cells.shown(k)]
    hidden = [k for k in top if not top_cells.shown(k)]
    if traj_patients is not None:
        values[("traj", "n_patients")] = traj_patients
        sums.append(([("traj", "n_patients")], ("cohort", "patients")))
        k2, h2 = _tied(values, flow_cells, {("traj", "n_patients"): ("step", "analysed_phq9")})
        known, hidden = [*known, *k2], [*hidden, *h2]
    return suppress_cells(values, sums=sums, known=known, hidden_elsewhere=hidden, **opts)


def suppress_analysis(cohort_section: dict, surv: dict | None, traj: dict | None, cohort: Cohort, *,
                      by: str | None) -> tuple[dict, dict | None, dict | None]:
    """The small-cell rule on the ``analyze`` JSON: a hidden count is written as null (cli.md).

    Counts: :func:`count_cells`. A group whose n is hidden shows no median (a group of 1–10 patients: its median
    is one patient's day) and no number at risk (the first would be its size). Kaplan–Meier points: only those a
    chart may draw (:func:`analytics.privacy.suppression.suppress_km`, ``counts_shown="drawn"``: each drawn step
    pools at least ``min_cell`` events, none once fewer than ``min_cell`` are at risk), and a number at risk is
    shown only when it differs from the group's n and from the previous shown one by 0 or at least ``min_cell``.
    """
    min_cell = cohort.settings.min_cell
    phq9 = (traj or {}).get("phq9") or {}
    cells = count_cells(cohort, [(g["group"], g["n"], g["events"]) for g in (surv or {}).get("groups") or []],
                        traj_patients=phq9.get("n_patients"))
    cohort_section = {k: (cells.value(("cohort", k)) if isinstance(v, (int, float)) else v)
                      for k, v in cohort_section.items()}
    cohort_section = {k: (int(v) if isinstance(v, float) else v) for k, v in cohort_section.items()}
    if traj is not None and isinstance(traj.get("phq9"), dict) and ("traj", "n_patients") in cells.values:
        phq9 = dict(traj["phq9"])
        phq9["n_patients"] = _int(cells.value(("traj", "n_patients")))
        if _small(phq9.get("n_obs"), min_cell):
            phq9["n_obs"] = None
        traj = {**traj, "phq9": phq9}
    if surv is None:
        return cohort_section, surv, traj
    drawn = _drawn_km(cohort, by=by, min_cell=min_cell)
    groups = []
    for g in surv.get("groups", []):
        g = dict(g)
        n_hidden = not cells.shown(("n", g["group"]))
        g["n"] = _int(cells.value(("n", g["group"])))
        g["events"] = _int(cells.value(("events", g["group"])))
        if n_hidden and cells.primary.get(("n", g["group"]), False):
            g.update(median_days=None, median_lower=None, median_upper=None)
        keep = drawn.get(g["group"])
        km = [p for i, p in enumerate(g.get("km", [])) if (keep is None and not _small(p.get("at_risk"), min_cell))
              or (keep is not None and i < len(keep) and keep[i])]
        prev = None if n_hidden else g["n"]
        points = []
        for p in km:
            p = dict(p)
            risk = p.get("at_risk")
            if n_hidden or _small(risk, min_cell) or (prev is not None and risk is not None
                                                      and _small(abs(prev - risk), min_cell)):
                p["at_risk"] = None
            elif risk is not None:
                prev = risk
            points.append(p)
        g["km"] = points
        groups.append(g)
    return cohort_section, {**surv, "groups": groups}, traj


def _int(v: float | None) -> int | None:
    return None if v is None else round(v)


def _drawn_km(cohort: Cohort, *, by: str | None, min_cell: int) -> dict[str, list[bool]]:
    """group → for each row of its Kaplan–Meier table: may the point be written (a chart would draw it)?"""
    from analytics.outcomes import survival

    try:
        curves = survival.relapse_curves(cohort, by=by)
    except OutcomesError:
        return {}
    safe = suppress_km(curves.table, counts_shown="drawn", min_cell=min_cell)
    draw = ~safe.mask["estimate"].to_numpy(bool)
    groups = curves.table["group"].astype(str).to_numpy()
    return {str(g): draw[groups == str(g)].tolist() for g in dict.fromkeys(groups)}


# ------------------------------------------------------------------------------ what a load says to the user

UPLOAD_TYPES = ["csv", "txt", "tsv", "parquet"]  # the Data page's file types (CSV text or Parquet, several per kind)


def upload_sources(uploads: Mapping[str, Any]) -> tuple[dict[str, list[bytes]], dict[str, list[str]],
                                                         dict[str, bytes]]:
    """The Data page's uploaded files (kind → one uploaded file or a list of them, each with ``name`` and
    ``getvalue()``) as :func:`schemas.validate.load_exports` takes them: (kind → bytes of each file, kind → their
    names, and the files as the upload history stores them: one file of a kind under the kind's name, several as
    ``sessions 1``, ``sessions 2`` … in the order given). Kinds without a file are left out."""
    sources: dict[str, list[bytes]] = {}
    names: dict[str, list[str]] = {}
    stored: dict[str, bytes] = {}
    for kind, given in uploads.items():
        files = [f for f in (given if isinstance(given, (list, tuple)) else [given]) if f is not None]
        if not files:
            continue
        sources[kind] = [f.getvalue() for f in files]
        names[kind] = [str(f.name) for f in files]
        for i, data in enumerate(sources[kind], start=1):
            stored[kind if len(files) == 1 else f"{kind} {i}"] = data
    return sources, names, stored


def timezone_options() -> list[str]:
    """"" (dates as written in the file) then the IANA zones a clinic could be in, sorted (a searchable selectbox)."""
    from zoneinfo import available_timezones

    legacy = ("Etc/", "SystemV/", "posix/", "right/", "US/", "Canada/", "Mexico/", "Brazil/", "Chile/")
    zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith(legacy))
    return ["", "UTC", *zones]


_PREFIX_OFFER = re.compile(r"would match once '([^']+)' is removed")


def prefix_offer(notes: tuple[str, ...] | list[str]) -> str | None:
    """The patient-id prefix (``Patient/``) a load's notes offer to remove (``prefixes="suggest"``), or None."""
    for note in notes:
        if m := _PREFIX_OFFER.search(note):
            return m.group(1)
    return None


def empty_load_reason(data: ValidatedExports) -> str | None:
    """Why a load gave no session to analyse (a sentence with its counts marked, :func:`note_n`), or None.

    A load with no accepted session is not made the session's data nor saved: every page would be empty.
    """
    if not data.sessions.empty:
        return None
    report = data.files.get("sessions")
    name = "sessions.csv"
    issues = data.issues[data.issues["file"].astype(str).str.startswith("sessions")] if len(data.issues) else \
        data.issues
    if len(issues):
        name = str(issues["file"].iloc[0])
    if report is None or report.rows == 0:
        return f"Nothing was loaded: {name} has no session rows. Check that the right file was chosen."
    if report.accepted > 0:  # accepted, but none attended (no_show, cancelled…)
        counts = ", ".join(f"{note_n(v)} {k}" for k, v in report.not_analysed.items())
        return (f"Nothing was loaded: none of the {note_n(report.accepted)} accepted rows of {name} is an attended "
                f"session ({counts}). Check the status column, or export attended sessions too.")
    rows = issues.groupby("column", sort=False)["line"].nunique().sort_values(ascending=False, kind="stable")
    column = str(rows.index[0])
    example = issues.loc[issues["column"] == column, "reason"].value_counts().index[0]
    return (f"Nothing was loaded: every one of the {note_n(report.rows)} session rows of {name} was set aside, so "
            f"there is no session to analyse. The most common problem is {column} ({note_n(rows.iloc[0])} rows), "
            f"for example: {example}. Fix the export (or choose the date format or column mapping it uses) and "
            "load it again; the data already loaded stays in place.")


def mapping_effect(files: dict[str, bytes], preset: Any, *, dates: str = "iso", names: dict[str, str] | None = None,
                   timezone: str | None = None) -> tuple[Any, str | None]:
    """What loading ``files`` with ``preset`` would do, before anything is loaded: a table per file (``file``,
    ``rows``, ``accepted``, ``set_aside``, ``most_common_problem``) and the sentence of a load that would be
    refused (or of a file that cannot be read), nothing stored.

    The mapping step shows it so the user sees the effect of a mapping on every row, not only the first ones.
    """
    import pandas as pd

    from schemas.validate import load_exports

    if "sessions" not in files or "followups" not in files:
        return None, "Choose sessions.csv and followups.csv to preview the effect on every row."
    try:
        data = load_exports(files["sessions"], files["followups"], files.get("patients"), preset=preset,
                            dates=dates, names=names, timezone=timezone)  # type: ignore[arg-type]
    except OutcomesError as err:
        return None, str(err)
    rows = []
    for kind, report in data.files.items():
        mine = data.issues[data.issues["file"] == (names or {}).get(kind, f"{kind}.csv")] if len(data.issues) else None
        top = ""
        if mine is not None and len(mine):
            counts = mine.groupby(["column", "reason"]).size().sort_values(ascending=False)
            (column, reason), n = counts.index[0], int(counts.iloc[0])
            top = f"{column}: {reason} ({n:,} row(s))"
        rows.append({"file": kind, "rows": report.rows, "accepted": report.accepted,
                     "set_aside": report.quarantined, "most_common_problem": top})
    return pd.DataFrame(rows), empty_load_reason(data)
