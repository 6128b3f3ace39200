"""What the eigen family's modules share: the native grid as the family sees it, rest wavelengths of
lines, and its own physics pieces (emission lines, dust laws, the Lyman forest)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from lamost_classify.contract import NATIVE_COEFF1, NATIVE_WAVELENGTH as WAVELENGTH

C_KMS = 299792.458
NPIX = WAVELENGTH.size
LOGW = np.log10(WAVELENGTH)
KMS_PER_PIX = C_KMS * np.log(10.0) * NATIVE_COEFF1
#: g and r bands in which snr_g / snr_r are measured (median S/N per pixel)
G_BAND = (WAVELENGTH > 4000.0) & (WAVELENGTH < 5500.0)
R_BAND = (WAVELENGTH > 5500.0) & (WAVELENGTH < 7000.0)

# vacuum rest wavelengths (A)
HALPHA, HBETA, HGAMMA, HDELTA = 6564.61, 4862.68, 4341.68, 4102.89
NII_6585, OIII_5008, OIII_4960, OII_3728 = 6585.27, 5008.24, 4960.30, 3728.48
SII_6718, SII_6733, OI_6302, NII_6550 = 6718.29, 6732.67, 6302.05, 6549.86
HEI_5877, HEII_4687, CAII_K, CAII_H = 5877.25, 4687.02, 3934.78, 3969.59
LYA, LYB, LYLIMIT = 1215.67, 1025.72, 911.75
CIV, SIIV, MGII = 1549.06, 1397.61, 2799.12


def to_native(loglam_rest: np.ndarray, spectra: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Sample rest-frame spectra (rows) at the native pixels of an observer at redshift z (0 outside)."""
    out = np.empty((len(spectra), NPIX))
    shift = np.log10(1.0 + z)
    for k in range(len(spectra)):
        out[k] = np.interp(LOGW - shift[k], loglam_rest, spectra[k], left=0.0, right=0.0)
    return out


def gaussian_lines(loglam: np.ndarray, centers_obs: np.ndarray, fluxes: np.ndarray, sigma_kms: float) -> np.ndarray:
    """Sum of Gaussian lines of total flux ``fluxes`` (flux x A) at observed wavelengths, on a log grid."""
    out = np.zeros_like(loglam)
    wave = 10.0**loglam
    for c, f in zip(centers_obs, fluxes):
        s = c * sigma_kms / C_KMS
        near = np.abs(wave - c) < 6 * s + 5
        out[near] += f * np.exp(-0.5 * ((wave[near] - c) / s) ** 2) / (s * np.sqrt(2 * np.pi))
    return out


def local_continuum(spectrum: np.ndarray, wave: np.ndarray, line: float) -> float:
    side = (np.abs(wave - line) > 20) & (np.abs(wave - line) < 80)
    return float(np.median(spectrum[side])) if side.any() else float(np.median(spectrum))


def calzetti_k(wave_a: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) starburst attenuation k(lambda), R_V = 4.05, extrapolated linearly beyond."""
    um = np.clip(wave_a / 1e4, 0.12, 2.2)
    blue = 2.659 * (-2.156 + 1.509 / um - 0.198 / um**2 + 0.011 / um**3) + 4.05
    red = 2.659 * (-1.857 + 1.040 / um) + 4.05
    return np.where(um < 0.63, blue, red)


def smc_k(wave_a: np.ndarray) -> np.ndarray:
    """SMC-bar-like extinction as a power law in 1/lambda (A_lambda / E(B-V), 2.74 at V)."""
    return 2.74 * (np.clip(wave_a, 800.0, None) / 5500.0) ** -1.6


def milky_way_k(wave_a: np.ndarray) -> np.ndarray:
    """Diffuse Galactic extinction, optical: a smooth power law (A_lambda / E(B-V), 3.1 at V)."""
    return 3.1 * (wave_a / 5500.0) ** -1.3


def lyman_forest(rng: np.random.Generator, wave_obs: np.ndarray, z: float) -> np.ndarray:
    """Transmission of a random Lyman-alpha/beta forest whose mean transmission follows a Madau-like law."""
    tau_mean = np.zeros_like(wave_obs)
    for line, amp in ((LYA, 0.0036), (LYB, 0.0017)):
        covered = wave_obs < line * (1 + z)
        tau_mean[covered] += amp * (wave_obs[covered] / line) ** 3.46
    # absorbers: Poisson per pixel, exponential strength, smoothed to about 1.5 pixels
    width_pix, mean_strength = 1.5, 1.2
    expected = tau_mean / (mean_strength * width_pix * np.sqrt(2 * np.pi))
    counts = rng.poisson(np.clip(expected, 0, 50))
    tau = rng.gamma(np.maximum(counts, 1e-9), mean_strength) * (counts > 0)
    tau = gaussian_filter1d(tau, width_pix) * width_pix * np.sqrt(2 * np.pi)
    covered = tau_mean > 0
    if covered.any() and tau[covered].any():
        # Madau's law is the effective depth, -ln <exp(-tau)>: scale the clumpy field until it has that mean transmission
        target = np.exp(-tau_mean[covered]).sum()
        lo, hi = 0.0, 50.0
        for _ in range(30):
            k = 0.5 * (lo + hi)
            lo, hi = (k, hi) if np.exp(-k * tau[covered]).sum() > target else (lo, k)
        tau = tau * 0.5 * (lo + hi)
    below_limit = wave_obs < LYLIMIT * (1 + z)
    tau[below_limit] += rng.exponential(1.5)  # Lyman-limit systems along the line of sight
    return np.exp(-tau)
