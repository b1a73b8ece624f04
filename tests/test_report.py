"""The meeting pack: every section, offline, and no count from 1 to 10 when suppression is on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analytics.outcomes.settings import Settings
from analytics.report.pack import SECTIONS, build_report
from schemas.validate import load_exports

pytestmark = pytest.mark.xdist_group("report")  # one worker builds the module's fixtures (seconds each), not both

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample():
    d = ROOT / "sample_data"
    return load_exports(d / "sessions.csv", d / "followups.csv", d / "patients.csv")


@pytest.fixture(scope="module")
def report(sample) -> str:
    return build_report(sample, Settings())


def test_report_has_every_section_without_errors(report):
    for section in SECTIONS:
        assert f">{section}</h2>" in report
    assert 'class="warn"' not in report, re.findall(r'class="warn">([^<]*)', report)
    assert "Software: Python" in report


def test_report_opens_offline_with_plotly_embedded_once(report):
    assert report.count("<script type=\"text/javascript\">/**\n* plotly.js") <= 1
    assert len(re.findall(r"plotly\.js v\d", report)) >= 1
    assert not re.search(r"<script[^>]+src=\"https?://", report)


def test_no_count_from_1_to_10_in_any_count_cell(report):
    cells = re.findall(r'<td class="n">([^<]*)</td>', report)
    assert cells, "the report has no count cells"
    for cell in cells:
        text = cell.replace(",", "")
        if text.isdigit():
            assert not 1 <= int(text) <= 10, cell


def test_turning_suppression_off_says_so_at_the_top(sample):
    text = build_report(sample, Settings(suppress=False))
    assert text.index("SUPPRESSION OFF") < text.index("<h2")


def test_sections_computed_in_forked_workers_give_the_same_pack(sample, report):
    """The command line computes the sections in forked processes (analytics.report.parallel); same HTML."""
    parallel = build_report(sample, Settings(), workers=2)
    stamp = re.compile(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    strip_ids = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}')  # plotly div ids
    assert strip_ids.sub("", stamp.sub("", parallel)) == strip_ids.sub("", stamp.sub("", report))
