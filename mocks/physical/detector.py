"""The instrument of the "physical" family: telluric bands, a gaussian LSF whose resolution varies with
wavelength and arm, sub-pixel binning, flux-calibration tilt and fibre throughput, blue/red arm scale
mismatch, sky (continuum + line list) with imperfect subtraction, photon + sky + read noise through a
throughput curve, scaled to the requested S/N, cosmic rays, unmasked spikes, bad columns and ends."""

from __future__ import annotations

import warnings

import numpy as np

from .common import (C_KMS, KMS_PER_SUBPIXEL, N_NATIVE, NATIVE_LOG0, NATIVE_STEP, WORK_WAVE, LineAccumulator,
                     smooth_step, to_native)
from ..instrument import WAVELENGTH

G_BAND, R_BAND = (4000.0, 5500.0), (5500.0, 7000.0)
G_WINDOW = (WAVELENGTH > G_BAND[0]) & (WAVELENGTH < G_BAND[1])
R_WINDOW = (WAVELENGTH > R_BAND[0]) & (WAVELENGTH < R_BAND[1])
#: night-sky emission lines (vacuum A) and relative strengths: [O I], Na D, Hg street lights, OH bands
SKY_LINES = np.array([
    (4047.7, 0.3), (4359.6, 0.5), (5462.3, 0.6), (5578.9, 3.0), (5891.6, 0.8), (5897.6, 0.6), (6302.0, 1.5),
    (6365.5, 0.5), (6865.0, 0.6), (6925.0, 0.6), (7278.0, 0.8), (7318.0, 1.0), (7342.0, 0.9), (7371.0, 0.9),
    (7795.0, 1.0), (7823.0, 1.1), (7856.0, 1.0), (7916.0, 1.3), (7995.0, 1.3), (8346.0, 1.8), (8401.0, 1.8),
    (8432.0, 1.6), (8467.0, 1.6), (8507.0, 1.5), (8763.0, 2.0), (8829.0, 2.2), (8888.0, 2.0), (8921.0, 2.0),
    (8945.0, 1.8), (8961.0, 2.0), (8990.0, 2.2), (9004.0, 2.0), (6499.0, 0.6), (6555.0, 0.5), (6829.0, 0.5),
])
#: telluric absorption bands (vacuum A): start, end, mean optical depth at airmass 1 over the band
#: (O2 B and A bands, water), as left in LAMOST spectra: most of it corrected, the rest residual
TELLURIC = np.array([(6868.0, 6930.0, 0.08), (7165.0, 7320.0, 0.03), (7596.0, 7660.0, 0.2), (8130.0, 8350.0, 0.04),
                     (8950.0, 9100.0, 0.06)])
ANDMASK_BADCOL, ANDMASK_SKY, ANDMASK_NODATA = 1, 8, 32


def throughput(wave: np.ndarray) -> np.ndarray:
    """System efficiency: each arm peaks mid-range and falls at its ends; the dichroic splits at ~5800 A."""
    blue = np.exp(-0.5 * (np.log(wave / 4900.0) / 0.16) ** 2)
    red = 0.9 * np.exp(-0.5 * (np.log(wave / 7100.0) / 0.17) ** 2)
    join = smooth_step(wave, 5800.0, 40.0)
    return 0.02 + (1 - join) * blue + join * red


THROUGHPUT = throughput(WAVELENGTH)
#: where masked stretches start: as in real LAMOST DR10 files, mostly in the blue arm (per 300 A from
#: 3700 A: ~7-9 masked pixels per spectrum on average to 6000 A, 1-3 beyond)
MASK_WHERE = np.interp(WAVELENGTH, np.arange(3850.0, 9100.0, 300.0),
                       [8.1, 6.9, 7.1, 8.6, 7.4, 6.9, 9.1, 6.6, 3.5, 2.6, 1.8, 1.9, 1.9, 1.6, 0.9, 0.7, 1.1, 2.3])
MASK_WHERE = MASK_WHERE / MASK_WHERE.sum()


