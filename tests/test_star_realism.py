"""training/star_realism.py: band means of continuum-divided rest-frame spectra, and the comparison table."""

from __future__ import annotations

import numpy as np
import pytest

from script_loader import load_script


@pytest.fixture(scope="module")
def realism():
    return load_script("training/star_realism.py")


def _flat_with_dip(realism, lo: float, hi: float, depth: float, z: float) -> np.ndarray:
    """A flat grid spectrum at S/N 100 whose rest lo-hi A sits at 1 - depth, seen at redshift z. (Noiseless,
    the continuum's clipping has no scatter to go by.)"""
    wave = 10.0 ** realism.LOG_WAVELENGTH / (1.0 + z)
    noise = 0.01 * np.random.default_rng(int(z * 1e6)).normal(size=wave.size)
    return np.where((wave >= lo) & (wave < hi), 1.0 - depth, 1.0) + noise


def test_a_dip_shows_in_its_band_alone_at_any_redshift(realism):
    z = np.array([0.0, 0.0008])  # a star at rest and one at 240 km/s
    flux = np.stack([_flat_with_dip(realism, 4100.0, 4280.0, 0.3, zi) for zi in z])
    ivar = np.full_like(flux, 100.0)
    means = realism.band_means(flux, ivar, z)
    names = [b[0] for b in realism.BANDS]
    dipped = names.index("4100-4280")
    assert means.shape == (2, len(realism.BANDS))
    np.testing.assert_allclose(means[:, dipped], 0.7, atol=0.02)
    others = [j for j, (_, lo, hi) in enumerate(realism.BANDS) if hi <= 4080 or lo >= 4300]
    np.testing.assert_allclose(means[:, others], 1.0, atol=0.02)


def test_a_band_without_usable_pixels_is_nan(realism):
    flux = np.ones((1, realism.LOG_WAVELENGTH.size))
    ivar = np.ones_like(flux)
    wave = 10.0 ** realism.LOG_WAVELENGTH
    ivar[0, (wave > 3700) & (wave < 4000)] = 0.0  # a dead blue end
    means = realism.band_means(flux, ivar, np.zeros(1))
    names = [b[0] for b in realism.BANDS]
    assert np.isnan(means[0, names.index("Ca II K")]) and np.isnan(means[0, names.index("blue 3800-3900")])
    assert np.isfinite(means[0, names.index("G band")])


def test_compare_takes_each_subtype_from_each_side(realism):
    k = len(realism.BANDS)
    real = (np.array(["K3", "K3", "G5"]), np.stack([np.full(k, 0.6), np.full(k, 0.8), np.full(k, 0.9)]))
    mock = {"physical": (np.array(["K3", "G5"]), np.stack([np.full(k, 0.5), np.full(k, np.nan)]))}
    out = realism.compare(real, mock, ["K3", "G5", "M0"])
    band = realism.BANDS[0][0]
    assert out["K3"][band]["real"]["median"] == pytest.approx(0.7) and out["K3"][band]["real"]["n"] == 2
    assert out["K3"][band]["physical"]["median"] == pytest.approx(0.5)
    assert out["G5"][band]["physical"] == {"n": 0}
    assert out["M0"][band]["real"] == {"n": 0}


def test_mock_stars_are_seen_with_the_normalisation_pedestal_as_real_ones_are(realism, monkeypatch):
    # A flat star whose rest 4100-4280 A sits 30% down: min-max normalised, that band is at 0 and the
    # continuum at 1, so only with the pedestal added back (as lamost_stars and the star fit have it) does
    # the band read its true depth.
    import lamost_classify.mocks.families as families
    from lamost_classify.mocks.instrument import WAVELENGTH
    from lamost_classify.mocks.simulate import MockChunk

    noise = 0.003 * np.random.default_rng(3).normal(size=(2, WAVELENGTH.size))
    flux = np.where((WAVELENGTH >= 4100.0) & (WAVELENGTH < 4280.0), 0.7, 1.0) + noise
    truth = {"subclass": np.array(["G5", "G5"]), "z": np.zeros(2)}

    def generate(*args, **kwargs):
        yield MockChunk(flux, np.full_like(flux, 1e4), np.zeros(flux.shape, np.int32), truth)

    monkeypatch.setattr(families, "generate", generate)
    labels, means = realism.mock_stars("physical", 2, 0)
    names = [b[0] for b in realism.BANDS]
    assert list(labels) == ["G5", "G5"]
    np.testing.assert_allclose(means[:, names.index("4100-4280")], 0.7, atol=0.03)
