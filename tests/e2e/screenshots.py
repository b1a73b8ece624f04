"""Regenerate the README screenshots: every page of the dashboard, on the sample clinic, at 1400x1000.

Run from the repository root::

    uv run --frozen python tests/e2e/screenshots.py [--out tests/screenshots] [--width 1400] [--height 1000]

Starts ``streamlit run dashboard.py`` on a free port of 127.0.0.1 (stopped at the end), opens it in Debian's
chromium, opens every page listed in the navigation from its link (a fresh session each, on the bundled sample clinic)
and saves ``<out>/<page>.png`` (the full page, below the fold included; ``<page>`` is the page title in lower
case with dashes). When ``sample_data/`` is missing, a
sample clinic is generated into a temporary folder and uploaded on the Data page first. Exits with 1 when a page
shows an error (its screenshot is still written, for inspection) and 2 when no browser can be launched.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_harness import (
    ROOT,
    SAMPLE_DIR,
    StreamlitServer,
    discover_pages,
    find_chromium,
    go_to,
    launch_browser,
    new_page,
    open_app,
    page_problems,
    sample_exports,
    screenshot_full,
    upload_exports,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "screenshots")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)

    executable = find_chromium()
    if executable is None:
        print("!!! no chromium found (/usr/bin/chromium or `chromium` on PATH): run `make browser` as root",
              file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    started = time.perf_counter()
    failed: list[str] = []
    pages: list = []
    written: set[Path] = set()
    with tempfile.TemporaryDirectory(prefix="kap-screenshots-") as tmp:
        server = StreamlitServer(data_dir=Path(tmp) / "data", log_path=Path(tmp) / "streamlit.log")
        with server, sync_playwright() as playwright:
            browser = launch_browser(playwright, executable)
            try:
                size = {"width": args.width, "height": args.height}
                page = new_page(browser, viewport=size)
                open_app(page, server.url)  # also the warm-up: the first render imports the whole stack
                uploaded = not (SAMPLE_DIR / "sessions.csv").is_file()
                if uploaded:
                    print("sample_data/ is missing: uploading a generated sample clinic first")
                    upload_exports(page, sample_exports(Path(tmp) / "sample"))
                pages = discover_pages(page)
                for nav in pages:
                    t0 = time.perf_counter()
                    if uploaded:  # the upload lives in this browser session: navigate within it
                        shot_page = page
                        go_to(shot_page, nav)
                    else:  # each page as a fresh visit of its link shows it (no state left by other pages)
                        shot_page = new_page(browser, viewport=size)
                        open_app(shot_page, nav.href)
                    problems = page_problems(shot_page)
                    path = screenshot_full(shot_page, args.out / f"{nav.slug}.png", width=args.width)
                    written.add(path)
                    if shot_page is not page:
                        shot_page.context.close()
                    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    print(f"{shown}  {path.stat().st_size / 1024:.0f} KiB  {time.perf_counter() - t0:.1f} s"
                          + (f"  PROBLEMS: {' | '.join(problems)}" if problems else ""))
                    if problems:
                        failed.append(nav.title)
            finally:
                browser.close()
        if failed:
            print("server errors:\n" + "\n".join(server.uncaught_errors())[-4000:], file=sys.stderr)
    print(f"{len(pages)} page(s) in {time.perf_counter() - started:.1f} s")
    if not failed:  # a page that left the navigation keeps no screenshot
        for stale in sorted(set(args.out.glob("*.png")) - written):
            stale.unlink()
            print(f"removed {stale.name} (no such page any more)")
    if failed:
        print(f"!!! pages with errors: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
