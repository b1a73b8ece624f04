"""Validation: parse each value, check it with the pandera models, apply the cross-file rules.

Every row read ends up either accepted or quarantined (``accepted + quarantined = rows read`` per file,
always). A quarantined row gets one issue per problem: file, line (as an editor shows it), column, the
value as written, and a reason a clinic user can act on. Nothing is silently dropped or fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_
import pyarrow.compute as pc

from schemas.arrow import map_columns, release_unused_memory, text_array, text_codes, text_series
from schemas.columns import ADVERSE_EVENTS, PATIENT_COLUMNS_ON_SESSIONS, read_columns
from schemas.dates import DATE_HELP, DateOrder, parse_dates
from schemas.errors import UnusableExport
from schemas.followups import FollowupsSchema
from schemas.frames import (
    HIDDEN_VALUE,
    FileReport,
    ValidatedExports,
    clip_texts,
    coerce_canonical,
    parse_bool,
)
from schemas.patients import PatientsSchema
from schemas.presets import Preset
from schemas.reader import RawExport, read_export
from schemas.sessions import SessionsSchema

SCHEMAS: dict[str, type[pa.DataFrameModel]] = {
    "sessions": SessionsSchema, "followups": FollowupsSchema, "patients": PatientsSchema}
ISSUE_COLUMNS = ["file", "line", "column", "value", "reason"]



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

    @classmethod
    def new(cls, file: str, hidden: tuple[str, ...] | frozenset[str] = ()) -> _Issues:
        return cls(file, [], [], [], [], [], frozenset(hidden))

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



def _convert(text: pd.Series, ctype: str, order: DateOrder) -> pd.Series | tuple[pd.Series, np.ndarray]:
    """One text column → its typed values (NaN/NaT/NA where not parseable); an event list also gives the rows
    naming an event that is not on the list."""
    if ctype == "date":
        return parse_dates(text, order)
    if ctype in ("number", "integer"):
        return _to_float(text, decimal_comma=ctype == "number")
    if ctype == "boolean":
        return parse_bool(text)
    if ctype == "list":
        return _parse_events(text)
    if ctype == "category":
        return text if _no_upper_case(text) else text.str.lower()
    return text


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
           issues: _Issues) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Text → typed columns; unparseable values become issues (and the row is quarantined).

    Also returns, per column, the cells that could not be parsed, so checks do not report them twice. The columns
    are converted in threads (Arrow's casts release the GIL); the issues are then added in column order.
    """
    columns = [(col, ctype, raw[col]) for col, ctype in read_columns(kind).items() if col in raw.columns]
    converted = map_columns(lambda item: _convert(item[2], item[1], order), columns, len(raw))
    typed = pd.DataFrame({"line": raw["line"].to_numpy()}, index=raw.index)
    unparsed: dict[str, np.ndarray] = {}
    for (col, ctype, text), parsed in zip(columns, converted):
        before = len(issues.idx)
        present = text.notna().to_numpy()
        if ctype == "date":
            issues.add(raw, present & parsed.isna().to_numpy(), col, f"not a valid date: {DATE_HELP[order]}")
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
            parsed, unknown = parsed
            issues.add(raw, unknown, col, "contains an adverse event that is not on the list; use only: "
                       + ", ".join(ADVERSE_EVENTS) + " (separated by ';')")
        typed[col] = parsed
        mask = np.zeros(len(raw), dtype=bool)
        for positions in issues.idx[before:]:
            mask[positions] = True
        unparsed[col] = mask
    return typed, unparsed


