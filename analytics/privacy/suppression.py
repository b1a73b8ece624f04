"""Small-cell suppression for any result table (CMS cell-size rule).

Rules (data-contract.md "Small cells"; CMS cell size suppression policy, see
``published-benchmarks.md`` §2.4 and https://resdac.org/node/1506):

* **Primary**: a count from 1 to ``min_cell - 1`` (1–10 by default) is never shown. Zero is shown: "a value
  of zero does not violate the minimum cell size policy".
* **Derived counts**: a count of 1–10 that is not itself a column but follows from shown numbers (the rest of a
  row, ``total - sum(parts)``, or the complement ``denominator - numerator`` of a percentage) is protected
  exactly like a shown one.
* **Rates**: a percentage, rate or any statistic declared in ``rate_columns`` is hidden whenever one of the
  counts it is computed from is hidden (so a hidden numerator cannot be recovered as rate × denominator).
* **Complementary**: every additive relation of the table (row parts = row total, rows of a group = the margin
  row, percentage complements, risk-table chains) is an equation. No equation may have exactly one unknown
  cell: if it does, the smallest non-zero shown cell of that equation is hidden too ("next smallest"),
  iterating to a fixed point. With ``pooled`` (the flow, the ``analyze`` JSON, the pack's group tables) the hidden
  parts of a shown total must not add up to 1–10 either ("the two small programs have 7 patients between them").
  A final linear-algebra audit then checks that no sensitive cell is determined by
  any *combination* of equations (e.g. two blocks of hidden cells joined by one cell), and hides more until
  none is. Complementary cells are chosen non-zero, so every hidden cell is positive and "not determined by the
  equations" also means "not pinned by non-negativity" (the true table lies inside the feasible region).

What this cannot see: relations with numbers outside the table. Suppress a table together with its totals
(as a margin row or total column); totals printed elsewhere (e.g. "n = 45" in a chart legend) must come from
the same suppressed table.

Kaplan–Meier (:func:`suppress_km`): a KM curve reveals the number of events at each step (the drop is
``d / n_risk``), so hiding ``n_event`` in the risk table alone is not enough. Safe display here means:

1. the curve stops where fewer than ``min_cell`` patients are at risk (the tail, where each step is one of a
   handful of patients, is not drawn);
2. with ``steps="coarsen"`` (default) the curve is shown only at days where at least ``min_cell`` events have
   accumulated since the previous shown point, so every drawn drop pools at least 11 events (draw the visible
   points as a step function starting at 1 on day 0);
3. risk-table counts ``n_risk``, ``n_event``, ``n_censor`` from 1 to 10 are hidden, and so are counts that
   follow from two shown ones: the patients leaving between two rows (``n_risk - n_risk(next)``) and, for
   cumulative counts, the events or censorings between two rows; shown numbers at risk (and shown cumulative
   counts) that follow each other differ by 0 or at least 11, whatever is hidden between them. Complementary
   hiding runs along ``n_risk(next) = n_risk - n_event - n_censor`` wherever that relation holds numerically
   in the table (whichever way the table labels its intervals). Show the risk table at coarse display days (e.g. every
   30–90 days): per-event-time tables of a small clinic are mostly hidden by this rule.

``steps="truncate"`` keeps every step before the tail: less strict (a drop of one event among ≥ 11 at risk
is visible), for internal review only. With ``enabled=False`` nothing is hidden and the notes say
"Suppression OFF: internal use only".
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from analytics import formatting
from analytics.privacy.counts import (
    _BOUND,
    _MARK,
    OFF_NOTE,
    _is_missing,
    _small_label,
    is_small,
    mask_text,
    rate_is_safe,
)

_P = (1 << 61) - 1  # prime modulus of the exact elimination in the audit
COMPLEMENT_MARK = "*"  # shown in place of a cell hidden only so that a small one cannot be worked out

__all__ = [
    "SuppressedCells",
    "SuppressedTable",
    "file_count_cells",
    "fraction_text",
    "hidden_rate_points",
    "issue_counts",
    "render_note",
    "render_notes",
    "suppress_cells",
    "suppress_counts",
    "suppress_flow",
    "suppress_km",
    "suppress_upload_comparison",
    "upload_patient_texts",
]


# --------------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SuppressedTable:
    """A result table after small-cell suppression.

    Attributes
    ----------
    table:
        The input table with hidden cells set to missing (count columns become nullable ``Int64`` when their
        values are whole numbers; rate and curve columns stay float with NaN). Row order and index are kept.
    mask:
        Booleans with the same index; one column per checked column (counts, totals, rates, curve columns).
        True = hidden by suppression. Cells that were already missing in the input are False.
    primary:
        Same shape as ``mask``; True = hidden because the count itself is 1 to ``min_cell - 1`` (shown as
        ``"<11"``). ``mask & ~primary`` cells were hidden to protect another cell (shown as ``"*"``), or are
        rates/curve points hidden with their counts.
    min_cell, enabled:
        The rule applied.
    notes:
        Plain sentences: how many cells were hidden and why, or that suppression is off.
    n_derived_protected:
        Counts of 1–10 that are not columns but would follow from shown numbers (a total minus its parts, a
        percentage's complement, a difference of numbers at risk) and were protected.
    count_columns:
        The checked columns that hold counts (the others are rates or curve values).
    """

    table: pd.DataFrame
    mask: pd.DataFrame
    primary: pd.DataFrame
    min_cell: int = 11
    enabled: bool = True
    notes: tuple[str, ...] = ()
    n_derived_protected: int = 0
    count_columns: tuple[str, ...] = ()

    @property
    def n_suppressed(self) -> int:
        """Number of hidden cells (all kinds)."""
        return int(self.mask.to_numpy().sum())

    @property
    def n_primary(self) -> int:
        return int(self.primary.to_numpy().sum())

    @property
    def n_complementary(self) -> int:
        return self.n_suppressed - self.n_primary

    @property
    def any_suppressed(self) -> pd.Series:
        """One boolean per row: is any cell of the row hidden (a marker column for display)."""
        return self.mask.any(axis=1)

    def text(self, formatters: Mapping[str, object] | None = None) -> pd.DataFrame:
        """The table as display strings: ``"<11"`` for small counts, ``"*"`` for complementary cells.

        ``formatters`` maps column → callable(value) → str for shown values (default: counts with thousands
        separators via :func:`analytics.formatting.count`, other numbers via :func:`analytics.formatting.num`).
        """
        formatters = dict(formatters or {})
        out = self.table.astype(object).copy()
        small = _small_label(self.min_cell)
        for col in self.mask.columns:
            fmt = formatters.get(col)
            values = []
            for v, hid, prim in zip(self.table[col], self.mask[col], self.primary[col]):
                if hid:
                    values.append(small if prim else COMPLEMENT_MARK)
                elif fmt is not None:
                    values.append(fmt(v))  # type: ignore[operator]
                elif _is_missing(v):
                    values.append("—")
                elif col in self.count_columns:
                    values.append(formatting.count(round(float(v))))
                else:
                    values.append(formatting.num(float(v)))
            out[col] = values
        return out


# --------------------------------------------------------------------------------------------------
# the engine: cells, equations, line rule, audit
# --------------------------------------------------------------------------------------------------

class _Problem:
    """Cells (real table cells and derived virtual counts) and additive equations between them."""

    def __init__(self, min_cell: int, *, pooled: bool = False) -> None:
        self.min_cell = min_cell
        self.pooled = pooled  # also: the hidden parts of a shown total must not add up to 1..min_cell-1
        self.value: list[float] = []
        self.real: list[bool] = []       # a shown cell of the table (may be chosen as complementary)
        self.missing: list[bool] = []    # value unknown in the input (NaN): unknown, never sensitive
        self.sensitive: list[bool] = []  # 1..min_cell-1: must not be determinable
        self.hidden: list[bool] = []     # unknown to a reader of the output
        self.where: dict[tuple[int, str], int] = {}
        self.equations: list[list[tuple[int, int]]] = []  # (cell, coefficient modulo the prime); the total last
        self._audits: dict[frozenset[int], list[tuple[int, int]]] = {}  # last audit of each block (_determined)
        self._eq_keys: set[tuple[tuple[int, int], ...]] = set()
        self._pt_keys: dict[tuple[frozenset[int], int], int | None] = {}

    def add_real(self, row: int, col: str, value: object) -> int:
        i = len(self.value)
        miss = _is_missing(value)
        v = float("nan") if miss else float(value)  # type: ignore[arg-type]
        small = is_small(v, min_cell=self.min_cell)
        self.value.append(v)
        self.real.append(True)
        self.missing.append(miss)
        self.sensitive.append(small)
        self.hidden.append(small or miss)
        self.where[(row, col)] = i
        return i

    def add_virtual(self, value: float) -> int | None:
        """A count that is not shown but follows from shown ones: unknown to a reader; protected if small."""
        if abs(value) < 1e-9:
            return None  # a zero remainder: the parts are the whole, nothing to add
        i = len(self.value)
        self.value.append(value)
        self.real.append(False)
        self.missing.append(False)
        self.sensitive.append(is_small(value, min_cell=self.min_cell))
        self.hidden.append(True)
        return i

    def add_equation(self, parts: Sequence[int], total: int) -> None:
        """``sum(parts) == total``."""
        idx = [*parts, total]
        coef = [1.0] * len(parts) + [-1.0]
        key = tuple(sorted(zip(idx, (int(c) for c in coef))))
        if key in self._eq_keys or len(idx) < 2:
            return
        self._eq_keys.add(key)
        self.equations.append([(int(i), int(c) % _P) for i, c in zip(idx, coef)])
        self._audits = {}

    def parts_total(self, parts: Sequence[int], total: int, *, what: str) -> int | None:
        """Add ``sum(parts) + remainder == total``; return the derived remainder's cell (None when zero).

        Raises if the parts exceed the total.
        """
        key = (frozenset(parts), total)
        if key in self._pt_keys:
            return self._pt_keys[key]
        self._pt_keys[key] = None
        vals = [self.value[i] for i in (*parts, total)]
        if any(math.isnan(v) for v in vals):
            self.add_equation(parts, total)
            return None
        rem = self.value[total] - sum(self.value[i] for i in parts)
        if rem < -1e-9:
            raise ValueError(
                f"{what}: the parts add up to {sum(self.value[i] for i in parts):g}, more than the total "
                f"{self.value[total]:g}. Declare only true totals (a column or margin row that is the sum of "
                f"the parts) for suppression.")
        extra = self.add_virtual(rem)
        self.add_equation([*parts, *([extra] if extra is not None else [])], total)
        self._pt_keys[key] = extra
        return extra

    # ---- solving -----------------------------------------------------------------------------------

    def _protected(self, i: int) -> bool:
        """An unknown that must not be the only unknown of an equation: small, or hidden to protect one."""
        return self.hidden[i] and not self.missing[i] and (self.real[i] or self.sensitive[i])

    def _is_open(self, k: int) -> bool:
        """Equation ``k`` gives a protected count away: its only unknown is protected, or (``pooled``) its total
        is shown and its hidden parts, one of them protected, add up to a count of 1 to ``min_cell - 1``
        (``total - shown parts``: "the two small programs have 7 patients between them")."""
        unknown = [i for i, _c in self.equations[k] if self.hidden[i]]
        if len(unknown) == 1 and self._protected(unknown[0]):
            return True
        total, sign = self.equations[k][-1]
        if not self.pooled or len(unknown) < 2 or self.hidden[total] or sign != _P - 1:
            return False
        if any(self.missing[i] for i in unknown) or not any(self._protected(i) for i in unknown):
            return False
        return is_small(sum(self.value[i] for i in unknown), min_cell=self.min_cell)

    def _open_equations(self) -> list[int]:
        """Equations that give a protected cell away (see :meth:`_is_open`)."""
        return [k for k in range(len(self.equations)) if self._is_open(k)]

    def _hide_next_smallest(self, k: int) -> int | None:
        """Hide the next smallest non-zero shown cell of equation ``k``, preferring one that closes another open
        equation and opens none (ties: smaller value, then a part before the total)."""
        cells = [i for i, _c in self.equations[k]]
        cands = [i for i in cells if self.real[i] and not self.hidden[i]]
        if not cands:
            return None
        nonzero = [i for i in cands if self.value[i] > 0]
        pool = nonzero or cands

        def score(i: int) -> tuple[int, float, bool, int]:
            opens = closes = 0
            for kk in self._eqs_of[i]:
                if kk == k:
                    continue
                unknown = [j for j, _c in self.equations[kk] if self.hidden[j]]
                if not unknown:
                    opens += 1
                elif len(unknown) == 1 and self._protected(unknown[0]):
                    closes += 1
            return (opens - closes, self.value[i], i == cells[-1], i)

        pick = min(pool, key=score)
        self.hidden[pick] = True
        return pick

    def line_rule(self) -> None:
        """Until no equation has exactly one protected unknown: hide the next smallest shown cell."""
        self._eqs_of: dict[int, list[int]] = {}
        for k, terms in enumerate(self.equations):
            for i, _c in terms:
                self._eqs_of.setdefault(i, []).append(k)
        pending = self._open_equations()
        while pending:
            k = pending.pop()
            if not self._is_open(k):
                continue
            new = self._hide_next_smallest(k)
            if new is not None:
                pending.extend(self._eqs_of.get(new, ()))

    def _hidden_row(self, k: int, payload: Mapping[int, int] | None = None) -> dict[int, int]:
        """Equation ``k`` restricted to the hidden cells, coefficients modulo the prime, zeros dropped; the cells of
        ``payload`` (shown cells) are kept too, under the column key it gives them."""
        r: dict[int, int] = {}
        for i, c in self.equations[k]:
            if self.hidden[i]:
                r[i] = (r.get(i, 0) + c) % _P
            elif payload and i in payload:
                j = payload[i]
                r[j] = (r.get(j, 0) + c) % _P
        return {i: v for i, v in r.items() if v}

    def _reach(self, start: Sequence[int], through: Container[int] = ()) -> tuple[set[int], set[int]]:
        """Cells and equations connected to the cells ``start`` through hidden cells (and the cells ``through``)."""
        cells, eqs, todo = set(start), set(), list(start)
        hidden, terms, eqs_of = self.hidden, self.equations, self._eqs_of
        while todo:
            for k in eqs_of.get(todo.pop(), ()):
                if k not in eqs:
                    eqs.add(k)
                    for i, _c in terms[k]:
                        if i not in cells and (hidden[i] or i in through):
                            cells.add(i)
                            todo.append(i)
        return cells, eqs

    def _audit(self, eqs: Sequence[int]) -> list[tuple[int, int]]:
        """``(equation, cell)`` for each sensitive cell fixed by the equations ``eqs`` (one connected block), with
        the equation whose row made the cell a pivot.

        Rows are eliminated in the order of ``eqs``, each pivot the smallest cell left in its row; that order and
        that rule alone decide which row makes which pivot (the reduced row is the only vector of ``row + span of
        the rows before`` that is zero in the pivots before), so the pivots, and the equation that made each, are
        those of an elimination of all the equations at once. A cell is fixed when its row of the fully reduced
        basis is the cell alone (the unit vector is then in the row space, and only then)."""
        basis: dict[int, dict[int, int]] = {}
        rank: dict[int, int] = {}
        made_by: dict[int, int] = {}
        for k in eqs:
            r = self._hidden_row(k)
            _reduce(r, basis, rank)
            if r:
                piv = min(r)
                rank[piv], basis[piv], made_by[piv] = len(rank), _scaled(r, piv), k
        if not any(self.sensitive[p] for p in basis):
            return []
        for p in reversed(basis):  # back substitution, newest pivot first: each row keeps its own pivot only
            r = basis[p]
            for q in [c for c in r if c != p and c in basis]:
                _axpy(r, r[q], basis[q])
        return [(made_by[p], p) for p, r in basis.items() if self.sensitive[p] and len(r) == 1]

    def _determined(self) -> list[int]:
        """Sensitive hidden cells fixed by the equations: e is fixed when the unit vector e lies in the row space
        of the equations restricted to unknown cells. Exact elimination modulo the prime 2**61 - 1 (the
        equations have coefficients ±1, so its rank is the rational rank barring a minor divisible by it).

        In the order of an elimination of all the equations at once (by the equation that made each pivot), which
        :meth:`solve` depends on. Each block of hidden cells connected through equations is eliminated on its own,
        and a block with the same hidden cells as in the previous call keeps its result."""
        audits: dict[frozenset[int], list[tuple[int, int]]] = {}
        found: list[tuple[int, int]] = []
        seen: set[int] = set()
        for i in self._eqs_of:
            if not self.hidden[i] or i in seen:
                continue
            cells, eqs = self._reach([i])
            seen |= cells
            block = frozenset(cells)
            audits[block] = self._audits[block] if block in self._audits else self._audit(sorted(eqs))
            found += audits[block]
        self._audits = audits
        return [e for _k, e in sorted(found)]

    def _frees(self, e: int, cells: Sequence[int]) -> list[bool]:
        """For each shown cell of ``cells``: would hiding it (and no other) leave the fixed cell ``e`` not fixed?

        The same test as :meth:`_determined` would give with c hidden, for all candidates c in one elimination
        (modulo the same prime) instead of one each. Each candidate's coefficients ride along as an extra column
        (key ``-1 - j``) that is never a pivot, and ``e`` is the last choice of pivot, so ``e`` is fixed iff it
        becomes a pivot, its row then being ``e`` alone plus candidate columns. With c hidden, e stays fixed iff
        that row has no entry in c's column, or a row left with no hidden cell has one (a multiple of that row
        clears the entry).
        """
        payload = {c: -1 - j for j, c in enumerate(cells)}
        basis: dict[int, dict[int, int]] = {}
        rank: dict[int, int] = {}
        cancellable: set[int] = set()
        for k in sorted(self._reach([e, *cells], payload)[1]):
            r = self._hidden_row(k, payload)
            _reduce(r, basis, rank)
            unknown = [c for c in r if c >= 0]
            if not unknown:
                cancellable.update(r)
                continue
            piv = min((c for c in unknown if c != e), default=e)
            rank[piv], basis[piv] = len(rank), _scaled(r, piv)
        row = basis.get(e)
        return [row is None or (j in row and j not in cancellable) for j in payload.values()]

    def _candidates(self, e: int) -> list[list[int]]:
        """Shown cells near ``e``, by distance: cells of equations that contain ``e`` first, then cells of
        equations reached through unknown cells of those, and so on."""
        seen_eq: set[int] = set()
        seen_cell = {e}
        frontier = [e]
        rings: list[list[int]] = []
        while frontier:
            ring: set[int] = set()
            nxt: list[int] = []
            for cell in frontier:
                for k in self._eqs_of.get(cell, ()):
                    if k in seen_eq:
                        continue
                    seen_eq.add(k)
                    for i, _c in self.equations[k]:
                        if i in seen_cell:
                            continue
                        seen_cell.add(i)
                        if self.hidden[i]:
                            nxt.append(i)
                        elif self.real[i]:
                            ring.add(i)
            if ring:
                rings.append(sorted(ring, key=lambda i: (self.value[i] <= 0, self.value[i], i)))
            frontier = nxt
        return rings

    def solve(self) -> None:
        """Line rule to a fixed point, then the exact audit; hide more until no sensitive cell is determined."""
        self.line_rule()
        for _ in range(len(self.value) + 1):
            bad = self._determined()
            if not bad:
                return
            e = bad[0]
            rings = self._candidates(e)
            if not rings:
                raise RuntimeError("small-cell suppression could not protect a derived count")
            near = [c for ring in rings for c in ring][:12]  # the nearest small cell that frees e, else the nearest
            frees = self._frees(e, near)
            self.hidden[next((c for c, free in zip(near, frees) if free), near[0])] = True
            self.line_rule()
        raise RuntimeError("small-cell suppression did not converge")  # pragma: no cover


def _axpy(target: dict[int, int], f: int, src: Mapping[int, int]) -> None:
    """``target -= f * src`` modulo the prime, dropping the entries that become zero."""
    for c, v in src.items():
        nv = (target.get(c, 0) - f * v) % _P
        if nv:
            target[c] = nv
        else:
            del target[c]


def _reduce(row: dict[int, int], basis: Mapping[int, Mapping[int, int]], rank: Mapping[int, int]) -> None:
    """Subtract rows of ``basis`` (pivot -> row with 1 there) from ``row`` until it is zero in every pivot.

    A basis row is zero in the pivots older than its own (``rank``: order of arrival), so the pivots are cleared
    oldest first and each once, and the basis rows need no back substitution as they arrive."""
    todo = [(rank[c], c) for c in row if c in basis]
    heapq.heapify(todo)
    while todo:
        p = heapq.heappop(todo)[1]
        f = row.get(p)
        if f:
            for c in basis[p]:
                if c not in row and c in basis:
                    heapq.heappush(todo, (rank[c], c))
            _axpy(row, f, basis[p])


def _scaled(row: dict[int, int], piv: int) -> dict[int, int]:
    """``row`` divided by its entry in ``piv`` (modulo the prime)."""
    if row[piv] == 1:
        return row
    inv = _P - 1 if row[piv] == _P - 1 else pow(row[piv], _P - 2, _P)
    return {c: v * inv % _P for c, v in row.items()}


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------

def _off(table: pd.DataFrame, columns: Sequence[str], min_cell: int, counts: Sequence[str]) -> SuppressedTable:
    mask = pd.DataFrame(False, index=table.index, columns=list(columns))
    return SuppressedTable(table=table.copy(), mask=mask, primary=mask.copy(), min_cell=min_cell,
                           enabled=False, notes=(OFF_NOTE.format(hi=min_cell - 1),), count_columns=tuple(counts))


def _check_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} {missing} not in the table (columns: {list(table.columns)}).")


def _apply(table: pd.DataFrame, prob: _Problem, count_cols: Sequence[str], rate_sources: Mapping[str, Sequence[str]],
           extra_hidden: Mapping[str, np.ndarray] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    n = len(table)
    out = table.copy()
    cols = list(dict.fromkeys([*count_cols, *rate_sources, *(extra_hidden or {})]))
    mask = pd.DataFrame(False, index=table.index, columns=cols)
    primary = pd.DataFrame(False, index=table.index, columns=cols)
    for c in count_cols:
        hid = np.zeros(n, dtype=bool)
        pri = np.zeros(n, dtype=bool)
        for r in range(n):
            i = prob.where[(r, c)]
            hid[r] = prob.hidden[i] and not prob.missing[i]
            pri[r] = prob.sensitive[i]
        mask[c] = hid
        primary[c] = pri
    for c, sources in rate_sources.items():
        hid = np.zeros(n, dtype=bool)
        for s in sources:
            hid |= mask[s].to_numpy()
        hid &= table[c].notna().to_numpy()
        mask[c] = mask[c].to_numpy() | hid
    for c, hid in (extra_hidden or {}).items():
        mask[c] = mask[c].to_numpy() | (hid & table[c].notna().to_numpy())
    for c in cols:
        hid = mask[c].to_numpy()
        col = out[c]
        if c in count_cols:
            vals = pd.to_numeric(col, errors="coerce").astype("float64")
            whole = vals.dropna()
            vals = vals.mask(hid)
            out[c] = vals.astype("Int64") if (whole == whole.round()).all() else vals
        elif pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
            out[c] = col.astype("float64").mask(hid)
        else:  # text or other values: hidden cells become missing, the rest untouched
            out[c] = col.astype(object).where(~hid, None)
    return out, mask, primary


def _notes(mask: pd.DataFrame, primary: pd.DataFrame, count_cols: Sequence[str], derived: int,
           min_cell: int, extra: Sequence[str] = ()) -> tuple[str, ...]:
    hi = min_cell - 1
    n_pri = int(primary.to_numpy().sum())
    n_cnt = int(mask[list(count_cols)].to_numpy().sum())
    n_comp = n_cnt - n_pri
    n_other = int(mask.to_numpy().sum()) - n_cnt
    if n_cnt == 0 and n_other == 0 and derived == 0:
        return (f"Small-cell rule (counts 1–{hi} hidden): no count from 1 to {hi}; nothing suppressed.", *extra)
    parts = [(f"Small-cell rule: {n_pri} count{'s' if n_pri != 1 else ''} from 1 to {hi} hidden (shown as "
              f"\"<{min_cell}\"; zero is shown)")]
    if derived:
        parts.append(f"{derived} count{'s' if derived != 1 else ''} of 1–{hi} that would follow from shown numbers "
                     f"(a total, a percentage or a difference) protected")
    if n_comp:
        parts.append(f"{n_comp} more cell{'s' if n_comp != 1 else ''} hidden so that no small count can be worked "
                     f"out from totals (complementary suppression, shown as \"{COMPLEMENT_MARK}\")")
    if n_other:
        parts.append(f"{n_other} percentage{'s' if n_other != 1 else ''}/derived value{'s' if n_other != 1 else ''} "
                     f"hidden because a count behind {'them' if n_other != 1 else 'it'} is hidden")
    return ("; ".join(parts) + ".", *extra)


def suppress_counts(
    table: pd.DataFrame,
    *,
    count_columns: Sequence[str],
    total_columns: Sequence[str] = (),
    rate_columns: Mapping[str, Sequence[str]] | None = None,
    margin: tuple[str, object] | None = None,
    by: Sequence[str] = (),
    min_cell: int = 11,
    enabled: bool = True,
) -> SuppressedTable:
    """Hide small counts, and whatever would reveal them, in a result table.

    Parameters
    ----------
    table:
        Any tidy result table, one row per group/category.
    count_columns:
        Columns of counts of patients (or sessions, events) that are parts of a row: e.g. ``relapsed``,
        ``censored``. Values 1 to ``min_cell - 1`` are hidden.
    total_columns:
        Count columns that are row totals of ``count_columns`` (e.g. ``n``). Each gives the equation
        ``sum(count_columns) + rest = total``; when the parts do not cover the total, the rest
        (``total - sum``) is a derived count and is protected if it is 1–10.
    rate_columns:
        Column → the counts it is computed from, e.g. ``{"relapsed_pct": ("relapsed", "n"),
        "ci_low": ("relapsed", "n")}`` (numerator, denominator) or ``{"mean_phq9": ("n",)}``. Hidden whenever
        one of its counts is hidden. For a (numerator, denominator) pair the complement
        ``denominator - numerator`` is protected too when it is 1–10 ("45 of 50" reveals 5).
    margin:
        ``(column, label)`` marking total rows, e.g. ``("program", "All")``: within each ``by`` group the
        other rows add up to the margin row, column by column (the rest, rows not shown, is a derived count).
    by:
        Columns that split the table into independent blocks, each with its own margin row.
    min_cell:
        Smallest count that may be shown (11: counts 1–10 are hidden).
    enabled:
        False turns suppression off (analyst setting); the notes then say "Suppression OFF: internal use only".

    Returns
    -------
    SuppressedTable
        ``table`` (hidden cells missing), ``mask`` and ``primary`` (booleans per checked column), ``notes``.

    Raises
    ------
    ValueError
        When a declared total is smaller than its parts (the table is not additive as declared).

    Notes
    -----
    Primary suppression of counts 1–10 (CMS cell size suppression policy; zero is not suppressed),
    complementary suppression by the "next smallest non-zero cell" rule iterated to a fixed point, then an exact
    audit: a sensitive hidden cell must not be determined by the linear system of the table's equations (checked
    with the null space of the equations restricted to hidden cells), with more cells hidden until none is.
    """
    count_columns = list(dict.fromkeys(count_columns))
    total_columns = [c for c in dict.fromkeys(total_columns) if c not in count_columns]
    rate_columns = {k: tuple(v) for k, v in (rate_columns or {}).items()}
    all_counts = [*count_columns, *total_columns]
    _check_columns(table, all_counts, "Count columns")
    _check_columns(table, list(rate_columns), "Rate columns")
    for rate, sources in rate_columns.items():
        bad = [s for s in sources if s not in all_counts]
        if bad or not sources:
            raise ValueError(f"Rate column {rate!r} must name the count/total columns it is computed from "
                             f"(got {list(sources)}; counts are {all_counts}).")
    if margin is not None:
        _check_columns(table, [margin[0]], "Margin column")
    _check_columns(table, list(by), "By columns")
    checked = [*all_counts, *[c for c in rate_columns if c not in all_counts]]
    if not enabled:
        return _off(table, checked, min_cell, all_counts)

    t = table.reset_index(drop=True)
    prob = _Problem(min_cell)
    _add_counts(prob, t, all_counts)
    # rows: parts (+ the rest, categories not shown) = total
    row_rest: dict[tuple[int, str], int | None] = {}
    if count_columns:
        for t_col in total_columns:
            for r in range(len(t)):
                row_rest[(r, t_col)] = prob.parts_total(
                    [prob.where[(r, c)] for c in count_columns], prob.where[(r, t_col)],
                    what=f"row {r + 1}, total column {t_col!r}")
    # margins: rows of a block = the margin row
    if margin is not None:
        mcol, label = margin
        is_margin = (t[mcol].astype("object") == label).fillna(False).to_numpy(dtype=bool)
        blocks = [np.arange(len(t))] if not by else [
            np.asarray(ix) for ix in t.groupby(list(by), dropna=False, sort=False).indices.values()]
        for rows in blocks:
            m_rows = [r for r in rows if is_margin[r]]
            if len(m_rows) > 1:
                raise ValueError(f"More than one margin row labelled {label!r} in one block of the table.")
            if not m_rows:
                continue
            inner = [r for r in rows if not is_margin[r]]
            for c in all_counts:
                prob.parts_total([prob.where[(r, c)] for r in inner], prob.where[(m_rows[0], c)],
                                 what=f"column {c!r}, margin row {label!r}")
            # the column of rests adds up too (its own rest: rows not shown in categories not shown)
            for t_col in total_columns:
                m_rest = row_rest.get((m_rows[0], t_col))
                parts = [row_rest[(r, t_col)] for r in inner if row_rest.get((r, t_col)) is not None]
                if m_rest is not None:
                    prob.parts_total([p for p in parts if p is not None], m_rest,
                                     what=f"the rest of total column {t_col!r}")
    # percentages: numerator + complement = denominator
    for rate, sources in rate_columns.items():
        if len(sources) != 2:
            continue
        num, den = sources
        for r in range(len(t)):
            i, j = prob.where[(r, num)], prob.where[(r, den)]
            vi, vj = prob.value[i], prob.value[j]
            if not (math.isnan(vi) or math.isnan(vj)) and vi <= vj:
                prob.parts_total([i], j, what=f"row {r + 1}, rate {rate!r}")
    prob.solve()
    derived = sum(1 for i in range(len(prob.value)) if not prob.real[i] and prob.sensitive[i])
    out, mask, primary = _apply(t, prob, all_counts, rate_columns)
    out.index, mask.index, primary.index = table.index, table.index, table.index
    notes = _notes(mask, primary, all_counts, derived, min_cell)
    return SuppressedTable(table=out, mask=mask, primary=primary, min_cell=min_cell, enabled=True, notes=notes,
                           n_derived_protected=derived, count_columns=tuple(all_counts))


def suppress_km(
    table: pd.DataFrame,
    *,
    group_column: str | None = "group",
    day_column: str = "day",
    count_columns: Sequence[str] = ("n_risk", "n_event", "n_censor"),
    curve_columns: Sequence[str] = ("estimate", "ci_low", "ci_high"),
    steps: Literal["coarsen", "truncate"] = "coarsen",
    cumulative: bool = False,
    counts_shown: Literal["all", "drawn"] = "all",
    min_cell: int = 11,
    enabled: bool = True,
) -> SuppressedTable:
    """Make a Kaplan–Meier table (curve points and risk table) safe to show; see the module docstring.

    Parameters
    ----------
    table:
        One row per (group, day) with ``n_risk`` (at risk just before the day), ``n_event``, ``n_censor`` and
        the curve columns (``estimate``, ``ci_low``, ``ci_high``), as in ``SurvivalCurves.table``. Curve
        columns that are absent are skipped. Works for event-time tables and display-time risk tables alike.
    group_column:
        Curve identifier (None or absent: one curve).
    steps:
        ``"coarsen"``: show curve points only where ≥ ``min_cell`` events have accrued since the previous shown
        point (each drawn drop pools ≥ 11 events). ``"truncate"``: show every point while ≥ ``min_cell`` are at
        risk (internal review).
    cumulative:
        ``n_event``/``n_censor`` are cumulative up to each day (as in ``SurvivalCurves.risk_table``). Then the
        difference of two consecutive shown cumulative counts is an interval count, and it is protected like
        a shown one (a jump from 15 to 20 events reveals 5).
    counts_shown:
        ``"all"``: the counts of every row may be shown (a risk table). ``"drawn"``: a chart that shows only
        the number at risk at its drawn points (a hover card): every other count is hidden, and the numbers at
        risk of the drawn points are checked as a table of their own (each ≥ ``min_cell``, consecutive shown
        ones differing by 0 or ≥ ``min_cell``). The same protection for what is shown, without auditing the
        thousands of event-time cells a chart never prints.
    min_cell, enabled:
        As in :func:`suppress_counts`.

    Returns
    -------
    SuppressedTable
        ``mask[curve column]`` False = draw this point (as a step function from 1 at day 0); risk-table
        counts hidden as in :func:`suppress_counts`.
    """
    count_columns = list(count_columns)
    if len(count_columns) != 3:
        raise ValueError("count_columns must be (n_risk, n_event, n_censor).")
    if steps not in ("coarsen", "truncate"):
        raise ValueError(f"steps must be 'coarsen' or 'truncate' (got {steps!r}).")
    if counts_shown not in ("all", "drawn"):
        raise ValueError(f"counts_shown must be 'all' or 'drawn' (got {counts_shown!r}).")
    risk, event, censor = count_columns
    _check_columns(table, count_columns + [day_column], "KM columns")
    curve = [c for c in curve_columns if c in table.columns]
    if not enabled:
        return _off(table, [*count_columns, *curve], min_cell, count_columns)

    t = table.reset_index(drop=True)
    ordered = _km_curves(t, group_column, day_column)
    curve_hidden = _km_curve_hidden(t, ordered, risk, event, steps, min_cell)
    if counts_shown == "drawn":
        drawn = np.flatnonzero(~curve_hidden)
        sub = t.iloc[drawn].reset_index(drop=True).assign(**{event: np.nan, censor: np.nan})
        prob = _km_count_problem(sub, _km_curves(sub, group_column, day_column), count_columns, day_column,
                                 group_column, False, min_cell)
        _, mask_sub, primary_sub = _apply(sub, prob, count_columns, {})
        out = t.copy()
        mask = pd.DataFrame(False, index=t.index, columns=[*count_columns, *curve])
        primary = mask.copy()
        for c in count_columns:
            hidden = np.ones(len(t), dtype=bool)
            hidden[drawn] = mask_sub[c].to_numpy() if c == risk else True
            mask[c] = hidden & t[c].notna().to_numpy()
            pri = np.zeros(len(t), dtype=bool)
            pri[drawn] = primary_sub[c].to_numpy()
            primary[c] = pri
            vals = pd.to_numeric(t[c], errors="coerce").astype("float64")
            out[c] = vals.mask(hidden).astype("Int64") if (vals.dropna() == vals.dropna().round()).all() else \
                vals.mask(hidden)
        for c in curve:
            mask[c] = curve_hidden & t[c].notna().to_numpy()
            out[c] = t[c].astype("float64").mask(curve_hidden)
        mask_notes, primary_notes = mask_sub[[risk]], primary_sub[[risk]]
        note_counts = [risk]
        extra_count_note = ("Numbers at risk are shown only at the drawn points; events and censorings are not shown.",)
    else:
        prob = _km_count_problem(t, ordered, count_columns, day_column, group_column, cumulative, min_cell)
        out, mask, primary = _apply(t, prob, count_columns, {}, {c: curve_hidden for c in curve})
        mask_notes, primary_notes, note_counts = mask[count_columns], primary[count_columns], count_columns
        extra_count_note = ()
    out.index, mask.index, primary.index = table.index, table.index, table.index
    extra = [f"Curve drawn only while at least {min_cell} patients are at risk"
             + (f" and only at days where at least {min_cell} events have accrued since the previous point, so no "
                f"step shows fewer than {min_cell} patients." if steps == "coarsen" else
                "; single-event steps are visible (internal review only)."), *extra_count_note]
    derived = sum(1 for i in range(len(prob.value)) if not prob.real[i] and prob.sensitive[i])
    notes = _notes(mask_notes, primary_notes, note_counts, derived, min_cell, extra)
    return SuppressedTable(table=out, mask=mask, primary=primary, min_cell=min_cell, enabled=True, notes=notes,
                           n_derived_protected=derived, count_columns=tuple(count_columns))


def _km_curves(t: pd.DataFrame, group_column: str | None, day_column: str) -> list[list[int]]:
    """Row positions of each curve, in day order."""
    groups = ([np.arange(len(t))] if group_column is None or group_column not in t.columns else
              [np.asarray(ix) for ix in t.groupby(group_column, dropna=False, sort=False).indices.values()])
    days = t[day_column].to_numpy()
    return [[int(r) for r in rows[np.lexsort((rows, days[rows]))]] for rows in groups]


def _km_curve_hidden(t: pd.DataFrame, ordered: list[list[int]], risk: str, event: str,
                     steps: Literal["coarsen", "truncate"], min_cell: int) -> np.ndarray:
    """Curve points not drawn: the tail (fewer than ``min_cell`` at risk) and, with ``"coarsen"``, points that do
    not pool ``min_cell`` events since the previous drawn point."""
    hidden = np.zeros(len(t), dtype=bool)
    n_risk = pd.to_numeric(t[risk], errors="coerce").to_numpy(float)
    n_event = pd.to_numeric(t[event], errors="coerce").to_numpy(float)
    for rows in ordered:
        tail = False
        since = 0.0
        for k, r in enumerate(rows):
            nr = n_risk[r]
            if not tail and not math.isnan(nr) and nr < min_cell:
                tail = True
            ev = 0.0 if math.isnan(n_event[r]) else n_event[r]
            if tail:
                hidden[r] = True
                continue
            if steps == "coarsen":
                since += ev
                if since >= min_cell:
                    since = 0.0
                elif k == 0 and ev == 0:
                    pass  # a leading point before any event shows S = 1: nothing revealed
                else:
                    hidden[r] = True
    return hidden


def _add_counts(prob: _Problem, t: pd.DataFrame, columns: Sequence[str]) -> None:
    """Every cell of ``columns`` as a real count of ``prob``, row by row (``t`` has a RangeIndex); the values are the
    columns' own elements (what ``t.at`` gives), read from each column once."""
    values = [(c, t[c].array) for c in columns]
    for r in range(len(t)):
        for c, column in values:
            prob.add_real(r, c, column[r])


