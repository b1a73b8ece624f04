"""Date text → dates, strictly in the order the user chose (ISO, day-first or month-first).

What is read (every form in the order the user chose; ISO ``yyyy-mm-dd`` in every order):

* dates: ``2026-11-25``, ``25/11/2026`` (day-first), ``11/25/2026`` (month-first); ``/``, ``.`` or ``-`` between
  the parts of a day-first or month-first date;
* date-times: any of them followed by a time of day, ``T`` or a space (or a comma) between:
  ``09/03/2025 03:00 PM``, ``5/4/2026 14:05``, ``2026-11-25T09:30:00Z``, ``2026-11-25 21:30:00-05:00``.
  The time only checks that the value is a date-time; the value becomes its date.

**Which date** (the clinic's local date): a value with an offset (``-05:00``) keeps the date written, which is the
local date where it was recorded. A UTC value (``Z``, ``UTC``, ``GMT`` or ``+00:00``) keeps its UTC date unless a
clinic ``timezone`` is set (an IANA name such as ``America/New_York``); then it is converted to that zone's date
(``2026-03-05T02:30:00Z`` is 4 March in New York). :class:`ParsedDates` counts the UTC values so the load notes
can say how they were read.

A value that does not parse gets a reason naming what was wrong (:attr:`ParsedDates.reasons`): not a date at all,
the wrong order, a month 13, day 31 in a 30-day month, a time that is not a time of day, or a date outside what
pandas can hold (``9999-12-31``, ``0001-01-01``: placeholders, set aside like any bad value, never a failed upload).

Everything is vectorised (Arrow kernels and NumPy); plain ISO dates take Arrow's strict cast and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa_
import pyarrow.compute as pc

from schemas.arrow import text_array
from schemas.errors import UnusableExport

DateOrder = Literal["iso", "dayfirst", "monthfirst"]

DATE_HELP = {
    "iso": "dates must look like 2026-11-25 (yyyy-mm-dd); if your export writes day-first (25/11/2026) or "
           "month-first (11/25/2026) dates, choose that date format and upload again",
    "dayfirst": "dates must look like 25/11/2026 (day first) or 2026-11-25",
    "monthfirst": "dates must look like 11/25/2026 (month first) or 2026-11-25",
}
_ORDER_WORDS = {"dayfirst": "day-first (dd/mm/yyyy)", "monthfirst": "month-first (mm/dd/yyyy)"}
_OTHER_ORDER = {"dayfirst": "month-first", "monthfirst": "day-first"}

# the date part, then an optional time part (after T, white space or a comma)
_DATE_RE = (r"^(?:(?P<y1>\d{4})-(?P<m1>\d{1,2})-(?P<d1>\d{1,2})"
            r"|(?P<a>\d{1,2})[/.\-](?P<b>\d{1,2})[/.\-](?P<y2>\d{4}))"
            r"(?:(?:[Tt]|\s*,\s*|\s+)(?P<time>.*))?$")
_TIME_RE = (r"^(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,]\d+)?)?\s*(?P<ampm>[AaPp]\.?[Mm]\.?)?"
            r"\s*(?P<tz>[Zz]|UTC|GMT|utc|gmt|[+-]\d{2}(?::?\d{2})?)?$")
_UTC_TOKENS = ("z", "utc", "gmt")

# what datetime64[ns] holds (pandas' bounds), as calendar days
_MIN_DAY = np.datetime64("1677-09-22", "D")
_MAX_DAY = np.datetime64("2262-04-11", "D")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


@dataclass(frozen=True)
class ParsedDates:
    """One date column parsed: ``dates`` (``datetime64[ns]``, NaT where missing or not a date), ``reasons`` (for the
    values that did not parse: one sentence each, index of those values), ``n_utc`` (values written in UTC that
    became dates), ``n_converted`` (of them, converted to the clinic's ``timezone``), ``n_times`` (values with a
    time part)."""

    dates: pd.Series
    reasons: pd.Series
    n_utc: int = 0
    n_converted: int = 0
    n_times: int = 0


def check_timezone(timezone: str | None) -> str | None:
    """The clinic timezone as given, or a sentence (:class:`UnusableExport`) when it is not an IANA zone name."""
    if timezone is None or timezone == "":
        return None
    try:
        pd.Timestamp("2026-01-01", tz=timezone)
    except Exception:  # noqa: BLE001 - pytz / zoneinfo raise different errors for an unknown zone
        raise UnusableExport(f"Unknown timezone '{timezone}'; give the clinic's timezone as an IANA name such as "
                             "America/New_York or Europe/London (or leave it out).") from None
    return timezone


def parse_dates(values: pd.Series, order: DateOrder, *, timezone: str | None = None) -> pd.Series:
    """Parse date text strictly in the chosen order; what does not parse becomes NaT (see :func:`parse_date_column`)."""
    return parse_date_column(values, order, timezone=timezone, reasons=False).dates


def _fast_iso(values: pd.Series) -> pd.Series | None:
    """Every value a plain ``yyyy-mm-dd`` date that datetime64[ns] holds: Arrow's strict cast, nothing else."""
    try:
        days = pc.cast(pc.utf8_trim_whitespace(text_array(values)), pa_.date32())
        return pd.Series(pc.cast(days, pa_.timestamp("ns")).to_numpy(zero_copy_only=False), index=values.index,
                         dtype="datetime64[ns]")
    except (pa_.ArrowInvalid, pa_.ArrowTypeError, pa_.ArrowNotImplementedError):
        return None