def _parse_events(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """``dizziness; Nausea`` → ``dizziness;nausea``, and the rows naming an event that is not on the list."""
    text = pc.utf8_lower(text_array(values))
    text = pc.utf8_trim(pc.replace_substring_regex(text, r"\s*[;,|]\s*", ";"), ";")
    text = pc.if_else(pc.equal(text, ""), pa_.scalar(None, type=text.type), text)
    tokens = pc.split_pattern(text, ";")
    flat = pc.list_flatten(tokens)
    unknown = pc.invert(pc.is_in(flat, value_set=pa_.array(list(ADVERSE_EVENTS), type=flat.type)))
    unknown = pc.and_(unknown, pc.not_equal(flat, ""))
    rows = pc.filter(pc.list_parent_indices(tokens), unknown).to_numpy(zero_copy_only=False)
    mask = np.zeros(len(values), dtype=bool)
    mask[rows] = True
    written = text_array(values)
    if text.null_count == written.null_count and pc.all(pc.equal(text, written.cast(text.type))).as_py() in (True, None):
        return values, mask  # already as the contract writes it: the file's own column, no second copy
    return text_series(text, values.index), mask


def _pandera_issues(typed: pd.DataFrame, raw: pd.DataFrame, kind: str, issues: _Issues,
                    skip: dict[str, np.ndarray]) -> None:
    columns = _schema_columns(kind)
    cols = [c for c in columns if c in typed.columns]
    sub = typed[cols]  # copy-on-write: setting columns below leaves typed as it is
    for col in cols:  # dtypes the model declares, even for all-missing columns
        if str(columns[col].dtype) == "str":
            sub[col] = sub[col].astype("str")
    partial = pa.DataFrameSchema({c: columns[c] for c in cols}, strict=False, coerce=False)
    try:
        partial.validate(sub, lazy=True, inplace=True)  # sub is a frame of our own: spare pandera a copy
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases
        fc = fc[fc["index"].notna() & fc["column"].isin(cols)]
        for col, group in fc.groupby("column", sort=False):
            positions = typed.index.get_indexer(group["index"].astype(int).unique())
            mask = np.zeros(len(typed), dtype=bool)
            mask[positions[positions >= 0]] = True
            if col in skip:
                mask &= ~skip[str(col)]  # already reported as unparseable
            checks = set(group["check"].astype(str))
            if any("not_nullable" in c or "str_length" in c for c in checks):
                reason = f"is empty; this column is required. {_description(kind, col)}"
            else:
                reason = f"not allowed: {_description(kind, str(col))}"
            issues.add(raw, mask, str(col), reason)


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


def _validate_file(raw: RawExport, order: DateOrder, today: pd.Timestamp,
                   release: bool = False) -> tuple[pd.DataFrame, _Issues]:
    """Parse and check one file's rows on their own. With ``release``, text columns are dropped from ``raw.frame``
    as soon as no rule will quote them (after the per-column checks, all but the dates and :data:`_QUOTED_LATER`)."""
    issues = _Issues.new(raw.name, raw.identifier_columns)
    frame = _text_frame(raw, release)
    if release:
        _release_text(frame, set(read_columns(raw.kind)))  # extra columns: never checked, never quoted
    typed, unparsed = _parse(frame, raw.kind, order, issues)
    release_unused_memory()
    _pandera_issues(typed, frame, raw.kind, issues, skip=unparsed)
    if release:
        dates = {c for c, t in read_columns(raw.kind).items() if t == "date"}
        _release_text(frame, _QUOTED_LATER[raw.kind] | dates)
    release_unused_memory()
    for col, ctype in read_columns(raw.kind).items():
        if ctype == "date" and col in typed.columns:
            future = (typed[col] > today).fillna(False).to_numpy()
            issues.add(frame, future, col, f"is after the upload date ({today.date()}); check the year")
    if raw.kind == "sessions":
        ket = typed["session_type"].eq("ketamine").fillna(False).to_numpy()
        no_route = ket & (typed["route"].isna().to_numpy() if "route" in typed else True)
        issues.add(frame, no_route, "route", "is empty on a ketamine session; write the route "
                   "(iv, im, sublingual, intranasal or oral)")
        keys = [c for c in typed.columns if c != "line"]
        dup, first = _first_line_of(typed, keys, prefilter=["patient_id", "session_date"])
        issues.add(frame, dup, "patient_id", _line_reason(first, "exact duplicate of line ", "; remove the repeated row"))
    if raw.kind == "followups":
        window = typed["window_days"].fillna(30) if "window_days" in typed else pd.Series(30.0, index=typed.index)
        if "days_abstinent" in typed:
            too_many = (typed["days_abstinent"] > window).fillna(False).to_numpy()
            issues.add(frame, too_many, "days_abstinent",
                       "is more than the days the window covers (window_days, 30 when empty)")
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
        dup, first = _first_line_of(typed, ["patient_id", "assessment_date"])
        issues.add(frame, dup & typed["assessment_date"].notna().to_numpy(), "assessment_date",
                   _line_reason(first, "second assessment for this patient on the same day (first on line ",
                                "); keep one row per assessment"))
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
                     dates: DateOrder = "iso", upload_date: date | None = None) -> ValidatedExports:
    """Apply every rule of data-contract.md to the three read exports.

    Returns
    -------
    ValidatedExports
        Accepted rows (typed, with ``line``), ``issues`` (file, line, column, value, reason), per-file counts.
    """
    return _validate_exports(sessions, followups, patients, dates=dates, upload_date=upload_date)


@dataclass
class _Checked:
    """One file after its own rules (:func:`_validate_file`): the read export, its typed rows, their issues."""

    raw: RawExport
    typed: pd.DataFrame
    issues: _Issues


def _check(raw: RawExport | None, dates: DateOrder, today: pd.Timestamp, release: bool) -> _Checked | None:
    if raw is None:
        return None
    return _Checked(raw, *_validate_file(raw, dates, today, release))


def _validate_exports(sessions: RawExport, followups: RawExport, patients: RawExport | None = None, *,
                      dates: DateOrder = "iso", upload_date: date | None = None) -> ValidatedExports:
    today = pd.Timestamp(upload_date or date.today())
    return _cross_file(_check(sessions, dates, today, False), _check(followups, dates, today, False),  # type: ignore[arg-type]
                       _check(patients, dates, today, False), release=False)


