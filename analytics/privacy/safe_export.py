"""Downloads that are safe to open in a spreadsheet: no formula injection, Excel-friendly encoding.

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return can run as a formula when
the file is opened in Excel, LibreOffice or Google Sheets (OWASP "CSV Injection"). Such cells get a leading
apostrophe, which spreadsheets read as "this is text". Only text is changed: numbers, including negative
numbers, stay numbers, and a text cell that is just a number (``"-12.5"``) cannot be a formula and is kept.
"""

from __future__ import annotations

import re

import pandas as pd

from analytics.formatting import DASH

__all__ = ["FORMULA_TRIGGERS", "neutralize", "neutralize_frame", "screen_table", "to_safe_csv"]

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# also the full-width forms some spreadsheets accept as formula starts
_TRIGGERS = (*FORMULA_TRIGGERS, "\uff1d", "\uff0b", "\uff0d", "\uff20")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def neutralize(value: object) -> object:
    """One cell: a string that could start a formula gets a leading ``'``; anything else is returned as is.

    Leading spaces do not hide a trigger (``"  =1+1"`` is neutralised too).
    """
    if not isinstance(value, str):
        return value
    head = value.lstrip(" ")
    if head.startswith(_TRIGGERS) and not _PLAIN_NUMBER.fullmatch(value.strip()):
        return "'" + value
    return value


def neutralize_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with every text cell (and column name) neutralised; numeric columns untouched.

    Use it before any spreadsheet writer (CSV, Excel).
    """
    out = df.copy()
    out.columns = [neutralize(str(c)) if isinstance(c, str) else c for c in df.columns]
    for pos, col in enumerate(df.columns):
        s = df.iloc[:, pos]
        if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype) \
                or pd.api.types.is_datetime64_any_dtype(s.dtype):
            continue
        values = s.astype(object) if isinstance(s.dtype, pd.CategoricalDtype) else s
        out.isetitem(pos, values.map(neutralize))
    return out


def to_safe_csv(df: pd.DataFrame, *, index: bool = False) -> bytes:
    """CSV bytes for download: formula injection neutralised, UTF-8 with BOM (Excel), CRLF line ends.

    Parameters
    ----------
    df:
        Any table (apply suppression first: this function does not hide small counts).
    index:
        Write the index as a first column.

    Returns
    -------
    bytes
        ``b"\\xef\\xbb\\xbf"`` followed by the CSV text; missing values are empty cells.
    """
    safe = neutralize_frame(df.reset_index() if index else df)
    text = safe.to_csv(index=False, lineterminator="\r\n")
    return text.encode("utf-8-sig")


# A number as analytics.formatting writes it, e.g. "-0.512 (-0.640–-0.384)", "-5% (-9%–-1%)", "-1,234.5 per 100": it
# starts with "-" but has no letter, function or reference a spreadsheet could run, so it is shown as it is.
_NUMBER = r"[+-]?\d[\d,]*(?:\.\d+)?%?"
_FORMATTED_NUMBER = re.compile(rf"{_NUMBER}(?: \({_NUMBER}{DASH}{_NUMBER}\))?(?: per 100)?")


def _neutralize_cell(value: object) -> object:
    if isinstance(value, str) and _FORMATTED_NUMBER.fullmatch(value.strip()):
        return value
    return neutralize(value)


def screen_table(data: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``data`` whose text cannot run as a formula when the table's toolbar "Download as CSV" is opened
    in a spreadsheet (OWASP CSV injection): text cells, column names and index labels that start with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return get a leading ``'``, by the rule of the app's own downloads
    (:func:`analytics.privacy.safe_export.neutralize`: a text cell that is just a number is kept). Numbers as
    :mod:`analytics.formatting` writes them (``"-0.51 (-0.64–-0.38)"``) are kept too; numeric columns are untouched.
    """
    out = data.copy()
    for pos in range(out.shape[1]):
        s = out.iloc[:, pos]
        if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype) \
                or pd.api.types.is_datetime64_any_dtype(s.dtype):
            continue
        out.isetitem(pos, s.astype(object).map(_neutralize_cell))
    out.columns = out.columns.map(_neutralize_cell) if not isinstance(out.columns, pd.MultiIndex) else out.columns
    if isinstance(out.index, pd.MultiIndex):
        out.index = out.index.set_levels([level.map(_neutralize_cell) for level in out.index.levels])
    elif not isinstance(out.index, pd.RangeIndex):
        out.index = out.index.map(_neutralize_cell)
    out.index.names = [_neutralize_cell(n) for n in data.index.names]
    out.columns.names = [_neutralize_cell(n) for n in data.columns.names]
    return out
