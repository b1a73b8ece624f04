"""Benchmark (issue 21): every page of the dashboard at 50,000 patients in a real browser.

A generated clinic (``analytics.sample.write_clinic``, seed 7) is uploaded on the Data page of a real ``streamlit
run dashboard.py`` (tests/e2e/e2e_harness.py) from Debian's chromium driven by Playwright, like a user: the three
files are chosen (the transfer to the server is timed apart) and "Check and load" is pressed (reading, checking
and storing the rows, timed apart). Then, in the same browser session (the upload lives in the session), every page
of the navigation is opened from its link, in navigation order, and on every analysis page the view is narrowed
with the sidebar's first filter (one option chosen) and widened again (the option removed).

A time runs from the click (the navigation link, the filter option, the key press) to the page being fully
rendered: the script run the click started has finished (counted on the websocket, ``e2e_harness.RunWatcher``),
Streamlit shows nothing running or loading, and every visible plotly chart holds its svg. Polled every 50 ms, so
a time is at most ~0.05 s late; the harness's 150 ms settle check runs after the clock has stopped. Each time
comes with its ``*_script_seconds``: from the click to the run's ``script_finished`` message (the server's part;
the rest is the browser drawing).

"Check and load" also builds the cohort (``build_cohort``, kept in the session for every page); once the load
report is drawn, the default views of the pages are computed in the background (``analytics/outcomes/warmup.py``;
it holds still while a page is drawn). The pages are opened right after one another, with no reading time between
them, so a page reached before the warm-up got to it computes its own results: the harshest order for it
(``--settle S`` waits S seconds after the upload first, as a visitor reading the load report would: the warm-up
then gets ahead). Targets: first view ≤ 2 s, rerun after a filter change ≤ 1 s.
Writes perf/results/pages.json.

    uv run --frozen python perf/bench_pages.py [--patients 50000]

``--profile [PAGE ...]`` profiles pages in-process instead (AppTest under cProfile, the cohort built beforehand) and
writes perf/results/pages_profile.json: where the server's time of a page goes.

    uv run --frozen python perf/bench_pages.py --profile overview benchmarks subgroups
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import cli_run
from playwright.sync_api import TimeoutError as PlaywrightTimeout
import e2e_harness as h

FIRST_VIEW_TARGET_S = 2.0
RERUN_TARGET_S = 1.0
NOT_ANALYSIS = {"Data", "Upload history"}  # no cohort, no filters in the sidebar
POLL_MS = 50

_RENDERED_JS = f"() => ({h._IDLE_JS})() && ({h._CHARTS_DRAWN_JS})()"
_CHART_COUNT_JS = """
() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]')).filter(el => el.offsetParent !== null)
  .length
"""


SCRIPT_SECONDS: list[float] = []  # click → the run's script_finished message, of every timed click


def _rendered_after(page: Any, runs_before: int, t0: float, *, timeout_s: float = 600) -> float:
    """Seconds from ``t0`` until a run after ``runs_before`` has finished and the page is fully rendered (the
    seconds until the run's ``script_finished`` message arrived are appended to ``SCRIPT_SECONDS``)."""
    deadline = time.perf_counter() + timeout_s
    while h.runs_finished(page) <= runs_before:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no script run finished within {timeout_s:.0f} s on {page.url}")
        page.wait_for_timeout(POLL_MS)
    SCRIPT_SECONDS.append(time.perf_counter() - t0)
    page.wait_for_function(_RENDERED_JS, timeout=timeout_s * 1000, polling=POLL_MS)
    elapsed = time.perf_counter() - t0
    h.wait_idle(page)  # the harness's settle check (not timed): no late delta, no second run
    h.wait_for_charts(page)
    return elapsed


def _upload(page: Any, files: dict[str, Path]) -> dict[str, float]:
    """Choose the three files on the Data page (transfer timed) and press "Check and load" (timed)."""
    h.go_to(page, h.find_data_page(page))
    t0 = time.perf_counter()
    for name, path in files.items():
        uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text=f"{name}.csv")
        uploader.locator('input[type="file"]').set_input_files(str(path))
        uploader.locator('[data-testid="stFileChipName"]').filter(has_text=path.name).wait_for(
            state="visible", timeout=600_000)
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stFileChipIconSpinner\"]')",
                               timeout=600_000, polling=POLL_MS)
        if uploader.locator('[data-testid="stFileChipIconError"]').count():
            raise AssertionError(f"the upload of {path.name} failed: {uploader.inner_text()}")
    transfer = time.perf_counter() - t0
    before = h.runs_finished(page)
    t1 = time.perf_counter()
    page.get_by_role("button", name="Check and load").click()
    check = _rendered_after(page, before, t1)
    text = h.main_text(page)
    if "Loaded" not in text:
        raise AssertionError(f"the upload was not loaded: {text[:800]}")
    return {"transfer_seconds": round(transfer, 2), "check_and_load_seconds": round(check, 2),
            "total_seconds": round(transfer + check, 2)}


