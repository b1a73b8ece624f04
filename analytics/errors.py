"""Domain errors, written for the person who must act.

Pages and the CLI catch :class:`OutcomesError` only. A message says what is wrong, with the
actual value, then what to do.
"""


class OutcomesError(Exception):
    """Base of every error a user may see."""


class UnusableExport(OutcomesError):
    """A file cannot be used at all (missing, unreadable, empty, required column missing)."""


class InsufficientData(OutcomesError):
    """Too few patients, events or scores for an analysis."""


class ModelDidNotConverge(OutcomesError):
    """A model fit failed in a way that no fallback could rescue."""
