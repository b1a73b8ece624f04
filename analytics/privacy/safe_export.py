"""Downloads that are safe to open in a spreadsheet: no formula injection, Excel-friendly encoding.

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return can run as a formula when
the file is opened in Excel, LibreOffice or Google Sheets (OWASP "CSV Injection"). Such cells get a leading
apostrophe, which spreadsheets read as "this is text". Only text is changed: numbers, including negative
numbers, stay numbers, and a text cell that is just a number (``"-12.5"``) cannot be a formula and is kept.
"""

from __future__ import annotations

import re

import pandas as pd

__all__ = ["FORMULA_TRIGGERS", "neutralize", "neutralize_frame", "to_safe_csv"]

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
