"""Long assessment files: one row per completed questionnaire, pivoted into follow-up rows.

Outcome platforms and EHRs export scores as observations: patient, date, instrument code, value (for
example Mirah's flat file: ``subjectId, effectiveDate, code, valueInt, valueFloat, valueString``, with LOINC
codes such as ``44261-6`` for the PHQ-9 total). A preset or mapping with a ``[followups.long]`` section
reads such a file: :func:`pivot_long` turns its rows into one follow-up row per patient and day, each code
filling the canonical column the preset names in ``[followups.codes]``.

Every source row is accounted for, and keeps its own line number (header = line 1):

* **accepted**: it fills one measure of a follow-up (the first source row of a patient's day starts the
  follow-up; the others are *merged* into it);
* **merged** as an identical repeat: the same patient, day and measure with the same value (``12`` and
  ``12.0`` are the same) is kept once; the repeat is counted as merged and named in the notes;
* **quarantined** with a reason: no patient, no or invalid date, no code, an unknown code, no value,
  value columns that disagree, a value that is not a number / not allowed for its measure, or
  **conflicting duplicates**: the same patient, day and measure with different values. Both (all) rows
  are set aside, because nothing in the file says which one is right; a clinic fixes it at the source.
  Columns mapped as follow-up attributes (e.g. ``status`` in its own column) must agree across the rows of
  one follow-up; when they do not, the follow-up's rows are set aside.

Later, :mod:`schemas.validate` applies the contract's row rules to the pivoted follow-ups (ketamine session
first, window arithmetic, …); a follow-up it sets aside takes all its source rows with it, and
:meth:`schemas.reader.RawExport.explain_issues` points such issues back at the source lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from schemas.columns import read_columns
from schemas.frames import parse_bool
from schemas.presets import ITEM_COUNTS, ITEM_MAX, ITEM_TARGETS, LongLayout, Preset, item_note, sum_items

CODE = "__code"
VALUE = "__value"
_ROW_KEYS = ("patient_id", "assessment_date")


@dataclass(frozen=True)
class LongResult:
    """A pivoted long file.

    ``frame``: one row per follow-up (text values, canonical names, ``line`` = first source line, ``extra:``
    columns with the distinct values of the rows joined by ``"; "``). ``issues``: one dict per source row
    set aside (``file``, ``line``, ``column``, ``value``, ``reason``). ``sources``: ``line``,
    ``followup_line``, ``column``, ``duplicate`` for every other source row.
    """

    frame: pd.DataFrame
    issues: list[dict]
    sources: pd.DataFrame
    identical_duplicates: int
    notes: tuple[str, ...] = ()


def _schema_columns(kind: str) -> dict[str, pa.Column]:
    from schemas.followups import FollowupsSchema
    from schemas.patients import PatientsSchema
    from schemas.sessions import SessionsSchema

    model = {"sessions": SessionsSchema, "followups": FollowupsSchema, "patients": PatientsSchema}[kind]
    return dict(model.to_schema().columns)


def _description(kind: str, column: str) -> str:
    col = _schema_columns(kind).get(column)
    return (col.description or "") if col is not None else ""


_DATE_REASON = {
    None: "not a valid date: dates must look like 2026-11-25 (a date-time such as 2026-11-25T09:30:00Z is read "
          "as its date)",
    "iso": "not a valid date: dates must look like 2026-11-25 (a date-time such as 2026-11-25T09:30:00Z is read "
           "as its date); if your export writes day-first or month-first dates, choose that date format",
    "dayfirst": "not a valid date: dates must look like 25/11/2026 (day first) or 2026-11-25",
    "monthfirst": "not a valid date: dates must look like 11/25/2026 (month first) or 2026-11-25",
}


class _Flags:
    """The first reason each source row is set aside (one issue per row)."""

    def __init__(self, frame: pd.DataFrame, name: str) -> None:
        self.name = name
        self.lines = frame["line"].to_numpy()
        n = len(frame)
        self.bad = np.zeros(n, dtype=bool)
        self.column = np.full(n, "", dtype=object)
        self.value = np.full(n, "", dtype=object)
        self.reason = np.full(n, "", dtype=object)

    def add(self, mask: np.ndarray | pd.Series, column: str, value: pd.Series | str,
            reason: pd.Series | np.ndarray | str) -> None:
        new = np.asarray(mask, dtype=bool) & ~self.bad
        if not new.any():
            return
        self.bad |= new
        self.column[new] = column
        if isinstance(value, str):
            self.value[new] = value
        else:
            self.value[new] = pd.Series(value).astype("string").fillna("").to_numpy(dtype=object)[new]
        if isinstance(reason, str):
            self.reason[new] = reason
        else:
            self.reason[new] = np.asarray(reason, dtype=object)[new]

    def issues(self) -> list[dict]:
        pos = np.flatnonzero(self.bad)
        return [{"file": self.name, "line": int(self.lines[i]), "column": str(self.column[i]),
                 "value": str(self.value[i]), "reason": str(self.reason[i])} for i in pos]


def _norm_codes(codes: pd.Series) -> pd.Series:
    return codes.str.strip().str.lower().str.replace(r"[^0-9a-z]+", "_", regex=True).str.strip("_")


def _known_codes(preset: Preset, kind: str, layout: LongLayout) -> str:
    written = list(preset.data.get(kind, {}).get("codes", {}))
    if not written:
        written = list(layout.codes)
    shown = ", ".join(written[:12]) + (" …" if len(written) > 12 else "")
    return shown


def _first_value(frame: pd.DataFrame, value_headers: list[str]) -> tuple[pd.Series, pd.Series]:
    """(first non-empty value, reason where two value columns disagree)."""
    cols = [c for c in frame.columns if c.startswith(VALUE)]
    cols.sort(key=lambda c: int(c[len(VALUE):]))
    vals = frame[cols]
    first = pd.Series(pd.NA, index=frame.index, dtype="string")
    for c in cols:
        first = first.fillna(vals[c].astype("string"))
    disagree = pd.Series("", index=frame.index, dtype=object)
    if len(cols) > 1:
        first_num = pd.to_numeric(first.str.replace(",", ".", regex=False), errors="coerce").astype("float64")
        for c in cols:
            other = vals[c].astype("string")
            other_num = pd.to_numeric(other.str.replace(",", ".", regex=False), errors="coerce").astype("float64")
            same_num = (other_num == first_num).to_numpy(dtype=bool)
            same_text = (other.str.strip().str.lower() == first.str.strip().str.lower()).fillna(False)
            same = same_num | same_text.to_numpy(dtype=bool)
            clash = other.notna().to_numpy() & first.notna().to_numpy() & ~same
            for idx in frame.index[clash]:
                if disagree[idx]:
                    continue
                given = [f"{value_headers[int(k[len(VALUE):])]} {vals.at[idx, k]}" for k in cols
                         if pd.notna(vals.at[idx, k])]
                disagree[idx] = f"the value columns disagree ({', '.join(given)}); keep one value per row"
    return first, disagree


def _parse_measure(texts: pd.Series, column: str, kind: str, preset: Preset, dates: str | None,
                   flags: _Flags, mask_of: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse the values of one measure; flag what does not parse or is not allowed.

    Returns (text written into the follow-up, comparison key for duplicates), indexed like ``texts``.
    """
    from schemas.dates import parse_dates  # validate imports the reader, which imports this module

    ctype = read_columns(kind).get(column, "integer")  # an item of a questionnaire (phq9_item3): 0-3
    desc = _description(kind, column) if column not in ITEM_TARGETS else \
        f"a {ITEM_TARGETS[column]} item score, a whole number from 0 to {ITEM_MAX}"
    n = len(mask_of)
    out = texts.astype("string")
    key = out.str.strip()
    typed: pd.Series | None = None

    def flag(sub_mask: pd.Series, reason: str) -> None:
        full = np.zeros(n, dtype=bool)
        full[mask_of.index.get_indexer(sub_mask.index[sub_mask.to_numpy()])] = True
        values = pd.Series("", index=mask_of.index, dtype="string")
        values.loc[texts.index] = texts
        flags.add(full, column, values, reason)

    if ctype in ("number", "integer"):
        cleaned = texts.str.replace(",", ".", regex=False) if ctype == "number" else texts
        num = pd.to_numeric(cleaned, errors="coerce").astype("float64")
        flag(num.isna(), f"not a number; {desc}")
        if ctype == "integer":
            frac = num.notna() & (np.floor(num) != num)
            flag(frac, f"must be a whole number; {desc}")
        key = num.map(repr).astype("string")
        typed = num
        if column in ITEM_TARGETS:
            flag(num.notna() & ~num.isin(range(ITEM_MAX + 1)), f"is not {desc}")
            typed = None
    elif ctype == "boolean":
        b = parse_bool(texts)
        flag(b.isna(), "not a yes/no answer; write yes or no (true/false and 1/0 are read too)")
        key = b.astype("string")
        typed = b
    elif ctype == "date":
        d = parse_dates(texts, dates or "iso")
        if dates is not None:
            flag(d.isna(), _DATE_REASON[dates])
        iso = d.dt.strftime("%Y-%m-%d").astype("string")
        out = iso.fillna(out)
        key = out
        typed = d
    elif ctype == "category":
        plain = {k: v for k, v in preset.values.get(kind, {}).get(column, {}).items() if isinstance(v, str)}
        low = texts.str.strip().str.lower()
        mapped = low.map(plain).astype("string").fillna(low)
        out = mapped
        key = mapped
        typed = mapped.astype("str")
    if typed is not None:
        ok = typed.notna().to_numpy() & ~flags.bad[mask_of.index.get_indexer(texts.index)]
        if ok.any():
            spec = _schema_columns(kind).get(column)
            if spec is not None:
                sub = pd.DataFrame({column: typed[ok]})
                try:
                    pa.DataFrameSchema({column: spec}, strict=False, coerce=False).validate(sub, lazy=True)
                except pa.errors.SchemaErrors as err:
                    fc = err.failure_cases
                    labels = fc.loc[fc["index"].notna(), "index"].unique()
                    bad = pd.Series(texts.index.isin(labels), index=texts.index)
                    flag(bad, f"not allowed: {desc}")
    return out, key