def _cross_file(s: _Checked, f: _Checked, p: _Checked | None, *, release: bool) -> ValidatedExports:
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
    del s_text
    if release:
        _release_text(sessions.frame)
    s_keep = _keep(s_issues, len(s_typed))

    # follow-ups need an accepted ketamine session on or before them (patients as integer codes: no text joins)
    s_codes, s_ids = pd.factorize(s_typed["patient_id"])
    ket = s_typed["session_type"].eq("ketamine").fillna(False).to_numpy() & (s_codes >= 0)
    ok_ket = ket & s_keep
    # per patient code, plus a last slot for "not in the sessions file" (code -1 indexes it)
    first_ket = np.full(len(s_ids) + 1, np.datetime64("NaT"), dtype="datetime64[ns]")
    session_day = s_typed["session_date"].to_numpy(dtype="datetime64[ns]")
    mins = pd.Series(session_day[ok_ket]).groupby(s_codes[ok_ket]).min()
    first_ket[mins.index.to_numpy()] = mins.to_numpy()
    rejected_ket = (np.bincount(s_codes[ket], minlength=len(s_ids) + 1) > 0) & np.isnat(first_ket)
    del s_codes, ket, ok_ket, session_day, mins
    s_ok = _take_rows(s_typed, s_keep) if release else s_typed[s_keep]
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
    before = (f_typed["assessment_date"] < idx).fillna(False)
    f_issues.add(ff, before.to_numpy(), "assessment_date",
                 lambda mask: "is before the patient's first ketamine session ("
                 + idx[mask].dt.strftime("%Y-%m-%d").fillna("") + "); follow-ups start on or after it")
    if "relapse_date" in f_typed:
        early = (f_typed["relapse_date"] < idx).fillna(False)
        f_issues.add(ff, early.to_numpy(), "relapse_date",
                     "is before the patient's first ketamine session; a return to use is counted from it")
    if release:
        _release_text(followups.frame)
    f_keep = _keep(f_issues, len(f_typed))
    f_ok = _take_rows(f_typed, f_keep) if release else f_typed[f_keep]
    del f_typed

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
    tables = [sessions.explain_issues(s_issues.table()), followups.explain_issues(f_issues.table())]
    if patients is not None and p_issues is not None and p_ok is not None:
        files["patients"] = _report(patients, p_ok, p_issues)
        tables.append(patients.explain_issues(p_issues.table()))
    raw_issue_frames = [pd.DataFrame(r.issues, columns=ISSUE_COLUMNS) for r in (sessions, followups, patients)
                        if r is not None and r.issues]
    issues_table = pd.concat([t for t in tables + raw_issue_frames if len(t)], ignore_index=True) \
        if any(len(t) for t in tables + raw_issue_frames) else pd.DataFrame(columns=ISSUE_COLUMNS)
    issues_table = issues_table.sort_values(["file", "line"], kind="stable").reset_index(drop=True)
    notes = tuple(n for r in (sessions, followups, patients) if r is not None for n in r.notes)
    return ValidatedExports(
        sessions=_finish(s_ok, "sessions"), followups=_finish(f_ok, "followups"), patients=patients_table,
        issues=issues_table, files=files, notes=notes)


def _finish(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    out = coerce_canonical(frame, kind, parsed=True)  # validated: dtypes only, values are clean
    return out.reset_index(drop=True)


def _patients_table(sessions: pd.DataFrame, patients: pd.DataFrame | None) -> pd.DataFrame:
    on_sessions = [c for c in PATIENT_COLUMNS_ON_SESSIONS if c in sessions.columns]
    from_sessions = sessions.groupby("patient_id", sort=True)[on_sessions].first() if on_sessions else \
        pd.DataFrame(index=pd.Index(sorted(sessions["patient_id"].unique()), name="patient_id"))
    if patients is not None and len(patients):
        table = patients.drop(columns=["line"]).set_index("patient_id")
        table = table.combine_first(from_sessions) if on_sessions else table
    else:
        table = from_sessions
    return coerce_canonical(table.reset_index(), "patients")


def _report(raw: RawExport, accepted: pd.DataFrame, issues: _Issues) -> FileReport:
    return raw.report(accepted)  # counts source rows, also for a long file pivoted into follow-ups


def load_exports(sessions: str | Path | bytes, followups: str | Path | bytes,
                 patients: str | Path | bytes | None = None, *, preset: str | Preset | None = None,
                 dates: DateOrder = "iso", upload_date: date | None = None,
                 names: dict[str, str] | None = None) -> ValidatedExports:
    """Read and validate the exports in one call (CLI, dashboard and report share it)."""
    if dates not in ("iso", "dayfirst", "monthfirst"):
        raise UnusableExport(f"Unknown date format '{dates}'; use iso, dayfirst or monthfirst.")
    names = names or {}
    today = pd.Timestamp(upload_date or date.today())
    # each file is checked on its own as soon as it is read (the next file is not yet in memory), and the read
    # exports are ours alone: validation drops their text columns as it goes (release)
    s = _check(read_export(sessions, kind="sessions", name=names.get("sessions"), preset=preset, dates=dates),
               dates, today, True)
    f = _check(read_export(followups, kind="followups", name=names.get("followups"), preset=preset, dates=dates),
               dates, today, True)
    p = _check(read_export(patients, kind="patients", name=names.get("patients"), preset=preset, dates=dates),
               dates, today, True) if patients is not None else None
    return _cross_file(s, f, p, release=True)  # type: ignore[arg-type]
