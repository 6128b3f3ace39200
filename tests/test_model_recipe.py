"""model/recipe.py: the recipe's parts that the training scripts share, on made-up probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from lamost_classify import SURVEY_PRIOR
from lamost_classify.model.recipe import choose_prior_strength, strength_prior


def test_strength_prior_runs_from_flat_to_the_survey_prior():
    assert strength_prior(0.0) == pytest.approx([1 / 3] * 3)
    assert strength_prior(1.0) == pytest.approx(list(SURVEY_PRIOR))
    half = strength_prior(0.5)
    assert sum(half) == pytest.approx(1.0) and half[0] > 1 / 3 and half[2] < 1 / 3


def test_choose_prior_strength_picks_the_best_mean_f1_at_the_mix():
    # At the survey mix, 30 of 200 stars lean GALAXY (0.55): without a prior they are called galaxies
    # and swamp the 2 real ones; the survey prior turns them back, so a stronger prior scores higher.
    stars = np.tile([0.55, 0.45, 0.0], (200, 1))
    stars[:30] = [0.45, 0.55, 0.0]
    probs = np.vstack([stars, [[0.01, 0.98, 0.01]] * 2, [[0.01, 0.01, 0.98]]])
    labels = np.array([0] * 200 + [1] * 2 + [2])
    strength, reports = choose_prior_strength(probs, labels, np.full(len(labels), 20.0))
    assert set(reports) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
    assert reports["0.0"]["scores"]["GALAXY"]["precision"] < 0.1
    assert strength > 0.0 and reports[str(strength)]["scores"]["STAR"]["recall"] == 1.0
    # On clearly separated spectra no prior is best (the full one would turn the QSO into a star).
    clear = np.eye(3)[labels] * 0.97 + 0.01
    assert choose_prior_strength(clear, labels, np.full(len(labels), 20.0))[0] == 0.0