def resolution_curve(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """R at 5500 A (n,) and R on the working grid (n, N_WORK): R grows along each arm, clipped to 1300-2500."""
    r5500 = rng.uniform(1450, 2200, n)
    red_ratio = rng.uniform(0.85, 1.1, n)
    blue = r5500[:, None] * (WORK_WAVE[None, :] / 5500.0) ** 0.6
    red = r5500[:, None] * red_ratio[:, None] * (WORK_WAVE[None, :] / 6500.0) ** 0.6
    join = smooth_step(WORK_WAVE, 5800.0, 30.0)[None, :]
    return r5500, np.clip((1 - join) * blue + join * red, 1300.0, 2500.0)


def convolve_lsf(flux: np.ndarray, resolution: np.ndarray) -> np.ndarray:
    """Gaussian LSF of FWHM c/R, varying along the spectrum: a weighted sum of shifted copies."""
    sigma = C_KMS / resolution / 2.3548 / KMS_PER_SUBPIXEL  # sub-pixels, 0.9-1.8
    half = int(np.ceil(4 * sigma.max()))
    out = np.zeros_like(flux)
    norm = np.zeros_like(flux)
    inv = -0.5 / sigma**2
    for k in range(-half, half + 1):
        w = np.exp(inv * (k * k))
        shifted = np.roll(flux, -k, axis=1)
        out += w * shifted
        norm += w
    return out / norm


def observe(rng: np.random.Generator, source: np.ndarray, snr_g: np.ndarray) -> dict[str, np.ndarray]:
    """Noisy LAMOST-like flux, ivar, andmask on the native grid from noiseless (n, N_WORK) source flux."""
    n = len(source)
    airmass = rng.uniform(1.0, 1.8, n)[:, None]
    tell = np.zeros((n, WORK_WAVE.size))
    for lo, hi, d in TELLURIC:
        inside = smooth_step(WORK_WAVE, lo, 3.0) * (1 - smooth_step(WORK_WAVE, hi, 15.0))
        tell += d * inside[None, :] * rng.uniform(0.0, 1.5, (n, 1))
    r5500, resolution = resolution_curve(rng, n)
    flux = to_native(convolve_lsf(source * np.exp(-tell * airmass), resolution))
    flux = np.maximum(flux, 0.0)
    # the flux calibration the pipeline applies: a tilt, low-order wiggles (fibre throughput, refraction)
    # and the red arm's scale relative to the blue one, off by a few percent, badly in some spectra
    x = np.log(WAVELENGTH / 6000.0)[None, :]
    tilt = rng.normal(0.0, 0.25, n)[:, None]
    wig = rng.normal(0.0, 0.04, (n, 2))
    arm = np.where(rng.uniform(0, 1, n) < 0.15, rng.uniform(-0.5, 0.5, n), rng.normal(0.0, 0.04, n))
    join_at = rng.uniform(5700.0, 5900.0, n)[:, None]
    red = smooth_step(WAVELENGTH[None, :], join_at, 5.0)
    calib = np.exp(tilt * x + wig[:, :1] * x**2 * 4 + wig[:, 1:] * np.cos(6 * x)) * np.exp(arm[:, None] * red)

    # sky in the same flux units as the object: continuum rising to the red (plus moonlight to the blue) and lines
    sky_acc = LineAccumulator(n, loglam0=NATIVE_LOG0, step=NATIVE_STEP, width=N_NATIVE)
    fwhm_kms = C_KMS / np.interp(SKY_LINES[:, 0], WORK_WAVE, resolution.mean(axis=0))
    sky_acc.add(np.repeat(np.arange(n), len(SKY_LINES)), np.tile(SKY_LINES[:, 0], n), np.tile(fwhm_kms / 2.3548, n),
                np.tile(SKY_LINES[:, 1] * 3.0, n) * rng.uniform(0.5, 2.0, (n, 1)).repeat(len(SKY_LINES), 1).ravel())
    sky_lines = sky_acc.render()
    moon = rng.uniform(0, 1, n)[:, None]
    sky_cont = 0.3 + 0.4 * (WAVELENGTH[None, :] / 6000.0) ** 2 + moon * (4500.0 / WAVELENGTH[None, :]) ** 3
    sky = sky_cont + sky_lines
    obj_g = np.median(flux[:, G_WINDOW], axis=1)
    sky_g = np.median(sky[:, G_WINDOW], axis=1)
    # how bright the sky is against the object: faint objects are sky dominated, and a fibre that lets
    # through less of its object's light (position error, seeing) still gets all of the sky
    fibre_throughput = rng.uniform(0.3, 1.0, n)
    sky_ratio = 0.2 * (20.0 / snr_g) * 10 ** rng.normal(0, 0.2, n) / fibre_throughput
    sky = sky * (sky_ratio * obj_g / np.maximum(sky_g, 1e-30))[:, None]
    read = rng.uniform(2.0, 5.0, n)[:, None] ** 2

    # counts = A x throughput x flux; choose the exposure A so the median S/N in the g window is snr_g
    t = THROUGHPUT[None, :]
    obj, skyv = flux[:, G_WINDOW] * t[:, G_WINDOW], sky[:, G_WINDOW] * t[:, G_WINDOW]
    a_med, b_med = np.median(obj, axis=1), np.median(skyv, axis=1)
    s2 = snr_g**2
    expo = (s2 * (a_med + b_med) + np.sqrt(s2**2 * (a_med + b_med) ** 2 + 4 * a_med**2 * s2 * read[:, 0])) / (2 * a_med**2)
    for _ in range(3):
        cur = np.median(expo[:, None] * obj / np.sqrt(expo[:, None] * (obj + skyv) + read), axis=1)
        frac = expo * (a_med + b_med) / (expo * (a_med + b_med) + read[:, 0])
        expo = expo * (snr_g / cur) ** (1.0 / (1.0 - 0.5 * frac))
    counts = expo[:, None] * t
    var = (counts * (flux + sky) + read) / counts**2  # in flux units, before calibration
    noise = rng.standard_normal(flux.shape) * np.sqrt(var)
    # sky subtraction leaves residuals: line scale errors and a continuum offset
    resid = sky_lines * (sky_ratio * obj_g / np.maximum(sky_g, 1e-30))[:, None] * rng.normal(0, 0.05, (n, 1)) \
        + sky_cont * rng.normal(0, 0.003, (n, 1)) * (sky_ratio * obj_g / np.maximum(sky_g, 1e-30))[:, None]
    units = 10 ** rng.uniform(1.5, 3.0, n)[:, None] / np.maximum(obj_g, 1e-30)[:, None]  # LAMOST-like numbers
    out = (flux + noise + resid) * calib * units
    ivar = 1.0 / (var * (calib * units) ** 2)
    andmask = np.zeros(out.shape, dtype=np.int32)

    # cosmic rays (some masked) and unmasked spikes; bad columns; files that stop a few pixels early
    sigma_out = 1.0 / np.sqrt(ivar)
    runs_mean = np.exp(rng.normal(np.log(2.5), 1.6, n))  # masked stretches per spectrum: most few, some many
    for i in range(n):
        k = rng.poisson(1.5)
        pix = rng.integers(0, N_NATIVE - 1, k)
        amp = 10 ** rng.uniform(1.0, 2.0, k) * sigma_out[i, pix]
        out[i, pix] += amp
        out[i, pix + 1] += amp * rng.uniform(0, 0.5, k)
        masked = pix[rng.uniform(0, 1, k) < 0.3]
        andmask[i, masked] |= ANDMASK_BADCOL
        ivar[i, masked] = 0.0
        if rng.uniform() < 0.15:  # spikes that set a min-max normalisation: far above (or below) the spectrum
            s = rng.integers(0, N_NATIVE, rng.integers(1, 4))
            out[i, s] = np.max(out[i]) * rng.uniform(1.5, 8.0, s.size) * rng.choice([1.0, 1.0, -0.5], s.size)
        for start, width in zip(rng.choice(N_NATIVE, rng.poisson(runs_mean[i]), p=MASK_WHERE),
                                np.clip(np.exp(rng.normal(np.log(5.5), 0.6, N_NATIVE)), 1, 60).astype(int)):
            andmask[i, start:start + width] |= ANDMASK_BADCOL
            ivar[i, start:start + width] = 0.0
        if rng.uniform() < 0.3:  # the brightest sky line's core flagged
            core = np.abs(WAVELENGTH - 5578.9) < 3.0
            andmask[i, core] |= ANDMASK_SKY
            ivar[i, core] = 0.0
        short = rng.integers(0, 6)
        if short:
            andmask[i, N_NATIVE - short:] |= ANDMASK_NODATA
            ivar[i, N_NATIVE - short:] = 0.0
            out[i, N_NATIVE - short:] = 0.0
    good = ivar > 0
    snr = np.where(good, out * np.sqrt(ivar), np.nan)
    with warnings.catch_warnings():
        # a spectrum masked over a whole window has no S/N there: NaN, which falls in no S/N bin
        warnings.simplefilter("ignore", RuntimeWarning)
        snr_g = np.nanmedian(snr[:, G_WINDOW], axis=1)
        snr_r = np.nanmedian(snr[:, R_WINDOW], axis=1)
    return {"flux": out.astype(np.float32), "ivar": ivar.astype(np.float32), "andmask": andmask,
            "snr_g": snr_g.astype(np.float32), "snr_r": snr_r.astype(np.float32),
            "resolution": r5500.astype(np.float32), "arm_mismatch": arm.astype(np.float32),
            "calibration_tilt": tilt[:, 0].astype(np.float32)}
