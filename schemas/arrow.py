"""Zero-copy bridges between pandas text columns and Arrow arrays (pandas 3 keeps ``str`` columns in Arrow).

Going through ``to_numpy(dtype=object)`` builds one Python string per cell (half a second per million cells);
these helpers hand Arrow compute kernels the column's own buffers instead.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa


def text_array(values: pd.Series) -> pa.Array | pa.ChunkedArray:
    """The column as an Arrow string array: zero-copy for Arrow-backed ``str`` columns, converted otherwise."""
    arr = values.array
    if isinstance(arr, pd.arrays.ArrowStringArray):
        return pa.array(arr)
    return pa.array(values.to_numpy(dtype=object), type=pa.string(), from_pandas=True)


def text_series(arr: pa.Array | pa.ChunkedArray, index: pd.Index) -> pd.Series:
    """An Arrow string array back to a pandas ``str`` column (missing = NaN) on ``index``."""
    out = arr.to_pandas()
    if out.dtype != "str":
        out = out.astype("str")
    out.index = index
    return out
