"""training/galaxy_continua.py: D4000n, C and g - r, measured at the spectrum's redshift."""

from __future__ import annotations

import numpy as np
import pytest

from lamost_classify.contract import WAVELENGTH
from script_loader import load_script


def _script():
    return load_script("training/galaxy_continua.py")


def test_a_flat_f_nu_gives_c_2_and_g_r_0_and_a_step_at_4000_a_gives_its_ratio_at_any_redshift():
    gc = _script()
    z = np.array([0.0, 0.15])
    rest = WAVELENGTH[None, :] / (1 + z[:, None])
    flat_fnu = rest ** -2.0
    step = np.where(rest < 3975.0, 1.0, 1.8)
    numbers = gc.continuum_numbers(np.concatenate([flat_fnu, step]), np.concatenate([z, z]))
    assert numbers[:2, 1] == pytest.approx((4300 / 6100) ** -2, rel=0.01)
    assert numbers[:2, 2] == pytest.approx(0.0, abs=1e-3)  # a flat F_nu has every AB colour 0
    assert numbers[2:, 0] == pytest.approx(1.8)


def test_masked_pixels_are_left_out_and_a_window_off_the_grid_is_nan():
    gc = _script()
    flux = np.where(WAVELENGTH < 3975.0, 1.0, 2.0)[None, :].copy()
    flux[0, (WAVELENGTH > 3860) & (WAVELENGTH < 3900)] = 0.0  # masked: prepared spectra hold 0 there
    numbers = gc.continuum_numbers(flux, np.array([0.0]))
    assert numbers[0, 0] == pytest.approx(2.0)
    # at z = 0.6, 6200 A rest is 9920 A observed: beyond the grid
    assert np.isnan(gc.continuum_numbers(flux, np.array([0.6]))[0, 1])


def test_a_redder_spectrum_has_a_larger_g_r():
    gc = _script()
    rest = WAVELENGTH[None, :]
    numbers = gc.continuum_numbers(np.concatenate([rest ** -2.0, rest ** -1.0]), np.zeros(2))
    # F_lambda ~ lambda^-1 is F_nu ~ lambda: g - r = 2.5 log10 of the bands' mean wavelengths' ratio, ~0.3
    assert numbers[1, 2] == pytest.approx(2.5 * np.log10(6200 / 4700), abs=0.03)
    assert numbers[1, 2] > numbers[0, 2]


def test_the_physical_familys_star_forming_galaxies_have_the_blue_sequences_colours():
    """mocks/physical/galaxies.py sets its young population so that star-forming galaxies have SDSS's
    blue-sequence colours (rest g - r ~0.2-0.65): fails if they come out as blue as an A star again."""
    from lamost_classify.mocks.physical import galaxies
    from lamost_classify.mocks.physical.common import WORK_WAVE

    flux, truth = galaxies.draw_and_render(np.random.default_rng(0), 600)
    star_forming = truth["subclass"] == "STARFORMING"
    g_r = _script().continuum_numbers(flux[star_forming], truth["z"][star_forming], WORK_WAVE)[:, 2]
    g_r = g_r[np.isfinite(g_r)]
    assert len(g_r) > 100
    assert 0.35 < np.median(g_r) < 0.65
    assert np.mean(g_r < 0.2) < 0.1


def test_lick_indices_read_a_lines_equivalent_width_and_a_troughs_magnitudes_at_any_redshift():
    from lamost_classify.pipeline.readers.sdss_spspec import air_to_vacuum

    gc = _script()
    names = list(gc.LICK)
    z = np.array([0.0, 0.1])
    rest = WAVELENGTH[None, :] / (1 + z[:, None])
    centre = air_to_vacuum(np.array([5176.0]))[0]
    line = 1.0 - 0.5 * np.exp(-0.5 * ((rest - centre) / 3.0) ** 2)  # EW 0.5 * 3 * sqrt(2 pi) = 3.76 A
    lo, hi = air_to_vacuum(np.array(gc.LICK["Mg2"][0]))
    trough = np.where((rest >= lo) & (rest < hi), 0.9, 1.0)  # Mg2's band 10% down: 0.114 mag
    flux = np.concatenate([line, trough])
    out = gc.lick_indices(flux, np.concatenate([z, z]), np.ones_like(flux, bool))
    assert out[:2, names.index("Mgb")] == pytest.approx(0.5 * 3.0 * np.sqrt(2 * np.pi), rel=0.03)
    assert out[2:, names.index("Mg2")] == pytest.approx(-2.5 * np.log10(0.9), abs=0.005)
    assert out[:2, names.index("Hbeta")] == pytest.approx(0.0, abs=1e-6)  # flat elsewhere


def test_mock_spectra_are_measured_with_the_normalisation_pedestal(monkeypatch):
    # A 4000 A break of exactly 2 (flux 1 below, 2 above): min-max normalised it is 0 below, so D4000n
    # reads as a ratio to nothing; with the pedestal added back it reads 2, as the spectrum has it.
    import lamost_classify.mocks.families as families
    from lamost_classify.mocks.instrument import WAVELENGTH as NATIVE
    from lamost_classify.mocks.simulate import MockChunk

    flux = np.where(NATIVE < 3975.0, 1.0, 2.0)[None, :] + 0.002 * np.random.default_rng(1).normal(size=(2, NATIVE.size))
    truth = {"class": np.array(["GALAXY", "GALAXY"]), "subclass": np.array(["PASSIVE", "PASSIVE"]), "z": np.zeros(2)}

    def generate(*args, **kwargs):
        yield MockChunk(flux, np.full_like(flux, 1e5), np.zeros(flux.shape, np.int32), truth)

    monkeypatch.setattr(families, "generate", generate)
    gc = _script()
    spectra, usable, got = gc.family_spectra("physical", 2, 0)
    assert list(got["subclass"]) == ["PASSIVE", "PASSIVE"]
    numbers = gc.continuum_numbers(spectra, got["z"], usable=usable)
    assert numbers[:, 0] == pytest.approx(2.0, rel=0.01)


def test_the_physical_familys_passive_galaxies_have_published_ellipticals_lick_indices():
    """mocks/physical/galaxies.py sets its old population's MgH band and Fe and G-band blends so that
    passive galaxies have nearby ellipticals' Mg2 (0.20-0.33), Fe4383 (~4.5-6) and G4300 (~5-6): fails if
    the Mg2 trough goes again (0.06 without it, noiseless)."""
    from lamost_classify.mocks.physical import galaxies
    from lamost_classify.mocks.physical.common import WORK_WAVE

    gc = _script()
    flux, truth = galaxies.draw_and_render(np.random.default_rng(1), 600)
    passive = truth["subclass"] == "PASSIVE"
    indices = gc.lick_indices(flux[passive], truth["z"][passive], np.ones(flux[passive].shape, bool), WORK_WAVE)
    median = dict(zip(gc.LICK, np.nanmedian(indices, 0)))
    assert passive.sum() > 100
    assert 0.2 < median["Mg2"] < 0.33
    assert 4.0 < median["Fe4383"] < 6.5 and 4.5 < median["G4300"] < 6.5
    assert 3.0 < median["Mgb"] < 5.5 and 1.2 < median["Hbeta"] < 2.4
