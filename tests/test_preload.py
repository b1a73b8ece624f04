"""The background import of the analysis libraries (pages/_preload.py) and its hand-over to the cycle collector."""

from __future__ import annotations

import gc
import sys
import weakref

from analytics.outcomes import warmup  # noqa: F401  (imported before the preload starts, as in dashboard.py)
from pages import _preload


def test_the_libraries_are_imported_then_frozen_out_of_the_collectors_way() -> None:
    _preload.THREAD.join(timeout=300)
    assert not _preload.THREAD.is_alive()
    assert {"scipy.stats", "plotly.graph_objects", "analytics.outcomes.survival"} <= set(sys.modules)
    # the libraries' objects no longer walked by Streamlit's collection after every script run
    assert gc.get_freeze_count() > 50_000


def test_data_created_after_the_freeze_is_still_collected() -> None:
    _preload.THREAD.join(timeout=300)

    class Holder:
        pass

    a, b = Holder(), Holder()
    a.other, b.other = b, a  # a cycle: only the cycle collector can free it
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
