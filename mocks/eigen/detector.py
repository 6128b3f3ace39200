"""The eigen family's own instrument: a wavelength-dependent LSF, the S/N draw, and dust, calibration,
arms, throughput, noise from a real star's shape, sky residuals, cosmic rays and masks."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .common import C_KMS, G_BAND, KMS_PER_PIX, LOGW, NPIX, R_BAND, WAVELENGTH, milky_way_k

ANDMASK_BADPIX = 1 << 0  # our own bad-pixel bit (LAMOST's "BADCCD"-like)
ANDMASK_DONOR = 1 << 1  # masked in the real file whose noise shape we use

#: Night-sky emission lines (vacuum A): Hg, O I, Na D, O I, and the strongest OH lines in the red.
SKY_LINES = np.array([4359.6, 5578.9, 5891.6, 5897.6, 6302.0, 6365.5, 6865.0, 6925.0, 7278.0, 7318.0,
                      7343.0, 7371.0, 7404.0, 7526.0, 7573.0, 7752.0, 7796.0, 7823.0, 7855.0, 7916.0,
                      7966.0, 7995.0, 8346.0, 8401.0, 8432.0, 8467.0, 8507.0, 8763.0, 8769.0, 8829.0,
                      8888.0, 8921.0, 8945.0, 8990.0, 9003.0])

#: each sky line as seen through the spectrograph (unit peak, ~1.8 A sigma), and all of them
SKY_LINE_PROFILES = np.exp(-0.5 * ((WAVELENGTH[None, :] - SKY_LINES[:, None]) / 1.8) ** 2)
SKY_PROFILE = SKY_LINE_PROFILES.sum(axis=0)


def lsf(rng: np.random.Generator, flux: np.ndarray, template_sigma_kms: float) -> tuple[np.ndarray, float]:
    """Blur to a resolution R(lambda) = R5500 (lambda/5500)^gamma within 1300-2500; returns R at 5500 A achieved."""
    r5500 = rng.uniform(1500.0, 2200.0)
    gamma = rng.uniform(0.2, 0.9)
    ends = np.clip(r5500 * (np.array([3700.0, 9100.0]) / 5500.0) ** gamma, 1300.0, 2500.0)
    sig_ends = C_KMS / (2.3548 * ends)
    extra = np.sqrt(np.maximum(sig_ends**2 - template_sigma_kms**2, 0.09 * KMS_PER_PIX**2)) / KMS_PER_PIX
    blue, red = gaussian_filter1d(flux, extra[0]), gaussian_filter1d(flux, extra[1])
    weight = (LOGW - LOGW[0]) / (LOGW[-1] - LOGW[0])
    out = (1 - weight) * blue + weight * red
    sig5500 = np.sqrt(np.interp(np.log10(5500.0), LOGW[[0, -1]], extra) ** 2 * KMS_PER_PIX**2 + template_sigma_kms**2)
    return out, float(C_KMS / (2.3548 * sig5500))


def draw_snr(rng: np.random.Generator, lib: dict, snr_distribution: str, lo: float, hi: float) -> float:
    if snr_distribution == "loguniform":
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    real = lib["real_snr_g"][(lib["real_snr_g"] > 0)]
    for _ in range(20):  # LAMOST files' own S/N spread, jittered
        s = float(real[rng.integers(len(real))] * np.exp(rng.normal(0, 0.2)))
        if lo <= s <= hi:
            return s
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def through_instrument(rng: np.random.Generator, lib: dict, flux: np.ndarray, snr: float,
                intrinsic_snr: float = np.inf) -> tuple[np.ndarray, ...]:
    """Dust, calibration, arms, throughput, noise, sky, cosmic rays, masks: (flux, ivar, andmask, snr_g, snr_r,
    arm scale, arm join). ``intrinsic_snr``: the S/N of noise the template already carries (real spectra)."""
    wave = WAVELENGTH
    flux = flux * 10.0 ** (-0.4 * rng.exponential(0.04) * milky_way_k(wave))
    flux = np.nan_to_num(flux, nan=0.0, posinf=0.0, neginf=0.0)
    flux = flux / max(np.median(flux[G_BAND]), 1e-3 * np.median(flux[R_BAND]), 1e-30)
    # flux calibration: a power-law tilt and a gentle curvature
    x = (wave - 6400.0) / 2700.0
    flux = flux * (wave / 5500.0) ** rng.normal(0, 0.15) * (1 + rng.normal(0, 0.04) * (x**2 - 1 / 3))
    # blue/red arms: the red arm scaled against the blue, a big mismatch in one spectrum of five
    big = rng.random() < 0.2
    arm = np.exp(rng.normal(0, 0.3)) if big else np.exp(rng.normal(0, 0.04))
    join = rng.uniform(5700.0, 5900.0)
    flux = flux * (1 + (arm - 1) / (1 + np.exp(-(wave - join) / 8.0)))
    throughput = rng.uniform(0.3, 1.0)  # fibre throughput: a fainter fibre sees relatively more sky
    flux = flux * throughput * 100.0
    # noise: the per-pixel noise shape and mask of a real LAMOST star, scaled to the drawn S/N
    d = int(rng.integers(len(lib["noise_sigma"])))
    shape, donor_masked = lib["noise_sigma"][d], lib["noise_mask"][d]
    # a g band emptied by the Lyman forest must not make the red side noiseless
    level = max(np.median(np.abs(flux[G_BAND])), 0.1 * np.median(np.abs(flux[R_BAND]))) / snr
    level_intrinsic = level * snr / intrinsic_snr
    added = shape * np.sqrt(max(level**2 - level_intrinsic**2, (0.2 * level) ** 2))
    # sky-subtraction residuals (a sky that outshines faint objects) and the sky lines' photon noise
    sky_peak = level * rng.uniform(3, 30) * (0.65 / throughput)
    added = np.sqrt(added**2 + (0.15 * sky_peak * SKY_PROFILE) ** 2)
    sigma = np.sqrt(added**2 + (shape * level_intrinsic) ** 2)
    residual = sky_peak * (rng.normal(0, 0.04, len(SKY_LINES)) @ SKY_LINE_PROFILES)  # per-line subtraction errors
    noisy = flux + added * rng.standard_normal(NPIX) + residual
    # cosmic rays (1-3 pixels, unmasked) and, rarely, a huge spike of the kind that sets min-max scaling
    for _ in range(rng.poisson(1.0)):
        p = int(rng.integers(NPIX - 3))
        noisy[p:p + int(rng.integers(1, 4))] += level * rng.uniform(5, 50)
    if rng.random() < 0.05:
        noisy[int(rng.integers(NPIX))] += np.sign(rng.normal()) * np.max(np.abs(flux)) * rng.uniform(3, 30)
    ivar = np.where(sigma > 0, 1.0 / np.maximum(sigma, 1e-30) ** 2, 0.0)
    andmask = np.zeros(NPIX, dtype=np.int32)
    andmask[donor_masked] |= ANDMASK_DONOR
    if rng.random() < 0.1:  # a bad CCD column stretch
        p = int(rng.integers(NPIX - 40))
        andmask[p:p + int(rng.integers(3, 40))] |= ANDMASK_BADPIX
    masked = andmask != 0
    ivar[masked], noisy[masked] = 0.0, 0.0
    good = ~masked
    snr_g = float(np.median((noisy * np.sqrt(ivar))[G_BAND & good])) if (G_BAND & good).any() else 0.0
    snr_r = float(np.median((noisy * np.sqrt(ivar))[R_BAND & good])) if (R_BAND & good).any() else 0.0
    return noisy, ivar, andmask, snr_g, snr_r, arm, join