def pivot_long(frame: pd.DataFrame, *, kind: str, name: str, layout: LongLayout, preset: Preset,
               dates: str | None, code_header: str, value_headers: list[str]) -> LongResult:
    """Pivot a long file's rows (text, canonical names, ``__code``, ``__value<i>``, ``line``) into follow-ups.

    Parameters
    ----------
    frame:
        The reader's frame: ``line``, ``patient_id``, ``assessment_date``, ``__code``, ``__value0``…, other
        canonical columns (follow-up attributes) and ``extra:`` columns; values are text or missing.
    dates:
        ``iso``/``dayfirst``/``monthfirst``, or ``None``: group ISO dates and date-times by their day and pass
        other date text on unchanged (schemas.validate then parses or rejects it).
    code_header, value_headers:
        The file's headers for the code and value columns, for messages.

    Returns
    -------
    LongResult
    """
    from schemas.dates import parse_dates

    frame = frame.reset_index(drop=True)
    flags = _Flags(frame, name)
    n = len(frame)

    pid = frame["patient_id"].astype("string")
    flags.add(pid.isna().to_numpy(), "patient_id", "",
              f"is empty; this column is required. {_description(kind, 'patient_id')}")

    date_text = frame["assessment_date"].astype("string")
    flags.add(date_text.isna().to_numpy(), "assessment_date", "",
              f"is empty; this column is required. {_description(kind, 'assessment_date')}")
    parsed = parse_dates(date_text, dates or "iso")
    day = parsed.dt.strftime("%Y-%m-%d").astype("string")
    unparsed = (date_text.notna() & parsed.isna()).to_numpy()
    if dates is None:
        day = day.fillna(date_text.str.strip())
    else:
        flags.add(unparsed, "assessment_date", date_text, _DATE_REASON[dates])

    code = frame[CODE].astype("string")
    flags.add(code.isna().to_numpy(), code_header, "",
              "is empty; each row needs the code of the questionnaire it reports (for example 44261-6 or phq9)")
    target = _norm_codes(code).map(layout.codes).astype("string")
    unknown = (code.notna() & target.isna()).to_numpy()
    flags.add(unknown, code_header, code,
              "is not an instrument code this layout reads (known: " + _known_codes(preset, kind, layout)
              + "); add it to [followups.codes] of the mapping with the column it fills, or leave these rows "
                "out of the export")

    value, disagree = _first_value(frame, value_headers)
    flags.add(value.isna().to_numpy(), " / ".join(value_headers), "",
              "has no value; fill " + (" or ".join(value_headers)) + " with the score")
    flags.add((disagree != "").to_numpy(), " / ".join(value_headers), value, disagree.to_numpy())

    out_text = pd.Series(pd.NA, index=frame.index, dtype="string")
    cmp_key = pd.Series(pd.NA, index=frame.index, dtype="string")
    ok_now = pd.Series(~flags.bad, index=frame.index)
    for column in sorted(target[ok_now].dropna().unique()):
        rows = ok_now & target.eq(column).fillna(False)
        texts = value[rows]
        text, key = _parse_measure(texts, str(column), kind, preset, dates, flags, ok_now)
        out_text.loc[rows[rows].index] = text
        cmp_key.loc[rows[rows].index] = key

    # duplicates of one measure on one day: identical ones merge, conflicting ones are all set aside
    ok = ~flags.bad
    work = pd.DataFrame({"pid": pid, "day": day, "target": target, "key": cmp_key, "line": frame["line"],
                         "text": out_text})
    dup = np.zeros(n, dtype=bool)
    cand = work[ok]
    if len(cand):
        grouped = cand.groupby(["pid", "day", "target"], sort=False)
        distinct = grouped["key"].transform("nunique").to_numpy()
        conflict_pos = cand.index[distinct > 1]
        if len(conflict_pos):
            reasons = _conflict_reasons(work.loc[conflict_pos])
            mask = np.zeros(n, dtype=bool)
            mask[conflict_pos] = True
            full_reason = np.full(n, "", dtype=object)
            full_reason[conflict_pos] = reasons
            for column in work.loc[conflict_pos, "target"].unique():
                col_mask = mask & target.eq(column).fillna(False).to_numpy()
                flags.add(col_mask, str(column), value, full_reason)
        cand = work[~flags.bad]
        repeat = cand.duplicated(["pid", "day", "target"], keep="first")
        dup[cand.index[repeat.to_numpy()]] = True

    # follow-up attributes in their own columns must agree within a follow-up
    code_targets = set(layout.codes.values())
    attributes = [c for c in frame.columns if c in read_columns(kind) and c not in _ROW_KEYS]
    renamed = {c: f"extra:{c}" for c in attributes if c in code_targets}
    attributes = [c for c in attributes if c not in renamed]
    for column in attributes:
        cand = work[~flags.bad].assign(v=frame[column].astype("string").str.strip().str.lower())
        have = cand.dropna(subset=["v"])
        if have.empty:
            continue
        distinct = have.groupby(["pid", "day"])["v"].nunique()
        bad_groups = distinct[distinct > 1]
        if bad_groups.empty:
            continue
        key_index = pd.MultiIndex.from_arrays([cand["pid"], cand["day"]])
        in_bad = key_index.isin(bad_groups.index)
        reasons = np.full(n, "", dtype=object)
        for (p, d), grp in have[pd.MultiIndex.from_arrays([have["pid"], have["day"]]).isin(bad_groups.index)] \
                .groupby(["pid", "day"], sort=False):
            shown = ", ".join(f"{frame.at[i, column]} on line {grp.at[i, 'line']}" for i in grp.index[:6])
            text = (f"{column} differs between the rows of this patient's follow-up on {d} ({shown}); make them "
                    "agree (the whole follow-up is set aside)")
            members = cand.index[(cand["pid"] == p).to_numpy() & (cand["day"] == d).to_numpy()]
            reasons[members] = text
        mask = np.zeros(n, dtype=bool)
        mask[cand.index[in_bad]] = True
        flags.add(mask, column, frame[column], reasons)
        dup &= ~flags.bad

    ok = ~flags.bad
    return _items_to_totals(_assemble(frame, work, ok, dup, attributes, renamed, flags, name), name)


