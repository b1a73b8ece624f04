"""Small-cell suppression (analytics/privacy/) and safe CSV export (analytics/privacy/safe_export.py)."""

from __future__ import annotations

import csv
import io
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from analytics import formatting
from analytics.privacy.counts import OFF_NOTE, is_small, mask_text, rate_is_safe
from analytics.privacy.safe_export import neutralize_frame, to_safe_csv
from analytics.privacy.suppression import SuppressedTable, suppress_counts, suppress_km

SMALL = range(1, 11)


# ------------------------------------------------------------------------------------------------
# an independent attacker: equations of a table with margins, line check and LP bounds
# ------------------------------------------------------------------------------------------------

def _attack(full: np.ndarray, hidden: np.ndarray, row_rest: np.ndarray, col_rest: np.ndarray,
            corner_rest: float) -> list[str]:
    """Try to recover small hidden values of an (R+1)x(C+1) table whose last row/column are totals.

    ``row_rest[r]`` is ``total - sum(parts)`` of row r (a category not shown), ``col_rest[c]`` likewise for
    columns (rows not shown) and ``corner_rest`` for the rest-column. Unknowns: hidden cells and every rest.
    Returns a list of violations (empty = safe).
    """
    R, C = full.shape[0] - 1, full.shape[1] - 1
    problems = []
    # 1. nothing from 1 to 10 visible
    for r in range(R + 1):
        for c in range(C + 1):
            if not hidden[r, c] and full[r, c] in SMALL:
                problems.append(f"visible small cell {full[r, c]} at {(r, c)}")
    # unknown variables: hidden cells, row rests, column rests, corner
    var: dict[tuple, int] = {}
    for r in range(R + 1):
        for c in range(C + 1):
            if hidden[r, c]:
                var[("cell", r, c)] = len(var)
    for r in range(R + 1):
        if row_rest[r]:
            var[("rrest", r)] = len(var)
    for c in range(C + 1):
        if col_rest[c]:
            var[("crest", c)] = len(var)
    if corner_rest:
        var[("corner",)] = len(var)
    value = {k: (full[k[1], k[2]] if k[0] == "cell" else row_rest[k[1]] if k[0] == "rrest"
                 else col_rest[k[1]] if k[0] == "crest" else corner_rest) for k in var}
    A, b, lines = [], [], []
    # rows: sum_c x[r,c] + rrest[r] - x[r,C] = 0
    for r in range(R + 1):
        cells = [(r, c, 1.0) for c in range(C)] + [(r, C, -1.0)]
        extra = [(("rrest", r), 1.0)] if row_rest[r] else []
        lines.append((cells, extra))
    for c in range(C + 1):
        cells = [(r, c, 1.0) for r in range(R)] + [(R, c, -1.0)]
        extra = [(("crest", c), 1.0)] if col_rest[c] else []
        lines.append((cells, extra))
    # the rest-column adds up too: sum_r rrest[r] + corner = rrest[R] (a reader who knows corner = 0 uses it)
    rest_line = [(("rrest", r), 1.0) for r in range(R) if row_rest[r]] + (
        [(("corner",), 1.0)] if corner_rest else []) + ([(("rrest", R), -1.0)] if row_rest[R] else [])
    for cells, extra in lines:
        row = np.zeros(len(var))
        rhs = 0.0
        unknown = []
        for r, c, coef in cells:
            if hidden[r, c]:
                row[var[("cell", r, c)]] += coef
                unknown.append(("cell", r, c))
            else:
                rhs -= coef * full[r, c]
        for key, coef in extra:
            row[var[key]] += coef
            unknown.append(key)
        A.append(row)
        b.append(rhs)
        # 2. "subtract visible cells from a visible total"
        if len(unknown) == 1:
            k = unknown[0]
            if k[0] == "cell" or value[k] in SMALL:
                problems.append(f"{k} (= {value[k]}) follows from one line")
    if rest_line:
        row = np.zeros(len(var))
        for key, coef in rest_line:
            row[var[key]] += coef
        A.append(row)
        b.append(0.0)
    if not var:
        return problems
    A_eq, b_eq = np.vstack(A), np.asarray(b)
    # 3. LP bounds: no small value is pinned by all equations together with non-negativity
    for k, j in var.items():
        if value[k] not in SMALL:
            continue
        obj = np.zeros(len(var))
        obj[j] = 1.0
        lo = linprog(obj, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        hi = linprog(-obj, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        assert lo.status == 0, "the true table must be feasible"
        upper = np.inf if hi.status == 3 else -hi.fun
        if upper - lo.fun < 1 - 1e-6:
            problems.append(f"{k} (= {value[k]}) pinned to [{lo.fun:g}, {upper:g}]")
    return problems


def _table_with_margins(cells: np.ndarray, row_rest: np.ndarray, col_rest: np.ndarray,
                        corner: int) -> tuple[pd.DataFrame, np.ndarray]:
    R, C = cells.shape
    cols = [f"c{j}" for j in range(C)]
    full = np.zeros((R + 1, C + 1), dtype=int)
    full[:R, :C] = cells
    full[:R, C] = cells.sum(axis=1) + row_rest[:R]
    full[R, :C] = cells.sum(axis=0) + col_rest[:C]
    full[R, C] = full[R, :C].sum() + row_rest[R]
    # consistency of the rest-column: total row's rest = sum of row rests + corner
    assert full[R, C] == full[:R, C].sum() + col_rest[C]
    df = pd.DataFrame(full, columns=[*cols, "n"])
    df.insert(0, "group", [f"g{i}" for i in range(R)] + ["All"])
    return df, full


count = st.one_of(st.just(0), st.integers(1, 10), st.integers(11, 120))


@st.composite
def tables(draw):
    R = draw(st.integers(1, 5))
    C = draw(st.integers(1, 4))
    cells = np.array(draw(st.lists(st.lists(count, min_size=C, max_size=C), min_size=R, max_size=R)))
    with_rest = draw(st.booleans())
    row_rest = np.array(draw(st.lists(count, min_size=R, max_size=R))) if with_rest else np.zeros(R, dtype=int)
    col_rest = np.array(draw(st.lists(count, min_size=C, max_size=C))) if with_rest else np.zeros(C, dtype=int)
    corner = draw(count) if with_rest else 0
    # the rests of the total row and total column follow from the others
    row_rest = np.append(row_rest, row_rest.sum() + corner)
    col_rest = np.append(col_rest, col_rest.sum() + corner)
    return cells, row_rest, col_rest, corner


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_no_small_count_is_visible_or_derivable_from_totals(spec):
    cells, row_rest, col_rest, corner = spec
    df, full = _table_with_margins(cells, row_rest, col_rest, corner)
    cols = [c for c in df.columns if c.startswith("c")]
    out = suppress_counts(df, count_columns=cols, total_columns=["n"], margin=("group", "All"))
    hidden = out.mask[[*cols, "n"]].to_numpy()
    # the table itself: hidden cells are missing, shown cells unchanged
    shown = out.table[[*cols, "n"]]
    assert shown.isna().to_numpy().tolist() == hidden.tolist()
    assert (shown.to_numpy()[~hidden].astype(int) == full[~hidden]).all()
    assert _attack(full, hidden, row_rest, col_rest, corner) == []


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=6))
def test_percentage_is_hidden_with_its_counts_and_never_reveals_a_small_complement(rows):
    df = pd.DataFrame(rows, columns=["relapsed", "censored"])
    df["n"] = df.relapsed + df.censored
    df["pct"] = (df.relapsed / df.n).where(df.n > 0)
    out = suppress_counts(df, count_columns=["relapsed"], total_columns=["n"],
                          rate_columns={"pct": ("relapsed", "n")})
    t = out.table
    for r in range(len(df)):
        if pd.notna(t.at[r, "pct"]):
            num, den = t.at[r, "relapsed"], t.at[r, "n"]
            assert pd.notna(num) and pd.notna(den)
            assert not is_small(num) and not is_small(den) and not is_small(den - num)
        for c in ("relapsed", "n"):
            assert pd.isna(t.at[r, c]) or not is_small(t.at[r, c])


