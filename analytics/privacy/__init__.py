"""Privacy: small-cell rules applied to results (never inside an engine), safe CSV exports, roles.

:mod:`~analytics.privacy.counts` (a count, a fraction, counts inside sentences),
:mod:`~analytics.privacy.suppression` (tables, charts, KM curves with complementary suppression),
:mod:`~analytics.privacy.safe_export` (CSV downloads without formula injection),
:mod:`~analytics.privacy.access` (who may see what).
"""