def _first_filter(page: Any) -> tuple[str, Any] | None:
    """(label, widget) of the sidebar's first multiselect (the view filters)."""
    for widget in page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').all():
        label = " ".join(widget.locator('[data-testid="stWidgetLabel"]').inner_text().split())
        return label, widget
    return None


def _narrow(page: Any, widget: Any) -> tuple[str, float]:
    """Choose the filter's first option (not "Select all"); (option, seconds to the rerun's full render)."""
    widget.scroll_into_view_if_needed()  # a field below the fold (a long sidebar) is brought into view first
    widget.locator('input[role="combobox"]').first.click()
    options = page.locator('[role="listbox"] [role="option"]')
    try:
        options.first.wait_for(state="visible", timeout=1_000)
    except PlaywrightTimeout:  # a field below the fold is scrolled to and focused, but its list stays shut
        page.keyboard.press("ArrowDown")
        options.first.wait_for(state="visible", timeout=5_000)
    name = None
    for _ in range(60):  # the list draws its options a moment after it opens
        name = next((t for t in (o.inner_text().strip() for o in options.all()) if t and t.lower() != "select all"),
                    None)
        if name:
            break
        page.wait_for_timeout(POLL_MS)
    if not name:
        raise StopIteration("no option in the list but 'Select all'")
    field = widget.locator('input[role="combobox"]').first
    field.type(name)  # typed, then Enter: a click on the option raced the list's redraw on some pages
    page.locator('[role="listbox"] [role="option"]', has_text=name).first.wait_for(state="visible", timeout=5_000)
    before = h.runs_finished(page)
    t0 = time.perf_counter()
    field.press("Enter")
    seconds = _rendered_after(page, before, t0)
    page.keyboard.press("Escape")  # its list stays open for more choices
    return name, seconds


def _widen(page: Any, widget: Any) -> float:
    """Remove the chosen option again (Backspace in the field); seconds to the rerun's full render."""
    field = widget.locator('input[role="combobox"]').first
    field.click()
    before = h.runs_finished(page)
    t0 = time.perf_counter()
    field.press("Backspace")
    seconds = _rendered_after(page, before, t0)
    page.keyboard.press("Escape")
    return seconds


def _project_function(key: tuple[str, int, str]) -> str | None:
    """'analytics/x.py:12 f' for a function of the project, else None."""
    path = Path(key[0])
    if path.is_relative_to(ROOT) and not path.is_relative_to(ROOT / ".venv"):
        return f"{path.relative_to(ROOT)}:{key[1]} {key[2]}"
    return None