def test_zero_is_shown_and_counts_from_eleven_are_shown():
    df = pd.DataFrame({"group": ["a", "b"], "events": [0, 11], "n": [40, 30]})
    out = suppress_counts(df, count_columns=["events"], total_columns=["n"])
    assert out.table["events"].tolist() == [0, 11]
    assert out.n_suppressed == 0
    assert "nothing suppressed" in out.notes[0]


def test_single_small_cell_in_a_table_with_margins_hides_a_rectangle():
    df = pd.DataFrame({"program": ["A", "B", "C", "All"], "relapsed": [3, 40, 25, 68],
                       "censored": [20, 12, 30, 62]})
    df["n"] = df.relapsed + df.censored
    df["pct"] = df.relapsed / df.n
    out = suppress_counts(df, count_columns=["relapsed", "censored"], total_columns=["n"],
                          rate_columns={"pct": ("relapsed", "n")}, margin=("program", "All"))
    text = out.text()
    assert text["relapsed"].tolist() == ["<11", "40", "*", "68"]
    assert text["censored"].tolist() == ["*", "12", "*", "62"]
    assert text["n"].tolist() == ["23", "52", "55", "130"]  # totals stay visible: two unknowns per line
    assert out.mask["pct"].tolist() == [True, False, True, False]
    assert out.text(formatters={"pct": formatting.pct})["pct"].tolist() == ["*", "77%", "*", "52%"]
    assert (out.n_primary, out.n_complementary) == (1, 5)  # 3 complementary counts + 2 percentages
    assert out.table["relapsed"].dtype == "Int64"
    assert "1 count from 1 to 10 hidden" in out.notes[0]
    assert "complementary" in out.notes[0]