def _km_count_problem(t: pd.DataFrame, ordered: list[list[int]], count_columns: Sequence[str], day_column: str,
                      group_column: str | None, cumulative: bool, min_cell: int) -> _Problem:
    """The risk-table counts as a suppression problem (primary, derived, complementary), solved."""
    risk, event, censor = count_columns
    prob = _Problem(min_cell)
    _add_counts(prob, t, count_columns)
    day_of = t[day_column].array  # each row's day, as t.at gives it (for the sentences below)
    for rows in ordered:
        v = {c: [prob.value[prob.where[(r, c)]] for r in rows] for c in count_columns}
        w: dict[str, list[int | None]] = {c: [prob.where[(r, c)] for r in rows] for c in count_columns}
        if cumulative:  # interval counts are differences of cumulative ones: derived counts, protected too
            for c in (event, censor):
                cum_v, cum_w = list(v[c]), list(w[c])
                for k in range(1, len(rows)):
                    cell = prob.parts_total([cum_w[k - 1]], cum_w[k],  # type: ignore[list-item]
                                            what=f"cumulative column {c!r} (it decreases)")
                    w[c][k] = cell
                v[c] = [cum_v[0], *[cum_v[k] - cum_v[k - 1] for k in range(1, len(rows))]]

        gname = t.at[rows[0], group_column] if rows and group_column in t.columns else "all"
        for k in range(len(rows) - 1):
            # patients leaving between two rows (events + censorings): a derived count, protected too
            exits = prob.parts_total([w[risk][k + 1]], w[risk][k],  # type: ignore[list-item]
                                     what=f"n_risk of group {gname!r} after day {day_of[rows[k]]}"
                                          " (numbers at risk must not rise)")
            gone = v[risk][k] - v[risk][k + 1]
            for kk in (k, k + 1):  # events labelled at the interval start or at its end
                if exits is not None and abs(gone - v[event][kk] - v[censor][kk]) < 1e-9:
                    prob.add_equation([p for p in (w[event][kk], w[censor][kk]) if p is not None], exits)
        if rows and abs(v[risk][-1] - v[event][-1] - v[censor][-1]) < 1e-9 and w[risk][-1] is not None:
            prob.add_equation([p for p in (w[event][-1], w[censor][-1]) if p is not None],
                              w[risk][-1])  # type: ignore[arg-type]
    # a reader subtracts shown numbers down a column: consecutive *shown* values of n_risk (and of cumulative
    # counts) must differ by 0 or at least min_cell, whatever is hidden between them
    monotone = [risk, event, censor] if cumulative else [risk]
    while True:
        prob.solve()
        changed = False
        for rows in ordered:
            for c in monotone:
                prev = None
                for r in rows:
                    i = prob.where[(r, c)]
                    if prob.hidden[i]:
                        continue
                    if prev is not None and is_small(abs(prob.value[i] - prev), min_cell=min_cell):
                        prob.hidden[i] = True
                        changed = True
                        continue
                    prev = prob.value[i]
        if not changed:
            break
    return prob