def _items_to_totals(result: LongResult, name: str) -> LongResult:
    """Item rows (codes mapped to ``phq9_item1`` …) summed into the instrument's total where the follow-up has no
    total of its own (one missing item prorated; see :func:`schemas.presets.sum_items`); the item columns go."""
    frame, notes = result.frame, list(result.notes)
    for measure, n in ITEM_COUNTS.items():
        cols = [f"{measure}_item{i}" for i in range(1, n + 1)]
        present = [c for c in cols if c in frame.columns]
        if not present:
            continue
        nums = pd.DataFrame({c: pd.to_numeric(frame[c], errors="coerce") if c in frame.columns
                             else pd.Series(np.nan, index=frame.index) for c in cols})
        answered = nums.notna().any(axis=1)
        total = sum_items(nums, n)
        current = frame[measure] if measure in frame.columns else pd.Series(pd.NA, index=frame.index, dtype="string")
        fill = current.isna() & total.notna()
        frame[measure] = current.astype("string").where(~fill, total.map(lambda x: f"{x:.0f}", na_action="ignore")
                                                         .astype("string"))
        missing = nums.isna().sum(axis=1)
        notes.append(f"{name}: " + item_note(measure, "coded one per row", int(fill.sum()),
                                             int((fill & (missing == 1)).sum()),
                                             int((current.isna() & answered & (missing > 1)).sum())))
        frame = frame.drop(columns=present)
    return LongResult(frame=frame, issues=result.issues, sources=result.sources,
                      identical_duplicates=result.identical_duplicates, notes=tuple(notes))


