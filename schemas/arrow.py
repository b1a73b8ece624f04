"""Zero-copy bridges between pandas text columns and Arrow arrays (pandas 3 keeps ``str`` columns in Arrow).

Going through ``to_numpy(dtype=object)`` builds one Python string per cell (half a second per million cells);
these helpers hand Arrow compute kernels the column's own buffers instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


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


def text_codes(values: pd.Series, keys: pd.Series) -> np.ndarray:
    """Position of each value in ``keys`` (unique text), -1 where absent or missing: text ids to integer keys
    by Arrow's hash kernel."""
    arr = text_array(values)
    found = pc.index_in(arr, value_set=text_array(keys).cast(arr.type))
    return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def text_isin(values: pd.Series, members: object) -> pd.Series:
    """``values.isin(members)`` for text columns (patient ids, codes) by Arrow's hash kernel on the columns' own
    buffers (pandas' Arrow-string ``isin`` is ~10× slower on a million rows). Missing values are never members."""
    if isinstance(members, (pd.Series, pd.Index)):
        value_set = text_array(pd.Series(members).dropna())
    else:
        items = list(members) if isinstance(members, (set, frozenset)) else members
        value_set = pa.array(pd.Series(items, dtype=object).dropna().astype(str).to_numpy(dtype=object),
                             type=pa.string())
    arr = text_array(values)
    found = pc.fill_null(pc.is_in(arr, value_set=value_set.cast(arr.type)), False)
    return pd.Series(np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool), index=values.index)


def text_map(values: pd.Series, mapper: object) -> pd.Series:
    """``values.map(mapper)`` (e.g. each row's patient attribute from a Series indexed by patient id): the same
    values and dtype, looked up by Arrow's hash kernel when ``values`` and ``mapper``'s index are Arrow text and the
    index is unique (pandas hashes the index again on every call: 3-7x slower at 400,000 rows); anything else
    (a dict, a function, other dtypes, a repeated key) is ``values.map(mapper)`` itself."""
    if not (isinstance(mapper, pd.Series) and isinstance(values.array, pd.arrays.ArrowStringArray)
            and isinstance(mapper.index.array, pd.arrays.ArrowStringArray) and mapper.index.is_unique):
        return values.map(mapper)
    codes = text_codes(values, mapper.index.to_series())
    return pd.Series(pd.api.extensions.take(mapper.array, codes, allow_fill=True), index=values.index,
                     name=values.name)


def release_unused_memory() -> None:
    """Hand the memory Arrow's pool holds for reuse back to the system (mimalloc keeps freed pages otherwise).

    Called between the steps of reading and validating a file: each step frees most of what it allocated (the bytes
    of the file once split, text columns once checked, temporary arrays of the kernels), and without this the
    process's resident memory only grows. A few milliseconds each time.
    """
    pa.default_memory_pool().release_unused()


def use_returning_memory_pool() -> bool:
    """Make Arrow allocate from jemalloc and give freed memory back to the system at once (decay 0), unless the
    ``ARROW_DEFAULT_MEMORY_POOL`` environment variable chose a pool. True when it did. Called once on import.

    Reading and validating a large export frees most of what it allocates along the way (text columns of a file once
    checked, the temporary arrays of each kernel). Arrow's default pool (mimalloc) keeps freed pages for reuse, so the
    resident memory of the process only grows: a 200 MB, 3.2 M-row export peaked at 1.3 GB with it, 1.1 GB with this
    pool. The price is the page faults of memory asked for again (about 0.1 s of system time per million rows).
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return False
    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return False  # a build without jemalloc keeps its default pool
    pa.set_memory_pool(pool)
    return True


use_returning_memory_pool()

_Item = TypeVar("_Item")
THREADS_FROM_ROWS = 100_000  # below this a thread pool costs more than it saves


def map_columns(fn: Callable[[_Item], Any], items: Sequence[_Item], rows: int) -> list[Any]:
    """``[fn(item) for item in items]``, in threads when the columns are long: Arrow's kernels release the GIL, so
    the columns of a large file are worked on all cores. Results in the order of ``items``."""
    if len(items) < 2 or rows < THREADS_FROM_ROWS:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))