def test_ninety_percent_of_fifty_is_hidden_because_it_reveals_five():
    df = pd.DataFrame({"g": ["x", "y"], "events": [45, 30], "n": [50, 60]})
    df["pct"] = df.events / df.n
    out = suppress_counts(df, count_columns=["events"], total_columns=["n"], rate_columns={"pct": ("events", "n")})
    assert out.mask.loc[0, "events"] and out.mask.loc[0, "pct"]
    assert out.table.loc[1, "pct"] == 0.5
    assert out.n_derived_protected == 1


def test_two_blocks_of_hidden_cells_joined_by_one_cell_are_caught_by_the_audit():
    # Each line has >= 2 small cells, so the line rule alone is satisfied, but the cell (w, c) joins two
    # closed blocks and follows from the equations together (a bridge). The audit must hide one more cell.
    v = np.full((4, 4), 50)
    for r, c in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3), (0, 2)]:
        v[r, c] = 5
    df, full = _table_with_margins(v, np.zeros(5, dtype=int), np.zeros(5, dtype=int), 0)
    out = suppress_counts(df, count_columns=["c0", "c1", "c2", "c3"], total_columns=["n"],
                          margin=("group", "All"))
    hidden = out.mask[["c0", "c1", "c2", "c3", "n"]].to_numpy()
    assert out.n_primary == 9 and out.n_complementary == 1
    assert _attack(full, hidden, np.zeros(5), np.zeros(5), 0) == []
    # without that extra cell the small (w, c) would be pinned exactly
    only_primary = out.primary[["c0", "c1", "c2", "c3", "n"]].to_numpy()
    assert any("pinned" in p for p in _attack(full, only_primary, np.zeros(5), np.zeros(5), 0))


def test_blocks_split_by_a_column_each_add_up_to_their_own_margin():
    df = pd.DataFrame({"site": ["s1"] * 3 + ["s2"] * 3, "program": ["A", "B", "All"] * 2,
                       "n": [4, 30, 34, 20, 25, 45]})
    out = suppress_counts(df, count_columns=["n"], margin=("program", "All"), by=["site"])
    assert out.mask["n"].tolist() == [True, True, False, False, False, False]


def test_suppression_off_changes_nothing_and_says_internal_use_only():
    df = pd.DataFrame({"g": ["a"], "events": [3], "n": [5]})
    out = suppress_counts(df, count_columns=["events"], total_columns=["n"], enabled=False)
    pd.testing.assert_frame_equal(out.table, df)
    assert out.n_suppressed == 0 and not out.enabled
    assert out.notes == (OFF_NOTE.format(hi=10),)
    assert out.notes[0].startswith("Suppression OFF: internal use only")


def test_min_cell_is_a_setting():
    df = pd.DataFrame({"g": ["a", "b"], "n": [12, 30]})
    out = suppress_counts(df, count_columns=["n"], min_cell=20)
    assert out.mask["n"].tolist() == [True, False]
    assert out.text()["n"].tolist() == ["<20", "30"]


def test_totals_smaller_than_their_parts_are_refused():
    df = pd.DataFrame({"a": [20], "b": [30], "n": [40]})
    with pytest.raises(ValueError, match="more than the total"):
        suppress_counts(df, count_columns=["a", "b"], total_columns=["n"])


