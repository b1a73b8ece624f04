"""Chart labels never show a count from 1 to 10 when suppression is on."""

from pathlib import Path

import numpy as np
import pytest

from analytics.outcomes import trajectories as tr
from analytics.outcomes.cohort import build_cohort
from analytics.report.plots.trajectories import band_transition_heatmap, response_remission_bars
from schemas.validate import load_exports

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort():
    d = ROOT / "sample_data"
    return build_cohort(load_exports(d / "sessions.csv", d / "followups.csv", d / "patients.csv"))


def test_band_heatmap_masks_small_cells(cohort):
    bt = tr.band_transitions(cohort)
    counts = bt.matrix().to_numpy()
    assert ((counts > 0) & (counts < 11)).any(), "the sample should have small cells to hide"
    text = np.asarray(band_transition_heatmap(bt, min_cell=11).data[0].text, dtype=object)
    for cell in text.ravel():
        assert cell == "<11" or cell == "0" or int(cell) >= 11
    raw = np.asarray(band_transition_heatmap(bt).data[0].text, dtype=object)
    assert any(c not in ("0", "<11") and int(c) < 11 for c in raw.ravel())  # without suppression they show


def test_response_bars_drop_rates_from_small_denominators(cohort):
    rr = tr.response_remission(cohort, by="site")
    fig = response_remission_bars(rr, min_cell=11)
    for trace in fig.data:
        for n_event, n in trace.customdata:
            if np.isfinite(float(n)):
                assert float(n) >= 11 and (float(n_event) == 0 or float(n_event) >= 11)
