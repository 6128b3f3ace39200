"""The LAMOST low-resolution instrument model: what happens between a rest-frame template and a file.

Stages, in the order light and data go through them (``Simulator.render`` applies 1-4, then :func:`add_noise`):

1. ``redshift_to_native``: shift the rest-frame template by (1+z) and integrate it over the LAMOST
   native pixels, lambda_i = 10**(3.5682 + 1e-4 i), 3909 pixels, vacuum.
2. ``apply_lsf``: Gaussian line-spread function in log lambda, smoothing the template from its own
   resolving power down to the drawn LAMOST one (R ~ 1800).
3. ``extinction``: Galactic dust (Cardelli, Clayton & Mathis 1989, R_V = 3.1) with a drawn E(B-V).
4. ``calibration``: smooth low-order flux-calibration errors (a tilt and Legendre wiggles in log lambda)
   and the blue/red arm join near 5700-5900 A (the two arms' flux scales disagree by a few per cent).
5. ``add_noise``: noise and masks borrowed from a real LAMOST spectrum (a *donor*): its per-pixel
   sigma(lambda) shape, scaled to the drawn S/N, with the pixel-to-pixel correlation and the
   excess over the pipeline's ivar measured on real files; sky-subtraction residuals at the night-sky
   lines; and the donor's andmask and ivar == 0 pixels.

The donor library (``noise_donors.NoiseLibrary``) is built from the real files read here, or from the
shipped summary of them (``mocks/noise_donors.py``).

Held-out real stars: :func:`is_held_out` keeps a fixed 30% of the real files (by a hash of the file
name) out of the donor library, so they can judge mocks and models without having shaped them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lamost_classify.contract import ARM_JOIN, N_NATIVE, NATIVE_COEFF0, NATIVE_COEFF1, NATIVE_LOG_WAVELENGTH
from lamost_classify.contract import NATIVE_WAVELENGTH as WAVELENGTH  # mocks are made on the native grid

from .templates import C_KMS, REST_LOG_STEP, resolution_sigma_kms

if TYPE_CHECKING:  # noise_donors builds on this module, so the class is only named here for the hints
    from .noise_donors import NoiseLibrary

# --------------------------------------------------------------------------------------------------
# the native grid

KMS_PER_PIXEL = C_KMS * np.log(10.0) * NATIVE_COEFF1

#: Wavelength windows (A) whose median per-pixel S/N is the header's SNRU..SNRZ. Fitted on real DR10
#: files: with these windows median(flux * sqrt(ivar)) reproduces SNRG/SNRR/SNRI/SNRZ to < 1% (mean
#: absolute log error 0.3-0.6%) and SNRU to 0.05%.
SNR_BANDS: dict[str, tuple[float, float]] = {
    "u": (3650.0, 3850.0), "g": (4050.0, 5300.0), "r": (5500.0, 6900.0), "i": (6800.0, 8200.0), "z": (8200.0, 9100.0),
}

SNR_WINDOW_G = (WAVELENGTH > SNR_BANDS["g"][0]) & (WAVELENGTH < SNR_BANDS["g"][1])

#: Strong night-sky lines (vacuum A): O I 5578.9, Na D 5891.6/5897.6, O I 6302.0/6365.5, and the OH
#: bands that start beyond 6800 A. Used by the fallback sky model; the donor library measures the real
#: per-pixel sky excess instead.
SKY_LINES = np.array([5578.9, 5891.6, 5897.6, 6302.0, 6365.5, 6865.0, 6923.2, 7246.0, 7318.2, 7342.9,
                      7371.3, 7794.1, 7823.0, 7854.8, 7916.4, 7966.6, 8346.8, 8401.6, 8432.3, 8467.6,
                      8761.3, 8829.8, 8888.0, 8921.3, 8945.1, 8990.9, 9003.6, 9041.1])

#: Noise measured on real DR10 A stars in line-free windows: residual pixels correlate with their
#: neighbours (lag-1 correlation ~0.3, lag-2 ~0.05: the pipeline's resampling). A 3-tap kernel
#: [t, 1, t] with t = 0.19 gives lag-1 0.33, lag-2 0.03. How much the scatter exceeds the ivar is
#: measured per pixel on the donors (``NoiseLibrary.noise_excess``); it varies between spectra by:
NOISE_KERNEL_T = 0.19
NOISE_EXCESS_SPREAD = 0.12  # lognormal sigma of the per-spectrum excess factor


# --------------------------------------------------------------------------------------------------
# held-out real files

HELD_OUT_FRACTION = 0.30


def is_held_out(path: str | os.PathLike) -> bool:
    """True for the fixed 30% of real spectra kept out of every use as noise donor and of training.

    The rule: sha256 of the file name (no directory; a trailing '.gz' and '.fits' removed, so a file and
    its gzipped copy agree), first 8 bytes as an unsigned integer / 2**64; held out when that number
    is >= 0.70. It depends on nothing but the name, so every tool and every machine agrees.
    """
    name = Path(path).name
    for suffix in (".gz", ".fits"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return h / 2.0**64 >= 1.0 - HELD_OUT_FRACTION


# --------------------------------------------------------------------------------------------------
# 1-2. redshift, pixel integration, line-spread function

_SUBPIXELS = (np.arange(4) - 1.5) / 4.0  # 4 samples per native pixel, at the centres of its quarters


def redshift_to_native(rest: np.ndarray, loglam0: float, z: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Observed-frame flux on the native grid of (B, n) rest spectra on a REST_LOG_STEP grid from ``loglam0``.

    Each native pixel is the mean of the redshifted spectrum at 4 sub-pixel positions (the rest grid
    samples a quarter pixel, so this is the pixel integral to within interpolation). Observed
    f_lambda of a redshifted source is f_rest(lambda / (1+z)) / (1+z); the overall scale does not matter
    here (the simulator sets the flux level), so the 1/(1+z) factor is dropped. Returns (flux, covered):
    ``covered`` is False where the template does not reach.
    """
    rest = np.asarray(rest, dtype=np.float32)
    z = np.asarray(z, dtype=np.float64)
    b, n = rest.shape
    sub = (NATIVE_LOG_WAVELENGTH[:, None] + NATIVE_COEFF1 * _SUBPIXELS[None, :]).ravel()  # (3909*4,)
    flux = np.empty((b, N_NATIVE), np.float32)
    covered = np.empty((b, N_NATIVE), bool)
    for s in range(0, b, batch):
        rows = slice(s, min(b, s + batch))
        pos = (sub[None, :] - np.log10(1.0 + z[rows])[:, None] - loglam0) / REST_LOG_STEP
        inside = (pos >= 0) & (pos <= n - 1)
        pos = np.clip(pos, 0, n - 1 - 1e-6)
        i0 = pos.astype(np.int64)
        frac = (pos - i0).astype(np.float32)
        r = rest[rows]
        v = np.take_along_axis(r, i0, axis=1) * (1 - frac) + np.take_along_axis(r, i0 + 1, axis=1) * frac
        flux[rows] = v.reshape(-1, N_NATIVE, 4).mean(axis=2)
        covered[rows] = inside.reshape(-1, N_NATIVE, 4).all(axis=2)
    return flux, covered