# --------------------------------------------------------------------------------------------------
# named cells with any additive relations (flows, charts whose numbers are not one rectangular table)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SuppressedCells:
    """Named counts after small-cell suppression (:func:`suppress_cells`).

    Attributes
    ----------
    values:
        The counts as given (key → number; missing values are None/NaN).
    hidden:
        key → True when the count must not be shown (small, or hidden to protect a small one).
    primary:
        key → True when the count itself is 1 to ``min_cell - 1`` (shown as ``"<11"``); hidden keys that are not
        primary are complementary (shown as ``"*"``).
    min_cell, enabled, notes, n_derived_protected:
        As on :class:`SuppressedTable`.
    """

    values: Mapping[object, float | None]
    hidden: Mapping[object, bool]
    primary: Mapping[object, bool]
    min_cell: int = 11
    enabled: bool = True
    notes: tuple[str, ...] = ()
    n_derived_protected: int = 0

    def shown(self, key: object) -> bool:
        """May the count ``key`` be shown (or used to place a point)?"""
        return not self.hidden.get(key, False)

    def value(self, key: object) -> float | None:
        """The count, or None when it is hidden or missing."""
        v = self.values.get(key)
        return None if self.hidden.get(key, False) or _is_missing(v) else float(v)  # type: ignore[arg-type]

    def text(self, key: object) -> str:
        """The count as display text: ``"<11"`` (small), ``"*"`` (complementary), else ``"1,234"``/``"—"``."""
        if self.hidden.get(key, False):
            if self.primary.get(key, False):
                return _small_label(self.min_cell)
            return COMPLEMENT_MARK
        return mask_text(self.values.get(key), min_cell=self.min_cell, enabled=False)


