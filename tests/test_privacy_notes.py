"""Counts written into sentences (method notes, exclusions, "why no figure" reasons) follow the small-cell rule.

The analytics mark a count where they write it (``privacy.note_n``/``note_of``); pages, the report and the CLI
render it. Here a small clinic's meeting pack is read like a person reads it: every number followed by a word for
people, events or rows must not be 1–10 with suppression on, and no raw marker may reach the page.
"""

from __future__ import annotations

import html
import re

import pytest

from analytics.outcomes.settings import Settings
from analytics.privacy.counts import note_n, note_of
from analytics.privacy.suppression import render_note, render_notes
from analytics.report.pack import build_report
from analytics.sample import generate_clinic
from schemas.frames import ValidatedExports

pytestmark = pytest.mark.xdist_group("privacy_notes")  # one worker builds the module's fixtures (seconds each), not both

# a count as a reader recognises one: "7 patient(s)", "3 of 40 patients", "(got 4)", "4 event(s)", "n = 6"
NOUNS = (r"(?:patients?(?:\(s\))?|responders|events?(?:\(s\))?|follow-ups?(?:\(s\))?|follow-up rows|scores|"
         r"lost|abstinent|more recent|not reached|eligible|windows)")
# thresholds ("fewer than 10 patients", "at least 2 patients") are rules, not counts
COUNT = re.compile(rf"(?<![\d.,–-])(?<!than )(?<!least )(\d[\d,]*)(?: of (\d[\d,]*))? {NOUNS}"
                   r"|\(got (\d+)|\bn = (\d+)")


def counts_read(text: str) -> list[int]:
    out = []
    for m in COUNT.finditer(text):
        out += [int(g.replace(",", "")) for g in m.groups() if g]
    return out


def sentences(report: str) -> list[str]:
    """Notes, paragraphs and table cells of the pack as text."""
    parts = re.findall(r"<p[^>]*>(.*?)</p>", report, flags=re.DOTALL)
    parts += re.findall(r"<td[^>]*>(.*?)</td>", report, flags=re.DOTALL)
    return [html.unescape(re.sub(r"<[^>]+>", " ", p)) for p in parts]


@pytest.fixture(scope="module")
def small_clinic():
    frames = generate_clinic(120, seed=3)
    return ValidatedExports.from_frames(frames["sessions"], frames["followups"], frames["patients"])


@pytest.fixture(scope="module")
def packs(small_clinic):
    return {"on": build_report(small_clinic, Settings()), "off": build_report(small_clinic, Settings(suppress=False))}


def test_marked_counts_render_masked_formatted_or_with_their_complement_protected():
    note = f"{note_n(7)} left out; {note_n(1234)} kept; {note_n(0)} missing; {note_of(45, 50)}; {note_of(45, 80)}"
    assert render_note(note) == "<11 left out; 1,234 kept; 0 missing; * of 50; 45 of 80"
    assert render_note(note, enabled=False) == "7 left out; 1,234 kept; 0 missing; 45 of 50; 45 of 80"
    assert render_note(f"{note_n(15)} patients", min_cell=20) == "<20 patients"
    assert render_notes(("no counts here", f"{note_n(3.0)} events")) == ("no counts here", "<11 events")


def test_no_marker_reaches_the_pack(packs):
    for name, text in packs.items():
        assert "\u27e6" not in text and "\u27e7" not in text, name


def test_the_unsuppressed_pack_prints_small_counts_in_its_sentences(packs):
    """The reader below is able to find small counts (so the next test can fail)."""
    small = [(n, s) for s in sentences(packs["off"]) for n in counts_read(s) if 1 <= n <= 10]
    assert small, "the reader found no count from 1 to 10 in the unsuppressed pack of a 120-patient clinic"


def test_no_sentence_of_the_shared_pack_prints_a_count_from_1_to_10(packs):
    small = [(n, s[:160]) for s in sentences(packs["on"]) for n in counts_read(s) if 1 <= n <= 10]
    assert not small, small


PAGES = ["overview", "survival", "trajectories", "safety", "subgroups", "benchmarks", "attention"]


def _page_text(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [w.value for w in at.warning]
    parts += [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", PAGES)
def test_page_sentences_of_a_small_clinic_show_no_marker_and_no_count_from_1_to_10(small_clinic, page):
    from signed_in import ROOT
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=240)
    at.session_state["exports"], at.session_state["source"] = small_clinic, "upload"
    at.session_state["surv_sens_open"] = True  # the survival page's sensitivity expander: its notes are read too
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    text = _page_text(at)
    assert "\u27e6" not in text
    small = [n for line in text.splitlines() for n in counts_read(line) if 1 <= n <= 10]
    assert not small, (small, [line for line in text.splitlines() if any(str(n) in line for n in small)][:5])