def lsf_sigma_pixels(resolution: np.ndarray, template_resolution: float) -> np.ndarray:
    """Extra Gaussian sigma (native pixels) that takes a template of ``template_resolution`` to ``resolution``."""
    s_out = resolution_sigma_kms(np.asarray(resolution, dtype=np.float64))
    s_in = resolution_sigma_kms(template_resolution)
    return np.sqrt(np.clip(s_out**2 - s_in**2, 0.0, None)) / KMS_PER_PIXEL


def apply_lsf(flux: np.ndarray, sigma_pix: np.ndarray, half_width: int = 6) -> np.ndarray:
    """Convolve each row with its own Gaussian (sigma in native pixels; 0 = unchanged). Edges reflected."""
    flux = np.asarray(flux, dtype=np.float32)
    sigma = np.maximum(np.asarray(sigma_pix, dtype=np.float64), 1e-3)
    x = np.arange(-half_width, half_width + 1)
    kernel = np.exp(-0.5 * (x[None, :] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(axis=1, keepdims=True)).astype(np.float32)
    padded = np.pad(flux, ((0, 0), (half_width, half_width)), mode="reflect")
    out = np.zeros_like(flux)
    for k in range(len(x)):
        out += kernel[:, k : k + 1] * padded[:, k : k + flux.shape[1]]
    return out


# --------------------------------------------------------------------------------------------------
# 3-4. extinction, flux calibration, arm join


def ccm89_extinction(wave: np.ndarray, ebv: np.ndarray, r_v: float = 3.1) -> np.ndarray:
    """Transmission 10**(-0.4 A_lambda) of Cardelli, Clayton & Mathis (1989) dust, (B, N) for E(B-V) (B,)."""
    x = 1e4 / np.asarray(wave, dtype=np.float64)  # inverse microns
    a = np.empty_like(x)
    b = np.empty_like(x)
    ir = x < 1.1
    a[ir], b[ir] = 0.574 * x[ir] ** 1.61, -0.527 * x[ir] ** 1.61
    y = x[~ir] - 1.82
    a[~ir] = np.polyval([0.32999, -0.77530, 0.01979, 0.72085, -0.02427, -0.50447, 0.17699, 1.0], y)
    b[~ir] = np.polyval([-2.09002, 5.30260, -0.62251, -5.38434, 1.07233, 2.28305, 1.41338, 0.0], y)
    a_lambda = (a + b / r_v)[None, :] * (r_v * np.asarray(ebv, dtype=np.float64)[:, None])
    return (10.0 ** (-0.4 * a_lambda)).astype(np.float32)


def calibration_curves(rng: np.random.Generator, n: int, tilt_sigma: float = 0.15, wiggle_sigma: float = 0.02,
                       arm_sigma: float = 0.02) -> np.ndarray:
    """Multiplicative flux-calibration errors (n, N_NATIVE), each a smooth curve near 1.

    * tilt: (lambda / 6000)**beta, beta ~ N(0, tilt_sigma): the spectrophotometric standard's colour error;
    * wiggles: Legendre polynomials 2..5 in log lambda with N(0, wiggle_sigma) coefficients;
    * arm join: the red arm scaled by (1 + d), d ~ N(0, arm_sigma), switched on smoothly across 5700-5900 A.
    """
    t = np.linspace(-1.0, 1.0, N_NATIVE)
    legendre = np.stack([np.polynomial.legendre.Legendre.basis(k)(t) for k in range(2, 6)])  # (4, N)
    beta = rng.normal(0.0, tilt_sigma, n)
    wig = rng.normal(0.0, wiggle_sigma, (n, len(legendre))) / np.arange(1, len(legendre) + 1) ** 0.5
    arm = rng.normal(0.0, arm_sigma, n)
    join = 1.0 / (1.0 + np.exp(-(WAVELENGTH - sum(ARM_JOIN) / 2) / ((ARM_JOIN[1] - ARM_JOIN[0]) / 8)))
    curve = (WAVELENGTH[None, :] / 6000.0) ** beta[:, None] * (1.0 + wig @ legendre) * (1.0 + arm[:, None] * join[None, :])
    return np.clip(curve, 0.05, None).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# 5. real LAMOST files: read one on the native grid, find the donors (the library: noise_donors.py)


def _read_real(path: Path) -> dict | None:
    """flux, ivar, andmask on the native 3909 grid + SNRs of one real LAMOST file (any layout), or None."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as h:
            hdr = h[0].header
            if "COADD" in h:
                d = h["COADD"].data
                flux, ivar, andmask = (np.asarray(d[c][0], dtype=np.float64) for c in ("FLUX", "IVAR", "ANDMASK"))
            else:
                img = np.asarray(h[0].data, dtype=np.float64)
                flux, ivar, andmask = img[0], img[1], img[3]
            coeff0 = float(hdr.get("COEFF0", NATIVE_COEFF0))
            snr = [hdr.get(f"SNR{b}", hdr.get(f"SN_{b}")) for b in "UGRIZ"]
            subclass = str(hdr.get("SUBCLASS", "")).strip()
    except Exception:  # an unreadable donor is skipped, not fatal
        return None
    offset = int(round((coeff0 - NATIVE_COEFF0) / NATIVE_COEFF1))
    out = {k: np.zeros(N_NATIVE) for k in ("flux", "ivar", "andmask")}
    lo, hi = max(0, offset), min(N_NATIVE, offset + len(flux))
    for k, v in (("flux", flux), ("ivar", ivar), ("andmask", andmask)):
        out[k][lo:hi] = v[lo - offset : hi - offset]
    out["snr"] = np.array([np.nan if s is None or s < 0 else float(s) for s in snr], dtype=np.float32)
    out["subclass"] = subclass
    return out


#: Where donors come from. dr1 is left out: its 176 files are one spectrograph of one plan (B6212 sp06)
#: sharing a masked band at 7600-7700 A, which would stamp that one artefact on a fifth of all mocks.
DONOR_SUBDIRS = ("dr10-stars-A", "releases", "dr2")


def real_files(root: str | Path, subdirs: tuple[str, ...] = DONOR_SUBDIRS) -> list[Path]:
    """Every real LAMOST spectrum under ``root``/subdirs, sorted (held-out ones included)."""
    root = Path(root)
    out: list[Path] = []
    for s in subdirs:
        out += sorted(p for p in (root / s).glob("spec-*.fits*") if p.is_file())
    return out


def default_lamost_dir() -> Path | None:
    """``$LAMOST_SHARED_DATA/lamost``, else ../shared/data/lamost beside the repo, else None."""
    env = os.environ.get("LAMOST_SHARED_DATA")
    repo = Path(__file__).resolve().parents[1]
    for c in ([Path(env) / "lamost"] if env else []) + [repo.parent / "shared" / "data" / "lamost"]:
        if (c / "dr10-stars-A").is_dir() or (c / "releases").is_dir():
            return c
    return None


def band_snr(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """(B, 5) median flux * sqrt(ivar) over ivar > 0 pixels in each of SNR_BANDS, as LAMOST's SNRU..SNRZ."""
    out = np.full((flux.shape[0], 5), np.nan, np.float32)
    s = flux * np.sqrt(np.clip(ivar, 0, None))
    for j, (lo, hi) in enumerate(SNR_BANDS.values()):
        w = (WAVELENGTH > lo) & (WAVELENGTH < hi)
        v = np.where(ivar[:, w] > 0, s[:, w], np.nan)
        ok = np.isfinite(v).any(axis=1)
        if ok.any():
            out[ok, j] = np.nanmedian(v[ok], axis=1)
    return out


@dataclass
class NoisyBatch:
    flux: np.ndarray  # (B, N) float32
    ivar: np.ndarray  # (B, N) float32
    andmask: np.ndarray  # (B, N) int32
    snr: np.ndarray  # (B, 5) float32, measured like the pipeline's SNRU..SNRZ
    donor: np.ndarray  # (B,) int index into the library


def add_noise(rng: np.random.Generator, model: np.ndarray, covered: np.ndarray, snr_g: np.ndarray,
              library: NoiseLibrary, donor: np.ndarray | None = None, sky_scale: float = 1.0) -> NoisyBatch:
    """Noise, sky residuals and masks on noiseless native-grid models (B, N) scaled to any flux unit.

    For each row a donor is drawn (or given); the noise sigma follows the donor's sigma(lambda) shape,
    corrected by sqrt(model continuum / donor continuum) to the power w/2, where w = snr/(snr + 10) is
    the share of the noise from the object itself (photon noise follows the object's flux, sky and read
    noise do not); then scaled so the median S/N in the g window equals ``snr_g``. The noise drawn is
    correlated between neighbouring pixels and a little larger than the ivar written, as on real files.
    """
    b = model.shape[0]
    if donor is None:
        donor = rng.integers(0, len(library), b)
    shape = library.sigma_shape[donor].astype(np.float64)
    bad = library.bad[donor] | ~covered | (shape <= 0)
    model = np.asarray(model, dtype=np.float64)

    cont = _smooth_rows(np.clip(model, 0, None), 101)
    med = np.median(np.where(covered, cont, np.nan), axis=1, keepdims=True) if covered.any() else 1.0
    med = np.where(np.isfinite(med) & (med > 0), med, 1.0)
    ratio = np.clip(cont / med / np.maximum(library.continuum[donor], 0.05), 0.05, 20.0)
    w = (snr_g / (snr_g + 10.0))[:, None]
    sigma = shape * ratio ** (0.5 * w)

    g = (WAVELENGTH > SNR_BANDS["g"][0]) & (WAVELENGTH < SNR_BANDS["g"][1])
    with np.errstate(divide="ignore", invalid="ignore"):
        s_over_n = np.where(bad[:, g], np.nan, model[:, g] / sigma[:, g])
        cur = np.nanmedian(s_over_n, axis=1)
    cur = np.where(np.isfinite(cur) & (cur > 0), cur, 1.0)
    sigma = sigma * (cur / snr_g)[:, None]  # now median S/N in g = snr_g

    white = rng.standard_normal((b, N_NATIVE + 2))
    t = NOISE_KERNEL_T
    correlated = (t * white[:, :-2] + white[:, 1:-1] + t * white[:, 2:]) / np.sqrt(1 + 2 * t * t)
    # The real scatter exceeds the written ivar by a smooth, arm-dependent factor (measured on the
    # donors) that varies a little from spectrum to spectrum.
    excess = library.noise_excess[None, :] * np.exp(rng.normal(0.0, NOISE_EXCESS_SPREAD, (b, 1)))
    noise = correlated * sigma * excess

    # Sky-subtraction residuals at the night-sky lines: coherent over a line (a line is over- or
    # under-subtracted as a whole), of the size measured on the donors, a bit different per spectrum.
    sky = library.sky_residual[None, :].astype(np.float64) * sky_scale
    amp = np.exp(rng.normal(0.0, 0.3, (b, 1)))
    coherent = _smooth_rows(rng.standard_normal((b, N_NATIVE)), 3) * np.sqrt(3.0)
    residual = amp * sky * sigma * coherent
    flux = model + noise + residual
    ivar = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, sigma) ** 2)
    # What the real files hold where ivar == 0: mostly the interpolated model, sometimes 0.
    flux = np.where(bad, np.where(rng.random((b, N_NATIVE)) < 0.15, 0.0, model), flux)
    andmask = library.andmask[donor] & ~bad
    flux = np.where(andmask, 0.0, flux)  # andmask pixels: the files mostly hold 0 or garbage there
    ivar = np.where(andmask, 0.0, ivar)  # LAMOST zeroes ivar with the andmask (never andmask & ivar>0)
    flux32 = flux.astype(np.float32)
    ivar32 = ivar.astype(np.float32)
    return NoisyBatch(flux=flux32, ivar=ivar32, andmask=andmask.astype(np.int32),
                      snr=band_snr(flux32, ivar32), donor=np.asarray(donor))