def suppress_cells(
    values: Mapping[object, float | None],
    *,
    sums: Sequence[tuple[Sequence[object], object]] = (),
    rates: Sequence[tuple[object, object]] = (),
    known: Sequence[object] = (),
    hidden_elsewhere: Sequence[object] = (),
    pooled: bool = False,
    min_cell: int = 11,
    enabled: bool = True,
) -> SuppressedCells:
    """Hide small counts among named cells tied by any additive relations (the engine of :func:`suppress_counts`).

    For numbers that are not one rectangular table: a patient flow (each step is its parent minus the losses),
    the bars or points of a chart (parts of a total that is known elsewhere), a row of tiles.

    Parameters
    ----------
    values:
        key → count. A key shown in several places is one cell (hide it everywhere or nowhere); give numbers that
        are equal by construction (e.g. the same denominator in several rows) the same key.
    sums:
        ``(parts, total)``: ``sum(parts) + rest = total``. The rest (``total - sum``, categories not shown) is a
        derived count, protected when it is 1–10. A relation whose parts add up to more than the total (overlapping
        categories) gives a reader no equation and is skipped.
    rates:
        ``(numerator, denominator)`` of a percentage that is shown (or placed on a chart): the complement
        ``denominator - numerator`` is protected like a count. Hide the percentage whenever either count is hidden.
    known:
        Cells a reader knows anyway (totals published elsewhere): never chosen as complementary cells, so the
        protection holds even though they are known. They are still hidden (and protected) when small.
    hidden_elsewhere:
        Cells that another output of the same numbers hides (e.g. a total that the patient-flow table shows as
        ``"*"``): hidden here too, and protected like a hidden count (never left the only unknown of a relation),
        so that this output does not give away what the other hides.
    pooled:
        Also protect the hidden parts of a shown total taken together: when ``total - shown parts`` (the sum of
        the hidden parts, one of them small) is 1 to ``min_cell - 1``, one more part is hidden ("the two small
        programs have 7 patients between them" is a small count too). Used for every output that prints a
        total beside its parts (the patient flow, the ``analyze`` JSON, the meeting pack's group tables).
    min_cell, enabled:
        As in :func:`suppress_counts`.

    Returns
    -------
    SuppressedCells
        ``hidden``/``primary`` per key, ``text(key)`` for display, ``notes``.

    Notes
    -----
    Same rules as :func:`suppress_counts`: primary suppression of 1 to ``min_cell - 1``, derived counts protected,
    complementary suppression by the next smallest non-zero cell to a fixed point, then the exact audit.
    """
    keys = list(values)
    unknown = [k for rel in sums for k in (*rel[0], rel[1])] + [k for r in rates for k in r]
    missing = [k for k in [*unknown, *known, *hidden_elsewhere] if k not in values]
    if missing:
        raise ValueError(f"Relations name cells that have no value: {missing[:5]}.")
    if not enabled:
        no = dict.fromkeys(keys, False)
        return SuppressedCells(values=dict(values), hidden=no, primary=dict(no), min_cell=min_cell, enabled=False,
                               notes=(OFF_NOTE.format(hi=min_cell - 1),))
    prob = _Problem(min_cell, pooled=pooled)
    where = {k: prob.add_real(r, "cell", values[k]) for r, k in enumerate(keys)}
    for k in known:
        prob.real[where[k]] = False  # known to the reader: not a cell that hiding would take away
    for k in hidden_elsewhere:
        prob.hidden[where[k]] = not prob.missing[where[k]]
    relations = [([*parts], total) for parts, total in sums] + [([num], den) for num, den in rates]
    for parts, total in relations:
        idx = list(dict.fromkeys(where[p] for p in parts))
        if where[total] in idx:
            continue
        vals = [prob.value[i] for i in idx]
        if not math.isnan(prob.value[where[total]]) and not any(math.isnan(v) for v in vals) \
                and sum(vals) > prob.value[where[total]] + 1e-9:
            continue  # overlapping parts: no equation
        prob.parts_total(idx, where[total], what=f"cells {parts!r} of {total!r}")
    prob.solve()
    hidden = {k: bool(prob.hidden[where[k]] and not prob.missing[where[k]]) for k in keys}
    primary = {k: bool(prob.sensitive[where[k]]) for k in keys}
    derived = sum(1 for i in range(len(prob.value)) if not prob.real[i] and prob.sensitive[i])
    mask = pd.DataFrame({"cell": [hidden[k] for k in keys]})
    prim = pd.DataFrame({"cell": [primary[k] for k in keys]})
    notes = _notes(mask, prim, ["cell"], derived, min_cell)
    return SuppressedCells(values=dict(values), hidden=hidden, primary=primary, min_cell=min_cell, enabled=True,
                           notes=notes, n_derived_protected=derived)


