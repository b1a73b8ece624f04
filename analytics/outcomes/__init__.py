"""Outcomes: the cohort and every analysis of it.

:mod:`~analytics.outcomes.cohort` turns accepted export rows and :class:`~analytics.outcomes.settings.Settings`
into the :class:`~analytics.outcomes.cohort.Cohort`, which owns its facts (index dates, the data end date, which
windows have closed); survival, trajectories, benchmarks, QI, safety, subgroups and attention analyse it and
return frozen results with their method notes. Outcomes never import the store, plots, the report or pages.
"""