def _smooth_rows(x: np.ndarray, width: int) -> np.ndarray:
    """Running mean along axis 1 (edges: shrinking window)."""
    c = np.cumsum(np.pad(x, ((0, 0), (1, 0))), axis=1)
    n = x.shape[1]
    lo = np.clip(np.arange(n) - width // 2, 0, n)
    hi = np.clip(np.arange(n) + width // 2 + 1, 0, n)
    return (c[:, hi] - c[:, lo]) / (hi - lo)


def draw_snr(rng: np.random.Generator, n: int, library: NoiseLibrary, snr_min: float = 2.0,
             snr_max: float = 300.0) -> np.ndarray:
    """snr_g drawn from the real S/N distribution (quantiles of the library), restricted to [snr_min, snr_max]."""
    q = library.snr_quantiles[:, 0].astype(np.float64)
    lo = np.interp(snr_min, q, np.linspace(0, 1, len(q)))
    hi = np.interp(snr_max, q, np.linspace(0, 1, len(q)))
    if hi <= lo:  # the range lies outside the real distribution: log-uniform in it
        return np.exp(rng.uniform(np.log(snr_min), np.log(snr_max), n))
    u = rng.uniform(lo, hi, n)
    return np.clip(np.interp(u, np.linspace(0, 1, len(q)), q), snr_min, snr_max)