def hidden_rate_points(numerators: Sequence[float], denominators: Sequence[float], *, total: bool = True,
                       min_cell: int = 11, enabled: bool = True) -> np.ndarray:
    """Which points of a rate chart (months of a control chart, units of a funnel plot) must not be drawn.

    A point placed at ``numerator / denominator`` (and, on a funnel plot, at ``x = denominator``; on a control chart
    with limits that depend on the denominator) gives both counts away. A point is hidden when its numerator, its
    denominator or its complement is 1 to ``min_cell - 1``; with ``total=True`` the points are parts of a total
    (all months, all units) that is assumed known elsewhere (when its own rate may be shown), and complementary
    points are hidden so that a hidden point cannot be worked out from the total and the others.

    Returns
    -------
    numpy.ndarray
        One boolean per point: True = do not draw it, nor show its counts.
    """
    x = [float(v) for v in numerators]
    n = [float(v) for v in denominators]
    if len(x) != len(n):
        raise ValueError(f"numerators and denominators differ in length ({len(x)} vs {len(n)}).")
    if not enabled:
        return np.zeros(len(x), dtype=bool)
    cells: dict[object, float | None] = {}
    for i, (a, b) in enumerate(zip(x, n)):
        cells[("num", i)], cells[("den", i)] = a, b
    sums: list[tuple[Sequence[object], object]] = []
    if total and len(x) > 1:
        cells["num_total"] = float(np.nansum(x))
        cells["den_total"] = float(np.nansum(n))
        sums = [([("num", i) for i in range(len(x))], "num_total"),
                ([("den", i) for i in range(len(x))], "den_total")]
    # a total whose own rate may be shown (a centre line, an overall rate) is known to the reader: never hidden
    # to protect a point; one that is not (it reveals a small count itself) is an ordinary cell
    known = [k for k in ("num_total", "den_total") if k in cells] if len(x) > 1 and rate_is_safe(
        cells["num_total"], cells["den_total"], min_cell=min_cell) else []
    try:
        out = suppress_cells(cells, sums=sums, rates=[(("num", i), ("den", i)) for i in range(len(x))],
                             known=known, min_cell=min_cell)
    except RuntimeError:  # pragma: no cover - no complementary cell found: show nothing rather than too much
        return np.ones(len(x), dtype=bool)
    return np.array([out.hidden[("num", i)] or out.hidden[("den", i)] for i in range(len(x))], dtype=bool)