def test_single_numbers():
    assert [is_small(x) for x in (0, 1, 10, 11, None, float("nan"))] == [False, True, True, False, False, False]
    assert [mask_text(x) for x in (0, 7, 11, 1234, None)] == ["0", "<11", "11", "1,234", "—"]
    assert mask_text(7, enabled=False) == "7"
    assert not rate_is_safe(45, 50) and not rate_is_safe(5, 50) and rate_is_safe(30, 60)
    assert rate_is_safe(45, 50, complement=False)


# ------------------------------------------------------------------------------------------------
# Kaplan–Meier
# ------------------------------------------------------------------------------------------------

def _km_table(times: np.ndarray, events: np.ndarray, group: str) -> pd.DataFrame:
    df = pd.DataFrame({"t": times, "e": events})
    rows, n, s = [], len(df), 1.0
    for day, g in df.groupby("t"):
        d = int(g.e.sum())
        s *= 1 - d / n
        rows.append({"group": group, "day": int(day), "n_risk": n, "n_event": d, "n_censor": len(g) - d,
                     "estimate": s})
        n -= len(g)
    return pd.DataFrame(rows)


def _display_times(km: pd.DataFrame, every: int) -> pd.DataFrame:
    """Risk table at days 0, every, 2*every…: n at risk at the day, events/censored until the next one."""
    out = []
    for g, k in km.groupby("group"):
        n0 = int(k.n_risk.iloc[0])
        for start in range(0, int(k.day.max()) + 1, every):
            inside = k[(k.day >= start) & (k.day < start + every)]
            before = k[k.day < start]
            out.append({"group": g, "day": start,
                        "n_risk": n0 - int(before.n_event.sum() + before.n_censor.sum()),
                        "n_event": int(inside.n_event.sum()), "n_censor": int(inside.n_censor.sum())})
    return pd.DataFrame(out)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["coarsen", "truncate"]))
def test_km_table_never_shows_small_counts_or_a_small_step(seed, steps):
    rng = np.random.default_rng(seed)
    parts = [_km_table(rng.integers(1, 180, n), rng.random(n) < 0.6, g) for g, n in (("A", 45), ("B", 15))]
    km = pd.concat(parts, ignore_index=True)
    out = suppress_km(km, steps=steps)
    t, m = out.table, out.mask
    for c in ("n_risk", "n_event", "n_censor"):
        assert not t[c].dropna().between(1, 10).any()
    for g, rows in km.groupby("group"):
        shown = rows.index[~m.loc[rows.index, "estimate"]]
        assert (rows.loc[shown, "n_risk"] >= 11).all()  # no point in the tail
        at_risk = rows.loc[~m.loc[rows.index, "n_risk"], "n_risk"].to_numpy()
        assert not np.isin(np.diff(at_risk), [-k for k in SMALL]).any()
        if steps == "coarsen":  # each drawn drop pools at least 11 events
            ev = rows.n_event.cumsum()
            marks = [0] + [int(ev[i]) for i in shown]
            assert all(b - a >= 11 or b == a for a, b in pairwise(marks))
    # chain n_risk[k] = n_risk[k+1] + n_event[k] + n_censor[k]: never exactly one unknown
    for _g, rows in km.groupby("group"):
        ix = list(rows.index)
        for a, b in pairwise(ix):
            unknown = [m.at[a, "n_risk"], m.at[b, "n_risk"], m.at[a, "n_event"], m.at[a, "n_censor"]]
            assert sum(unknown) != 1


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["coarsen", "truncate"]))
def test_km_chart_mode_draws_the_same_points_and_shows_only_safe_numbers_at_risk_there(seed, steps):
    """counts_shown="drawn" (chart hover cards): the same drawn points as the full audit; numbers at risk only at
    drawn points, never 1–10, consecutive shown ones 0 or at least 11 apart; events and censorings never shown."""
    rng = np.random.default_rng(seed)
    parts = [_km_table(rng.integers(1, 180, n), rng.random(n) < 0.6, g) for g, n in (("A", 80), ("B", 25))]
    km = pd.concat(parts, ignore_index=True)
    full = suppress_km(km, steps=steps)
    chart = suppress_km(km, steps=steps, counts_shown="drawn")
    assert chart.mask["estimate"].equals(full.mask["estimate"])
    t, m = chart.table, chart.mask
    assert m["n_event"].all() and m["n_censor"].all() and t[["n_event", "n_censor"]].isna().all().all()
    assert (m["n_risk"] | ~m["estimate"]).all()  # a number at risk is shown only at a drawn point
    assert not t["n_risk"].dropna().between(1, 10).any()
    for _g, rows in km.groupby("group"):
        at_risk = rows.loc[~m.loc[rows.index, "n_risk"], "n_risk"].to_numpy()
        assert not np.isin(np.diff(at_risk), [-k for k in SMALL]).any()
    assert suppress_km(km, counts_shown="drawn", enabled=False).mask.to_numpy().sum() == 0


