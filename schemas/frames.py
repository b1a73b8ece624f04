"""Typed frames of accepted rows: what analytics/ receives.

Dtypes: text/category/list → pandas string (categories lower-case), date → ``datetime64[ns]``,
number/integer → float64 (NaN = missing), boolean → pandas ``boolean``. Every frame keeps ``line``
(the row's line in its file, header = line 1) when it came from a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from schemas.columns import COLUMNS

_TRUE = {"yes", "true", "1", "y", "t"}
_TYPED = {"date": "datetime64[ns]", "number": "float64", "integer": "float64"}
_FALSE = {"no", "false", "0", "n", "f"}

# Issue values (the ``value`` column of an issues table, and values quoted in a reason) are cut to their first
# VALUE_CHARS characters + '…'; a value of a column that is (or looks like) a direct identifier is never shown.
VALUE_CHARS = 60
HIDDEN_VALUE = "(not shown: direct identifier)"


def clip_text(text: object, limit: int = VALUE_CHARS) -> str:
    """``text`` as shown in an issue: its first ``limit`` characters + '…' when longer; a NUL shows as ␀."""
    s = str(text).replace("\x00", "\u2400")
    return s if len(s) <= limit else s[:limit] + "\u2026"


def clip_texts(values: pd.Series, limit: int = VALUE_CHARS) -> pd.Series:
    """:func:`clip_text` on a text column (vectorised; missing values stay missing)."""
    s = values.astype("string")
    long = (s.str.len() > limit).fillna(False).to_numpy(dtype=bool)
    if long.any():
        s = s.copy()
        s[long] = s[long].str.slice(0, limit) + "\u2026"
    if s.str.contains("\x00", regex=False).fillna(False).any():
        s = s.str.replace("\x00", "\u2400", regex=False)
    return s


def parse_bool(values: pd.Series) -> pd.Series:
    s = values.astype("string").str.strip().str.lower()
    out = pd.Series(pd.NA, index=values.index, dtype="boolean")
    out[s.isin(_TRUE).fillna(False).astype(bool)] = True
    out[s.isin(_FALSE).fillna(False).astype(bool)] = False
    return out


def coerce_canonical(frame: pd.DataFrame, kind: str, *, parsed: bool = False) -> pd.DataFrame:
    """Give already-clean canonical columns their analysis dtypes; add missing optional columns.

    Used on rows that passed validation, and by tests that build small exports by hand. ``parsed=True``: the
    columns come from validation's parser (text trimmed, categories lower-case, dates and numbers typed), so
    only the dtypes are set, not the values cleaned again.
    """
    spec = COLUMNS[kind]
    out = pd.DataFrame(index=frame.index)
    missing: dict[str, pd.Series] = {}  # absent columns of one dtype share one (read-only, copy-on-write) array
    for col, ctype in spec.items():
        if col not in frame.columns:
            dtype = _MISSING_KIND.get(ctype, "text")
            if dtype not in missing:
                missing[dtype] = _all_missing(ctype, frame.index)
            out[col] = missing[dtype]
            continue
        values = frame[col]
        if parsed and ctype in ("date", "number", "integer") and values.dtype == _TYPED[ctype]:
            out[col] = values
        elif parsed and ctype not in ("date", "number", "integer", "boolean"):
            out[col] = values.astype("string")  # trimmed (and lower-cased) by the parser already
        elif ctype == "date":
            out[col] = pd.to_datetime(values, errors="coerce").astype("datetime64[ns]")
        elif ctype in ("number", "integer"):
            out[col] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif ctype == "boolean":
            out[col] = values if values.dtype == "boolean" else parse_bool(values)
        elif ctype in ("category", "list", "substances"):
            out[col] = values.astype("string").str.strip().str.lower()
        else:
            out[col] = values.astype("string").str.strip()
    for extra in frame.columns:
        if extra not in out.columns:
            out[extra] = frame[extra]
    return out


_MISSING_KIND = {"date": "date", "number": "float", "integer": "float", "boolean": "boolean"}


def _all_missing(ctype: str, index: pd.Index) -> pd.Series:
    """An optional column the file does not have, all missing, made directly in its analysis dtype (a column of
    ``pd.NA`` objects converted afterwards took a second and 8 bytes per row more for each such column)."""
    n = len(index)
    if ctype == "date":
        return pd.Series(np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"), index=index)
    if ctype in ("number", "integer"):
        return pd.Series(np.full(n, np.nan), index=index)
    if ctype == "boolean":
        return pd.Series(pd.arrays.BooleanArray(np.zeros(n, dtype=bool), np.ones(n, dtype=bool)), index=index)
    nulls = pa.chunked_array([pa.nulls(n, pa.large_string())])  # one shared zero buffer, no text
    return pd.Series(pd.arrays.ArrowStringArray(nulls, dtype=pd.StringDtype("pyarrow", na_value=pd.NA)),
                     index=index)


@dataclass(frozen=True)
class FileReport:
    """Per-file counts for the data-quality report (cli.md ``files.<name>``).

    ``rows``, ``accepted`` and ``quarantined`` count rows of the file as read, so ``accepted + quarantined
    = rows`` always. A long file (one row per questionnaire, ``long_format``) is pivoted into follow-ups:
    its ``accepted`` counts the source rows that went into accepted follow-ups, and ``merged`` those of
    them that joined a follow-up started by another row (same patient and day, including identical
    repeats), so the accepted follow-up rows are ``accepted - merged`` (:attr:`output_rows`). An ``amended``
    follow-up merged into the earlier row of its day counts in ``merged`` too.

    ``not_analysed``: accepted rows that are counted but are not data (contract v2): sessions by ``status``
    (``no_show``, ``cancelled``, ``scheduled``, ``entered_in_error``), follow-ups ``entered_in_error``.
    """

    rows: int
    accepted: int
    quarantined: int
    dropped_columns: tuple[str, ...] = ()
    extra_columns: tuple[str, ...] = ()
    merged: int = 0
    long_format: bool = False
    not_analysed: dict[str, int] = field(default_factory=dict)

    @property
    def output_rows(self) -> int:
        """Rows of accepted data this file gave (follow-ups for a long file; ``accepted`` otherwise), without the
        accepted rows that are counted but not analysed (:attr:`not_analysed`: sessions that were not attended,
        follow-ups entered in error)."""
        return self.accepted - self.merged - sum(self.not_analysed.values())


@dataclass(frozen=True)
class ValidatedExports:
    """Accepted rows of each export plus the quarantine report.

    ``issues`` columns: ``file``, ``line``, ``column``, ``value``, ``reason`` (one row per problem; a
    quarantined row may have several). ``patients`` holds one row per patient from patients.csv or, when
    absent, the patient columns found on sessions rows.
    """

    sessions: pd.DataFrame
    followups: pd.DataFrame
    patients: pd.DataFrame
    issues: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["file", "line", "column", "value", "reason"]))
    files: dict[str, FileReport] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    daily_use: pd.DataFrame | None = None  # contract v2 daily_use.csv (optional): patient_id, date, substance, used, amount

    @classmethod
    def from_frames(cls, sessions: pd.DataFrame, followups: pd.DataFrame,
                    patients: pd.DataFrame | None = None,
                    daily_use: pd.DataFrame | None = None) -> ValidatedExports:
        """Wrap hand-built, already-valid canonical frames (for tests and the sample generator)."""
        s = coerce_canonical(sessions, "sessions")
        f = coerce_canonical(followups, "followups")
        if patients is None:
            patients = pd.DataFrame({"patient_id": s["patient_id"].unique()})
        p = coerce_canonical(patients, "patients")
        return cls(sessions=s, followups=f, patients=p,
                   daily_use=coerce_canonical(daily_use, "daily_use") if daily_use is not None else None)

    @property
    def n_patients(self) -> int:
        return int(self.sessions["patient_id"].nunique())
