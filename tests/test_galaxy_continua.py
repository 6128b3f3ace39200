"""training/galaxy_continua.py: the two continuum numbers, measured at the spectrum's redshift."""

from __future__ import annotations

import numpy as np
import pytest

from lamost_classify.contract import WAVELENGTH
from script_loader import load_script


def _script():
    return load_script("training/galaxy_continua.py")


def test_a_flat_f_nu_gives_c_2_and_a_step_at_4000_a_gives_its_ratio_at_any_redshift():
    gc = _script()
    z = np.array([0.0, 0.15])
    rest = WAVELENGTH[None, :] / (1 + z[:, None])
    flat_fnu = rest ** -2.0
    step = np.where(rest < 3975.0, 1.0, 1.8)
    numbers = gc.continuum_numbers(np.concatenate([flat_fnu, step]), np.concatenate([z, z]))
    assert numbers[:2, 1] == pytest.approx((4300 / 6100) ** -2, rel=0.01)
    assert numbers[2:, 0] == pytest.approx(1.8)


def test_masked_pixels_are_left_out_and_a_window_off_the_grid_is_nan():
    gc = _script()
    flux = np.where(WAVELENGTH < 3975.0, 1.0, 2.0)[None, :].copy()
    flux[0, (WAVELENGTH > 3860) & (WAVELENGTH < 3900)] = 0.0  # masked: prepared spectra hold 0 there
    numbers = gc.continuum_numbers(flux, np.array([0.0]))
    assert numbers[0, 0] == pytest.approx(2.0)
    # at z = 0.6, 6200 A rest is 9920 A observed: beyond the grid
    assert np.isnan(gc.continuum_numbers(flux, np.array([0.6]))[0, 1])
