"""``kap-outcomes``: the dashboard's pipeline for scripts, schedulers and checks (../shared/cli.md).

Exit codes: 0 every row accepted · 1 some rows quarantined (the rest analysed) · 2 unusable input.
Errors go to stderr as one plain sentence; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from analytics.errors import OutcomesError, UnusableExport


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one sentence, exit 2
        message = terminal_text(message)  # an option value echoed back is typed text: no control characters
        self.exit(2, f"kap-outcomes: {message}; run 'kap-outcomes {self.prog.split()[-1]} --help' for the options.\n"
                  if " " in self.prog else f"kap-outcomes: {message}; run 'kap-outcomes --help'.\n")


def _inputs(p: argparse.ArgumentParser) -> None:
    several = ("; repeat the option, or give a folder or a pattern such as 'sessions_*.csv', to read several files of "
               "this kind as one (e.g. one per year or site; CSV or Parquet)")
    p.add_argument("--sessions", required=True, action="append", metavar="FILE",
                   help="sessions.csv export" + several)
    p.add_argument("--followups", action="append", metavar="FILE",
                   help="followups.csv export (required unless --daily-use is given)"
                        + several.replace("sessions_", "followups_"))
    p.add_argument("--patients", action="append", metavar="FILE",
                   help="patients.csv export (optional)" + several.replace("sessions_", "patients_"))
    p.add_argument("--daily-use", action="append", metavar="FILE",
                   help="daily_use.csv, a daily use log (optional): days abstinent, heavy days and the first day of "
                        "use are derived from it exactly; with it, --followups is optional"
                        + several.replace("sessions_", "daily_use_"))
    p.add_argument("--preset", metavar="NAME", help="column preset of the export layout (default: canonical)")
    p.add_argument("--mapping", metavar="FILE", help="a saved column mapping (TOML), instead of a preset")
    p.add_argument("--dates", choices=["iso", "dayfirst", "monthfirst"], default=None,
                   help="date order in the files (default: a --mapping file's own, else iso: yyyy-mm-dd); ambiguous "
                        "dates are never guessed")
    p.add_argument("--timezone", metavar="ZONE",
                   help="the clinic's timezone (e.g. America/New_York): date-times written in UTC (ending Z) are "
                        "read as that zone's date; default: every date-time keeps the date written")
    p.add_argument("--keep-prefixes", action="store_true",
                   help="do not remove a patient-id prefix such as 'Patient/' that only one file writes (by default "
                        "it is removed when unambiguous, with a note)")


def _analysis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", metavar="COLUMN", help="group survival curves and the Cox model by a patient column")
    p.add_argument("--reference", metavar="LEVEL",
                   help="Cox reference level, a group of --by (default: the largest group); a level that names no "
                        "group, or a group too small to compare, exits 2 with the list of groups")
    p.add_argument("--relapse", choices=["any", "heavy"], default="any", help="return-to-use definition")
    p.add_argument("--dropout-as-relapse", action="store_true",
                   help="count lost to follow-up / withdrew as return to use")
    p.add_argument("--no-suppress", action="store_true",
                   help="ANALYST USE ONLY: show counts from 1 to 10 (suppressed by default)")
    p.add_argument("--time", choices=["auto", "linear", "piecewise", "spline"], default="auto",
                   help="time shape of the PHQ-9 model (default auto: straight line, bend at week 4 or natural "
                        "spline, whichever has the lowest AIC by maximum likelihood)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kap-outcomes", description="Outcomes of ketamine-assisted addiction treatment.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    v = sub.add_parser("validate", help="check the exports and print the data-quality report")
    _inputs(v)
    v.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    a = sub.add_parser("analyze", help="run every analysis and write one JSON object")
    _inputs(a)
    _analysis_options(a)
    a.add_argument("--json", metavar="FILE|-", default="-", help="where to write the JSON (default: stdout)")
    r = sub.add_parser("report", help="write the self-contained HTML meeting pack")
    _inputs(r)
    _analysis_options(r)
    r.add_argument("--out", required=True, metavar="FILE.html", help="the HTML file to write")
    s = sub.add_parser("sample", help="write a synthetic clinic export with known effects")
    s.add_argument("--patients", type=int, required=True, metavar="N")
    s.add_argument("--seed", type=int, default=20261125, metavar="S")
    s.add_argument("--out", required=True, metavar="DIR")
    return parser


def _load(args: argparse.Namespace):
    from schemas.presets import load_mapping_file
    from schemas.reader import expand_paths
    from schemas.validate import load_exports

    preset = load_mapping_file(args.mapping) if getattr(args, "mapping", None) else args.preset
    if args.followups is None and args.daily_use is None:
        raise UnusableExport("No follow-up export: give --followups FILE (or a daily use log with --daily-use FILE).")
    files = {kind: expand_paths(given, kind=kind) for kind in ("sessions", "followups", "patients", "daily_use")
             if (given := getattr(args, kind)) is not None}
    # files on disk have no size limit (the limit is the browser upload's); memory is the limit
    return load_exports(files["sessions"], files.get("followups"), files.get("patients"), preset=preset,
                        dates=args.dates, timezone=args.timezone,
                        prefixes="suggest" if args.keep_prefixes else "apply", max_bytes=sys.maxsize,
                        daily_use=files.get("daily_use"))


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape_char(m: re.Match[str]) -> str:
    c = m.group(0)
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def terminal_text(value: object) -> str:
    """A value from the data as the terminal may show it: control characters escaped (ESC → ``\\x1b``, BEL →
    ``\\x07``, CR → ``\\x0d``, line and bidirectional-override characters too), so that a cell of an export can
    neither move the cursor, clear the screen, ring the bell, overwrite a line nor reorder the text it is in."""
    return _CONTROL.sub(_escape_char, str(value))


def json_text(obj: Any) -> str:
    """One JSON object as text (UTF-8, numbers plain); control characters that JSON leaves raw (C1, line and
    bidirectional-override characters) written as ``\\uXXXX`` escapes: the same JSON, harmless in a terminal."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group(0)):04x}", json.dumps(_clean(obj), ensure_ascii=False))


