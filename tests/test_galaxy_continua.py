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
