"""Domain errors (the classes of :mod:`schemas.errors`, which both ``schemas`` and ``analytics`` raise).

Pages and the CLI catch :class:`OutcomesError` only.
"""

from schemas.errors import InsufficientData, ModelDidNotConverge, OutcomesError, UnusableExport

__all__ = ["InsufficientData", "ModelDidNotConverge", "OutcomesError", "UnusableExport"]
