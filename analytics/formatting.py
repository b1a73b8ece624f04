"""Numbers stay numbers until the edge: every text formatting of results lives here.

Used by pages, the report and CLI text output alike.
"""

from __future__ import annotations

import math

SUPPRESSED = "<11"  # shown in place of a suppressed count (1–10 by default)
DASH = "–"


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x: float | None, digits: int = 2) -> str:
    return "—" if _missing(x) else f"{x:,.{digits}f}"


def count(n: int | None) -> str:
    return "—" if n is None else f"{int(n):,}"


def pct(x: float | None, digits: int = 0) -> str:
    """A proportion (0–1) as a percentage."""
    return "—" if _missing(x) else f"{100 * x:.{digits}f}%"


def ci(estimate: float | None, low: float | None, high: float | None, digits: int = 2) -> str:
    """``0.62 (0.41–0.93)``."""
    if _missing(estimate):
        return "—"
    if _missing(low) or _missing(high):
        return num(estimate, digits)
    return f"{estimate:.{digits}f} ({low:.{digits}f}{DASH}{high:.{digits}f})"


def pct_ci(estimate: float | None, low: float | None, high: float | None, digits: int = 0) -> str:
    if _missing(estimate):
        return "—"
    if _missing(low) or _missing(high):
        return pct(estimate, digits)
    return f"{pct(estimate, digits)} ({pct(low, digits)}{DASH}{pct(high, digits)})"


def p_value(p: float | None) -> str:
    if _missing(p):
        return "—"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}"
