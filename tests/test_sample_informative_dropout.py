"""The generator's informative early dropout (TrueEffects.informative_dropout, off by default): its documented effect
is recovered, and the two dropout rules bracket the true share returning to use (issue #19: "both dropout rules
recovered from a generator with informative dropout")."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from analytics.outcomes import survival
from analytics.outcomes.cohort import build_cohort
from analytics.outcomes.settings import Settings
from analytics.sample import TRUE_EFFECTS, InformativeDropout, generate_clinic, true_effects_table
from schemas.frames import ValidatedExports

OPTION = InformativeDropout(share_at_mean_risk=0.20, odds_ratio_per_sd=3.0)


@pytest.fixture(scope="module")
def clinic():
    frames = generate_clinic(3000, seed=190, effects=replace(TRUE_EFFECTS, informative_dropout=OPTION),
                             with_truth=True)
    data = ValidatedExports.from_frames(frames["sessions"], frames["followups"], frames["patients"])
    return build_cohort(data, Settings(suppress=False)), frames


def test_the_option_is_off_by_default_and_keeps_patients_and_their_return_to_use():
    assert TRUE_EFFECTS.informative_dropout is None
    off = generate_clinic(400, seed=5, with_truth=True)
    on = generate_clinic(400, seed=5, effects=replace(TRUE_EFFECTS, informative_dropout=OPTION), with_truth=True)
    pd.testing.assert_frame_equal(off["patients"], on["patients"])
    # (later draws, e.g. of scores, depend on how many sessions there are, so they differ with the option on)
    for col in ("relapse_day", "therapy", "index_date"):
        pd.testing.assert_series_equal(off["truth"][col], on["truth"][col])
    assert len(on["followups"]) < len(off["followups"])
    assert "informative early dropout" not in " ".join(true_effects_table()["parameter"])
    assert "informative early dropout" in " ".join(true_effects_table(replace(TRUE_EFFECTS,
                                                                              informative_dropout=OPTION))["parameter"])


def test_the_documented_dropout_effect_is_recovered(clinic):
    _, frames = clinic
    truth = frames["truth"][frames["truth"]["started"]]
    fit = sm.Logit(truth["informative_dropout"].astype(float), sm.add_constant(truth["risk_z"])).fit(disp=0)
    lo, hi = np.exp(fit.conf_int().loc["risk_z"])
    assert lo < OPTION.odds_ratio_per_sd < hi
    lo0, hi0 = 1 / (1 + np.exp(-fit.conf_int().loc["const"]))
    assert lo0 < OPTION.share_at_mean_risk < hi0
    # the dropouts leave before any follow-up: none of their follow-ups is in the export
    gone = set(truth.loc[truth["informative_dropout"], "patient_id"])
    assert not gone & set(frames["followups"]["patient_id"])


@pytest.mark.parametrize("day", [90, 180])
def test_both_dropout_rules_bracket_the_true_share_returning_to_use(clinic, day):
    cohort, frames = clinic
    truth = frames["truth"].set_index("patient_id").loc[cohort.patients["patient_id"]]
    true_free = float((truth["relapse_day"] > day).mean())  # latent, whatever was observed
    sens = survival.dropout_sensitivity(cohort)
    ms = sens.milestones.set_index(["rule", "day"])
    censored = ms.loc[(survival.DROPOUT_CENSORED, day)]
    as_event = ms.loc[(survival.DROPOUT_EVENT, day)]
    # dropout censored cannot see the high-risk patients who left: optimistic; dropout as return to use: pessimistic
    assert as_event["ci_high"] < true_free < censored["ci_low"]
    assert sens.n_early_dropout >= int(truth["informative_dropout"].sum() * 0.9)
