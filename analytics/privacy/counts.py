"""Single counts: is a count small, a count or fraction as shown text, and counts inside sentences.

Analyses mark each count they write into a note (:func:`note_n`, :func:`note_of`); pages, the report and the
command line render the note (:func:`analytics.privacy.suppression.render_note`) with the small-cell rule of the output. Tables, charts and
their complementary suppression are in :mod:`analytics.privacy.suppression`.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from analytics import formatting

OFF_NOTE = "Suppression OFF: internal use only. Counts from 1 to {hi} are shown; do not share this output."

__all__ = ["OFF_NOTE", "is_small", "mask_text", "note_below", "note_n", "note_of", "rate_is_safe"]


# --------------------------------------------------------------------------------------------------
# single numbers
# --------------------------------------------------------------------------------------------------

def _is_missing(x: object) -> bool:
    if x is None or x is pd.NA:
        return True
    try:
        return bool(isinstance(x, (float, np.floating)) and math.isnan(x))
    except TypeError:  # pragma: no cover - exotic scalars
        return False


def is_small(n: float | None, *, min_cell: int = 11) -> bool:
    """True when ``n`` is a count that must not be shown: ``1 <= n < min_cell``.

    Zero and missing values are not small (zero does not identify anyone).
    """
    if _is_missing(n):
        return False
    return 0 < float(n) < min_cell  # type: ignore[arg-type]


def rate_is_safe(numerator: float | None, denominator: float | None, *, min_cell: int = 11,
                 complement: bool = True) -> bool:
    """May ``numerator / denominator`` be shown?

    Not when the numerator or the denominator is 1 to ``min_cell - 1``, nor (``complement=True``, for a part of
    a whole such as "45 of 50 relapsed") when ``denominator - numerator`` is, because the complement follows
    from the two shown numbers.
    """
    if is_small(numerator, min_cell=min_cell) or is_small(denominator, min_cell=min_cell):
        return False
    return not (complement and not _is_missing(numerator) and not _is_missing(denominator)
                and is_small(float(denominator) - float(numerator), min_cell=min_cell))  # type: ignore[arg-type]


def _small_label(min_cell: int) -> str:
    """What a hidden small count shows: ``"<11"`` (``formatting.SUPPRESSED``) or ``"<min_cell"``."""
    return formatting.SUPPRESSED if min_cell == 11 else f"<{min_cell}"


def mask_text(n: float | None, *, min_cell: int = 11, enabled: bool = True) -> str:
    """A single count as text: ``"<11"`` when it is 1–10 and suppression is on, else ``"1,234"``/``"—"``."""
    if enabled and is_small(n, min_cell=min_cell):
        return _small_label(min_cell)
    if _is_missing(n):
        return "—"
    return formatting.count(round(float(n)))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# counts inside sentences (method notes, exclusions): marked where written, masked where shown
# --------------------------------------------------------------------------------------------------

_MARK = re.compile("\u27e6(-?\\d+)(?:/(-?\\d+))?\u27e7")
_BOUND = re.compile("\u27e6<(\\d+)\u27e7")


def note_n(n: float) -> str:
    """A count written into a note: ``f"{note_n(7)} patients were left out"``.

    The analytics do not know who reads a note, so the count is marked, not formatted; every place that shows
    notes (pages, report, exports) passes them through :func:`render_note`, which masks a count of 1–10.
    """
    return f"\u27e6{round(float(n))}\u27e7"


def note_of(numerator: float, denominator: float) -> str:
    """"45 of 60" written into a note; rendered like :func:`fraction_text` (the complement is protected too)."""
    return f"\u27e6{round(float(numerator))}/{round(float(denominator))}\u27e7"


def note_below(k: int) -> str:
    """A size bound written into a note: ``f"groups of fewer than {note_below(5)} patients"``.

    Naming a group "with fewer than 5 patients" tells a reader it has 1–4: a tighter bound than the small-cell
    rule's "<11". Rendered (:func:`analytics.privacy.suppression.render_note`) as ``k``, or as ``min_cell`` when
    ``k < min_cell`` and suppression is on ("fewer than 11 patients").
    """
    return f"\u27e6<{int(k)}\u27e7"