def _clean(obj: Any) -> Any:
    """Plain JSON: NaN/inf → null, numpy scalars → Python numbers."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def validation_json(data) -> dict:
    """The ``validate --json`` object of cli.md."""
    files = {k: {"rows": r.rows, "accepted": r.accepted, "quarantined": r.quarantined,
                 "dropped_columns": list(r.dropped_columns)} for k, r in data.files.items()}
    issues = [{"file": str(i.file), "line": int(i.line), "column": str(i.column), "value": str(i.value),
               "reason": str(i.reason)} for i in data.issues.itertuples(index=False)]
    return {"files": files, "patients": data.n_patients, "issues": issues}


def _exit_code(data) -> int:
    return 1 if any(r.quarantined for r in data.files.values()) else 0


def _print_report(data) -> None:
    out = sys.stdout
    t = terminal_text
    for kind, r in data.files.items():
        out.write(f"{t(kind)}: {r.rows:,} rows read, {r.accepted:,} accepted, {r.quarantined:,} set aside")
        out.write(f"; dropped identifier columns: {', '.join(map(t, r.dropped_columns))}\n" if r.dropped_columns
                  else "\n")
    out.write(f"{data.n_patients:,} patients with accepted sessions.\n")
    for note in data.notes:
        if " read as " in note and "delimiter" in note:
            continue  # the encoding and delimiter of each file: --json callers and the Data page show them
        out.write(f"note: {t(note)}\n")
    if len(data.issues):
        out.write(f"\n{len(data.issues):,} problems (file, line, column, value: reason):\n")
        for i in data.issues.head(200).itertuples(index=False):
            out.write(f"  {t(i.file)} line {i.line}, {t(i.column)} = '{t(i.value)}': {t(i.reason)}\n")
        if len(data.issues) > 200:
            out.write(f"  … and {len(data.issues) - 200:,} more; use --json for the full list.\n")


def cmd_validate(args: argparse.Namespace) -> int:
    data = _load(args)
    if args.json:
        sys.stdout.write(json_text(validation_json(data)) + "\n")
    else:
        _print_report(data)
    return _exit_code(data)


def _settings(args: argparse.Namespace):
    from analytics.outcomes.settings import Settings

    return Settings(relapse=args.relapse, dropout_as_relapse=args.dropout_as_relapse, suppress=not args.no_suppress)


def _shown(sentence: str, args: argparse.Namespace) -> str:
    """A sentence from the analytics for stderr: its counts of 1–10 masked unless --no-suppress (privacy.note_n),
    control characters from the data escaped (:func:`terminal_text`)."""
    from analytics.privacy.suppression import render_note

    return terminal_text(render_note(sentence, enabled=not getattr(args, "no_suppress", False)))


def cmd_analyze(args: argparse.Namespace) -> int:
    from analytics.outcomes.cohort import build_cohort
    from analytics.outcomes.pipeline import ANALYZE_SESSION_COLUMNS, analysis_json_from_cohort

    data = _load(args)
    code = _exit_code(data)
    cohort = build_cohort(data, _settings(args), consume=True, session_columns=ANALYZE_SESSION_COLUMNS)
    del data  # the cohort holds what the analyses use: the accepted frames are freed (GBs at a million patients)
    result, problems = analysis_json_from_cohort(cohort, by=args.by, reference=args.reference, time=args.time)
    for sentence in problems:
        sys.stderr.write(f"kap-outcomes: note: {_shown(sentence, args)}\n")
    text = json_text(result)
    if args.json in ("-", None):
        sys.stdout.write(text + "\n")
    else:
        try:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
        except OSError as err:
            raise UnusableExport(f"Cannot write {args.json} ({err.strerror}); choose a writable path.") from None
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from analytics.report.pack import write_report
    from analytics.report.parallel import default_workers

    data = _load(args)
    try:
        write_report(data, _settings(args), Path(args.out), by=args.by, reference=args.reference,
                     workers=default_workers(), time=args.time)
    except OSError as err:
        raise UnusableExport(f"Cannot write {args.out} ({err.strerror}); choose a writable path.") from None
    return _exit_code(data)


def cmd_sample(args: argparse.Namespace) -> int:
    from analytics.sample import write_clinic

    if args.patients < 1:
        raise UnusableExport(f"--patients must be at least 1 (got {args.patients}).")
    try:
        paths = write_clinic(args.out, n_patients=args.patients, seed=args.seed)
    except OSError as err:
        raise UnusableExport(f"Cannot write into {args.out} ({err.strerror}); choose a writable folder.") from None
    for p in paths.values():
        sys.stderr.write(f"wrote {terminal_text(p)}\n")
    return 0


COMMANDS = {"validate": cmd_validate, "analyze": cmd_analyze, "report": cmd_report, "sample": cmd_sample}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except OutcomesError as err:
        sys.stderr.write(f"kap-outcomes: {_shown(str(err), args)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("kap-outcomes: interrupted.\n")
        return 2
    except MemoryError:
        sys.stderr.write("kap-outcomes: the files are too large for this machine's memory; split them by year.\n")
        return 2
    except Exception as err:  # noqa: BLE001 - the user never sees a traceback
        sys.stderr.write(f"kap-outcomes: internal error ({type(err).__name__}); please report it with the command "
                         "you ran (no patient data).\n")
        return 2


def batch_memory(*, arrow: bool = True) -> None:
    """Memory settings for the command's own process, made before NumPy and Arrow are loaded (Linux only; a setting
    already in the environment is kept): freed memory is kept for reuse (:func:`analytics.reuse_freed_memory`), and
    with ``arrow`` Arrow takes jemalloc with Arrow's own decay (freed pages not handed back at once) instead of the
    pool that :mod:`schemas.arrow` sets (decay 0: freed pages returned at once, which holds ``validate`` to about 6
    times the export's size, README Limits).

    ``analyze`` at 200,000 patients: 13.2-13.4 s instead of 16.4-16.5 s (three runs each, alternating; system time
    4.3-4.5 s instead of 7.9-8.2 s), peak memory 2.0 GB (was 2.1), the same JSON. ``validate`` (no ``arrow``): 6.25 s
    instead of 6.6-7.5 s, the same peak (1.68-1.71 GB); Arrow's decay would make it 5.45 s but 1.92-1.94 GB. ``main``
    called from Python (the tests) changes nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    if arrow:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    from analytics import reuse_freed_memory

    reuse_freed_memory()


def run() -> NoReturn:
    """The ``kap-outcomes`` command: :func:`main`, then leave at once.

    Everything the command writes is written and closed by then (files by ``write_text``, report workers joined),
    so the interpreter's own teardown — freeing every table of a large clinic one object at a time, 0.2 s at 20,000
    patients — is skipped: standard output and error are flushed and the process exits with the command's code.
    """
    # pandera imports its hypothesis data generators whenever hypothesis is installed (a development
    # environment); the command never generates data, and a user's install has no hypothesis: skip them. Only in
    # the command's own process (``main`` called from Python leaves the interpreter's modules alone)
    sys.modules.setdefault("hypothesis", None)  # type: ignore[assignment]
    batch_memory(arrow=sys.argv[1:2] in (["analyze"], ["report"]))  # validate keeps its memory bound
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``| head``): nothing more can be written anyway
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