def _conflict_reasons(rows: pd.DataFrame) -> np.ndarray:
    """One sentence per conflicting row naming every value and line of its group."""
    out = pd.Series("", index=rows.index, dtype=object)
    for (_, d, t), grp in rows.sort_values("line").groupby(["pid", "day", "target"], sort=False):
        shown = ", ".join(f"{v} on line {ln}" for v, ln in zip(grp["text"].head(6), grp["line"].head(6)))
        more = f" and {len(grp) - 6} more" if len(grp) > 6 else ""
        out[grp.index] = (f"{t} is given {len(grp)} times for this patient on {d} with different values ({shown}"
                          f"{more}); keep the right one and remove the others (all are set aside until then)")
    return out.to_numpy()


def _assemble(frame: pd.DataFrame, work: pd.DataFrame, ok: np.ndarray, dup: np.ndarray, attributes: list[str],
              renamed: dict[str, str], flags: _Flags, name: str) -> LongResult:
    good = work[ok].copy()
    good["dup"] = dup[ok]
    extras = [c for c in frame.columns if c.startswith("extra:")] + list(renamed)
    if good.empty:
        cols = ["line", "patient_id", "assessment_date"]
        empty = pd.DataFrame({c: pd.Series(dtype="int64" if c == "line" else "string") for c in cols})
        sources = pd.DataFrame({"line": pd.Series(dtype="int64"), "followup_line": pd.Series(dtype="int64"),
                                "column": pd.Series(dtype="string"), "duplicate": pd.Series(dtype=bool)})
        return LongResult(frame=empty, issues=flags.issues(), sources=sources, identical_duplicates=0,
                          notes=(f"{name}: one row per questionnaire; no row could become a follow-up.",))
    good["fl"] = good.groupby(["pid", "day"], sort=False)["line"].transform("min").astype("int64")
    base = good.sort_values("line").drop_duplicates("fl").set_index("fl")[["pid", "day"]]
    measures = good[~good["dup"]].pivot(index="fl", columns="target", values="text")
    out = pd.DataFrame({"line": base.index.to_numpy(dtype="int64"),
                        "patient_id": base["pid"].to_numpy(), "assessment_date": base["day"].to_numpy()},
                       index=base.index)
    for column in measures.columns:
        out[str(column)] = measures[column].reindex(base.index)
    fl_of_row = good["fl"]
    for column in attributes:
        vals = frame.loc[good.index, column].astype("string")
        out[column] = vals.groupby(fl_of_row).first().reindex(base.index)
    for column in extras:
        vals = frame.loc[good.index, column].astype("string")
        pairs = pd.DataFrame({"fl": fl_of_row, "v": vals}).dropna().drop_duplicates()
        joined: dict[int, str] = {}
        for fl, v in zip(pairs["fl"].tolist(), pairs["v"].tolist()):  # rows are in line order
            joined[fl] = f"{joined[fl]}; {v}" if fl in joined else v
        out[renamed.get(column, column)] = pd.Series(joined, dtype="string").reindex(base.index)
    out = out.sort_values("line").reset_index(drop=True)
    for column in out.columns:
        if column != "line":
            out[column] = out[column].astype("string")
    sources = pd.DataFrame({"line": good["line"].to_numpy(dtype="int64"), "followup_line": good["fl"].to_numpy(),
                            "column": good["target"].astype("string").to_numpy(),
                            "duplicate": good["dup"].to_numpy(dtype=bool)}).sort_values("line", ignore_index=True)
    n_dup = int(good["dup"].sum())
    notes = [(f"{name}: one row per questionnaire; {len(good):,} rows make {len(out):,} follow-up(s) "
              "(one per patient and day).")]
    if n_dup:
        notes.append(f"{name}: {n_dup:,} row(s) repeat a score already given for the same patient, day and "
                     "measure with the same value; each was merged into the first (counted once).")
    if renamed:
        notes.append(f"{name}: column(s) {', '.join(renamed)} are also filled by codes; the column is kept for "
                     "display only and the coded rows are used.")
    if flags.bad.any():
        notes.append(f"{name}: {int(flags.bad.sum()):,} row(s) could not become part of a follow-up; each is in "
                     "the issue list with its line.")
    return LongResult(frame=out, issues=flags.issues(), sources=sources, identical_duplicates=n_dup,
                      notes=tuple(notes))
