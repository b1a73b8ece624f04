"""Sums of the rows of a matrix by block: the inner product of the Cox and mixed-model likelihoods.

Two ways to the same sums. NumPy's ``bincount``, one column at a time (about 12 ns per cell), and SciPy's sparse
product, one pass over the rows (about 0.4 ns per cell) — but importing SciPy costs about 0.15 s, the price of some
12 million ``bincount`` cells. So, like renting skis until buying pays: once SciPy is loaded (the dashboard and the
report load it anyway) every sum takes the sparse product; before that, small sums take ``bincount`` until they
have cost about the import, and a large sum (or the sum that would pass that budget) loads SciPy. A command-line
analysis of a clinic never loads it; a who-benefits scan of many Cox models loads it after a few fits. Both paths
agree to rounding (``tests/test_blocksum.py``).
"""

from __future__ import annotations

import sys

import numpy as np

SPARSE_FROM = 3_000_000  # cells of one sum from which it takes the sparse product at once
BINCOUNT_BUDGET = 12_000_000  # cells summed by bincount before SciPy's import has paid for itself
_spent = 0  # cells summed by bincount in this process (approximate under threads: only a budget)


def use_sparse(rows: int, columns: int) -> bool:
    """Whether a sum over ``rows × columns`` cells takes SciPy's sparse product (see the module docstring)."""
    global _spent
    cells = rows * columns
    if "scipy.sparse" in sys.modules or cells >= SPARSE_FROM or _spent + cells > BINCOUNT_BUDGET:
        return True
    _spent += cells
    return False


def sum_by_block(values: np.ndarray, blocks: np.ndarray, n_blocks: int,
                 weights: np.ndarray | None = None) -> np.ndarray:
    """``(n_blocks, q)`` sums of ``weights[i] · values[i]`` over the rows ``i`` of each block (``blocks[i]``, any
    order; a block without rows sums to 0), by ``bincount`` per column."""
    out = np.empty((n_blocks, values.shape[1]))
    for j in range(values.shape[1]):
        column = values[:, j] if weights is None else values[:, j] * weights
        out[:, j] = np.bincount(blocks, weights=column, minlength=n_blocks)
    return out
