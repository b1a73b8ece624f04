"""Every page in the navigation renders: no exception, a heading, drawn charts; a screenshot of each is kept.

The pages are discovered from the navigation at run time, so a new page is covered as soon as dashboard.py lists
it. Two journeys: the first visit (the bundled sample clinic) and after uploading the sample exports on the Data
page (the state a clinic user is in).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from e2e_harness import (
    ARTIFACTS,
    SAMPLE_DIR,
    discover_pages,
    go_to,
    open_app,
    page_problems,
    screenshot_full,
    upload_exports,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def _visit_every_page(page, app, shots: Path, *, errors_before: int) -> None:
    pages = discover_pages(page)
    assert any(p.title == "Data" for p in pages), [p.title for p in pages]
    problems: dict[str, list[str]] = {}
    timings: dict[str, float] = {}
    for nav in pages:
        start = time.perf_counter()
        go_to(page, nav)
        timings[nav.title] = time.perf_counter() - start
        found = page_problems(page)
        if page.url.split("?")[0].rstrip("/") != nav.href.split("?")[0].rstrip("/"):
            found.append(f"the URL is {page.url}, not the page's {nav.href}")
        if found:
            problems[nav.title] = found
        screenshot_full(page, shots / f"{nav.slug}.png")
    print("page render seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    assert not problems, f"pages that broke (screenshots in {shots.relative_to(ARTIFACTS.parent.parent)}):\n" + (
        "\n".join(f"- {title}: " + " | ".join(found) for title, found in problems.items())
        + "\nserver log:\n" + "\n".join(app.server.uncaught_errors(since=errors_before))[-6000:])
    assert app.server.uncaught_errors(since=errors_before) == [], "the server logged an uncaught exception"


def test_every_page_renders_on_the_sample_clinic(errors_before, page, app):
    if not (SAMPLE_DIR / "sessions.csv").is_file():
        pytest.skip("sample_data/ is missing (test_dashboard_opens_on_the_sample_clinic fails for it); the pages "
                    "are still visited after an upload by the next test")
    _visit_every_page(page, app, ARTIFACTS / "pages-sample", errors_before=errors_before)


def test_every_page_renders_after_uploading_the_sample_exports(errors_before, blank_page, app, upload_files):
    open_app(blank_page, app.url)
    upload_exports(blank_page, upload_files)
    _visit_every_page(blank_page, app, ARTIFACTS / "pages", errors_before=errors_before)