def _ints(struct: pa_.StructArray | pa_.ChunkedArray, name: str, n: int) -> np.ndarray:
    """One named group of an ``extract_regex`` result as int64 (-1 where empty or missing)."""
    col = pc.struct_field(struct, [name]) if not isinstance(struct, pa_.ChunkedArray) else \
        pa_.chunked_array([pc.struct_field(c, [name]) for c in struct.chunks], type=pa_.string())
    col = pc.if_else(pc.equal(col, ""), pa_.scalar(None, type=pa_.string()), col)
    out = pc.fill_null(pc.cast(col, pa_.int64()), -1).to_numpy(zero_copy_only=False)
    return np.asarray(out, dtype=np.int64).reshape(n)


def _texts(struct: pa_.StructArray | pa_.ChunkedArray, name: str) -> np.ndarray:
    if isinstance(struct, pa_.ChunkedArray):
        col = pa_.chunked_array([pc.struct_field(c, [name]) for c in struct.chunks], type=pa_.string())
    else:
        col = pc.struct_field(struct, [name])
    return np.asarray(pc.fill_null(col, "").to_numpy(zero_copy_only=False), dtype=object)


def _days_in_month(year: np.ndarray, month: np.ndarray) -> np.ndarray:
    ok = (month >= 1) & (month <= 12)
    y = np.where(ok, year, 2000)
    m = np.where(ok, month, 1)
    start = ((y - 1970) * 12 + (m - 1)).astype("datetime64[M]")
    return np.where(ok, ((start + 1).astype("datetime64[D]") - start.astype("datetime64[D]")).astype(np.int64), 31)


