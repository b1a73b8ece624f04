"""A network's data: several files per kind (one per year or site) and Parquet, read as one export (issue 21)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analytics.outcomes.pipeline import analysis_json, upload_sources
from analytics.outcomes.settings import Settings
from analytics.sample import generate_clinic
from schemas.errors import UnusableExport
from schemas.reader import expand_paths
from schemas.validate import load_exports

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clinic(tmp_path_factory) -> dict[str, Path]:
    """A 400-patient sample clinic as CSV files, its sessions also split by year into two files, and every file as
    Parquet written from a typed read (numbers as numbers, dates as dates: what a database export holds)."""
    d = tmp_path_factory.mktemp("network")
    frames = generate_clinic(400, seed=7)
    paths: dict[str, Path] = {}
    for kind, frame in frames.items():
        paths[kind] = d / f"{kind}.csv"
        frame.to_csv(paths[kind], index=False)
        typed = pd.read_csv(paths[kind], dtype={"patient_id": str})
        for col in [c for c in typed.columns if c.endswith("_date")]:
            typed[col] = pd.to_datetime(typed[col]).dt.date
        paths[f"{kind}_parquet"] = d / f"{kind}.parquet"
        typed.to_parquet(paths[f"{kind}_parquet"], index=False)
    s = pd.read_csv(paths["sessions"], dtype=str, keep_default_na=False)
    early = s["session_date"] < "2025-07-01"
    assert 0 < early.sum() < len(s)
    paths["s_early"], paths["s_late"] = d / "sessions_2024_25.csv", d / "sessions_2025_26.csv"
    s[early].to_csv(paths["s_early"], index=False)
    s[~early].to_csv(paths["s_late"], index=False)
    return paths


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.drop(columns="line").sort_values(keys, kind="stable").reset_index(drop=True)


def test_two_sessions_files_split_by_year_give_the_same_analysis_as_one(clinic):
    one = load_exports(clinic["sessions"], clinic["followups"], clinic["patients"])
    two = load_exports([clinic["s_early"], clinic["s_late"]], clinic["followups"], clinic["patients"])
    assert two.files == one.files and two.n_patients == one.n_patients == 400
    pd.testing.assert_frame_equal(_sorted(two.sessions, ["patient_id", "session_date", "session_type"]),
                                  _sorted(one.sessions, ["patient_id", "session_date", "session_type"]))
    a, _ = analysis_json(one, Settings())
    b, _ = analysis_json(two, Settings())
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    assert a["trajectories"]["phq9"]["n_obs"] > 2000 and a["survival"]["groups"][0]["km"]  # a real analysis


def test_a_parquet_export_equals_its_csv(clinic):
    csv = load_exports(clinic["sessions"], clinic["followups"], clinic["patients"])
    pq = load_exports(clinic["sessions_parquet"], clinic["followups_parquet"],
                      clinic["patients_parquet"].read_bytes())  # bytes, as an upload gives them
    for kind in ("sessions", "followups", "patients"):
        pd.testing.assert_frame_equal(getattr(pq, kind), getattr(csv, kind))
    assert pq.files == csv.files
    assert any("read as Parquet" in n for n in pq.notes)


def test_a_bad_value_in_parquet_is_set_aside_with_the_line_of_its_csv(clinic, tmp_path):
    s = pd.read_parquet(clinic["sessions_parquet"])
    s.loc[5, "phq9"] = 31.0
    s.to_parquet(tmp_path / "s.parquet", index=False)
    s.to_csv(tmp_path / "s.csv", index=False)
    pq = load_exports(tmp_path / "s.parquet", clinic["followups"])
    csv = load_exports(tmp_path / "s.csv", clinic["followups"])
    got = pq.issues[pq.issues["file"] == "s.parquet"]
    assert got[["line", "column", "value"]].values.tolist() == [[7, "phq9", "31"]]
    assert csv.issues[["line", "column", "reason"]].equals(pq.issues[["line", "column", "reason"]])


@pytest.mark.parametrize("dictionary", [False, True])  # plain text, and text stored as a dictionary (categories)
def test_a_nul_byte_in_a_parquet_text_column_is_set_aside_as_in_a_csv(clinic, tmp_path, dictionary):
    """Only text columns are searched for NUL (numbers and dates written as text hold none): text still is."""
    s = pd.read_parquet(clinic["sessions_parquet"])
    s["patient_id"] = s["patient_id"].astype(str)
    s.loc[5, "patient_id"] = "00\x0012"
    if dictionary:
        s["patient_id"] = s["patient_id"].astype("category")
    s.to_parquet(tmp_path / "s.parquet", index=False)
    got = load_exports(tmp_path / "s.parquet", clinic["followups"])
    nul = got.issues[got.issues["reason"].str.contains("NUL character")]
    assert nul[["file", "line", "column", "value"]].values.tolist() == [["s.parquet", 7, "patient_id", "00\u240012"]]
    assert not got.sessions["patient_id"].str.contains("\x00", regex=False).any()


def test_each_issue_names_its_own_file_and_line_and_a_duplicate_names_the_other_file(clinic, tmp_path):
    early = pd.read_csv(clinic["s_early"], dtype=str, keep_default_na=False)
    late = pd.read_csv(clinic["s_late"], dtype=str, keep_default_na=False)
    late = pd.concat([late.iloc[:3], early.iloc[[4]], late.iloc[3:]], ignore_index=True)  # a repeat of early line 6
    late.loc[1, "phq9"] = "31"
    late.to_csv(tmp_path / "late.csv", index=False)
    data = load_exports([clinic["s_early"], tmp_path / "late.csv"], clinic["followups"])
    issues = data.issues[data.issues["file"].isin(["late.csv", "sessions_2024_25.csv"])]
    assert issues[["file", "line", "column"]].values.tolist() == [["late.csv", 3, "phq9"], ["late.csv", 5, "patient_id"]]
    assert issues["reason"].iloc[1] == "exact duplicate of line 6 of sessions_2024_25.csv; remove the repeated row"
    assert data.files["sessions"].rows == len(early) + len(late)
    assert data.files["sessions"].quarantined == 2


def test_a_second_file_with_other_columns_is_refused_with_a_sentence(clinic, tmp_path):
    late = pd.read_csv(clinic["s_late"], dtype=str, keep_default_na=False).drop(columns=["gad7"])
    late.to_csv(tmp_path / "sessions_2026.csv", index=False)
    with pytest.raises(UnusableExport) as err:
        load_exports([clinic["s_early"], tmp_path / "sessions_2026.csv"], clinic["followups"])
    assert str(err.value) == (
        "sessions_2026.csv does not have the same columns as sessions_2024_25.csv, the first sessions file (it has "
        "no 'gad7'). Files of one kind are read as one export, so they must have the same columns: export them "
        "with the same layout (or mapping), or load them separately.")


def test_files_of_one_name_in_two_folders_are_named_by_their_paths(clinic, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    s = pd.read_csv(clinic["sessions"], dtype=str, keep_default_na=False)
    s.iloc[:100].to_csv(tmp_path / "a" / "sessions.csv", index=False)
    bad = s.iloc[100:].copy()
    bad.iloc[0, bad.columns.get_loc("session_type")] = "massage"
    bad.to_csv(tmp_path / "b" / "sessions.csv", index=False)
    data = load_exports([tmp_path / "a" / "sessions.csv", tmp_path / "b" / "sessions.csv"], clinic["followups"])
    row = data.issues[data.issues["column"] == "session_type"].iloc[0]
    assert (row["file"], row["line"]) == (str(tmp_path / "b" / "sessions.csv"), 2)


def test_a_folder_or_a_pattern_names_its_files_in_order(clinic, tmp_path):
    assert expand_paths([str(clinic["s_early"].parent / "sessions_20*.csv")], kind="sessions") == \
        [clinic["s_early"], clinic["s_late"]]
    (tmp_path / "x").mkdir()
    with pytest.raises(UnusableExport, match=r"holds no export file"):
        expand_paths([tmp_path / "x"], kind="sessions")
    with pytest.raises(UnusableExport, match=r"No file matches .*nothing_\*\.csv \(given for followups\)"):
        expand_paths([str(tmp_path / "nothing_*.csv")], kind="followups")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analytics.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_the_command_line_reads_repeated_options_and_patterns_with_the_documented_json(clinic):
    one = _cli("validate", "--sessions", str(clinic["sessions"]), "--followups", str(clinic["followups"]), "--json")
    two = _cli("validate", "--sessions", str(clinic["s_early"]), "--sessions", str(clinic["s_late"]),
               "--followups", str(clinic["followups_parquet"]), "--json")
    pattern = _cli("validate", "--sessions", str(clinic["s_early"].parent / "sessions_20*.csv"),
                   "--followups", str(clinic["followups"]), "--json")
    assert one.returncode == two.returncode == pattern.returncode == 0, two.stderr + pattern.stderr
    assert json.loads(one.stdout) == json.loads(two.stdout) == json.loads(pattern.stdout)
    assert set(json.loads(two.stdout)) == {"files", "patients", "issues"}


def test_the_command_line_refuses_a_mismatched_file_with_exit_2(clinic, tmp_path):
    s = pd.read_csv(clinic["s_late"], dtype=str, keep_default_na=False).rename(columns={"phq9": "phq"})
    s.to_csv(tmp_path / "odd.csv", index=False)
    out = _cli("validate", "--sessions", str(clinic["s_early"]), "--sessions", str(tmp_path / "odd.csv"),
               "--followups", str(clinic["followups"]))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("kap-outcomes: odd.csv does not have the same columns as sessions_2024_25.csv")
    assert "it has no 'phq9'" in out.stderr and "Traceback" not in out.stderr


class _Upload:
    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def test_uploads_of_several_files_keep_one_file_per_kind_stored_as_before():
    sources, names, stored = upload_sources({"sessions": [_Upload("a.csv", b"1"), _Upload("b.parquet", b"2")],
                                             "followups": [_Upload("f.csv", b"3")], "patients": []})
    assert sources == {"sessions": [b"1", b"2"], "followups": [b"3"]}
    assert names == {"sessions": ["a.csv", "b.parquet"], "followups": ["f.csv"]}
    assert stored == {"sessions 1": b"1", "sessions 2": b"2", "followups": b"3"}


def test_the_data_page_loads_two_sessions_files_and_a_parquet_followups_file(clinic):
    from streamlit.testing.v1 import AppTest

    s = (b"patient_id,session_date,session_type,route,phq9\n00123,2025-01-01,assessment,,20\n"
         b"00123,2025-01-03,ketamine,iv,\n")
    s2 = b"patient_id,session_date,session_type,route,phq9\n00124,2025-01-04,ketamine,im,18\n00124,2025-01-05,bath,,\n"
    f = pd.DataFrame({"patient_id": ["00123", "00124"], "assessment_date": ["2025-02-03", "2025-02-04"],
                      "days_abstinent": [30, 30]}).to_parquet(index=False)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/data.py").run()
    at.file_uploader(key="up_sessions").set_value([("s_2025a.csv", s, "text/csv"), ("s_2025b.csv", s2, "text/csv")])
    at.file_uploader(key="up_followups").set_value(("followups.parquet", f, "application/octet-stream"))
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["source"] == "upload"
    assert {m.label: m.value for m in at.metric}["sessions.csv rows read"] == "4"
    issues = at.dataframe[1].value
    assert issues[["file", "line", "column"]].values.tolist() == [["s_2025b.csv", 3, "session_type"]]


def test_line_feeds_counted_in_slices_equal_bytes_count():
    """The common case counts a file's line feeds with NumPy in slices (issue 21): equal to ``bytes.count`` for any
    start and end, also where a slice boundary falls next to a line feed."""
    import numpy as np

    from schemas import reader

    rng = np.random.default_rng(4)
    data = bytes(rng.choice(np.frombuffer(b"ab,\n\r", dtype=np.uint8), size=(1 << 24) + 4099))
    for start, end in [(0, len(data)), (3, len(data) - 2), ((1 << 24) - 1, (1 << 24) + 1), (10, 10), (0, 1 << 24)]:
        assert reader._line_feeds(data, start, end) == data.count(b"\n", start, end)


def test_footer_rows_found_through_the_first_byte_prefilter_equal_the_plain_expression():
    """A report's total rows are matched only on values whose first byte can start a match (issue 21: 15 M ids are
    not run through the expression). On tricky values the result equals the expression run on every value."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from schemas import reader

    values = ["Total", "  total: 42", "Grand total", "SUB-TOTAL", "subtotals", "End of report", "record count 9",
              "Row Count", "\u017fubtotal", "\tTOTAL", "0001", "P-17", "totally", "", None, "ſ", "Ünit total",
              "R2", "grand", "x total", "12 Total", "end of file", "Élan"] * 3
    chunked = pa.chunked_array([pa.array(values[:10], pa.large_string()), pa.array([], pa.large_string()),
                                pa.array(values[10:], pa.large_string())])
    plain = np.asarray(pc.fill_null(pc.match_substring_regex(chunked, reader._FOOTER_ARROW), False)
                       .to_numpy(zero_copy_only=False), dtype=bool)
    maybe = reader._may_be_footer(chunked)
    assert len(maybe) == len(values) and plain.sum() == 3 * 11
    assert not (plain & ~maybe).any()  # every footer is a candidate
    assert not maybe[[i for i, v in enumerate(values) if v in ("0001", "P-17", "12 Total")]].any()
    assert (reader._may_be_footer(pa.array(values, pa.string())) == maybe).all()  # 32-bit offsets: the same
    if hasattr(pa, "string_view"):  # a layout without one offsets buffer: every value goes to the expression
        assert reader._may_be_footer(pa.array(values, pa.string_view())).all()
    body = pd.DataFrame({0: pd.array(values, dtype="str"), 1: pd.array(["1"] * len(values), dtype="str"),
                         "__line": range(2, len(values) + 2)})
    _, _, footers = reader._drop_non_records(body, 2)
    assert [line for line, _ in footers] == [i + 2 for i in np.flatnonzero(plain)]