def fraction_text(numerator: float | None, denominator: float | None, *, min_cell: int = 11,
                  enabled: bool = True) -> tuple[str, str]:
    """``("45", "60")`` for "45 of 60", with the complement protected: small counts show as ``"<11"``, and when
    ``denominator - numerator`` is 1–10 the numerator shows as ``"*"`` (otherwise "45 of 50" gives away 5)."""
    cells = suppress_cells({"num": numerator, "den": denominator}, rates=[("num", "den")], min_cell=min_cell,
                           enabled=enabled)
    return cells.text("num"), cells.text("den")


def render_note(note: str, *, min_cell: int = 11, enabled: bool = True) -> str:
    """The note as a reader sees it: marked counts formatted, those of 1 to ``min_cell - 1`` masked; a marked bound
    (:func:`analytics.privacy.counts.note_below`) below ``min_cell`` widened to ``min_cell``."""
    def one(m: re.Match[str]) -> str:
        a, b = int(m.group(1)), m.group(2)
        if b is None:
            return mask_text(a, min_cell=min_cell, enabled=enabled)
        num, den = fraction_text(a, int(b), min_cell=min_cell, enabled=enabled)
        return f"{num} of {den}"
    def bound(m: re.Match[str]) -> str:
        k = int(m.group(1))
        return formatting.count(max(k, min_cell) if enabled else k)
    return _MARK.sub(one, _BOUND.sub(bound, note))


