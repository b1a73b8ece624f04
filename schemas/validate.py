"""Validation: parse each value, check it with the pandera models, apply the cross-file rules.

Every row read ends up either accepted or quarantined (``accepted + quarantined = rows read`` per file,
always). A quarantined row gets one issue per problem: file, line (as an editor shows it), column, the
value as written, and a reason a clinic user can act on. Nothing is silently dropped or fixed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_
import pyarrow.compute as pc

from schemas.arrow import map_columns, release_unused_memory, text_array, text_codes, text_isin, text_series
from schemas.columns import (
    ADVERSE_EVENT_ALIASES,
    ADVERSE_EVENTS,
    PATIENT_COLUMNS_ON_SESSIONS,
    STATUS_ALIASES,
    URINE_SUBSTANCES,
    read_columns,
)
from schemas.daily_use import DailyUseSchema
from schemas.dates import DateOrder, ParsedDates, check_timezone, parse_date_column, utc_note
from schemas.errors import UnusableExport
from schemas.followups import FollowupsSchema
from schemas.frames import (
    HIDDEN_VALUE,
    FileReport,
    ValidatedExports,
    clip_text,
    clip_texts,
    coerce_canonical,
    parse_bool,
)
from schemas.patients import PatientsSchema
from schemas.presets import Preset
from schemas.reader import MAX_BYTES, RawExport, Source, read_exports
from schemas.sessions import SessionsSchema

SCHEMAS: dict[str, type[pa.DataFrameModel]] = {
    "sessions": SessionsSchema, "followups": FollowupsSchema, "patients": PatientsSchema,
    "daily_use": DailyUseSchema}
ISSUE_COLUMNS = ["file", "line", "column", "value", "reason"]
# how many days before the first ketamine session an assessment may lie and still be read (pre-treatment, a possible
# baseline): the contract's baseline window; earlier ones are set aside with a sentence
BASELINE_WINDOW_DAYS = 30  # the contract's default baseline window (named in the pre-treatment note)
PRETREATMENT_DAYS: int | None = None  # contract v2: every pre-treatment assessment is kept



def _to_float(text: pd.Series, *, decimal_comma: bool = False) -> pd.Series:
    """Text → float64 (NaN where missing or not a number); Arrow's cast first, pandas only if a value is bad.

    ``decimal_comma``: "7,5" reads as 7.5 (commas become points, only when the plain cast fails).
    """
    try:
        out = pc.cast(text_array(text), pa_.float64()).to_numpy(zero_copy_only=False)
        return pd.Series(out, index=text.index, dtype="float64")
    except (pa_.ArrowInvalid, pa_.ArrowTypeError):
        if decimal_comma:
            return _to_float(text.str.replace(",", ".", regex=False))
        return pd.to_numeric(text, errors="coerce").astype("float64")


def _schema_columns(kind: str) -> dict[str, pa.Column]:
    """The pandera columns that check a file (patient columns also check sessions rows that carry them)."""
    cols = dict(SCHEMAS[kind].to_schema().columns)
    if kind == "sessions":
        patient_cols = PatientsSchema.to_schema().columns
        cols.update({c: patient_cols[c] for c in PATIENT_COLUMNS_ON_SESSIONS})
    return cols


def _description(kind: str, column: str) -> str:
    field = _schema_columns(kind).get(column)
    return (field.description or "") if field is not None else ""


@dataclass
class _Issues:
    """Collects issues as parallel arrays (fast for a million rows).

    ``hidden``: columns filled from a header that looks like a direct identifier; their values are never shown.
    Other values are cut to their first characters (:func:`schemas.frames.clip_texts`).
    """

    file: str
    lines: list[np.ndarray]
    columns: list[str]
    values: list[pd.Series]
    reasons: list[str | pd.Series]
    idx: list[np.ndarray]
    hidden: frozenset[str] = frozenset()
    notes: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def new(cls, file: str, hidden: tuple[str, ...] | frozenset[str] = ()) -> _Issues:
        return cls(file, [], [], [], [], [], frozenset(hidden))

    def waive(self, rows: np.ndarray, *, except_columns: tuple[str, ...] = ()) -> None:
        """Withdraw the issues of the rows in ``rows`` (a mask), but those of ``except_columns``."""
        if not rows.any():
            return
        for k, (col, positions) in enumerate(zip(self.columns, self.idx)):
            if col in except_columns:
                continue
            gone = rows[positions]
            if not gone.any():
                continue
            keep = ~gone
            self.idx[k] = positions[keep]
            self.lines[k] = self.lines[k][keep]
            self.values[k] = self.values[k][keep].reset_index(drop=True)
            if isinstance(self.reasons[k], pd.Series):
                self.reasons[k] = self.reasons[k][keep].reset_index(drop=True)

    def add(self, frame: pd.DataFrame, mask: pd.Series | np.ndarray, column: str,
            reason: str | pd.Series | Callable[[np.ndarray], pd.Series], raw: pd.DataFrame | None = None) -> None:
        """Issues for the rows of ``mask``. ``reason``: one text, a column of texts (the masked rows are taken),
        or a function of the mask giving the texts of the masked rows (so they are built only for those)."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        source = raw if raw is not None else frame
        if column in self.hidden:
            vals = pd.Series([HIDDEN_VALUE] * int(mask.sum()), dtype="string")
        elif column in source.columns:
            vals = clip_texts(source[column][mask])
        else:
            vals = pd.Series([""] * int(mask.sum()))
        self.idx.append(np.flatnonzero(mask))
        self.lines.append(frame["line"].to_numpy()[mask])
        self.columns.append(column)
        self.values.append(vals.astype("string").fillna("").reset_index(drop=True))
        if callable(reason):
            reason = pd.Series(np.asarray(reason(mask), dtype=object))
        elif isinstance(reason, pd.Series):
            reason = reason[mask].reset_index(drop=True)
        self.reasons.append(reason)

    def bad_positions(self) -> np.ndarray:
        return np.unique(np.concatenate(self.idx)) if self.idx else np.array([], dtype=int)

    def table(self) -> pd.DataFrame:
        parts = []
        for lines, col, vals, reason in zip(self.lines, self.columns, self.values, self.reasons):
            parts.append(pd.DataFrame({"file": self.file, "line": lines, "column": col,
                                       "value": vals.to_numpy(), "reason": reason}))
        if not parts:
            return pd.DataFrame(columns=ISSUE_COLUMNS)
        return pd.concat(parts, ignore_index=True)



def _convert(text: pd.Series, ctype: str, order: DateOrder, timezone: str | None = None,
             column: tuple[str, str] = ("", "")) -> pd.Series | tuple | ParsedDates:
    """One text column → its typed values (NaN/NaT/NA where not parseable); an event list also gives the rows
    naming an event that is not on the list; a date column gives its :class:`ParsedDates`."""
    if ctype == "date":
        return parse_date_column(text, order, timezone=timezone)
    if column in STATUS_ALIASES:
        return _status(text, STATUS_ALIASES[column])  # type: ignore[index]
    if ctype in ("number", "integer"):
        return _to_float(text, decimal_comma=ctype == "number")
    if ctype == "boolean":
        return parse_bool(text)
    if ctype == "list":
        return _parse_events(text)
    if ctype == "substances":
        return _parse_substances(text)
    if ctype == "category":
        return text if _no_upper_case(text) else text.str.lower()
    return text