def test_parquet_columns_converted_in_threads_equal_one_after_another(clinic, tmp_path, monkeypatch):
    """A large Parquet file's columns are turned into text in threads (each through its own reader, the bytes of an
    upload too): the same rows, issues and NUL finding as one column after another."""
    import schemas.arrow

    s = pd.read_parquet(clinic["sessions_parquet"])
    s["patient_id"] = s["patient_id"].astype(str)
    s.loc[5, "patient_id"] = "00\x0012"
    s["route"] = s["route"].astype(object)
    s.loc[8, "route"] = "  NA "  # a missing token, padded
    s.loc[9, "phq9"] = 31.0
    s.to_parquet(tmp_path / "s.parquet", index=False)
    data = (tmp_path / "s.parquet").read_bytes()
    got = {}
    for mode, rows in (("sequential", 10**12), ("threads", 0)):
        monkeypatch.setattr(schemas.arrow, "THREADS_FROM_ROWS", rows)
        got[mode] = [load_exports(tmp_path / "s.parquet", clinic["followups"]),
                     load_exports(data, clinic["followups"], names={"sessions": "s.parquet"})]
    for one, other in zip(got["sequential"], got["threads"]):
        pd.testing.assert_frame_equal(one.sessions, other.sessions)
        pd.testing.assert_frame_equal(one.issues, other.issues)
    issues = got["threads"][1].issues
    mine = issues[issues["file"] == "s.parquet"].sort_values("line")
    # the NUL, the padded NA read as missing (a ketamine session then lacks its route), the PHQ-9 of 31
    assert mine[["line", "column"]].values.tolist() == [[7, "patient_id"], [10, "route"], [11, "phq9"]]
