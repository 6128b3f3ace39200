"""Mock A stars against real LAMOST A stars (dr10-stars-A): distributions and a discriminator.

The full-size check with more epochs is ``python -m lamost_classify.realism`` (docs/realism.md);
this test is the fast version with a bound it reaches at its fixed seed.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import LAMOST_DATA, requires_shared, requires_templates
from lamost_classify import realism
from lamost_classify.mocks.instrument import is_held_out
from lamost_classify.mocks.simulate import Simulator

pytestmark = [requires_shared, requires_templates]


@pytest.fixture(scope="module")
def sets():
    real_train = realism.real_a_stars(LAMOST_DATA, held_out=False)
    real_eval = realism.real_a_stars(LAMOST_DATA, held_out=True)
    sim = Simulator(class_mix=(1, 0, 0), star_types=("A",), snr_distribution=real_train.snr_g)
    mock_train = realism.mock_a_stars(len(real_train.flux), 0, real_train.snr_g, simulator=sim)
    mock_eval = realism.mock_a_stars(len(real_eval.flux), 1, real_eval.snr_g, simulator=sim)
    return real_train, real_eval, mock_train, mock_eval


def test_held_out_real_stars_are_not_noise_donors(sets):
    from lamost_classify.mocks.noise_donors import noise_library

    lib = noise_library(str(LAMOST_DATA))
    assert not any(is_held_out(n) for n in lib.names)
    real_train, real_eval, _, mock_eval = sets
    assert all(is_held_out(n) for n in real_eval.names) and not any(is_held_out(n) for n in real_train.names)
    assert not set(mock_eval.names) & set(real_eval.names)


def test_distributions_match_real_a_stars(sets):
    _, real_eval, _, mock_eval = sets
    ks = realism.distribution_checks(real_eval, mock_eval)
    # S/N is matched by construction and masks come from real donors: the KS test must not reject.
    assert ks["snr_g"][1] > realism.KS_ALPHA
    assert ks["masked_fraction"][1] > realism.KS_ALPHA
    # The flux range (max/median) depends on the templates' colours and the dust: a tolerance on the KS
    # statistic (largest gap between the two cumulative distributions), not a p-value.
    assert ks["flux_range"][0] < 0.2


@pytest.mark.slow
def test_discriminator_cannot_separate_mocks_well(sets):
    real_train, real_eval, mock_train, mock_eval = sets
    res = realism.discriminator_auc(realism.prepared(real_train), realism.prepared(mock_train),
                                    realism.prepared(real_eval), realism.prepared(mock_eval), epochs=4, seed=0)
    # A discriminator that learnt something reaches a train AUC above 0.5; the mocks are judged on the
    # held-out real stars.
    assert res.train_auc > 0.55
    assert res.auc <= realism.TEST_AUC_BOUND, f"discriminator AUC {res.auc:.3f}"


def test_match_snr_takes_the_closest_unused_mock_once():
    pool = realism.SpectraSet(flux=np.arange(5)[:, None] * np.ones((5, 3)), ivar=np.ones((5, 3)),
                              andmask=np.zeros((5, 3), np.int32), snr_g=np.array([5.0, 10, 20, 40, 80]),
                              names=list("abcde"))
    used = np.zeros(5, bool)
    first = realism.match_snr(pool, np.array([11.0, 14.0]), used)
    assert first.names == ["b", "c"]  # 14 finds 10 taken: 20 is the closest left in log S/N
    second = realism.match_snr(pool, np.array([100.0]), used)
    assert second.names == ["e"] and used.sum() == 3
    with pytest.raises(ValueError, match="smaller"):
        realism.match_snr(pool, np.ones(3), used)


@pytest.mark.slow
@pytest.mark.parametrize("reference", realism.REFERENCES)
def test_family_round_matches_real_stars_in_snr_and_keeps_held_out_for_evaluation(reference):
    r = realism.family_round("survey", LAMOST_DATA, reference, epochs=2, max_real=30)
    assert (r["n_real_train"], r["n_real_eval"]) == (30, 30)
    assert r["snr_match_median_dex"] < 0.05
    assert 0.0 <= r["auc"] <= 1.0 and r["train_auc"] > 0.5
    assert r["ks"]["snr_g"][1] > realism.KS_ALPHA
