"""First run: the dashboard opens on the bundled sample clinic, says so, shows no error, and every page of the
navigation renders on it (no exception, a heading, drawn charts; a screenshot of each in tests/artifacts/pages-sample).
"""

from __future__ import annotations

import re

import pytest
from e2e_harness import ARTIFACTS, EXCEPTION_TEXT, SAMPLE_DIR, main_text, page_problems, visit_every_page

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_dashboard_opens_on_the_sample_clinic_with_a_banner_and_every_page_renders(errors_before, page, app):
    assert (SAMPLE_DIR / "sessions.csv").is_file() and (SAMPLE_DIR / "followups.csv").is_file(), (
        "sample_data/sessions.csv and sample_data/followups.csv must ship with the repository: the dashboard "
        "opens on them (run `make sample` to regenerate them)")
    alerts = page.locator('[data-testid="stAlert"]').all_inner_texts()
    banner = [text for text in alerts if re.search(r"sample clinic", text, re.IGNORECASE)]
    assert banner, f"no banner saying this is the sample clinic; the page's alerts: {alerts}"
    assert re.search(r"upload", banner[0], re.IGNORECASE), (
        f"the banner does not say how to upload one's own: {banner[0]!r}")
    assert page.locator('[data-testid="stException"]').count() == 0
    text = main_text(page)
    assert not EXCEPTION_TEXT.search(text), f"exception text on the landing page: {text[:2000]}"
    assert page_problems(page) == []
    assert app.server.uncaught_errors(since=errors_before) == [], "the server logged an uncaught exception"
    # the same browser session goes on to every page (one session: the server loads the sample clinic once)
    visit_every_page(page, app.server, ARTIFACTS / "pages-sample", errors_before=errors_before)