def parse_date_column(values: pd.Series, order: DateOrder, *, timezone: str | None = None,
                      reasons: bool = True) -> ParsedDates:
    """Parse one column of date text (see the module docstring); with ``reasons``, say why each bad value is bad."""
    fast = _fast_iso(values)
    if fast is not None:
        return ParsedDates(fast, pd.Series([], dtype=object))
    n = len(values)
    arr = pc.utf8_trim_whitespace(text_array(values))
    if isinstance(arr, pa_.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    arr = arr.cast(pa_.string())
    present = np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=bool)
    m = pc.extract_regex(arr, _DATE_RE)
    matched = np.asarray(pc.fill_null(pc.is_valid(m), False).to_numpy(zero_copy_only=False), dtype=bool) & present
    y1, m1, d1 = _ints(m, "y1", n), _ints(m, "m1", n), _ints(m, "d1", n)
    a, b, y2 = _ints(m, "a", n), _ints(m, "b", n), _ints(m, "y2", n)
    is_iso = matched & (y1 >= 0)
    slashed = matched & ~is_iso
    if order == "dayfirst":
        day_s, month_s = a, b
    else:
        day_s, month_s = b, a
    year = np.where(is_iso, y1, y2)
    month = np.where(is_iso, m1, month_s)
    day = np.where(is_iso, d1, day_s)
    usable = is_iso | (slashed & (order != "iso"))
    # the time part
    time_text = pc.struct_field(m, ["time"]) if n else None
    has_time = np.zeros(n, dtype=bool)
    time_ok = np.ones(n, dtype=bool)
    utc = np.zeros(n, dtype=bool)
    hour = np.zeros(n, dtype=np.int64)
    minute = np.zeros(n, dtype=np.int64)
    second = np.zeros(n, dtype=np.int64)
    if time_text is not None and n:
        time_text = pc.utf8_trim_whitespace(time_text)
        has_time = np.asarray(pc.fill_null(pc.greater(pc.utf8_length(time_text), 0), False)
                              .to_numpy(zero_copy_only=False), dtype=bool) & matched
        if has_time.any():
            t = pc.extract_regex(time_text, _TIME_RE)
            t_match = np.asarray(pc.fill_null(pc.is_valid(t), False).to_numpy(zero_copy_only=False), dtype=bool)
            hour, minute, second = _ints(t, "h", n), _ints(t, "mi", n), np.maximum(_ints(t, "s", n), 0)
            ampm = np.char.lower(_texts(t, "ampm").astype(str))
            tz = np.char.lower(_texts(t, "tz").astype(str))
            pm = np.char.startswith(ampm, "p")
            twelve = ampm != ""
            valid_hour = np.where(twelve, (hour >= 0) & (hour <= 12), (hour >= 0) & (hour <= 23))
            time_ok = ~has_time | (t_match & valid_hour & (minute <= 59) & (second <= 59))
            hour = np.where(twelve, np.where(pm, hour % 12 + 12, hour % 12), hour)
            zero_offset = np.isin(tz, ["+00", "-00", "+00:00", "-00:00", "+0000", "-0000"])
            utc = has_time & time_ok & (np.isin(tz, _UTC_TOKENS) | zero_offset)
    month_ok = (month >= 1) & (month <= 12)
    dim = _days_in_month(year, month)
    day_ok = (day >= 1) & (day <= dim)
    good = usable & month_ok & day_ok & time_ok
    months = np.where(good, (year - 1970) * 12 + (month - 1), 0).astype("datetime64[M]")
    cal = months.astype("datetime64[D]") + np.where(good, day - 1, 0).astype("timedelta64[D]")
    in_range = (cal >= _MIN_DAY) & (cal <= _MAX_DAY)
    good &= in_range
    out = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    out[good] = cal[good].astype("datetime64[ns]")
    n_utc = int((utc & good).sum())
    n_converted = 0
    if timezone and n_utc:
        conv = utc & good
        stamp = out[conv] + (hour[conv] * 3600 + minute[conv] * 60 + second[conv]).astype("timedelta64[s]")
        local = pd.DatetimeIndex(stamp).tz_localize("UTC").tz_convert(timezone).tz_localize(None).normalize()
        moved = local.to_numpy("datetime64[ns]")
        n_converted = int((moved != out[conv]).sum())
        out[conv] = moved
    dates = pd.Series(out, index=values.index, dtype="datetime64[ns]")
    bad = present & ~good
    why = pd.Series([], dtype=object)
    if reasons and bad.any():
        why = _reasons(np.flatnonzero(bad), arr, order, matched, usable, slashed, month_ok, day_ok, time_ok,
                       in_range, has_time, year, month, day, dim, values.index)
    return ParsedDates(dates, why, n_utc=n_utc, n_converted=n_converted, n_times=int((has_time & good).sum()))