def profile_pages(n_patients: int, pages: list[str], *, top: int = 12) -> dict[str, Any]:
    """Each page run in-process (AppTest) on a generated clinic under cProfile; its run time and top costs.

    The cohort is built (and timed) once, outside the pages, as the first page of a browser session builds it. The
    profiler follows only the script thread AppTest starts (``threading.setprofile``), so the times are the server's
    part only, with cProfile's overhead (2–3× on pandas-heavy code: read the shares, not the seconds). Each page runs
    first without the profiler (``seconds_first_run``, which includes the first import of the modules only that page
    uses: read the browser benchmark for the times a user sees), then under it. ``top`` project functions by
    cumulative time, and ``top`` functions of any library by own time.
    """
    import cProfile
    import pstats
    import threading

    from streamlit.testing.v1 import AppTest

    from analytics.outcomes.cohort import build_cohort
    from analytics.outcomes.settings import Settings
    from analytics.sample import write_clinic
    from schemas.validate import load_exports

    out: dict[str, Any] = {"patients": n_patients, "pages": {}}
    with tempfile.TemporaryDirectory(prefix="kap-profile-pages-") as tmp:
        files = write_clinic(tmp, n_patients=n_patients, seed=7)
        t0 = time.perf_counter()
        data = load_exports(files["sessions"], files["followups"], files["patients"])
        out["load_exports_seconds"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    cohort = build_cohort(data, Settings())
    out["build_cohort_seconds"] = round(time.perf_counter() - t0, 2)

    def fresh() -> AppTest:
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=600)
        at.session_state["exports"], at.session_state["source"] = data, "upload"
        at.session_state["cohort"], at.session_state["cohort_settings"] = cohort, Settings()
        return at

    for name in pages:
        at = fresh()
        at.switch_page(f"pages/{name}.py")
        t0 = time.perf_counter()
        at.run()
        seconds = time.perf_counter() - t0
        at = fresh()
        at.switch_page(f"pages/{name}.py")
        profiler = cProfile.Profile()

        def follow(*_: object, profiler: cProfile.Profile = profiler) -> None:
            sys.setprofile(None)
            if threading.current_thread().name == "ScriptRunner.scriptThread":  # not st.spinner's timer thread
                profiler.enable()

        threading.setprofile(follow)
        try:
            at.run()
        finally:
            threading.setprofile(None)
        stats = pstats.Stats(profiler)
        raw = stats.stats  # type: ignore[attr-defined]
        ours = sorted(((v[3], _project_function(k)) for k, v in raw.items() if _project_function(k)), reverse=True)
        anyone = sorted(((v[2], f"{Path(k[0]).name}:{k[1]} {k[2]}") for k, v in raw.items()), reverse=True)
        out["pages"][name] = {
            "seconds_first_run": round(seconds, 2), "exceptions": [str(e.value)[:300] for e in at.exception],
            "top_cumulative_project": [[round(t, 2), f] for t, f in ours[:top]],
            "top_own_time_any": [[round(t, 2), f] for t, f in anyone[:top]],
        }
        print(name, json.dumps(out["pages"][name], indent=1), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=50_000)
    parser.add_argument("--out", default="pages", help="name of the result file in perf/results/")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait after the upload before opening the pages (a visitor reading the load "
                             "report while the background warm-up works); default 0, the harshest order")
    parser.add_argument("--daily-log", action="store_true",
                        help="also upload the generated daily use log (about 2 M rows at 50,000 patients)")
    parser.add_argument("--profile", nargs="*", metavar="PAGE",
                        help="instead: profile these pages (file names in pages/, without .py) in-process; "
                             "writes perf/results/pages_profile.json")
    args = parser.parse_args()
    if args.profile is not None:
        names = args.profile or sorted(p.stem for p in (ROOT / "pages").glob("*.py") if not p.stem.startswith("_"))
        cli_run.write("pages_profile", profile_pages(args.patients, names))
        return

    executable = h.find_chromium()
    if executable is None:
        raise SystemExit("no chromium (/usr/bin/chromium or `chromium` on PATH)")
    from playwright.sync_api import sync_playwright

    from analytics.sample import write_clinic

    result: dict[str, Any] = {"patients": args.patients, "settle_seconds": args.settle,
                              "target_first_view_seconds": FIRST_VIEW_TARGET_S,
                              "target_rerun_seconds": RERUN_TARGET_S, "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="kap-bench-pages-") as tmp:
        d = Path(tmp)
        files = write_clinic(d / "clinic", n_patients=args.patients, seed=7)
        if not args.daily_log:  # the three contract files (as before the daily log existed); --daily-log adds it
            files.pop("daily_use", None)
        result["file_mb"] = {k: round(p.stat().st_size / 1e6, 1) for k, p in files.items()}
        server = h.StreamlitServer(data_dir=d / "data", log_path=d / "streamlit.log")
        with server, sync_playwright() as playwright:
            browser = h.launch_browser(playwright, executable)
            try:
                page = h.new_page(browser)
                h.open_app(page, server.url)  # warm-up: the first run imports the whole stack (sample clinic)
                result["upload"] = _upload(page, files)
                print(f"upload: {result['upload']}", flush=True)
                time.sleep(args.settle)  # a reader on the load report meanwhile (0: the harshest order)
                rows = []
                for nav in h.discover_pages(page):
                    if nav.title == "Data":
                        continue  # the page of the upload (timed above)
                    link = page.locator(f'[data-testid="stSidebarNavLink"][href="{nav.href}"]')
                    before = h.runs_finished(page)
                    t0 = time.perf_counter()
                    link.first.click()
                    row: dict[str, Any] = {"page": nav.title, "first_view_seconds": round(
                        _rendered_after(page, before, t0), 2), "first_view_script_seconds": round(
                        SCRIPT_SECONDS[-1], 2)}
                    row["charts"] = page.evaluate(_CHART_COUNT_JS)
                    row["problems"] = h.page_problems(page)
                    found = _first_filter(page) if nav.title not in NOT_ANALYSIS else None
                    print(f"{nav.title}: first view {row['first_view_seconds']} s", flush=True)
                    if found is not None:
                        label, widget = found
                        try:
                            option, narrowed = _narrow(page, widget)
                        except (PlaywrightTimeout, StopIteration) as err:  # recorded; the other pages are still measured
                            row["filter_problem"] = f"{label}: its option list did not open ({str(err)[:80]})"
                            row["over_target"] = bool(row["first_view_seconds"] > FIRST_VIEW_TARGET_S)
                            page.keyboard.press("Escape")
                            rows.append(row)
                            continue
                        row["filter"] = f"{label} = {option}"
                        row["rerun_filter_added_seconds"] = round(narrowed, 2)
                        row["rerun_filter_added_script_seconds"] = round(SCRIPT_SECONDS[-1], 2)
                        row["rerun_filter_removed_seconds"] = round(_widen(page, widget), 2)
                        row["rerun_filter_removed_script_seconds"] = round(SCRIPT_SECONDS[-1], 2)
                    row["over_target"] = bool(row["first_view_seconds"] > FIRST_VIEW_TARGET_S or any(
                        row.get(k, 0) > RERUN_TARGET_S for k in ("rerun_filter_added_seconds",
                                                                  "rerun_filter_removed_seconds")))
                    print(row, flush=True)
                    rows.append(row)
                result["pages"] = rows
            finally:
                browser.close()
            result["server_errors"] = server.uncaught_errors()
    result["over_target"] = [r["page"] for r in result["pages"] if r["over_target"]]
    result["load_average_at_end"] = os.getloadavg()
    result["machine"] = {"cpus": os.cpu_count()}
    result["notes"] = [
        ("Times run from the click to the page fully rendered (run finished, nothing running, charts drawn); "
         "polled every 50 ms."),
        (f"Pages are opened in navigation order in one browser session {args.settle:g} s after the upload (the "
         "cohort is built at load; the pages' default views are computed in the background meanwhile, and no "
         "reading time is left between pages)."),
        "Reruns: the sidebar's first view filter narrowed to one option, then widened again.",
    ]
    cli_run.write(args.out, result)


if __name__ == "__main__":
    main()