def render_notes(notes: Sequence[str], *, min_cell: int = 11, enabled: bool = True) -> tuple[str, ...]:
    return tuple(render_note(n, min_cell=min_cell, enabled=enabled) for n in notes)


def suppress_flow(steps: pd.DataFrame, losses: pd.DataFrame, *, min_cell: int = 11,
                  enabled: bool = True) -> SuppressedCells:
    """Suppress a CONSORT-style flow (``analytics.outcomes.qi.FlowTable``).

    Keys: ``("step", step)`` (the step's ``n``), ``("lost", step)`` (its parent's n minus its n, when both count
    the same unit) and ``("loss", step, reason)``. Each step plus its loss is its parent, and the reasons add up to
    the loss (or less: the rest is a derived count; when they add up to more, a row with several problems, each
    reason is only checked alone). So a small step, a small loss or a small reason is hidden, and so is whatever
    would give it away: the difference of two shown bars, or a loss minus the other reasons (pooled: the hidden
    reasons of a shown loss do not add up to 1–10 either). The diagram, the pack's steps and losses tables and the
    Overview page's losses table all show these cells.
    """
    values: dict[object, float | None] = {("step", s): n for s, n in zip(steps["step"], steps["n"])}
    for s, reason, n in zip(losses["step"], losses["reason"], losses["n"]):
        values[("loss", s, reason)] = n
    unit = dict(zip(steps["step"], steps["unit"]))
    sums: list[tuple[Sequence[object], object]] = []
    for s, n, parent in zip(steps["step"], steps["n"], steps["parent"]):
        if not parent or parent not in unit or unit[parent] != unit[s]:
            continue
        values[("lost", s)] = float(values[("step", parent)]) - float(n)  # type: ignore[arg-type]
        sums.append(([("step", s), ("lost", s)], ("step", parent)))
        reasons = [("loss", s, r) for r in losses.loc[losses["step"] == s, "reason"]]
        if reasons:
            sums.append((reasons, ("lost", s)))  # skipped by suppress_cells when the reasons overlap
    return suppress_cells(values, sums=sums, pooled=True, min_cell=min_cell, enabled=enabled)


