"""Domain errors, written for the person who must act.

Defined here, at the bottom of the project (schemas and every layer of analytics raise them;
``analytics.errors`` is the same classes under the name analytics code uses). Pages and the CLI catch :class:`OutcomesError` only. A message says what is wrong, with the
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
