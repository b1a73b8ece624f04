"""The Data page as a clinic user drives it in a real browser: choose the files, check and load, read the report;
then every page of the navigation renders on the uploaded data (the state a clinic user is in; a screenshot of each
in tests/artifacts/pages)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from e2e_harness import (
    ARTIFACTS,
    ROOT,
    discover_pages,
    find_data_page,
    go_to,
    open_app,
    page_problems,
    upload_exports,
    visit_every_page,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _metrics(page) -> dict[str, str]:
    values = {}
    for metric in page.locator('[data-testid="stMain"] [data-testid="stMetric"]').all():
        label = " ".join(metric.locator('[data-testid="stMetricLabel"]').inner_text().split())
        values[label] = metric.locator('[data-testid="stMetricValue"]').inner_text().strip()
    return values


def _rows(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip()) - 1  # minus the header


def test_uploaded_exports_give_the_pipelines_data_quality_report_and_every_page_renders(errors_before, blank_page,
                                                                                      app, upload_files):
    from schemas.validate import load_exports

    expected = load_exports(upload_files["sessions"], upload_files["followups"], upload_files.get("patients"))
    page = blank_page
    open_app(page, app.url)
    upload_exports(page, upload_files)

    main = page.locator('[data-testid="stMain"]')
    assert main.get_by_text("Loaded. Every page now shows these exports.").is_visible()
    heading = main.locator("h3", has_text="Data-quality report")
    assert heading.count() == 1 and "sample clinic" not in heading.inner_text()
    metrics = _metrics(page)
    for name, path in upload_files.items():
        assert metrics[f"{name}.csv rows read"] == f"{_rows(path):,}"
        assert metrics[f"{name}.csv rows read"] == f"{expected.files[name].rows:,}"
    assert metrics["Patients with accepted sessions"] == f"{expected.n_patients:,}"
    text = main.inner_text()
    for name, report in expected.files.items():
        assert f"{report.accepted:,} accepted · {report.quarantined:,} set aside" in text, name
    if len(expected.issues):
        assert f"{len(expected.issues):,} problems" in text
    else:
        assert "Every row was accepted." in text
    alerts = page.locator('[data-testid="stAlert"]').all_inner_texts()
    assert not [a for a in alerts if re.search(r"sample clinic", a, re.IGNORECASE)], (
        f"a sample-clinic banner stayed after an upload: {alerts}")
    assert page_problems(page) == []

    # the upload lives in the browser session: after another page, the Data page still shows it
    data_page = find_data_page(page)
    others = [nav for nav in discover_pages(page) if nav != data_page]
    if others:
        go_to(page, others[0])
        go_to(page, data_page)
        assert _metrics(page)["Patients with accepted sessions"] == f"{expected.n_patients:,}"
        alerts = page.locator('[data-testid="stAlert"]').all_inner_texts()
        assert not [a for a in alerts if re.search(r"sample clinic", a, re.IGNORECASE)], (
            f"the sample clinic came back after navigating: {alerts}")
    assert app.server.uncaught_errors(since=errors_before) == [], "the server logged an uncaught exception"
    visit_every_page(page, app.server, ARTIFACTS / "pages", errors_before=errors_before)
