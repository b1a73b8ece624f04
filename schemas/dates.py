"""Date text → dates, strictly in the order the user chose (ISO, day-first or month-first)."""

from __future__ import annotations

import re
from typing import Literal

import pandas as pd
import pyarrow as pa_
import pyarrow.compute as pc

from schemas.arrow import text_array

DateOrder = Literal["iso", "dayfirst", "monthfirst"]

_ISO = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$")
_ISO_TIME = re.compile(r"^(\d{4}-\d{1,2}-\d{1,2})[ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_SLASHED = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4})$")
DATE_HELP = {
    "iso": "dates must look like 2026-11-25 (yyyy-mm-dd); if your export writes day-first (25/11/2026) or "
           "month-first (11/25/2026) dates, choose that date format and upload again",
    "dayfirst": "dates must look like 25/11/2026 (day first) or 2026-11-25",
    "monthfirst": "dates must look like 11/25/2026 (month first) or 2026-11-25",
}


def parse_dates(values: pd.Series, order: DateOrder) -> pd.Series:
    """Parse date text strictly in the chosen order; what does not parse becomes NaT.

    The common case (plain ISO dates) takes pandas' fast fixed-format path; only the rest is matched
    against ISO date-times and, when the user chose one, day-first or month-first forms.
    """
    try:  # the common case: every value a valid yyyy-mm-dd date (Arrow's strict ISO cast)
        days = pc.cast(pc.utf8_trim_whitespace(text_array(values)), pa_.date32())
        return pd.Series(pc.cast(days, pa_.timestamp("ns")).to_numpy(zero_copy_only=False), index=values.index,
                         dtype="datetime64[ns]")
    except (pa_.ArrowInvalid, pa_.ArrowTypeError):
        pass
    s = values.astype("str").str.strip()
    out = pd.to_datetime(s, format="%Y-%m-%d", errors="coerce").astype("datetime64[ns]")
    rest = out.isna() & s.notna()
    if not rest.any():
        return out
    r = s[rest]
    iso_time = r.str.extract(_ISO_TIME)[0]
    unpadded = r.where(r.str.match(_ISO).fillna(False).astype(bool), iso_time)
    parsed = pd.to_datetime(unpadded, format="%Y-%m-%d", errors="coerce")
    if order != "iso":
        parts = r.str.extract(_SLASHED)
        day, month = (parts[0], parts[1]) if order == "dayfirst" else (parts[1], parts[0])
        text = parts[2] + "-" + month.str.zfill(2) + "-" + day.str.zfill(2)
        parsed = parsed.fillna(pd.to_datetime(text, format="%Y-%m-%d", errors="coerce"))
    out.loc[rest] = parsed.astype("datetime64[ns]").to_numpy()
    return out