@pytest.mark.parametrize("cumulative", [False, True])
@pytest.mark.parametrize("seed", [7, 8, 9])
def test_km_display_time_risk_table_hides_small_counts_and_small_differences(seed, cumulative):
    rng = np.random.default_rng(seed)
    km = _km_table(rng.integers(1, 180, 60), rng.random(60) < 0.5, "A")
    risk = _display_times(km, 30)
    if cumulative:  # as SurvivalCurves.risk_table: events and censorings up to each day
        risk[["n_event", "n_censor"]] = risk[["n_event", "n_censor"]].cumsum()
    out = suppress_km(risk, cumulative=cumulative)
    cols = ["n_risk", "n_event", "n_censor"]
    hidden = out.mask[cols].to_numpy()
    small = risk[cols].isin(SMALL).to_numpy()
    assert (hidden | ~small).all() and small.any()
    # a reader subtracting shown numbers down a column never gets 1..10
    for j, c in enumerate(cols):
        if c != "n_risk" and not cumulative:
            continue
        shown = risk[c].to_numpy()[~hidden[:, j]]
        assert not np.isin(np.abs(np.diff(shown)), list(SMALL)).any(), (c, shown)
    if not cumulative:  # n_risk(next) = n_risk - n_event - n_censor: never exactly one unknown
        for k in range(len(risk) - 1):
            unknown = [hidden[k, 0], hidden[k + 1, 0], hidden[k, 1], hidden[k, 2]]
            assert sum(unknown) != 1
    assert (out.table[cols].isna().to_numpy() == hidden).all()
    assert any("at least 11 patients are at risk" in n for n in out.notes)


def test_km_suppression_off():
    km = _km_table(np.arange(1, 16), np.ones(15, dtype=bool), "A")
    out = suppress_km(km, enabled=False)
    assert not out.mask.to_numpy().any() and out.notes[0].startswith("Suppression OFF")
    assert isinstance(out, SuppressedTable)


# ------------------------------------------------------------------------------------------------
# safe CSV
# ------------------------------------------------------------------------------------------------

def _read(csv_bytes: bytes) -> list[list[str]]:
    assert csv_bytes.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM for Excel
    return list(csv.reader(io.StringIO(csv_bytes.decode("utf-8-sig"), newline="")))


def test_formula_injection_is_neutralised_but_numbers_stay_numbers():
    df = pd.DataFrame({
        "note": ["=HYPERLINK(\"http://x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tX", "\rY",
                 "plain", "-12.5", "café ✓"],
        "value": [-3, -2.5, 0, 1, 2, 3, 4, 5, 6],
    })
    rows = _read(to_safe_csv(df))
    assert rows[0] == ["note", "value"]
    notes = [r[0] for r in rows[1:]]
    assert notes[:6] == ["'=HYPERLINK(\"http://x\")", "'+1+cmd|' /C calc'!A0", "'-2+3", "'@SUM(A1)", "'\tX", "'\rY"]
    assert notes[6:] == ["plain", "-12.5", "café ✓"]  # a number written as text is not a formula
    assert [r[1] for r in rows[1:]] == ["-3.0", "-2.5", "0.0", "1.0", "2.0", "3.0", "4.0", "5.0", "6.0"]


def test_neutralise_leaves_numeric_columns_and_missing_values_alone_and_covers_headers():
    df = pd.DataFrame({"=bad": pd.array(["ok", None, "=1+1"], dtype="string"), "n": pd.array([1, None, -4],
                                                                                            dtype="Int64")})
    safe = neutralize_frame(df)
    assert list(safe.columns) == ["'=bad", "n"]
    assert safe["n"].tolist()[0] == 1 and pd.isna(safe["n"].tolist()[1]) and safe["n"].tolist()[2] == -4
    assert safe["'=bad"].tolist()[0] == "ok" and pd.isna(safe["'=bad"].tolist()[1])
    assert safe["'=bad"].tolist()[2] == "'=1+1"
    rows = _read(to_safe_csv(df))
    assert rows[1:] == [["ok", "1"], ["", ""], ["'=1+1", "-4"]]


