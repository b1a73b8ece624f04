"""Engines: pure numerics on arrays (mixed models, Kaplan–Meier/log-rank/Cox, block sums, intervals).

No clinic words and no frames of the data contract: arrays and design matrices in, tables and fits out. Each
engine is checked against R (survival, lme4) or statsmodels on public data (tests/reference/). Engines import
nothing from the layers above them (``analytics.outcomes``, privacy, report, the store, the CLI) nor from
``schemas``; an import-rule test (tests/test_architecture.py) holds that.
"""
