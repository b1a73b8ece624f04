"""Compute the slow analyses of the first views in the background, right after a cohort is built (issue 21).

A page's first view at 50,000 patients used to wait for its models (the PHQ-9 mixed models with the automatic time
shape, response durability, the abstinence GEE, the subgroup models). :func:`start` computes them in one daemon
thread for the cohort the session has just built, in the order a visitor usually opens the pages, while the visitor
reads the load report or the Overview. Every result is kept on that cohort object (:func:`analytics.outcomes.memo.once`
via the analyses' ``@per_cohort``): the same values a page would compute, shared with nothing else, gone with the
cohort. A page that asks for a result being computed waits for it (never computes it twice); a result that fails
is not kept, so the page meets the error itself and says why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from analytics.outcomes import attention, benchmarks, retention, subgroups, substance_use, trajectories
from analytics.outcomes.cohort import Cohort


def first_views(cohort: Cohort) -> list[Callable[[], object]]:
    """The analyses of each page's default view, in navigation order (the same calls the pages make)."""
    return [
        lambda: trajectories.phq9_model(cohort, time="auto", by=None),
        lambda: trajectories.response_remission(cohort, by=None),
        lambda: trajectories.band_transitions(cohort),
        lambda: trajectories.response_durability(cohort),
        lambda: trajectories.abstinence_gee(cohort, by=None),
        lambda: substance_use.use_course(cohort, measure="pda", by=next(iter(substance_use.GROUPINGS))),
        lambda: substance_use.use_course(cohort, measure="heavy", by=next(iter(substance_use.GROUPINGS))),
        lambda: substance_use.continuous_abstinence(cohort, by=next(iter(substance_use.GROUPINGS))),
        lambda: substance_use.urine_results(cohort, by=next(iter(substance_use.GROUPINGS))),
        lambda: substance_use.courses(cohort, by=next(iter(substance_use.GROUPINGS))),
        lambda: benchmarks.compare(cohort, substance=None, min_share=benchmarks.MIN_COVERAGE_SHARE),
        lambda: retention.retention_summary(cohort, by=retention.default_by(cohort),
                                            gap_days=cohort.settings.dropout_gap_days),
        lambda: subgroups.who_benefits(cohort, treated=subgroups.page_arms(cohort)[1],
                                       control=subgroups.page_arms(cohort)[2]),
        lambda: attention.needing_attention(cohort, phq9_margin=5, active_days=cohort.settings.attention_active_days),
    ]



def run(cohort: Cohort) -> None:
    """Compute :func:`first_views` one after another; an analysis that fails is skipped (its page says why)."""
    for compute in first_views(cohort):
        try:
            compute()
        except Exception:  # noqa: BLE001, S112 - not kept: the page that needs it computes it again and shows the error
            continue


def start(cohort: Cohort) -> threading.Thread:
    """:func:`run` in a daemon thread; returns it (tests join it)."""
    thread = threading.Thread(target=run, args=(cohort,), name="kap-warmup", daemon=True)
    thread.start()
    return thread


__all__ = ["first_views", "run", "start"]