def _reasons(pos: np.ndarray, arr: pa_.Array, order: str, matched: np.ndarray, usable: np.ndarray,
             slashed: np.ndarray, month_ok: np.ndarray, day_ok: np.ndarray, time_ok: np.ndarray,
             in_range: np.ndarray, has_time: np.ndarray, year: np.ndarray, month: np.ndarray, day: np.ndarray,
             dim: np.ndarray, index: pd.Index) -> pd.Series:
    """One sentence per bad value (only the bad values are looked at: a few, in the common case)."""
    text = arr.take(pa_.array(pos)).to_pylist()
    out = []
    for k, i in enumerate(pos):
        shown = str(text[k])[:40]
        if not matched[i]:
            if any(ch.isdigit() for ch in shown) and any(sep in shown for sep in "-/.") and \
                    len([c for c in shown if c.isdigit()]) >= 6:
                what = (f"not a valid date: '{shown}' is not written as a date (or a date and time) the dashboard "
                        f"reads; {DATE_HELP[order]}")
            else:
                what = f"not a valid date: '{shown}' is not a date; {DATE_HELP[order]}"
        elif not usable[i]:
            what = f"not a valid date: it is written day-first or month-first; {DATE_HELP['iso']}"
        elif not month_ok[i]:
            hint = ""
            if slashed[i] and order in _OTHER_ORDER:
                hint = (f" (read {_ORDER_WORDS[order]}, as chosen; if this file writes {_OTHER_ORDER[order]} "
                        "dates, choose that date format)")
            what = f"not a valid date: month {month[i]} does not exist{hint}"
        elif not day_ok[i]:
            name = _MONTHS[month[i] - 1]
            if day[i] < 1:
                what = f"not a valid date: day {day[i]} does not exist"
            elif month[i] == 2 and day[i] == 29:
                what = f"not a valid date: day 29 in February {year[i]}, which has 28 days ({year[i]} is not a leap year)"
            else:
                what = f"not a valid date: day {day[i]} in a {dim[i]}-day month ({name} {year[i]})"
            if slashed[i] and order in _OTHER_ORDER:
                what += f"; read {_ORDER_WORDS[order]}, as chosen"
        elif not time_ok[i]:
            what = (f"not a valid date: has a time part the dashboard does not read ('{shown}'); write the time as "
                    "14:05 or 02:05 PM (seconds and an offset such as Z or -05:00 may follow), or leave it out")
        elif not in_range[i]:
            what = (f"{shown} is outside the dates the dashboard can hold (1677-09-22 to 2262-04-11): a placeholder "
                    "such as 9999-12-31 or 0001-01-01 is not a real date; write the real date (or leave the cell "
                    "empty where the column is optional), then upload again")
        else:  # pragma: no cover - every bad value fails one of the checks above
            what = f"not a valid date; {DATE_HELP[order]}"
        out.append(what)
    del has_time
    return pd.Series(out, index=index[pos], dtype=object)


def utc_note(name: str, column: str, parsed: ParsedDates, timezone: str | None) -> str | None:
    """The load note saying how the UTC values of one date column were read (None when it has none)."""
    if not parsed.n_utc:
        return None
    if timezone:
        return (f"{name}: {parsed.n_utc:,} {column} value(s) written in UTC (ending Z or +00:00) were converted to "
                f"the clinic timezone {timezone} before taking their date ({parsed.n_converted:,} fell on a "
                "different day than in UTC).")
    return (f"{name}: {parsed.n_utc:,} {column} value(s) are written in UTC (ending Z or +00:00) and were read as "
            "their UTC date; set the clinic timezone (timezone option, --timezone) to read them as the clinic's "
            "local date (an evening visit in the Americas has the next day's UTC date).")
