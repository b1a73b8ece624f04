"""Per-patient sums shared between designs (lmm.PatientSums): the same moments, bit for bit, as one design alone."""

import numpy as np

from analytics.engines import lmm
from analytics.outcomes import trajectories as tr


def _brute(y, basis, groups, time):
    """Per-patient sums by a plain loop over patients (the definition of Moments)."""
    n_groups = groups.max() + 1
    u = np.column_stack([basis, y])
    r1 = u.shape[1]
    su, tu, uu, s = np.zeros((n_groups, r1)), np.zeros((n_groups, r1)), np.zeros((n_groups, r1, r1)), np.zeros((n_groups, 3))
    for i in range(n_groups):
        rows = groups == i
        ui, ti = u[rows], time[rows]
        su[i], tu[i], uu[i] = ui.sum(0), (ti[:, None] * ui).sum(0), ui.T @ ui
        s[i] = rows.sum(), ti.sum(), (ti * ti).sum()
    return lmm.Moments(s=s, su=su, tu=tu, uu=uu)


def _random_scores(seed=5, n_groups=40, n=300):
    rng = np.random.default_rng(seed)
    groups = np.r_[np.arange(n_groups), rng.integers(0, n_groups, n - n_groups)]
    weeks = rng.uniform(0, 30, n).round(1)
    y = rng.normal(12, 5, n).round()
    return y, weeks, groups


def test_patient_moments_match_the_definition():
    y, weeks, groups = _random_scores()
    basis = np.column_stack([np.ones(len(y)), weeks, np.maximum(weeks - 4, 0)])
    got, want = lmm.patient_moments(y, basis, groups, weeks), _brute(y, basis, groups, weeks)
    for name in ("s", "su", "tu", "uu"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-12)
    assert got.r == 3 and got.q == 2 and got.n_obs == len(y)
    no_slope = lmm.patient_moments(y, basis, groups, None)
    assert no_slope.q == 1 and no_slope.tu.shape == (40, 0)
    np.testing.assert_array_equal(no_slope.uu, got.uu)


def test_shared_sums_equal_each_design_alone_bit_for_bit():
    y, weeks, groups = _random_scores(seed=9)
    shared = lmm.PatientSums(groups)
    knots = tuple(np.quantile(weeks, [0, 1 / 3, 2 / 3, 1]))
    bases = [tr.TimeBasis("linear"), tr.TimeBasis("piecewise", knot_weeks=4.0), tr.TimeBasis("spline", knots=knots)]
    for time in bases:  # the linear and piecewise shapes share the weeks' sums, all three the constant's and y's
        h = time(weeks)
        keys = ["weeks" if time.shape != "spline" and j == 0 else (time.shape, j) for j in range(h.shape[1])]
        columns = {"1": np.ones(len(y)), "weeks": weeks, "y": y, **{k: h[:, j] for j, k in enumerate(keys)}}
        got = shared.moments(columns, ["1", *keys], "y", "weeks")
        alone = lmm.patient_moments(y, np.column_stack([np.ones(len(y)), h]), groups, weeks)
        for name in ("s", "su", "tu", "uu"):
            np.testing.assert_array_equal(getattr(got, name), getattr(alone, name))
    # products with the constant and the weeks were summed once: 7 columns' sums + their needed products
    assert len(shared._sums) < 3 * 15


def test_patient_sums_reject_gaps_in_codes():
    try:
        lmm.PatientSums(np.array([0, 2, 2]))
    except ValueError as err:
        assert "without gaps" in str(err)
    else:
        raise AssertionError("codes with a gap were accepted")


def test_no_observation_level_column_is_held_between_calls():
    """Only per-patient sums are kept: a design's basis (8 million values a column at a million patients) is not
    held after its moments are made. A key aliased in an earlier call to an equal column is summed right when that
    column is not given again."""
    y, weeks, groups = _random_scores(seed=11)
    shared = lmm.PatientSums(groups)
    twice = weeks.copy()
    first = shared.moments({"1": np.ones(len(y)), "weeks": weeks, "again": twice, "y": y},
                           ["1", "weeks", "again"], "y", "weeks")
    assert shared._columns == {} and shared._alias["again"] == "weeks"
    want = lmm.patient_moments(y, np.column_stack([np.ones(len(y)), weeks, weeks]), groups, weeks)
    np.testing.assert_array_equal(first.uu, want.uu)
    bend = np.maximum(weeks - 4, 0)  # a new column whose products with "again" (an alias of weeks) are new sums
    got = shared.moments({"1": np.ones(len(y)), "again": twice, "bend": bend, "y": y}, ["1", "again", "bend"], "y",
                         "again")
    alone = lmm.patient_moments(y, np.column_stack([np.ones(len(y)), weeks, bend]), groups, weeks)
    for name in ("s", "su", "tu", "uu"):
        np.testing.assert_array_equal(getattr(got, name), getattr(alone, name))
    assert shared._columns == {}
    try:
        shared.moments({"1": np.ones(len(y)), "y": y}, ["1", "weeks"], "y")
    except ValueError as err:
        assert "no values given" in str(err)
    else:
        raise AssertionError("a column without values was accepted")


def test_keeping_one_shapes_moments_frees_the_rest_and_recomputes_them_bit_for_bit():
    import pandas as pd

    y, weeks, groups = _random_scores(seed=13)
    prepared = tr.PreparedScores(measure="phq9", patient_id=pd.Index([f"p{i}" for i in range(groups.max() + 1)]),
                                 codes=groups.astype(np.int64), weeks=weeks, value=y,
                                 n_scores=np.bincount(groups))
    linear, piecewise = tr.TimeBasis("linear"), tr.TimeBasis("piecewise", knot_weeks=4.0)
    before = {b: prepared.moments(b) for b in (linear, piecewise)}
    prepared.keep_moments_of("piecewise")
    assert list(prepared._moments) == [piecewise]  # the shared sums and the linear shape's moments are gone
    assert prepared.moments(piecewise) is before[piecewise]
    again = prepared.moments(linear)  # summed afresh, from new per-patient sums
    for name in ("s", "su", "tu", "uu"):
        np.testing.assert_array_equal(getattr(again, name), getattr(before[linear], name))
