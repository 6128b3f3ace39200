"""The paper's three noises (section 4.2) do exactly what they say, and balancing gives 1:1:1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from lamost_classify.model.augment import (
    ARM_JOIN, BalancedSpectra, arm_end_lost, bad_pixels, balanced_epoch_indices, ccd_noise, combined, continuum_tilt,
    cosmic_ray, survey_artefacts,
)
from lamost_classify.contract import fill_masked
from lamost_classify.pipeline.grid import WAVELENGTH


@pytest.fixture
def spectra() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.uniform(0.05, 0.95, size=(40, 2600)).astype(np.float32)


def test_ccd_noise_adds_gaussian_noise_of_the_given_sigma_to_every_pixel(spectra):
    before = spectra.copy()
    noisy = ccd_noise(spectra, sigma=0.05, rng=3)
    np.testing.assert_array_equal(spectra, before)  # input untouched
    delta = (noisy - spectra).astype(np.float64)
    assert noisy.dtype == np.float32 and noisy.shape == spectra.shape
    assert (delta != 0).all()
    assert abs(delta.std() - 0.05) < 0.001 and abs(delta.mean()) < 0.001
    assert stats.kstest(delta.ravel()[:20000] / 0.05, "norm").pvalue > 0.01
    np.testing.assert_array_equal(ccd_noise(spectra, 0.05, rng=3), noisy)  # same seed, same noise


def test_bad_pixels_mask_one_contiguous_band_as_the_pipeline_does_and_nothing_else(spectra):
    out = bad_pixels(spectra, max_length=120, rng=5)
    lengths = []
    for before, after in zip(spectra, out):
        changed = np.flatnonzero(after != before)
        assert len(changed) >= 1
        assert (np.diff(changed) == 1).all()  # one contiguous band
        band = np.zeros(len(before), bool)
        band[changed] = True
        np.testing.assert_allclose(after, fill_masked(before[None], ~band[None])[0])  # the masked pixels' line
        lengths.append(len(changed))
    assert 1 <= min(lengths) and max(lengths) <= 120 and len(set(lengths)) > 10  # random lengths


def test_cosmic_ray_sets_exactly_one_pixel_to_1(spectra):
    out = cosmic_ray(spectra, rng=7)
    changed = out != spectra
    assert (changed.sum(axis=1) == 1).all()
    assert (out[changed] == 1.0).all()
    assert len(set(np.flatnonzero(changed) % 2600)) > 30  # random places


def test_single_spectrum_and_bad_shapes(spectra):
    one = spectra[0]
    assert cosmic_ray(one, rng=1).shape == (2600,)
    assert ((bad_pixels(one, 10, rng=1) != one).sum()) <= 10
    with pytest.raises(ValueError, match="shape"):
        ccd_noise(np.zeros((2, 3, 4)), 0.1, rng=0)


def test_combined_is_noise_then_cosmic_ray_then_bad_pixels(spectra):
    out = combined(spectra, rng=np.random.default_rng(11), sigma=0.02, max_length=50)
    # Re-drawing the same generator stream step by step in the paper's order gives the same result.
    rng = np.random.default_rng(11)
    expected = bad_pixels(cosmic_ray(ccd_noise(spectra, 0.02, rng), rng), 50, rng)
    np.testing.assert_array_equal(out, expected)
    # Bad pixels come last: the masked band lies on a straight line, no noise on top, and the cosmic ray
    # (a 1 after the noise) survives unless the band covers it.
    for after in out:
        assert np.isclose(after[2:] - 2 * after[1:-1] + after[:-2], 0.0, atol=1e-6).any()
        assert (after == 1.0).sum() <= 1


def test_balanced_epoch_is_1_1_1_undersampling_stars_and_augmenting_only_extra_copies():
    labels = np.array([0] * 500 + [1] * 60 + [2] * 15)
    indices, augment = balanced_epoch_indices(labels, rng=0)
    counts = np.bincount(labels[indices], minlength=3)
    assert counts.tolist() == [60, 60, 60]  # default: the median class size
    stars = indices[labels[indices] == 0]
    assert len(set(stars)) == 60 and not augment[labels[indices] == 0].any()  # no duplicates, not augmented
    assert not augment[labels[indices] == 1].any()  # galaxies already at 60: each once, as they are
    qso, qso_aug = indices[labels[indices] == 2], augment[labels[indices] == 2]
    assert set(qso[~qso_aug]) == set(range(560, 575)) and (~qso_aug).sum() == 15  # every QSO once, clean
    assert qso_aug.sum() == 45  # topped up with augmented copies
    idx2, _ = balanced_epoch_indices(labels, rng=0, per_class=200)
    assert np.bincount(labels[idx2]).tolist() == [200, 200, 200]


def test_balancing_refuses_a_missing_class():
    with pytest.raises(ValueError, match="no training spectra of class QSO"):
        balanced_epoch_indices(np.array([0, 0, 1]), rng=0)


def test_balanced_dataset_is_deterministic_and_augments_only_copies(spectra):
    labels = np.array([0] * 30 + [1] * 8 + [2] * 2)
    data = BalancedSpectra(spectra, labels, seed=4, per_class=10, sigma=0.01, max_length=20)
    data.set_epoch(3)
    x, y = data.__getitems__(np.arange(len(data)))
    assert isinstance(x, torch.Tensor) and x.shape == (30, 2600) and np.bincount(y.numpy()).tolist() == [10, 10, 10]
    rows = data.indices
    same = (x.numpy() == spectra[rows]).all(axis=1)
    np.testing.assert_array_equal(same, ~data.augmented)  # exactly the oversampled copies differ
    x_again, _ = data.__getitems__(np.arange(len(data))[::-1])  # another batch order, same items
    np.testing.assert_array_equal(x_again.numpy()[::-1], x.numpy())
    batched = torch.cat([xb for xb, _ in data.batches(7)])
    np.testing.assert_array_equal(batched.numpy(), x.numpy())
    data.set_epoch(4)
    assert not np.array_equal(data.indices, rows)  # a fresh draw each epoch


def test_survey_artefacts_squash_or_step_the_spectrum_keep_masks_and_renormalise(spectra):
    x = spectra.copy()
    x[:, 300:400] = 0.0  # a masked band
    out = survey_artefacts(x, rng=5)
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.max(axis=1), 1.0)  # renormalised
    assert (out[:, 300:400] == 0).all()  # masked pixels stay masked
    assert out.min() >= 0
    # Each row gets tall spikes (at most 3 of 4 pixels), or one side of the arm join rescaled, or both;
    # elsewhere it is the same spectrum times one factor per side of the join.
    valid = x[0] > 0
    blue, red = valid & (WAVELENGTH < ARM_JOIN[0]), valid & (WAVELENGTH > ARM_JOIN[1])
    changed = 0
    for before, after in zip(x, out):
        factors, spiked = [], 0
        for side in (blue, red):
            r = after[side] / before[side]
            factors.append(np.median(r))
            spiked += (~np.isclose(r, factors[-1], rtol=1e-4)).sum()
        assert spiked <= 12
        changed += spiked > 0 or not np.isclose(factors[0], factors[1], rtol=1e-4)
    assert changed == len(out)
    # Not a no-op on average, deterministic with the same seed.
    np.testing.assert_array_equal(out, survey_artefacts(x, rng=5))
    assert not np.array_equal(out, survey_artefacts(x, rng=6))


@pytest.mark.parametrize("option, fraction", [("artefact_fraction", 0.3), ("tilt_fraction", 0.5),
                                              ("arm_loss_fraction", 0.3)])
def test_survey_artefacts_and_tilts_reach_every_class_at_the_asked_fraction(option, fraction):
    rng = np.random.default_rng(2)
    x = rng.uniform(0.05, 0.95, size=(600, 2600)).astype(np.float32)
    labels = np.repeat([0, 1, 2], 200)
    data = BalancedSpectra(x, labels, seed=1, per_class=200, **{option: fraction})
    out, y = data.__getitems__(np.arange(len(data)))
    hit = (out.numpy() != x[data.indices]).any(axis=1)
    for c in range(3):  # class-blind: the fraction of each class, none of the rows augmented otherwise
        assert fraction - 0.1 < hit[y.numpy() == c].mean() < fraction + 0.1
    none = BalancedSpectra(x, labels, seed=1, per_class=200)
    assert (none.__getitems__(np.arange(len(none)))[0].numpy() == x[none.indices]).all()


def test_continuum_tilt_is_a_smooth_colour_times_the_spectrum_still_min_max_normalised(spectra):
    x = spectra.copy()
    x[:, 300:400] = 0.0  # a masked band
    x[:, 1000] = 0.0  # the minimum of a min-max normalised spectrum
    out = continuum_tilt(x, rng=5)
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.max(axis=1), 1.0)
    assert (out[:, 300:400] == 0).all() and (out[:, 1000] == 0).all() and out.min() >= 0
    # out / x is exp(c + beta ln(lambda) + gamma P2): a quadratic in t, linear in ln(lambda), and nothing else.
    valid = x[0] > 0
    t = np.linspace(-1, 1, x.shape[1])
    basis = np.stack([np.ones_like(t), np.log(WAVELENGTH), 0.5 * (3 * t**2 - 1)], axis=1)[valid]
    blue_over_red = []
    for before, after in zip(x, out):
        log_ratio = np.log(after[valid] / before[valid]).astype(np.float64)
        coef, *_ = np.linalg.lstsq(basis, log_ratio, rcond=None)
        assert np.abs(basis @ coef - log_ratio).max() < 1e-4
        blue_over_red.append(coef[1])
    # Colours drawn both ways, about as wide as TILT_SIGMA says; deterministic with the same seed.
    assert min(blue_over_red) < -0.2 and max(blue_over_red) > 0.2 and 0.3 < np.std(blue_over_red) < 0.8
    np.testing.assert_array_equal(out, continuum_tilt(x, rng=5))
    before = x.copy()
    continuum_tilt(x, rng=6)
    np.testing.assert_array_equal(x, before)


def test_without_tilts_every_row_is_drawn_as_before_tilts_existed():
    """So that earlier runs repeat: replay the draw order of the recipe before tilts by hand."""
    x = np.random.default_rng(2).uniform(0.05, 0.95, size=(240, 2600)).astype(np.float32)
    few = np.repeat([0, 1, 2], [200, 20, 20])  # GALAXY and QSO topped up with augmented copies
    off = BalancedSpectra(x, few, seed=1, per_class=50, artefact_fraction=0.3)
    got = off.__getitems__(np.arange(len(off)))[0].numpy()
    for j in range(len(off)):
        draw = np.random.default_rng((1, 1, j))
        want = x[off.indices[j]]
        if off.augmented[j]:
            want = combined(want, draw)
        if draw.random() < 0.3:
            want = survey_artefacts(want, draw)
        np.testing.assert_array_equal(got[j], want)


def test_arm_end_lost_fills_one_arms_outer_end_as_the_pipeline_does_and_renormalises(spectra):
    out = arm_end_lost(spectra, rng=3)
    assert out.shape == spectra.shape and out.dtype == np.float32
    blue_end, red_start = np.searchsorted(WAVELENGTH, ARM_JOIN)
    n = spectra.shape[1]
    sides = []
    for before, after in zip(spectra, out):
        # the lost pixels and the kept one next to them hold one value: a run from one end of the grid
        lead, trail = np.argmax(after != after[0]), np.argmax(after[::-1] != after[-1])
        assert min(lead, trail) == 1 and max(lead, trail) > 1
        if lead > 1:
            sides.append("blue")
            assert lead - 1 <= blue_end
            kept = slice(lead - 1, n)
        else:
            sides.append("red")
            assert n - trail >= red_start
            kept = slice(0, n - trail + 1)
        # what was kept is the spectrum min-max normalised again
        low, high = before[kept].min(), before[kept].max()
        np.testing.assert_allclose(after[kept], (before[kept] - low) / (high - low), atol=1e-6)
    assert 10 < sides.count("blue") < 30  # either arm, at even odds
    np.testing.assert_array_equal(out, arm_end_lost(spectra, rng=3))
