"""The star letter classifier (model/star_letter.py): its features, its training, and how the star fit
(model/redshift.py) takes its letter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_redshift_fit import from_template

from lamost_classify.contract import N_PIXELS
from lamost_classify.model.redshift import RedshiftFitter, load_letter_classifier, load_templates
from lamost_classify.model.star_letter import (FEATURE_BIN, WEIGHT_DECAYS, LetterClassifier, fit_letter_classifier,
                                               star_letter_features)


def _line_spectrum(tilt: float) -> np.ndarray:
    x = np.linspace(-1.0, 1.0, N_PIXELS)
    line = 1.0 - 0.5 * np.exp(-0.5 * ((np.arange(N_PIXELS) - 1000) / 3.0) ** 2)
    return (2.0 + tilt * x + 0.5 * tilt * x**2) * line


def test_features_see_lines_not_the_continuum_and_ignore_masked_pixels():
    good = torch.ones(2, N_PIXELS, dtype=torch.bool)
    flux = torch.from_numpy(np.stack([_line_spectrum(0.0), _line_spectrum(1.5)]))
    features = star_letter_features(flux, good).numpy()
    assert features.shape == (2, N_PIXELS // FEATURE_BIN)
    np.testing.assert_allclose(features[0], features[1], atol=0.01)  # a tilt is the continuum's, not the type's
    assert features[0, 1000 // FEATURE_BIN] < 0.8 and abs(np.median(features[0]) - 1.0) < 0.01
    masked = good.clone()
    masked[:, 990:1010] = False
    spiked = flux.clone()
    spiked[:, 990:1010] = 1e6  # what a masked pixel holds does not matter
    assert np.allclose(star_letter_features(spiked, masked)[:, 1000 // FEATURE_BIN].numpy(), 1.0)


def test_masked_pixels_leave_a_line_as_deep():
    # A bin's mean is over its usable pixels: counted as 1, masked ones made lines shallower, and a K star
    # with every other pixel masked was typed G.
    flux = torch.from_numpy(_line_spectrum(0.5)[None]).float()
    good = torch.ones_like(flux, dtype=torch.bool)
    half = good.clone()
    half[:, ::2] = False
    whole, masked = star_letter_features(flux, good).numpy(), star_letter_features(flux, half).numpy()
    assert whole[0, 1000 // FEATURE_BIN] < 0.8
    np.testing.assert_allclose(masked, whole, atol=0.05)  # the line sampled at half its pixels: 0.04


def test_a_noiseless_spectrum_keeps_its_lines_whatever_the_batch():
    # Without noise the clipping's scatter is round-off; unfloored it clipped the continuum away and a
    # broad line vanished from every row of a batch of more than one.
    flux = np.ones(N_PIXELS)
    flux[1000:1120] = 0.7
    for rows in (1, 3):
        batch = torch.from_numpy(np.stack([flux] * rows)).float()
        features = star_letter_features(batch, torch.ones_like(batch, dtype=torch.bool)).numpy()
        np.testing.assert_allclose(features[:, 250:280], 0.7, atol=1e-3)
        np.testing.assert_allclose(features[:, 300:], 1.0, atol=1e-3)


def test_the_classifier_learns_separable_letters_and_round_trips():
    rng = np.random.default_rng(0)
    centres = {"A": 0.0, "F": 1.0, "G": 2.0}
    letters = [c for c in centres for _ in range(40)]
    features = np.stack([rng.normal(centres[c], 0.2, 30) for c in letters]).astype(np.float32)
    classifier, chosen = fit_letter_classifier(features, letters)
    assert classifier.letters == ["A", "F", "G"] and chosen["weight_decay"] in WEIGHT_DECAYS
    assert set(chosen["cv_agreement"]) == set(WEIGHT_DECAYS) and max(chosen["cv_agreement"].values()) > 0.95
    predicted = classifier.predict(torch.from_numpy(features)).numpy()
    assert [classifier.letters[i] for i in predicted] == letters
    again = LetterClassifier.from_arrays(classifier.arrays())
    assert torch.equal(again.predict(torch.from_numpy(features)), classifier.predict(torch.from_numpy(features)))


def test_a_rare_letter_is_not_given_to_its_numerous_neighbour():
    # Overlapping letters, one 20x more numerous (as the real A stars are): a loss that learnt the mix as a
    # prior would put the boundary well inside the rare letter and give most of its stars the other one.
    rng = np.random.default_rng(1)
    letters = ["A"] * 1000 + ["F"] * 50
    def draw(letter):
        return np.concatenate([rng.normal(0.0 if letter == "A" else 2.0, 1.0, 1), rng.normal(0.0, 1.0, 4)])
    features = np.stack([draw(c) for c in letters]).astype(np.float32)
    classifier, chosen = fit_letter_classifier(features, letters)
    assert set(chosen["cv_letter_agreement"]) == set(WEIGHT_DECAYS)
    fresh = {c: torch.from_numpy(np.stack([draw(c) for _ in range(2000)]).astype(np.float32)) for c in "AF"}
    recall = {c: float((classifier.predict(x) == classifier.letters.index(c)).float().mean()) for c, x in fresh.items()}
    assert recall["F"] > 0.7 and recall["A"] > 0.7, recall  # ~0.84 each at the midpoint; 0.25 for F with the mix as prior


def test_the_shipped_classifier_gives_lamost_letters():
    classifier = load_letter_classifier()
    assert classifier.letters == ["A", "F", "G", "K", "M"]
    assert classifier.weight.shape == (5, N_PIXELS // FEATURE_BIN)


def _always(letter: str, shipped: LetterClassifier) -> LetterClassifier:
    bias = torch.full((len(shipped.letters),), -1e3)
    bias[shipped.letters.index(letter)] = 1e3
    return dataclasses.replace(shipped, weight=torch.zeros_like(shipped.weight), bias=bias)


@pytest.mark.parametrize("letter", ["F", "K"])
def test_the_fit_takes_the_classifier_letter_where_it_neighbours_the_templates_best(letter):
    torch.set_num_threads(1)
    fitter = RedshiftFitter()
    fitter.letters = _always(letter, fitter.letters)
    rng = np.random.default_rng(2)
    library = load_templates()["STAR"]
    # S/N 40, but the M8 dwarf's median flux is under 0.05 of its peak, where from_template floors the noise:
    # at 40 its catalog snr_pixel would be ~5, below LETTER_MIN_SNR, where the fit alone types a star
    made = [from_template("STAR", 0.0001, rng, snr=400 if label == "M8" else 40, index=library.subclass.index(label),
                          tilt=0.2) for label in ("G5", "WD", "B3", "M8")]
    result = fitter.fit(np.stack([m[0] for m in made]), np.stack([m[1] for m in made]), np.zeros(len(made), int),
                        pedestal=np.array([m[3] for m in made]))
    # The G star takes the classifier's letter, a neighbour of its own, with the best template of it;
    # the template fit's own (another letter) is then better, so delta chi2 < 0. A white dwarf or a B star
    # keeps its type; a late M dwarf moves to K, its neighbour, but not to F, letters away.
    assert result.subclass[0][0] == letter and result.subclass[0] in library.subclass
    assert result.delta_chi2[0] < 0
    assert result.subclass[1:3] == ["WD", "B3"]
    assert result.subclass[3][0] == {"F": "M", "K": "K"}[letter]