def _status(text: pd.Series, aliases: dict[str, str]) -> pd.Series:
    """A status column: lower case, spaces and '-' as '_' (``No Show``, ``entered-in-error``), aliases mapped."""
    arr = pc.replace_substring_regex(pc.utf8_lower(text_array(text)), r"[\s\-]+", "_")
    keys = pa_.array(list(aliases), type=arr.type)
    at = pc.index_in(arr, value_set=keys)
    mapped = pc.take(pa_.array(list(aliases.values()), type=arr.type), at)
    return text_series(pc.coalesce(mapped, arr), text.index)


def _no_upper_case(text: pd.Series) -> bool:
    """True when lower-casing cannot change the column: no byte of its text is an ASCII capital or non-ASCII
    (read from Arrow's own buffers). Then the column itself is the parsed column: no second copy of its text."""
    arr = text_array(text)
    for chunk in arr.chunks if isinstance(arr, pa_.ChunkedArray) else [arr]:
        data = chunk.buffers()[2]
        if data is None:
            continue
        chars = np.frombuffer(data, dtype=np.uint8)
        if np.any((chars - np.uint8(65)) < 26) or np.any(chars >= 128):  # uint8 wraps below 65
            return False
    return True


def _parse(raw: pd.DataFrame, kind: str, order: DateOrder,
           issues: _Issues, timezone: str | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Text → typed columns; unparseable values become issues (and the row is quarantined).

    Also returns, per column, the cells that could not be parsed, so checks do not report them twice. The columns
    are converted in threads (Arrow's casts release the GIL); the issues are then added in column order.
    """
    columns = [(col, ctype, raw[col]) for col, ctype in read_columns(kind).items() if col in raw.columns]
    converted = map_columns(lambda item: _convert(item[2], item[1], order, timezone, (kind, item[0])), columns,
                            len(raw))
    typed = pd.DataFrame({"line": raw["line"].to_numpy()}, index=raw.index)
    unparsed: dict[str, np.ndarray] = {}
    for (col, ctype, text), parsed in zip(columns, converted):
        before = len(issues.idx)
        present = text.notna().to_numpy()
        if ctype == "date":
            detail: ParsedDates = parsed
            parsed = detail.dates
            bad = present & parsed.isna().to_numpy()
            if bad.any():
                why = detail.reasons.reindex(raw.index)
                issues.add(raw, bad, col, why.fillna("not a valid date").astype(object))
            note = utc_note(issues.file, col, detail, timezone)
            if note:
                issues.notes.append(note)
        elif ctype in ("number", "integer"):
            bad = present & parsed.isna().to_numpy()
            issues.add(raw, bad, col, f"not a number; {_description(kind, col)}")
            if ctype == "integer":
                frac = present & ~bad & (np.floor(parsed.to_numpy()) != parsed.to_numpy())
                issues.add(raw, frac, col, f"must be a whole number; {_description(kind, col)}")
        elif ctype == "boolean":
            issues.add(raw, present & parsed.isna().to_numpy(), col,
                       "not a yes/no answer; write yes or no (true/false and 1/0 are read too)")
        elif ctype == "list":
            parsed, unknown, dropped_at = parsed
            line_of = raw["line"].to_numpy()
            dropped = {item: [int(x) for x in line_of[pos]] for item, pos in dropped_at.items()}
            issues.add(raw, unknown, col, "contains an adverse event that is not on the list; use only: "
                       + ", ".join(ADVERSE_EVENTS) + " (separated by ';' or ',')")
            if dropped:
                shown = "; ".join(f"'{clip_text(item)}' (line{'s' if len(lines) > 1 else ''} "
                                  f"{', '.join(map(str, lines[:5]))}{' …' if len(lines) > 5 else ''})"
                                  for item, lines in list(dropped.items())[:10])
                issues.notes.append(
                    f"{issues.file}: {sum(len(v) for v in dropped.values()):,} {col} item(s) are not on the list and "
                    f"were read as 'other'; their sessions are kept: {shown}. To count them as a listed event, map "
                    f"each to it in the mapping's value step ([sessions.values.{col}], e.g. \"itchy\" = \"other\", "
                    "\"drowsy\" = \"sedation\").")
        elif ctype == "substances":
            parsed, reasons = parsed
            issues.add(raw, reasons.notna().to_numpy(), col, reasons.fillna("").astype(object))
        typed[col] = parsed
        mask = np.zeros(len(raw), dtype=bool)
        for positions in issues.idx[before:]:
            mask[positions] = True
        unparsed[col] = mask
    return typed, unparsed


def _parse_events(values: pd.Series) -> tuple[pd.Series, np.ndarray, dict[str, np.ndarray]]:
    """``Dizziness, drowsy`` → ``dizziness;sedation``: items split on ``;`` ``,`` ``|``, each read through
    :data:`~schemas.columns.ADVERSE_EVENT_ALIASES`. An item not on the list is read as ``other`` (an event was
    recorded; the session is never set aside for it). Returns the events, the rows to set aside (none), and the
    unknown items (item → row positions, one per occurrence, in row order), which the caller names in a note.

    An export writes few distinct event lists (hundreds in millions of sessions): each is read once
    (:func:`_parse_event_lists`) and the rows take theirs by code; the result is the row-by-row reading's."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)  # a missing entry: code -1
    if len(uniques) * 4 > len(values):  # hardly a value repeats: read row by row
        return _parse_event_lists(values)
    distinct = pd.Series(uniques, dtype=values.dtype)
    parsed, _, dropped_at = _parse_event_lists(distinct)
    mask = np.zeros(len(values), dtype=bool)
    dropped: dict[str, np.ndarray] = {}
    for item, at in dropped_at.items():  # the first row naming an item is its distinct list's first row: same order
        per_row = np.append(np.bincount(at, minlength=len(distinct)), 0)[codes]  # code -1 → the appended 0
        rows = np.flatnonzero(per_row)
        dropped[item] = np.repeat(rows, per_row[rows])
    if parsed is distinct:
        return values, mask, dropped  # already as the contract writes it: the file's own column
    return pd.Series(parsed.array.take(codes, allow_fill=True), index=values.index), mask, dropped


def _parse_event_lists(values: pd.Series) -> tuple[pd.Series, np.ndarray, dict[str, np.ndarray]]:
    """:func:`_parse_events` on every row."""
    text = pc.utf8_lower(text_array(values))
    text = pc.utf8_trim(pc.replace_substring_regex(text, r"\s*[;,|]\s*", ";"), ";")
    text = pc.utf8_trim_whitespace(text)
    text = pc.if_else(pc.equal(text, ""), pa_.scalar(None, type=text.type), text)
    tokens = pc.split_pattern(text, ";")
    flat = pc.list_flatten(tokens)
    parents = pc.list_parent_indices(tokens).to_numpy(zero_copy_only=False)
    alias_at = pc.index_in(flat, value_set=pa_.array(list(ADVERSE_EVENT_ALIASES), type=flat.type))
    flat = pc.coalesce(pc.take(pa_.array(list(ADVERSE_EVENT_ALIASES.values()), type=flat.type), alias_at), flat)
    known = np.asarray(pc.is_in(flat, value_set=pa_.array(list(ADVERSE_EVENTS), type=flat.type))
                       .to_numpy(zero_copy_only=False), dtype=bool)
    blank = np.asarray(pc.equal(flat, "").to_numpy(zero_copy_only=False), dtype=bool)
    unknown = ~known & ~blank
    n = len(values)
    n_known = np.bincount(parents[known], minlength=n)
    n_unknown = np.bincount(parents[unknown], minlength=n)
    mask = np.zeros(n, dtype=bool)
    del n_known, n_unknown
    dropped: dict[str, np.ndarray] = {}
    if unknown.any():
        items = np.asarray(flat.filter(pa_.array(unknown)).to_pylist(), dtype=object)
        at = parents[unknown]
        for item in dict.fromkeys(items):
            dropped[str(item)] = at[items == item]
    written = text_array(values)
    if not unknown.any() and alias_at.null_count == len(alias_at) and text.null_count == written.null_count \
            and pc.all(pc.equal(text, written.cast(text.type))).as_py() in (True, None):
        return values, mask, dropped  # already as the contract writes it: the file's own column, no second copy
    keep = known | unknown
    flat = pc.if_else(pa_.array(unknown), pa_.scalar("other", type=flat.type), flat)
    counts = np.bincount(parents[keep], minlength=n)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    kept = flat.filter(pa_.array(keep))
    if isinstance(kept, pa_.ChunkedArray):
        kept = kept.combine_chunks()
    lists = pa_.ListArray.from_arrays(pa_.array(offsets), kept.cast(pa_.string()))
    joined = pc.binary_join(lists, ";")
    joined = pc.if_else(pc.equal(joined, ""), pa_.scalar(None, type=pa_.string()), joined)
    return text_series(joined, values.index), mask, dropped


def _parse_substances(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``Buprenorphine; EtG``-style lists (contract v2 ``urine_substances``, ``prescribed``) → ``buprenorphine;…``:
    items split on ``;`` ``,`` ``|``, lower case, each one of :data:`~schemas.columns.URINE_SUBSTANCES`. Returns the
    normalised lists (missing when empty) and, per row, the reason it is set aside (missing when it is fine): an item
    that is not on the list is named."""
    allowed = frozenset(URINE_SUBSTANCES)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)  # each distinct list is read once; missing: -1
    text = pd.Series(uniques, dtype="string").str.lower().str.replace(r"\s*[;,|]\s*", ";", regex=True).str.strip(" ;")
    parsed: list[object] = []
    why: list[object] = []
    for value in text.mask(text.eq("").fillna(False)):
        if value is pd.NA:
            parsed.append(pd.NA)
            why.append(pd.NA)
            continue
        items = [i.strip() for i in str(value).split(";") if i.strip()]
        unknown = [i for i in items if i not in allowed]
        parsed.append(pd.NA if unknown else ";".join(dict.fromkeys(items)))
        why.append(f"'{clip_text(unknown[0])}' is not a substance of the list; use only: "
                   + ", ".join(URINE_SUBSTANCES) + " (separated by ';'), or map it in the mapping" if unknown else pd.NA)
    out = pd.Series(pd.array(parsed + [pd.NA], dtype="string").take(codes), index=values.index)  # code -1 → the NA
    reasons = pd.Series(pd.array(why + [pd.NA], dtype="string").take(codes), index=values.index)
    return out, reasons


# pandera's built-in checks the models use, vectorised on the column's present values (pandera's own definitions)
_BUILTIN_CHECKS: dict[str, Callable[[pd.Series, dict], pd.Series]] = {
    "greater_than": lambda s, st: s > st["min_value"],
    "greater_than_or_equal_to": lambda s, st: s >= st["min_value"],
    "less_than_or_equal_to": lambda s, st: s <= st["max_value"],
    "isin": lambda s, st: s.isin(st["allowed_values"]),
    "str_length": lambda s, st: _str_length(s.str.len(), **st),
}


def _str_length(length: pd.Series, min_value: int | None = None, max_value: int | None = None,
                exact_value: int | None = None) -> pd.Series:
    if exact_value is not None:
        return length == exact_value
    ok = pd.Series(True, index=length.index)
    if min_value is not None:
        ok &= length >= min_value
    if max_value is not None:
        ok &= length <= max_value
    return ok


def _column_failures(values: pd.Series, field: pa.Column) -> tuple[np.ndarray, set[str]] | None:
    """The rows that fail ``field``'s checks, and which checks failed (``not_nullable`` and the check names), as
    pandera finds them (failure cases with a row), computed on NumPy/Arrow without pandera's per-check copies.

    None when the column holds anything this does not cover (a dtype other than the declared one, a check that is not
    one of :data:`_BUILTIN_CHECKS`, a check that raises): the caller then asks pandera itself."""
    from pandera.engines.pandas_engine import Engine

    try:
        if field.unique or field.regex or not field.dtype.check(Engine.dtype(values.dtype)):
            return None
    except TypeError:
        return None
    present = values.notna().to_numpy(dtype=bool)
    failed = np.zeros(len(values), dtype=bool)
    kinds: set[str] = set()
    if not field.nullable and not present.all():
        failed |= ~present
        kinds.add("not_nullable")
    if not field.checks:
        return failed, kinds
    for check in field.checks:  # each built-in check is a function of each value alone: evaluated on the whole
        rule = _BUILTIN_CHECKS.get(check.name)  # column, then kept on the present values (pandera drops the rest)
        if rule is None or not check.ignore_na or check.element_wise or check.groupby is not None:
            return None
        try:
            ok = rule(values, check.statistics)
            ok = ok.fillna(False).to_numpy(dtype=bool) if isinstance(ok, pd.Series) else np.asarray(ok, dtype=bool)
        except Exception:  # pandera reports a check that raises without rows; let it say so itself
            return None
        bad = present & ~ok
        if bad.any():
            failed |= bad
            kinds.add(check.name)
    return failed, kinds


def _pandera_failures(sub: pd.DataFrame, columns: dict[str, pa.Column],
                      cols: list[str]) -> list[tuple[str, np.ndarray, set[str]]]:
    """(column, failing rows, failed checks) in column order, from pandera's lazy validation of ``sub``."""
    partial = pa.DataFrameSchema({c: columns[c] for c in cols}, strict=False, coerce=False)
    try:
        partial.validate(sub, lazy=True, inplace=True)  # sub is a frame of our own: spare pandera a copy
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases
        fc = fc[fc["index"].notna() & fc["column"].isin(cols)]
        out = []
        for col, group in fc.groupby("column", sort=False):
            positions = sub.index.get_indexer(group["index"].astype(int).unique())
            mask = np.zeros(len(sub), dtype=bool)
            mask[positions[positions >= 0]] = True
            out.append((str(col), mask, set(group["check"].astype(str))))
        return out
    return []


def _pandera_issues(typed: pd.DataFrame, raw: pd.DataFrame, kind: str, issues: _Issues,
                    skip: dict[str, np.ndarray], *, engine: Literal["auto", "pandera"] = "auto") -> None:
    """Issues of the pandera models' column checks (required, allowed values, ranges).

    ``engine="auto"``: the models' built-in checks are evaluated column by column on the values
    (:func:`_column_failures`; the same rows and sentences as pandera's, a test compares them); pandera validates
    only when a column has something else. ``"pandera"``: pandera validates every column (the reference)."""
    columns = _schema_columns(kind)
    cols = [c for c in columns if c in typed.columns]
    sub = typed[cols]  # copy-on-write: setting columns below leaves typed as it is
    for col in cols:  # dtypes the model declares, even for all-missing columns
        if str(columns[col].dtype) == "str":
            sub[col] = sub[col].astype("str")
    found: list[tuple[str, np.ndarray, set[str]]] | None = [] if engine == "auto" else None
    for col in cols if found is not None else ():
        result = _column_failures(sub[col], columns[col])
        if result is None:
            found = None
            break
        if result[0].any():
            found.append((col, *result))
    if found is None:
        found = _pandera_failures(sub, columns, cols)
    for col, mask, checks in found:
        if col in skip:
            mask &= ~skip[col]  # already reported as unparseable
        if any("not_nullable" in c or "str_length" in c for c in checks):
            reason = f"is empty; this column is required. {_description(kind, col)}"
        else:
            reason = f"not allowed: {_description(kind, col)}"
        issues.add(raw, mask, col, reason)


def _row_codes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One integer per row, equal exactly when the rows are equal on ``columns`` (a missing value equals a missing
    value): each column factorised (Arrow's hash for text), the codes combined, re-factorised before they could
    overflow."""
    key = np.zeros(len(frame), dtype=np.int64)
    bound = 1  # key < bound
    for col in columns:
        codes, uniques = pd.factorize(frame[col], use_na_sentinel=True)
        width = len(uniques) + 1
        if bound * width >= 1 << 62:
            key, seen = pd.factorize(key)
            bound = len(seen)
        key *= width  # in place: no temporary key-sized arrays
        key += codes
        key += 1
        del codes, uniques
        bound *= width
    return key


def _repeated(key: np.ndarray) -> np.ndarray:
    """True where the value occurs more than once in ``key`` (``duplicated(keep=False)``): one sorted copy and a hash
    of the repeated values only, in place of a hash table of every value (a third of the memory, and faster)."""
    ordered = np.sort(key)
    same = ordered[1:] == ordered[:-1]
    again = np.unique(ordered[1:][same])
    del ordered, same
    if not again.size:
        return np.zeros(len(key), dtype=bool)
    found = pc.is_in(pa_.array(key), value_set=pa_.array(again))
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def _first_line_of(frame: pd.DataFrame, keys: list[str],
                   prefilter: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mask of later duplicates, line of the first copy — valid where the mask is set) for rows equal on ``keys``.

    With ``prefilter`` (a few of ``keys``), only rows that repeat on those columns are compared on every key.
    """
    dup = np.zeros(len(frame), dtype=bool)
    first = np.zeros(len(frame), dtype=np.int64)
    rows = np.arange(len(frame))
    if prefilter:
        rows = np.flatnonzero(_repeated(_row_codes(frame, prefilter)))
        if not rows.size:
            return dup, first
    codes, _ = pd.factorize(_row_codes(frame.take(rows) if prefilter else frame, keys))
    _, first_of_code = np.unique(codes, return_index=True)  # codes number first appearances 0, 1, 2, …
    at = first_of_code[codes]
    later = at != np.arange(len(codes))
    dup[rows[later]] = True
    first[rows[later]] = frame["line"].to_numpy()[rows[at[later]]]
    return dup, first


def _line_reason(first: np.ndarray, before: str, after: str) -> Callable[[np.ndarray], pd.Series]:
    """Reasons naming the line of the first copy, built only for the flagged rows (see :meth:`_Issues.add`)."""
    return lambda mask: before + pd.Series(first[mask]).astype(str) + after


# Text columns of a read file that rules after the per-column checks quote (besides ``line`` and the dates)
_QUOTED_LATER = {
    "sessions": frozenset({"patient_id", "route", *PATIENT_COLUMNS_ON_SESSIONS}),
    "followups": frozenset({"patient_id", "assessment_date", "relapse_date", "days_abstinent", "heavy_days"}),
    "patients": frozenset({"patient_id"}),
    "daily_use": frozenset({"patient_id"}),
}


def _text_frame(raw: RawExport, release: bool) -> pd.DataFrame:
    """The read file's text columns, as Arrow-backed strings on a 0…n-1 index. With ``release`` (the caller made
    ``raw`` and hands it over), the file's own frame, so that columns dropped from it free their memory."""
    frame = raw.frame
    if not release:
        frame = frame.reset_index(drop=True)
    elif not frame.index.equals(pd.RangeIndex(len(frame))):
        frame.index = pd.RangeIndex(len(frame))
    for col in frame.columns:  # Arrow-backed strings: vectorised .str methods on a million rows
        if col != "line" and frame[col].dtype != "str":
            frame[col] = frame[col].astype("str")
    return frame


def _release_text(frame: pd.DataFrame, keep: frozenset[str] | set[str] = frozenset()) -> None:
    """Drop the text columns no later rule quotes (all but ``keep`` and ``line``), in place."""
    for col in [c for c in frame.columns if c != "line" and c not in keep]:
        del frame[col]


def _status_mask(typed: pd.DataFrame, column: str, value: str) -> np.ndarray:
    if column not in typed.columns:
        return np.zeros(len(typed), dtype=bool)
    return typed[column].eq(value).fillna(False).to_numpy(dtype=bool)


def _not_attended(typed: pd.DataFrame) -> np.ndarray:
    """Sessions rows whose status says they are not attended sessions (no_show, cancelled, scheduled, …)."""
    if "status" not in typed.columns:
        return np.zeros(len(typed), dtype=bool)
    return (typed["status"].notna() & typed["status"].ne("attended")).fillna(False).to_numpy(dtype=bool)


def _validate_file(raw: RawExport, order: DateOrder, today: pd.Timestamp,
                   release: bool = False, *, timezone: str | None = None) -> tuple[pd.DataFrame, _Issues]:
    """Parse and check one file's rows on their own. With ``release``, text columns are dropped from ``raw.frame``
    as soon as no rule will quote them (after the per-column checks, all but the dates and :data:`_QUOTED_LATER`)."""
    issues = _Issues.new(raw.name, raw.identifier_columns)
    frame = _text_frame(raw, release)
    if release:
        _release_text(frame, set(read_columns(raw.kind)))  # extra columns: never checked, never quoted
    typed, unparsed = _parse(frame, raw.kind, order, issues, timezone)
    release_unused_memory()
    _pandera_issues(typed, frame, raw.kind, issues, skip=unparsed)
    if release:
        dates = {c for c, t in read_columns(raw.kind).items() if t == "date"}
        _release_text(frame, _QUOTED_LATER[raw.kind] | dates)
    release_unused_memory()
    # sessions that did not take place (a scheduled visit may lie ahead; a no-show has no route)
    off = _not_attended(typed) if raw.kind == "sessions" else np.zeros(len(typed), dtype=bool)
    for col, ctype in read_columns(raw.kind).items():
        if ctype == "date" and col in typed.columns:
            future = (typed[col] > today).fillna(False).to_numpy() & ~off
            issues.add(frame, future, col, f"is after the upload date ({today.date()}); check the year")
    if raw.kind == "sessions":
        ket = typed["session_type"].eq("ketamine").fillna(False).to_numpy() & ~off
        no_route = ket & (typed["route"].isna().to_numpy() if "route" in typed else True)
        issues.add(frame, no_route, "route", "is empty on a ketamine session; write the route "
                   "(iv, im, sublingual, intranasal or oral)")
        keys = [c for c in typed.columns if c != "line"]
        # rows repeating on patient, date and type (few: a session of another type on the same day is not one)
        # are then compared on every column
        dup, first = _first_line_of(typed, keys, prefilter=[c for c in ("patient_id", "session_date", "session_type")
                                                              if c in typed.columns])
        dup &= typed["session_date"].notna().to_numpy()  # two rows whose dates could not be read are no duplicates
        issues.add(frame, dup, "patient_id",
                   _line_reason(first, "exact duplicate of line ", "; remove the repeated row"))
    if raw.kind == "followups":
        window = typed["window_days"].fillna(30) if "window_days" in typed else pd.Series(30.0, index=typed.index)
        if "days_abstinent" in typed:
            too_many = (typed["days_abstinent"] > window).fillna(False).to_numpy()
            issues.add(frame, too_many, "days_abstinent", lambda mask: (
                "is more than the days the window covers (window_days " + window[mask].astype(int).astype(str)
                + "; 30 when neither the row nor the mapping gives one)").to_numpy())
            if "heavy_days" in typed:
                over = (typed["heavy_days"] > window - typed["days_abstinent"].fillna(0)).fillna(False).to_numpy()
                over = over & ~too_many
                issues.add(frame, over, "heavy_days", "is more than window_days minus days_abstinent")
        elif "heavy_days" in typed:
            issues.add(frame, (typed["heavy_days"] > window).fillna(False).to_numpy(), "heavy_days",
                       "is more than the days the window covers")
        if "relapse_date" in typed:
            after = (typed["relapse_date"] > typed["assessment_date"]).fillna(False).to_numpy()
            issues.add(frame, after, "relapse_date", "is after this assessment's date; a relapse date must be on "
                       "or before the assessment that reports it")
        # an amended row replaces values of an earlier row of its day; an entered-in-error row is dropped
        plain = ~(_status_mask(typed, "observation_status", "amended")
                  | _status_mask(typed, "observation_status", "entered_in_error"))
        dup = np.zeros(len(typed), dtype=bool)
        first = np.zeros(len(typed), dtype=np.int64)
        rows = np.flatnonzero(plain)
        d_sub, f_sub = _first_line_of(typed.iloc[rows] if not plain.all() else typed, ["patient_id", "assessment_date"])
        dup[rows], first[rows] = d_sub, f_sub
        issues.add(frame, dup & typed["assessment_date"].notna().to_numpy(), "assessment_date",
                   _line_reason(first, "second assessment for this patient on the same day (first on line ",
                                "); keep one row per assessment, or mark the correction observation_status = "
                                "amended"))
    # an entered-in-error row is dropped whatever it holds: only a problem with its status sets it aside
    error_col = {"sessions": "status", "followups": "observation_status"}.get(raw.kind)
    if error_col:
        issues.waive(_status_mask(typed, error_col, "entered_in_error"), except_columns=(error_col,))
    if raw.kind == "daily_use":
        dup, first = _first_line_of(typed, ["patient_id", "date", "substance"])
        issues.add(frame, dup & typed["date"].notna().to_numpy(), "date",
                   _line_reason(first, "second row for this patient, day and substance (first on line ",
                                "); keep one row per patient, day and substance"))
        no_use = typed["used"].eq(False).fillna(False).to_numpy() & (typed["amount"] > 0).fillna(False).to_numpy() \
            if "amount" in typed else np.zeros(len(typed), dtype=bool)
        issues.add(frame, no_use, "amount", "is above 0 on a day marked used = no; write used = yes, or amount 0")
    if raw.kind == "patients":
        dup, first = _first_line_of(typed, ["patient_id"])
        issues.add(frame, dup & typed["patient_id"].notna().to_numpy(), "patient_id",
                   _line_reason(first, "patient listed twice (first on line ", "); keep one row per patient"))
    release_unused_memory()
    return typed, issues


def _keep(issues: _Issues, n: int) -> np.ndarray:
    """Rows without an issue."""
    keep = np.ones(n, dtype=bool)
    keep[issues.bad_positions()] = False
    return keep


def _split(typed: pd.DataFrame, issues: _Issues) -> tuple[pd.DataFrame, np.ndarray]:
    keep = _keep(issues, len(typed))
    return typed[keep], keep


def _take_rows(typed: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """``typed[keep]``, emptying ``typed`` column by column as it goes (only one column is ever held twice)."""
    if keep.all():
        return typed
    out = pd.DataFrame(index=typed.index[keep])
    for col in list(typed.columns):
        out[col] = typed.pop(col)[keep]
    return out


def _attribute_conflicts(sessions: pd.DataFrame, raw_frame: pd.DataFrame, patients: pd.DataFrame | None,
                         issues: _Issues) -> None:
    for col in PATIENT_COLUMNS_ON_SESSIONS:
        if col not in sessions.columns:
            continue
        values = sessions[["patient_id", col, "line"]].dropna(subset=[col])
        if values.empty:
            continue
        reference = values.groupby("patient_id", sort=False)[[col, "line"]].first()
        ref_source = "line " + reference["line"].astype(str)
        if patients is not None and col in patients.columns:
            p = patients.dropna(subset=[col]).set_index("patient_id")
            reference.loc[reference.index.intersection(p.index), col] = p[col]
            ref_source.loc[ref_source.index.intersection(p.index)] = "patients.csv"
        ref_val = values["patient_id"].map(reference[col])
        differs = (values[col].astype(str) != ref_val.astype(str)) & ref_val.notna()
        if differs.any():
            mask = sessions.index.isin(values.index[differs.to_numpy()])
            where = values["patient_id"].map(ref_source)
            reason = pd.Series("", index=sessions.index, dtype="string")
            shown = pd.Series(HIDDEN_VALUE, index=ref_val.index[differs]) if col in issues.hidden else \
                clip_texts(ref_val[differs].astype(str))
            reason.loc[values.index[differs.to_numpy()]] = (
                f"{col} differs for the same patient (" + shown + " on "
                + where[differs] + "); make the patient's rows agree")
            issues.add(raw_frame, mask, col, reason)


def validate_exports(sessions: RawExport, followups: RawExport, patients: RawExport | None = None, *,
                     dates: DateOrder = "iso", upload_date: date | None = None, timezone: str | None = None,
                     prefixes: Prefixes = "suggest",
                     pretreatment_days: int | None = PRETREATMENT_DAYS,
                     daily_use: RawExport | None = None) -> ValidatedExports:
    """Apply every rule of data-contract.md to the read exports (``daily_use``: the optional daily use log).

    Parameters
    ----------
    timezone:
        The clinic's IANA timezone (``America/New_York``): UTC date-times (``Z``) become that zone's date. ``None``
        (default): every date-time keeps the date written (a UTC value its UTC date; the notes count them).
    prefixes:
        ``suggest`` (default): when one file writes patient ids with a prefix (``Patient/<id>``) and another does
        not, a note says so and offers ``strip_prefix`` for the mapping. ``apply``: also remove it, when
        unambiguous (:func:`match_prefixes`), with a note. ``off``: neither.
    pretreatment_days:
        How many days before the first ketamine session an assessment is read as a pre-treatment assessment
        (and earlier ones set aside). ``None`` (default, contract v2): every one is kept as a pre-treatment
        assessment; the cohort takes the baseline from those within its baseline window.

    Returns
    -------
    ValidatedExports
        Accepted rows (typed, with ``line``), ``issues`` (file, line, column, value, reason), per-file counts.
    """
    timezone = check_timezone(timezone)
    today = pd.Timestamp(upload_date or date.today())
    checked = [_check(r, dates, today, False, timezone) for r in (sessions, followups, patients, daily_use)]
    prefix_notes = match_prefixes(checked, prefixes)
    return _cross_file(checked[0], checked[1], checked[2], release=False,  # type: ignore[arg-type]
                       pretreatment_days=pretreatment_days, notes=prefix_notes, d=checked[3])


@dataclass
class _Checked:
    """One file after its own rules (:func:`_validate_file`): the read export, its typed rows, their issues."""

    raw: RawExport
    typed: pd.DataFrame
    issues: _Issues


def _check(raw: RawExport | None, dates: DateOrder, today: pd.Timestamp, release: bool,
           timezone: str | None = None) -> _Checked | None:
    if raw is None:
        return None
    return _Checked(raw, *_validate_file(raw, dates, today, release, timezone=timezone))


_PREFIX_RE = r"^(?P<p>[A-Za-z][A-Za-z0-9_.\-]*/)"


def _prefix_profile(ids: pd.Series) -> tuple[int, dict[str, int]]:
    """(ids present, prefix → how many ids start with it) for a patient_id column (Arrow regex, no Python loop)."""
    arr = text_array(ids.dropna())
    n = len(arr)
    if not n or not pc.any(pc.match_substring(arr, "/")).as_py():  # no id holds a '/': none has a prefix
        return n, {}
    found = pc.extract_regex(arr, _PREFIX_RE)
    if isinstance(found, pa_.ChunkedArray):
        found = found.combine_chunks()
    prefix = pc.struct_field(found, ["p"]) if len(found) else pa_.array([], type=pa_.string())
    prefix = prefix.filter(pc.is_valid(found))
    counts = pc.value_counts(prefix).to_pylist()
    return n, {str(c["values"]): int(c["counts"]) for c in counts}


def match_prefixes(checked: list[_Checked | None], mode: Prefixes = "suggest") -> tuple[str, ...]:
    """Find reference prefixes that keep patient ids from matching across files (``Patient/<id>`` against ``<id>``).

    Unambiguous when every id of some files starts with one prefix, no id of the other files has a prefix, and
    removing it makes ids of the two sides match. Then a note says so and offers ``strip_prefix`` for the mapping;
    with ``mode="apply"`` the prefix is also removed (in the typed rows; issues keep the value as written).
    """
    if mode == "off":
        return ()
    files = [c for c in checked if c is not None and "patient_id" in c.typed.columns]
    profiles = [_prefix_profile(c.typed["patient_id"]) for c in files]
    prefixed = [(c, prof) for c, prof in zip(files, profiles) if prof[1]]
    bare = [c for c, prof in zip(files, profiles) if prof[0] and not prof[1]]
    if not prefixed or not bare:
        return ()
    found = {p for _, prof in prefixed for p in prof[1]}
    whole = all(len(prof[1]) == 1 and next(iter(prof[1].values())) == prof[0] for _, prof in prefixed)
    if len(found) != 1 or not whole:
        names = ", ".join(c.raw.name for c, _ in prefixed)
        return ((f"{names}: some patient ids start with a reference prefix ({', '.join(sorted(found))}) and "
                f"{', '.join(c.raw.name for c in bare)} has bare ids; the prefix is not the same on every id, so it "
                "was not removed. Set strip_prefix in the mapping for the file that writes it."),)
    prefix = found.pop()
    bare_ids = pd.concat([c.typed["patient_id"].dropna() for c in bare])
    notes = []
    for c, _ in prefixed:
        ids = c.typed["patient_id"]
        stripped = text_series(pc.utf8_replace_slice(text_array(ids), 0, len(prefix), ""), ids.index)
        ok = stripped.notna() & text_isin(stripped, bare_ids)
        n_ok = int(ok.sum())
        n = int(ids.notna().sum())
        kind = c.raw.kind
        if not n_ok:
            continue
        if mode == "apply":
            c.typed["patient_id"] = stripped
            notes.append(f"{c.raw.name} writes patient ids as '{prefix}<id>' and {bare[0].raw.name} as bare ids: "
                         f"the prefix '{prefix}' was removed from its {n:,} ids ({n_ok:,} rows then match a patient "
                         f"of {bare[0].raw.name}). To make this explicit, put strip_prefix = \"{prefix}\" under "
                         f"[{kind}] in the mapping.")
        else:
            notes.append(f"{c.raw.name} writes patient ids as '{prefix}<id>' and {bare[0].raw.name} as bare ids, so "
                         f"they do not match; {n_ok:,} of its {n:,} rows would match once '{prefix}' is removed. Add "
                         f"strip_prefix = \"{prefix}\" under [{kind}] in the mapping (the command line removes it by "
                         "itself when it is this unambiguous).")
    return tuple(notes)


Prefixes = Literal["suggest", "apply", "off"]


def _cross_file(s: _Checked, f: _Checked, p: _Checked | None, *, release: bool,
                pretreatment_days: int | None = PRETREATMENT_DAYS, notes: tuple[str, ...] = (),
                d: _Checked | None = None, followups_given: bool = True) -> ValidatedExports:
    """The rules between files, then accepted rows and the issue table. With ``release`` (the exports were read by
    :func:`load_exports` and handed over) the text columns of each ``RawExport.frame`` are dropped as soon as no rule
    quotes them, and typed rows become accepted rows column by column: peak memory stays a small multiple of the
    file size."""
    sessions, followups, patients = s.raw, f.raw, (p.raw if p is not None else None)
    s_typed, s_issues, f_typed, f_issues = s.typed, s.issues, f.typed, f.issues
    p_typed, p_issues = (p.typed, p.issues) if p is not None else (None, None)
    p_ok = _split(p_typed, p_issues)[0] if p_typed is not None and p_issues is not None else None
    s_text = _text_frame(sessions, release)
    _attribute_conflicts(s_typed, s_text, p_ok, s_issues)
    s_issues.waive(_status_mask(s_typed, "status", "entered_in_error"), except_columns=("status",))
    del s_text
    if release:
        _release_text(sessions.frame)
    s_keep = _keep(s_issues, len(s_typed))
    s_off = _not_attended(s_typed)  # counted, never a session: index date, counts and safety use attended rows

    # follow-ups need an accepted ketamine session (patients as integer codes: no text joins)
    s_codes, s_ids = pd.factorize(s_typed["patient_id"])
    ket = s_typed["session_type"].eq("ketamine").fillna(False).to_numpy() & (s_codes >= 0) & ~s_off
    ok_ket = ket & s_keep
    # per patient code, plus a last slot for "not in the sessions file" (code -1 indexes it)
    first_ket = np.full(len(s_ids) + 1, np.datetime64("NaT"), dtype="datetime64[ns]")
    session_day = s_typed["session_date"].to_numpy(dtype="datetime64[ns]")
    mins = pd.Series(session_day[ok_ket]).groupby(s_codes[ok_ket]).min()
    first_ket[mins.index.to_numpy()] = mins.to_numpy()
    rejected_ket = (np.bincount(s_codes[ket], minlength=len(s_ids) + 1) > 0) & np.isnat(first_ket)
    del s_codes, ket, ok_ket, session_day, mins
    d_ok = _daily_use_rows(d, first_ket, rejected_ket, pd.Series(s_ids), sessions.name, release) \
        if d is not None else None
    s_status = s_typed["status"][s_keep & s_off].value_counts() if s_off.any() else pd.Series(dtype="int64")
    s_all = int(s_keep.sum())
    s_ok = _take_rows(s_typed, s_keep & ~s_off) if release else s_typed[s_keep & ~s_off]
    del s_typed
    release_unused_memory()
    ff = _text_frame(followups, release)
    f_codes = text_codes(f_typed["patient_id"], pd.Series(s_ids))
    idx = pd.Series(first_ket[f_codes], index=f_typed.index, dtype="datetime64[ns]")
    no_ket = f_typed["patient_id"].notna() & idx.isna()
    set_aside = rejected_ket[f_codes]
    f_issues.add(ff, no_ket.to_numpy(), "patient_id", lambda mask: np.where(
        set_aside[mask],
        "this patient's ketamine session rows were set aside (see the " + sessions.name + " issues); fix those first",
        "has no ketamine session in " + sessions.name + "; check the patient number or add their sessions"))
    # a pre-treatment assessment (before the first ketamine session) is no error: its scores can be the baseline,
    # its use answers are never a return to use; one earlier than the baseline window is of no use and set aside
    before = (f_typed["assessment_date"] < idx).fillna(False)
    ahead = (idx - f_typed["assessment_date"]).dt.days
    too_early = before & (ahead > pretreatment_days).fillna(False) if pretreatment_days is not None else before & False
    f_issues.add(ff, too_early.to_numpy(), "assessment_date",
                 lambda mask: "is " + ahead[mask].astype("Int64").astype(str) + " days before the patient's first "
                 "ketamine session (" + idx[mask].dt.strftime("%Y-%m-%d").fillna("") + f"), earlier than the "
                 f"{pretreatment_days}-day baseline window: too early to be the baseline, and follow-ups start on or "
                 "after the first session; check the date")
    pre = (before & ~too_early).to_numpy()
    if pre.any():
        scored = pd.Series(False, index=f_typed.index)
        for measure in ("phq9", "gad7"):
            if measure in f_typed:
                scored |= f_typed[measure].notna()
        old = (ahead > BASELINE_WINDOW_DAYS).fillna(False).to_numpy() & pre
        within = f"within {pretreatment_days} days before it" if pretreatment_days is not None else "kept"
        notes = (*notes, (f"{followups.name}: {int(pre.sum()):,} assessment(s) before the patient's first ketamine "
                 f"session are read as pre-treatment assessments ({within}; {int((scored.to_numpy() & pre).sum()):,} "
                 f"with a PHQ-9 or GAD-7 score, {int(old.sum()):,} more than {BASELINE_WINDOW_DAYS} days before it): "
                 "scores within the baseline window can be the baseline, older ones are kept as pre-treatment "
                 "scores; their use answers describe use before treatment and are never a return to use."))
    if "relapse_date" in f_typed:
        early = (f_typed["relapse_date"] < idx).fillna(False) & ~before
        f_issues.add(ff, early.to_numpy(), "relapse_date",
                     "is before the patient's first ketamine session; a return to use is counted from it")
    if release:
        _release_text(followups.frame)
    f_issues.waive(_status_mask(f_typed, "observation_status", "entered_in_error"),
                   except_columns=("observation_status",))
    f_keep = _keep(f_issues, len(f_typed))
    f_error = _status_mask(f_typed, "observation_status", "entered_in_error") & f_keep
    f_all = int(f_keep.sum())
    f_ok = _take_rows(f_typed, f_keep & ~f_error) if release else f_typed[f_keep & ~f_error]
    del f_typed
    f_ok, n_amended = _apply_amendments(f_ok)

    if p_typed is not None and p_issues is not None:
        pf = _text_frame(patients, release)  # type: ignore[arg-type]
        orphan = p_typed["patient_id"].notna().to_numpy() & (text_codes(p_typed["patient_id"], pd.Series(s_ids)) < 0)
        p_issues.add(pf, orphan, "patient_id",
                     "this patient has no sessions in " + sessions.name + "; check the patient number")
        del pf
        if release:
            _release_text(patients.frame)  # type: ignore[union-attr]
        p_ok, _ = _split(p_typed, p_issues)

    patients_table = _patients_table(s_ok, p_ok)
    files = {"sessions": _report(sessions, s_ok, s_issues), "followups": _report(followups, f_ok, f_issues)}
    if s_off.any() and len(s_status):
        counts = {str(k): int(v) for k, v in s_status.items()}
        files["sessions"] = dataclasses.replace(files["sessions"], accepted=s_all,
                                                quarantined=files["sessions"].rows - s_all, not_analysed=counts)
        notes = (*notes, f"{sessions.name}: {sum(counts.values()):,} row(s) are not attended sessions ("
                 + ", ".join(f"{v:,} {k}" for k, v in counts.items()) + "): counted, not analysed (the index date, "
                 "session counts and safety use attended sessions only).")
    n_error = int(f_error.sum())
    if (n_error or n_amended) and followups.sources is None:
        files["followups"] = dataclasses.replace(
            files["followups"], accepted=f_all, quarantined=files["followups"].rows - f_all, merged=n_amended,
            not_analysed={"entered_in_error": n_error} if n_error else {})
    if n_error:
        notes = (*notes, (f"{followups.name}: {n_error:,} row(s) marked entered_in_error were dropped (counted, not "
                 "analysed)."))
    if n_amended:
        notes = (*notes, (f"{followups.name}: {n_amended:,} amended row(s) replaced the earlier values of the same "
                 "measures on the same day."))
    tables = [sessions.explain_issues(s_issues.table()), followups.explain_issues(f_issues.table())]
    if patients is not None and p_issues is not None and p_ok is not None:
        files["patients"] = _report(patients, p_ok, p_issues)
        tables.append(patients.explain_issues(p_issues.table()))
    if d is not None and d_ok is not None:
        files["daily_use"] = _report(d.raw, d_ok, d.issues)
        tables.append(d.issues.table())
    if not followups_given:
        del files["followups"]
    raw_issue_frames = [pd.DataFrame(r.issues, columns=ISSUE_COLUMNS)
                        for r in (sessions, followups, patients, d.raw if d is not None else None)
                        if r is not None and r.issues]
    issues_table = pd.concat([t for t in tables + raw_issue_frames if len(t)], ignore_index=True) \
        if any(len(t) for t in tables + raw_issue_frames) else pd.DataFrame(columns=ISSUE_COLUMNS)
    issues_table = issues_table.sort_values(["file", "line"], kind="stable").reset_index(drop=True)
    d_raw, d_issues = (d.raw, d.issues) if d is not None else (None, None)
    notes = tuple(n for r in (sessions, followups, patients, d_raw) if r is not None for n in r.notes) + tuple(
        n for i in (s_issues, f_issues, p_issues, d_issues) if i is not None for n in i.notes) + tuple(notes)
    return ValidatedExports(
        sessions=_finish(s_ok, "sessions"), followups=_finish(f_ok, "followups"), patients=patients_table,
        issues=issues_table, files=files, notes=notes,
        daily_use=_finish(d_ok, "daily_use") if d_ok is not None else None)


def _daily_use_rows(d: _Checked, first_ket: np.ndarray, rejected_ket: np.ndarray, s_ids: pd.Series,
                    sessions_name: str, release: bool) -> pd.DataFrame:
    """Accepted rows of daily_use.csv: the patient needs an accepted ketamine session (as follow-ups do)."""
    frame = _text_frame(d.raw, release)
    codes = text_codes(d.typed["patient_id"], s_ids)
    no_ket = d.typed["patient_id"].notna().to_numpy() & np.isnat(first_ket[codes])
    set_aside = rejected_ket[codes]
    d.issues.add(frame, no_ket, "patient_id", lambda mask: np.where(
        set_aside[mask],
        "this patient's ketamine session rows were set aside (see the " + sessions_name + " issues); fix those first",
        "has no ketamine session in " + sessions_name + "; check the patient number or add their sessions"))
    if release:
        _release_text(d.raw.frame)
    keep = _keep(d.issues, len(d.typed))
    return _take_rows(d.typed, keep) if release else d.typed[keep]


_MEASURE_COLUMNS_SKIP = ("line", "patient_id", "assessment_date", "observation_status")


def _apply_amendments(f_ok: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Merge each accepted ``amended`` follow-up into the earlier row of the same patient and day: every value it
    gives replaces that row's value of the same measure (later amendments win). (frame, amended rows merged)."""
    amended = _status_mask(f_ok, "observation_status", "amended")
    if not amended.any():
        return f_ok, 0
    key = f_ok["patient_id"].astype(str) + "\x00" + f_ok["assessment_date"].astype(str)
    groups = key.isin(key[amended])
    sub = f_ok[groups.to_numpy()].assign(__amended=amended[groups.to_numpy()], __key=key[groups])
    sub = sub.sort_values(["__amended", "line"], kind="stable")
    merged = sub.groupby("__key", sort=False).last()  # last non-missing value of each column, amendments last
    base = sub.groupby("__key", sort=False)["line"].min()
    merged["line"] = base
    merged["observation_status"] = "amended"
    n_merged = int(len(sub) - len(merged))
    out = pd.concat([f_ok[~groups.to_numpy()], merged.reset_index(drop=True).drop(columns="__amended")],
                    ignore_index=False)
    out = out.sort_values("line", kind="stable").reset_index(drop=True)
    for col in f_ok.columns:
        if out[col].dtype != f_ok[col].dtype:
            out[col] = out[col].astype(f_ok[col].dtype)
    return out[list(f_ok.columns)], n_merged


def _finish(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    out = coerce_canonical(frame, kind, parsed=True)  # validated: dtypes only, values are clean
    return out.reset_index(drop=True)


def _patients_table(sessions: pd.DataFrame, patients: pd.DataFrame | None) -> pd.DataFrame:
    """patients.csv's rows, completed by the patient columns the sessions carry (their first value per patient);
    without patients.csv, one row per patient of the sessions."""
    on_sessions = [c for c in PATIENT_COLUMNS_ON_SESSIONS if c in sessions.columns]
    from_sessions = sessions.groupby("patient_id", sort=True)[on_sessions].first() if on_sessions else None
    if patients is not None and len(patients):
        table = patients.drop(columns=["line"]).set_index("patient_id")
        table = table if from_sessions is None else table.combine_first(from_sessions)
    elif from_sessions is not None:
        table = from_sessions
    else:  # Arrow's sort of the distinct ids: sorted()'s order (its Python string per id took 0.47 s at 200,000)
        table = pd.DataFrame(index=pd.Index(sessions["patient_id"].unique(), name="patient_id").sort_values())
    return coerce_canonical(table.reset_index(), "patients")


def _report(raw: RawExport, accepted: pd.DataFrame, issues: _Issues) -> FileReport:
    return raw.report(accepted)  # counts source rows, also for a long file pivoted into follow-ups


def load_exports(sessions: Source | Sequence[Source], followups: Source | Sequence[Source] | None,
                 patients: Source | Sequence[Source] | None = None, *, preset: str | Preset | None = None,
                 dates: DateOrder | None = None, upload_date: date | None = None,
                 names: Mapping[str, str | Sequence[str]] | None = None, timezone: str | None = None,
                 prefixes: Prefixes = "suggest",
                 pretreatment_days: int | None = PRETREATMENT_DAYS, max_bytes: int = MAX_BYTES,
                 daily_use: Source | Sequence[Source] | None = None) -> ValidatedExports:
    """Read and validate the exports in one call (CLI, dashboard and report share it).

    Each kind may be one file or several (a list: one sessions file per year or per site, CSV or Parquet), read as
    one export by :func:`schemas.reader.read_exports`; ``names`` gives each kind's file name(s) for messages.
    ``max_bytes``: the size limit of one file (an upload's; the command line reads files on disk without one).
    ``dates``: the date order; None (default) takes a saved mapping's own (``preset.dates``), else ISO.
    ``timezone``, ``prefixes`` and ``pretreatment_days``: see :func:`validate_exports`. ``daily_use``: the optional
    daily use log (contract v2); with it, ``followups`` may be None (no follow-up file: ``files`` has no
    ``followups`` entry and the follow-up table is empty).
    """
    if followups is None and daily_use is None:
        raise UnusableExport("No follow-up export: give followups.csv (or a daily use log, daily_use.csv).")
    if dates is None:  # a saved mapping keeps its date format (mapping files: ``dates = "dayfirst"``)
        dates = preset.dates if isinstance(preset, Preset) and preset.dates else "iso"
    if dates not in ("iso", "dayfirst", "monthfirst"):
        raise UnusableExport(f"Unknown date format '{dates}'; use iso, dayfirst or monthfirst.")
    if prefixes not in ("suggest", "apply", "off"):
        raise UnusableExport(f"Unknown prefix setting '{prefixes}'; use suggest, apply or off.")
    timezone = check_timezone(timezone)
    names = names or {}
    today = pd.Timestamp(upload_date or date.today())

    def read(source: Source | Sequence[Source], kind: str) -> RawExport:
        return read_exports(source, kind=kind, names=names.get(kind), preset=preset, dates=dates, max_bytes=max_bytes)

    # each file is checked on its own as soon as it is read (the next file is not yet in memory), and the read
    # exports are ours alone: validation drops their text columns as it goes (release)
    s_raw = read(sessions, "sessions")
    also = _also_contacts(s_raw)
    s = _check(s_raw, dates, today, True, timezone)
    del s_raw
    given = followups is not None
    f = _check(read(followups, "followups") if given else
               read_exports(b"patient_id,assessment_date\n", kind="followups", names=names.get("followups"),
                            dates=dates), dates, today, True, timezone)
    p = _check(read(patients, "patients"), dates, today, True, timezone) if patients is not None else None
    d = _check(read(daily_use, "daily_use"), dates, today, True, timezone) if daily_use is not None else None
    prefix_notes = match_prefixes([s, f, p, d], prefixes)
    data = _cross_file(s, f, p, release=True, pretreatment_days=pretreatment_days,  # type: ignore[arg-type]
                       notes=prefix_notes, d=d, followups_given=given)
    written = names.get("sessions")  # one name, or one per file
    written = written if isinstance(written, str) else ", ".join(written) if written else "sessions.csv"
    return _add_also_contacts(data, also, written)


def _also_contacts(raw: RawExport) -> dict[int, str]:
    """Lines whose visit type a mapping says is also another contact (``also``), taken out of the frame."""
    from schemas.presets import ALSO_COLUMN

    if ALSO_COLUMN not in raw.frame.columns:
        return {}
    col = raw.frame.pop(ALSO_COLUMN)
    have = col.notna().to_numpy()
    return dict(zip(raw.frame["line"].to_numpy()[have].tolist(), col[have].astype(str).tolist()))


_CONTACT_ONLY = ("route", "dose_mg", "weight_kg", "phq9", "gad7", "craving", "bp_systolic_max", "bp_diastolic_max",
                 "heart_rate_max", "adverse_events")


def _add_also_contacts(data: ValidatedExports, also: dict[int, str], name: str) -> ValidatedExports:
    """Each accepted session whose visit type is also another contact (a KAP session: ketamine and psychotherapy)
    gives a second session row of that type on the same day and line, without the dose, scores, vitals and events
    (they belong to the first); the note counts them."""
    if not also or data.sessions.empty:
        return data
    sessions = data.sessions
    lines = sessions["line"].map(also)
    extra = sessions[lines.notna().to_numpy()].copy()
    if extra.empty:
        return data
    extra["session_type"] = lines[lines.notna()].astype(sessions["session_type"].dtype).to_numpy()
    for column in _CONTACT_ONLY:
        if column in extra.columns:
            extra[column] = sessions[column].iloc[:0].reindex(extra.index)  # missing, in the column's own type
    out = pd.concat([sessions, extra]).sort_index(kind="stable").reset_index(drop=True)
    counts = extra["session_type"].astype(str).value_counts()
    note = (f"{name}: {len(extra):,} session row(s) also count as another contact, as the mapping says ("
            + ", ".join(f"{v:,} {k}" for k, v in counts.items()) + "), each a second session on the same day and "
            "line without the dose, scores, vital signs or events of the first.")
    return dataclasses.replace(data, sessions=out, notes=(*data.notes, note))
