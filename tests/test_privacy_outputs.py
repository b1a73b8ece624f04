"""No count of 1–10 can be worked out from the outputs a clinic shares (issue #20).

A small clinic (a sample clinic plus a program of 4 and one of 3 patients, and a few rows set aside) goes through
the meeting pack and ``kap-outcomes analyze --json`` (with and without ``--by program``). The outputs are read as
a reader reads them: every shown count, and every count that follows from shown ones along a margin they share
(a total minus its shown parts, the difference of two flow steps, a group's patients minus its events), must be
0 or at least 11.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analytics.outcomes import qi
from analytics.outcomes.cohort import build_cohort
from analytics.outcomes.settings import Settings
from analytics.report.pack import build_report
from analytics.sample import generate_clinic
from schemas.validate import load_exports

pytestmark = pytest.mark.xdist_group("privacy_outputs")  # one worker builds the module's fixtures (seconds each), not both

ROOT = Path(__file__).resolve().parents[1]
SMALL_PROGRAMS = {"peer support": 4, "residential": 3}
# table headers that hold counts (of patients, rows, events or problems)
COUNT_HEADERS = {"n", "lost", "rows read", "accepted", "set aside", "problems", "patients", "returned to use",
                 "patients with a score", "with readings"}


def small(v: float | None) -> bool:
    return v is not None and 1 <= v <= 10


# ---- the clinic ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clinic(tmp_path_factory) -> dict[str, Path]:
    frames = generate_clinic(160, seed=5)
    pts = frames["patients"].copy()
    with_fu = [i for i in pts["patient_id"] if i in set(frames["followups"]["patient_id"])]
    start = 0
    for program, n in SMALL_PROGRAMS.items():
        pts.loc[pts["patient_id"].isin(with_fu[start:start + n]), "program"] = program
        start += n
    sessions = frames["sessions"].copy().astype({"route": "object"})
    sessions.loc[sessions.index[:3], "route"] = "by owl"  # three rows set aside
    out = tmp_path_factory.mktemp("clinic")
    paths = {k: out / f"{k}.csv" for k in ("sessions", "followups", "patients")}
    for k, frame in (("sessions", sessions), ("followups", frames["followups"]), ("patients", pts)):
        frame.to_csv(paths[k], index=False)
    return paths


def _inputs(paths: dict[str, Path]) -> list[str]:
    return [arg for k in ("sessions", "followups", "patients") for arg in (f"--{k}", str(paths[k]))]


@pytest.fixture(scope="module")
def data(clinic):
    return load_exports(clinic["sessions"], clinic["followups"], clinic["patients"])


@pytest.fixture(scope="module")
def flow(data):
    cohort = build_cohort(data, Settings())
    return qi.patient_flow(cohort, uploaded_rows=sum(r.rows for r in data.files.values()), quarantined=data.issues)


@pytest.fixture(scope="module")
def pack(data) -> list[pd.DataFrame]:
    return tables_of(build_report(data, Settings(), by="program"))


def analyze(paths: dict[str, Path], *extra: str) -> dict:
    """``kap-outcomes analyze … --json -`` as a user runs it."""
    out = subprocess.run([sys.executable, "-m", "analytics.cli", "analyze", *_inputs(paths), *extra, "--json", "-"],
                         check=False, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


# ---- reading the outputs ---------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def tables_of(report: str) -> list[pd.DataFrame]:
    """Every table of the pack as text cells."""
    out = []
    for head, body in re.findall(r"<table><thead><tr>(.*?)</tr></thead><tbody>(.*?)</tbody></table>", report,
                                 flags=re.DOTALL):
        cols = [_cell(c) for c in re.findall(r"<th>(.*?)</th>", head, flags=re.DOTALL)]
        rows = [[_cell(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.DOTALL)]
                for r in re.findall(r"<tr>(.*?)</tr>", body, flags=re.DOTALL)]
        out.append(pd.DataFrame(rows, columns=cols))
    return out


def number(text: str | None) -> float | None:
    """A shown count, or None when hidden ("<11", "*", "—")."""
    if text is None:
        return None
    t = str(text).replace(",", "").strip()
    return float(t) if re.fullmatch(r"-?\d+(\.\d+)?", t) else None


def table_with(tables: list[pd.DataFrame], *columns: str) -> pd.DataFrame:
    found = [t for t in tables if set(columns) <= set(t.columns)]
    assert found, f"no table with the columns {columns}"
    return found[0]


def derivable(parts: list[float | None], total: float | None, true_parts: list[float], true_total: float
              ) -> list[float]:
    """Counts a reader works out from one additive relation ``sum(parts) (+ rest) = total``."""
    if sum(true_parts) > true_total + 1e-9:  # overlapping parts (a row with several problems): no equation
        return []
    out = []
    if total is not None:
        out.append(total - sum(p for p in parts if p is not None))  # the hidden parts (and the rest) together
    hidden = [i for i, p in enumerate(parts) if p is None]
    exact = abs(sum(true_parts) - true_total) < 1e-9
    if total is None and not hidden and exact:
        out.append(sum(parts))  # type: ignore[arg-type]
    return out


def assert_safe(found: dict[str, list[float]]) -> None:
    bad = {where: [v for v in values if small(v)] for where, values in found.items()}
    assert not {k: v for k, v in bad.items() if v}, f"counts of 1–10 that can be worked out: {bad}"


# ---- the meeting pack ------------------------------------------------------------------------------------------

def test_no_count_from_1_to_10_is_shown_in_any_table_of_the_pack(pack):
    shown = {f"table {i} column {c!r}": [number(v) for v in t[c] if number(v) is not None]
             for i, t in enumerate(pack) for c in t.columns if c in COUNT_HEADERS}
    assert shown, "the pack has no count tables"
    assert_safe(shown)


def test_flow_tables_of_the_pack_give_no_small_loss_away_by_subtraction(pack, flow):
    steps = table_with(pack, "label", "n", "unit")
    losses = table_with(pack, "step", "reason", "n")
    shown_n = {s: number(v) for s, v in zip(flow.steps["step"], steps["n"])}
    shown_lost = ({s: number(v) for s, v in zip(flow.steps["step"], steps["lost"])} if "lost" in steps.columns
                  else {})
    true_n = dict(zip(flow.steps["step"], flow.steps["n"]))
    found: dict[str, list[float]] = {}
    for s, parent, unit in zip(flow.steps["step"], flow.steps["parent"], flow.steps["unit"]):
        if not parent or flow.steps.set_index("step").at[parent, "unit"] != unit:
            continue
        lost = shown_lost.get(s)
        found[f"{parent} → {s}"] = derivable([shown_n[s], lost], shown_n[parent],
                                              [true_n[s], true_n[parent] - true_n[s]], true_n[parent])
        if shown_n[s] is not None and shown_n[parent] is not None:  # two shown consecutive steps
            found[f"{parent} − {s}"] = [shown_n[parent] - shown_n[s]]
            lost = shown_n[parent] - shown_n[s]
        mine = losses[losses["step"] == s]
        true_reasons = flow.losses.loc[flow.losses["step"] == s, "n"].tolist()
        if len(mine):
            found[f"reasons of {s}"] = derivable([number(v) for v in mine["n"]], lost, true_reasons,
                                                 true_n[parent] - true_n[s])
    assert_safe(found)


def test_survival_groups_of_the_pack_give_no_small_group_away(pack, flow):
    groups = table_with(pack, "group", "patients", "returned to use")
    assert set(SMALL_PROGRAMS) <= set(groups["group"])
    n = [number(v) for v in groups["patients"]]
    events = [number(v) for v in groups["returned to use"]]
    total = number(table_with(pack, "label", "n", "unit").set_index("label")
                   .at["Analysed: time to return to use", "n"])
    true_total = float(flow.steps.set_index("step").at["analysed_survival", "n"])
    found = {"groups of the analysed patients": [total - sum(v for v in n if v is not None)]
             if total is not None else []}
    for g, a, b in zip(groups["group"], n, events):
        if a is not None and b is not None:
            found[f"{g}: patients − returned to use"] = [a - b]
    assert sum(v is None for v in n) >= 2 and true_total >= sum(v for v in n if v is not None)
    assert_safe(found)


def test_data_quality_table_of_the_pack_gives_no_small_count_of_rows_away(pack, data):
    dq = table_with(pack, "file", "rows read", "accepted", "set aside")
    assert any(r.quarantined for r in data.files.values())
    found = {}
    for rec in dq.itertuples(index=False):
        rows, acc, aside = number(rec[1]), number(rec[2]), number(rec[3])
        found[str(rec[0])] = derivable([acc, aside], rows, [0, 0], 0) if rows is not None else (
            [acc + aside] if acc is not None and aside is not None else [])
    assert_safe(found)


# ---- kap-outcomes analyze --json -------------------------------------------------------------------------------

def _json_margins(result: dict) -> dict[str, list[float]]:
    c = result["cohort"]
    found: dict[str, list[float]] = {"cohort": [v for v in c.values() if v is not None]}
    if c["with_followup"] is not None:
        found["with follow-up = events + censored"] = derivable([c["events"], c["censored"]], c["with_followup"],
                                                                [0, 0], 0)
        if c["patients"] is not None:
            found["patients − with follow-up"] = [c["patients"] - c["with_followup"]]
    groups = result["survival"]["groups"]
    n = [g["n"] for g in groups]
    ev = [g["events"] for g in groups]
    found["group n"] = [v for v in n if v is not None]
    found["group events"] = [v for v in ev if v is not None]
    if c["with_followup"] is not None:
        found["with follow-up − group n"] = [c["with_followup"] - sum(v for v in n if v is not None)]
    if c["events"] is not None:
        found["events − group events"] = [c["events"] - sum(v for v in ev if v is not None)]
    for g in groups:
        if g["n"] is not None and g["events"] is not None:
            found[f"{g['group']}: n − events"] = [g["n"] - g["events"]]
        chain = [g["n"], *[p["at_risk"] for p in g["km"]]]
        shown = [v for v in chain if v is not None]
        found[f"{g['group']}: at risk"] = shown + [a - b for a, b in itertools.pairwise(shown)]
        if g["n"] is None:
            found[f"{g['group']}: hidden n at risk"] = [p["at_risk"] for p in g["km"] if p["at_risk"] is not None]
    return found


def test_analyze_json_by_program_gives_no_small_group_away(clinic):
    result = analyze(clinic, "--by", "program")
    names = {g["group"]: g for g in result["survival"]["groups"]}
    assert set(SMALL_PROGRAMS) <= set(names)
    assert all(names[p]["n"] is None for p in SMALL_PROGRAMS)
    found = _json_margins(result)
    # a group whose count is hidden shows no number at risk either (the first would be its size)
    assert_safe(found)
    assert not [v for k, v in found.items() if k.endswith("hidden n at risk") and v]


def test_analyze_json_without_groups_gives_no_small_count_away(clinic):
    result = analyze(clinic)
    assert [g["group"] for g in result["survival"]["groups"]] == ["all"]
    assert_safe(_json_margins(result))


def test_analyze_json_without_suppression_shows_the_small_groups(clinic):
    result = analyze(clinic, "--by", "program", "--no-suppress")
    names = {g["group"]: g["n"] for g in result["survival"]["groups"]}
    assert {p: names[p] for p in SMALL_PROGRAMS} == SMALL_PROGRAMS


# ---- sentences, the attention list, the terminal, mapping files ------------------------------------------------

def test_a_size_bound_below_the_threshold_is_widened_in_shared_sentences():
    from analytics.privacy.counts import note_below
    from analytics.privacy.suppression import render_note

    note = f"Left out of the comparison (fewer than {note_below(5)} patients each): residential."
    assert render_note(note) == "Left out of the comparison (fewer than 11 patients each): residential."
    assert "fewer than 5 patients" in render_note(note, enabled=False)
    assert "fewer than 20" in render_note(f"fewer than {note_below(20)}")


def test_needing_attention_counts_follow_the_small_cell_rule():
    from analytics.outcomes.attention import attention_counts

    table = pd.DataFrame({"patient_id": [f"p{i}" for i in range(30)],
                          "reason": ["followup_missed"] * 24 + ["safety_flag"] * 6})
    total, counts = attention_counts(table)
    shown = dict(zip(counts["reason"], counts["patients"]))
    assert shown["safety_flag"] == "<11"
    assert shown["followup_missed"] == "*" or total == "*"  # 30 − 24 would give the 6 away
    total_off, counts_off = attention_counts(table, enabled=False)
    assert total_off == "30" and dict(zip(counts_off["reason"], counts_off["patients"]))["safety_flag"] == "6"


def test_control_characters_from_the_data_are_escaped_in_cli_text_output(tmp_path):
    frames = generate_clinic(30, seed=2)
    sessions = frames["sessions"].copy().astype({"route": "object"})
    sessions.loc[sessions.index[0], "route"] = "iv\x1b[2J\x07owned\u202e"
    paths = {k: tmp_path / f"{k}.csv" for k in ("sessions", "followups")}
    sessions.to_csv(paths["sessions"], index=False)
    frames["followups"].to_csv(paths["followups"], index=False)
    out = subprocess.run([sys.executable, "-m", "analytics.cli", "validate", "--sessions", str(paths["sessions"]),
                          "--followups", str(paths["followups"])], check=False, capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == 1, out.stderr
    for stream in (out.stdout, out.stderr):
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", stream)
    assert "\\x1b[2J\\x07owned\\u202e" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "analytics.cli", "validate", "--sessions", "no\x1b[2Jsuch.csv",
                          "--followups", str(paths["followups"])], check=False, capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert bad.returncode == 2 and "\x1b" not in bad.stderr and "\\x1b[2J" in bad.stderr


HOSTILE_MAPPINGS = {
    "deeply nested": "a = " + "[" * 3000 + "]" * 3000,
    "a list where a table belongs": "sessions = [1, 2]",
    "a number where text belongs": "[sessions]\ncolumns = {visit_date = 3}",
    "values of the wrong shape": "[sessions.values]\nroute = 'iv'",
    "huge": "# " + "x" * 1_100_000,
}


@pytest.mark.parametrize("text", list(HOSTILE_MAPPINGS.values()), ids=list(HOSTILE_MAPPINGS))
def test_a_hostile_mapping_text_is_refused_with_one_sentence(text):
    from schemas.errors import UnusableExport
    from schemas.presets import loads_mapping

    with pytest.raises(UnusableExport) as err:
        loads_mapping(text, source="upload.toml")
    assert "\n" not in str(err.value) and "upload.toml" in str(err.value)


def test_a_hostile_mapping_file_exits_2_with_a_sentence_not_an_internal_error(tmp_path):
    path = tmp_path / "mapping.toml"
    path.write_text("[sessions]\ncolumns = ['visit_date']\n" + "x = " + "[" * 3000 + "]" * 3000, encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "analytics.cli", "validate", "--sessions", "s.csv", "--followups",
                          "f.csv", "--mapping", str(path)], check=False, capture_output=True, text=True, timeout=600,
                         cwd=ROOT)
    assert out.returncode == 2
    assert "internal error" not in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "mapping.toml" in out.stderr