ALL_LABEL = "(all)"


def file_count_cells(files: Mapping[str, Any], n_patients: int, *, min_cell: int = 11,
                     enabled: bool = True) -> SuppressedCells:
    """The data-quality counts of an upload after small-cell suppression.

    ``files``: file kind → ``schemas.frames.FileReport``. Keys ``("rows", kind)``, ``("accepted", kind)``,
    ``("aside", kind)``, ``("out", kind)``, ``("merged", kind)`` and ``("patients",)``; accepted + set aside = rows
    read (and, for a long file, follow-ups + merged = accepted) are the relations a reader could use.
    """
    counts: dict[object, float | None] = {("patients",): n_patients}
    relations: list[tuple[Sequence[object], object]] = []
    for kind, report in files.items():
        counts.update({("rows", kind): report.rows, ("accepted", kind): report.accepted,
                       ("aside", kind): report.quarantined, ("out", kind): report.output_rows,
                       ("merged", kind): report.merged})
        relations.append(([("accepted", kind), ("aside", kind)], ("rows", kind)))
        if report.long_format:
            relations.append(([("out", kind), ("merged", kind)], ("accepted", kind)))
    return suppress_cells(counts, sums=relations, min_cell=min_cell, enabled=enabled)


def issue_counts(issues: pd.DataFrame, *, min_cell: int = 11, enabled: bool = True) -> pd.DataFrame:
    """A quarantine report as aggregate counts only (no values, no line numbers), small counts suppressed.

    Parameters
    ----------
    issues:
        ``ValidatedExports.issues`` (``file``, ``line``, ``column``, ``value``, ``reason``); only ``file``,
        ``column`` and ``reason`` are read.

    Returns
    -------
    pandas.DataFrame
        ``file``, ``column``, ``reason``, ``problems`` (text: ``"<11"``, ``"*"`` or the count): one row per
        (file, column, reason), a row per file with ``column == "(all)"`` (its total) and a last row with
        ``file == "(all)"`` (all problems). The parts add up to the totals, so complementary suppression runs
        over both levels.
    """
    if issues.empty:
        return pd.DataFrame(columns=["file", "column", "reason", "problems"])
    g = issues.groupby(["file", "column", "reason"], sort=True, dropna=False).size()
    values: dict[object, float | None] = {("cell", *k): float(n) for k, n in g.items()}  # type: ignore[misc]
    files = list(dict.fromkeys(k[0] for k in g.index))
    sums: list[tuple[Sequence[object], object]] = []
    for f in files:
        values[("file", f)] = float(g.loc[f].sum())
        sums.append(([("cell", *k) for k in g.index if k[0] == f], ("file", f)))
    values[("all",)] = float(g.sum())
    sums.append(([("file", f) for f in files], ("all",)))
    cells = suppress_cells(values, sums=sums, min_cell=min_cell, enabled=enabled)
    rows = []
    for f in files:
        rows += [(f, c, r, cells.text(("cell", f, c, r))) for (ff, c, r) in g.index if ff == f]
        rows.append((f, ALL_LABEL, "", cells.text(("file", f))))
    rows.append((ALL_LABEL, ALL_LABEL, "", cells.text(("all",))))
    return pd.DataFrame(rows, columns=["file", "column", "reason", "problems"])


def suppress_upload_comparison(table: pd.DataFrame, *, enabled: bool) -> SuppressedTable:
    """Suppress the Upload history's comparison of two uploads (``metric``, ``a``, ``b``): each column's patient partition and sessions are additive; "in both" is shared."""
    blocks = {"patients": "patients", "patients in both": "patients", "patients only in this upload": "patients",
              "sessions": "sessions", "ketamine sessions": "sessions", "follow-ups": "follow-ups"}
    t = table[["metric", "a", "b"]].assign(block=table["metric"].map(blocks),
                                           total=table["metric"].isin(["patients", "sessions", "follow-ups"]))
    out = suppress_counts(t, count_columns=["a", "b"], margin=("total", True), by=["block"], enabled=enabled)
    both = out.table["metric"] == "patients in both"
    if enabled and out.mask.loc[both, "a"].any() != out.mask.loc[both, "b"].any():
        # the shared count is hidden on one side only: the other side would give it away; hide the block
        block = (t["block"] == "patients").to_numpy()
        mask = out.mask.copy()
        mask.loc[block, ["a", "b"]] = True
        shown = out.table.copy()
        shown.loc[block, ["a", "b"]] = pd.NA
        out = dataclasses.replace(out, table=shown, mask=mask)
    return out


def upload_patient_texts(counts: list[tuple[object, int]], *, min_cell: int, enabled: bool) -> dict[object, str]:
    """Patient counts (key, count) of the uploads, oldest first, as shown: a count of 1 to ``min_cell - 1`` is
    ``"<11"``, and one that differs from a count already shown by 1 to ``min_cell - 1`` is ``"*"`` (52 beside 55
    gives away 3)."""
    shown: list[int] = []
    out: dict[object, str] = {}
    for key, n in counts:
        if enabled and is_small(n, min_cell=min_cell):
            out[key] = mask_text(n, min_cell=min_cell)
        elif enabled and any(is_small(abs(n - m), min_cell=min_cell) for m in shown):
            out[key] = COMPLEMENT_MARK
        else:
            out[key] = mask_text(n, enabled=False)
            shown.append(n)
    return out
