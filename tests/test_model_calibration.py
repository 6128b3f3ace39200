"""Temperature scaling, prior adjustment and ECE."""

from __future__ import annotations

import numpy as np
import pytest

from lamost_classify import SURVEY_PRIOR
from lamost_classify.model.calibration import (
    adjust_to_prior, expected_calibration_error, fit_temperature, nll, softmax,
)


def overconfident_logits(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(true logits), handed out as 3x the true logits: overconfident."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 1.5, size=(n, 3))
    p = softmax(true)
    labels = np.array([rng.choice(3, p=row) for row in p])
    return 3.0 * true, labels


def test_temperature_scaling_lowers_nll_and_ece_and_finds_the_true_temperature():
    logits, labels = overconfident_logits()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    assert nll(logits, labels, t) < nll(logits, labels) - 0.1
    assert expected_calibration_error(softmax(logits, t), labels) < expected_calibration_error(softmax(logits), labels)
    # The minimum: a little either side is worse.
    assert nll(logits, labels, t) <= min(nll(logits, labels, 0.9 * t), nll(logits, labels, 1.1 * t))
    # Temperature never changes the predicted class.
    np.testing.assert_array_equal(softmax(logits, t).argmax(1), logits.argmax(1))


def test_prior_adjustment_is_bayes_rule():
    p = np.array([[1 / 3, 1 / 3, 1 / 3], [0.1, 0.6, 0.3]])
    adjusted = adjust_to_prior(p, SURVEY_PRIOR)  # from the flat training prior
    np.testing.assert_allclose(adjusted[0], SURVEY_PRIOR)  # no evidence: the prior itself
    w = p[1] * np.array(SURVEY_PRIOR) / (1 / 3)
    np.testing.assert_allclose(adjusted[1], w / w.sum())
    np.testing.assert_allclose(adjusted.sum(axis=1), 1.0)
    # Adjusting to the training prior changes nothing; adjusting there and back is the identity.
    np.testing.assert_allclose(adjust_to_prior(p, [1 / 3] * 3), p)
    there = adjust_to_prior(p, [0.5, 0.3, 0.2], [0.2, 0.3, 0.5])
    np.testing.assert_allclose(adjust_to_prior(there, [0.2, 0.3, 0.5], [0.5, 0.3, 0.2]), p)
    with pytest.raises(ValueError, match="3 entries"):
        adjust_to_prior(p, [0.5, 0.5])


def test_ece_of_perfect_and_of_overconfident_predictions():
    labels = np.array([0, 1, 2, 0])
    assert expected_calibration_error(np.eye(3)[labels], labels) == 0.0
    # Always 90 % sure, right half the time: ECE = 0.4.
    probs = np.tile([0.9, 0.05, 0.05], (4, 1))
    assert expected_calibration_error(probs, np.array([0, 1, 0, 2])) == pytest.approx(0.4)


def test_classifier_gives_published_and_balanced_probabilities_from_one_set_of_logits():
    from model_fixtures import TINY

    from lamost_classify.model.densenet import build_model
    from lamost_classify.model.inference import Classifier

    logits = np.random.default_rng(1).normal(0, 3, size=(50, 3)).astype(np.float32)

    class Fixed(Classifier):
        def logits(self, flux: np.ndarray) -> np.ndarray:
            return logits

    net = build_model("fast", **TINY)
    flux = np.zeros((50, 2600), np.float32)
    survey = Fixed(net, {"temperature": 0.93}, device="cpu", target_prior=SURVEY_PRIOR)
    published, balanced = survey.predict_proba_and_balanced(flux)
    assert published.dtype == balanced.dtype == np.float32
    # Balanced: the calibrated softmax itself. Published: exactly what predict_proba returns.
    np.testing.assert_allclose(balanced, softmax(logits, 0.93), rtol=1e-6)
    np.testing.assert_array_equal(published, survey.predict_proba(flux))
    np.testing.assert_allclose(published, adjust_to_prior(softmax(logits, 0.93), SURVEY_PRIOR), rtol=1e-6)
    # A model trained on an unbalanced mix: balanced means the flat prior, not the training one.
    skewed = Fixed(net, {"temperature": 0.93, "train_prior": [0.6, 0.3, 0.1]}, device="cpu", target_prior=None)
    published, balanced = skewed.predict_proba_and_balanced(flux)
    np.testing.assert_allclose(published, softmax(logits, 0.93), rtol=1e-6)
    np.testing.assert_allclose(balanced, adjust_to_prior(softmax(logits, 0.93), [1 / 3] * 3, [0.6, 0.3, 0.1]),
                               rtol=1e-6)
    assert (balanced.argmax(1) != published.argmax(1)).any()
