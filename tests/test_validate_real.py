"""training/validate_real.py's stars made fainter: the noise a fainter file of the same star would have."""

from __future__ import annotations

import numpy as np
from script_loader import load_script

from lamost_classify.pipeline.spectrum import Spectrum


def star(ivar: float = 4.0) -> Spectrum:
    wavelength = np.linspace(3700.0, 9000.0, 4000)
    ivar_array = np.full(wavelength.size, ivar, np.float32)
    ivar_array[:100] = 0.0  # pixels without data stay without data
    return Spectrum(wavelength=wavelength, flux=np.full(wavelength.size, 10.0, np.float32), ivar=ivar_array,
                    andmask=np.zeros(wavelength.size, np.int32))


def test_made_fainter_raises_the_noise_by_the_ratio_of_the_s_n():
    script = load_script("training/validate_real.py")
    original = star()
    faint = script.made_fainter(original, snr=40.0, target=10.0, rng=np.random.default_rng(0))
    has = original.ivar > 0
    np.testing.assert_allclose(faint.ivar[has], original.ivar[has] / 16)  # S/N 4x lower: variance 16x
    assert (faint.ivar[~has] == 0).all() and (faint.flux[~has] == 10.0).all()
    # Added noise of variance (16 - 1) / ivar, so the spectrum's total is 16 / ivar as its new ivar says.
    assert abs(np.std(faint.flux[has] - 10.0) - np.sqrt(15 / 4.0)) < 0.05
    assert original.flux[has].std() == 0  # the input is not touched


def test_a_star_already_fainter_than_the_target_is_left_as_it_is():
    script = load_script("training/validate_real.py")
    original = star()
    same = script.made_fainter(original, snr=3.0, target=10.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(same.flux, original.flux)
    np.testing.assert_array_equal(same.ivar, original.ivar)
