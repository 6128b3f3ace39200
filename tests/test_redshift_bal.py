"""BAL subclass: the balnicity index on flux / fitted continuum (model/subclass.py)."""

import numpy as np

from lamost_classify.contract import N_PIXELS, WAVELENGTH
from lamost_classify.model.subclass import BAL_LINES, C_KMS, balnicity, qso_subclass

Z = 2.2


def _velocity(rest: float) -> np.ndarray:
    """Outflow velocity (km/s, positive blueward) of every grid pixel relative to a line at Z."""
    return C_KMS * np.log(rest * (1 + Z) / WAVELENGTH)


def _spectrum(troughs: list[tuple[float, float, float]], snr: float = 30.0, seed: int = 0):
    """Flat continuum 1 with (v_min, v_max, depth) boxes blueward of C IV (negative v: redward), and noise."""
    v = _velocity(BAL_LINES["CIV"])
    truth = np.ones(N_PIXELS)
    for lo, hi, depth in troughs:
        truth[(v > lo) & (v < hi)] -= depth
    rng = np.random.default_rng(seed)
    flux = truth + rng.normal(0, 1 / snr, N_PIXELS)
    ivar = np.full(N_PIXELS, snr ** 2)
    return flux[None], ivar[None], np.ones((1, N_PIXELS)), np.array([Z])


def test_a_deep_blue_trough_is_a_bal():
    flux, ivar, cont, z = _spectrum([(5000, 15000, 0.5)])
    bi = balnicity(flux, ivar, cont, z)
    # (10,000 - 2,000 km/s counted) x (1 - 0.5 / 0.9), less the smoothing at the trough's edge
    assert 2500 < bi[0] < 3700
    assert qso_subclass(flux, ivar, cont, z) == ["BAL"]


def test_noise_narrow_or_symmetric_dips_are_not():
    for troughs in ([], [(5000, 6500, 0.6)], [(5000, 15000, 0.5), (-15000, -5000, 0.5)]):
        flux, ivar, cont, z = _spectrum(troughs)
        assert balnicity(flux, ivar, cont, z)[0] == 0, troughs
    flux, ivar, cont, z = _spectrum([(5000, 15000, 0.5)], snr=0.5)  # a "trough" the noise could make
    assert balnicity(flux, ivar, cont, z)[0] == 0


def test_out_of_window_or_masked_troughs_are_not():
    flux, ivar, cont, z = _spectrum([(26000, 33000, 0.6)])  # past C IV's 25,000 km/s, short of Si IV's window
    assert balnicity(flux, ivar, cont, z)[0] == 0
    flux, ivar, cont, z = _spectrum([(5000, 15000, 0.5)])
    ivar[:] = 0
    assert balnicity(flux, ivar, cont, z)[0] == 0