# ------------------------------------------------------------------------------------------------
# named cells: flows, fractions, aggregate issue counts
# ------------------------------------------------------------------------------------------------

def test_suppress_cells_hides_a_small_part_and_the_next_smallest_so_the_total_gives_nothing_away():
    from analytics.privacy.suppression import suppress_cells

    cells = suppress_cells({"a": 40, "b": 7, "c": 25, "all": 72}, sums=[(["a", "b", "c"], "all")])
    assert cells.text("b") == "<11" and cells.text("c") == "*"
    assert cells.shown("a") and cells.shown("all") and cells.value("c") is None
    off = suppress_cells({"a": 40, "b": 7, "c": 25, "all": 72}, sums=[(["a", "b", "c"], "all")], enabled=False)
    assert off.text("b") == "7" and off.notes[0].startswith("Suppression OFF")


def test_suppress_cells_never_takes_a_known_total_as_the_complementary_cell():
    from analytics.privacy.suppression import suppress_cells

    values = {"a": 5, "b": 12, "all": 17}
    free = suppress_cells(values, sums=[(["a", "b"], "all")])
    known = suppress_cells(values, sums=[(["a", "b"], "all")], known=["all"])
    assert free.hidden["a"] and known.hidden["a"] and known.hidden["b"] and known.shown("all")
    assert free.hidden["b"] or free.hidden["all"]


def test_overlapping_parts_give_no_equation_and_hide_nothing_more():
    from analytics.privacy.suppression import suppress_cells

    cells = suppress_cells({"x": 30, "y": 25, "rows": 40}, sums=[(["x", "y"], "rows")])  # 55 > 40: overlap
    assert not any(cells.hidden.values())


@pytest.mark.parametrize(("num", "den", "expected"), [(45, 50, ("*", "50")), (45, 70, ("45", "70")),
                                                       (5, 70, ("<11", "70")), (0, 5, ("0", "<11")),
                                                       (0, 50, ("0", "50"))])
def test_fraction_text_protects_the_complement_of_a_percentage(num, den, expected):
    from analytics.privacy.suppression import fraction_text

    assert fraction_text(num, den) == expected
    assert fraction_text(num, den, enabled=False) == (str(num), str(den))


def test_issue_counts_aggregate_without_values_or_lines_and_protect_the_totals():
    from analytics.privacy.suppression import issue_counts

    issues = pd.DataFrame({"file": ["s.csv"] * 30 + ["f.csv"] * 14, "line": range(2, 46),
                           "column": ["route"] * 25 + ["phq9"] * 5 + ["days"] * 14,
                           "value": ["zz"] * 44, "reason": ["bad"] * 44})
    out = issue_counts(issues)
    assert list(out.columns) == ["file", "column", "reason", "problems"]
    by = {(f, c): p for f, c, p in zip(out["file"], out["column"], out["problems"])}
    assert by[("s.csv", "phq9")] == "<11"
    assert by[("s.csv", "route")] == "*" or by[("s.csv", "(all)")] == "*"  # 30 − 25 would give the 5 away
    assert by[("f.csv", "days")] == "14" and by[("(all)", "(all)")] == "44"
    assert "zz" not in out.to_csv() and "line" not in out.columns


def test_flow_loss_between_two_shown_steps_is_never_small():
    from analytics.privacy.suppression import suppress_flow

    steps = pd.DataFrame({"step": ["started", "baseline", "f30"], "label": ["S", "B", "F"], "n": [120, 114, 90],
                          "unit": ["patients"] * 3, "parent": ["", "started", "baseline"]})
    losses = pd.DataFrame({"step": ["baseline", "f30", "f30"], "reason": ["none", "open", "missed"],
                           "n": [6, 4, 20]})
    cells = suppress_flow(steps, losses)
    assert cells.text(("lost", "baseline")) == "<11" and cells.text(("loss", "baseline", "none")) == "<11"
    assert not (cells.shown(("step", "started")) and cells.shown(("step", "baseline")))
    assert cells.text(("loss", "f30", "open")) == "<11" and not cells.shown(("loss", "f30", "missed"))
