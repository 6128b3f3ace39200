"""The oversampled working grid, a vectorised line-profile accumulator, continua and dust laws.

Everything is rendered on a grid twice as fine as LAMOST's native one (pairs of sub-pixels average to
one native pixel) with a margin on both sides, so the instrument's convolution has no edge effects.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from ..instrument import WAVELENGTH

C_KMS = 299_792.458
LN10 = np.log(10.0)
NATIVE_LOG0 = float(np.log10(WAVELENGTH[0]))
NATIVE_STEP = float(np.log10(WAVELENGTH[1]) - np.log10(WAVELENGTH[0]))
N_NATIVE = WAVELENGTH.size
OVERSAMPLE = 2
MARGIN = 24  #: sub-pixels beyond each end of the native range
STEP = NATIVE_STEP / OVERSAMPLE
N_WORK = N_NATIVE * OVERSAMPLE + 2 * MARGIN
#: sub-pixel centres: native pixel i is the mean of sub-pixels MARGIN + 2i and MARGIN + 2i + 1
WORK_LOGLAM = NATIVE_LOG0 + STEP * (np.arange(N_WORK) - MARGIN - 0.5 * (OVERSAMPLE - 1))
WORK_WAVE = 10.0**WORK_LOGLAM
KMS_PER_SUBPIXEL = C_KMS * LN10 * STEP
HC_OVER_K = 1.438777e8  # Angstrom Kelvin


def to_native(work: np.ndarray) -> np.ndarray:
    """(n, N_WORK) -> (n, N_NATIVE): drop the margins, average sub-pixel pairs."""
    core = work[:, MARGIN:MARGIN + N_NATIVE * OVERSAMPLE]
    return core.reshape(len(work), N_NATIVE, OVERSAMPLE).mean(axis=2)


class LineAccumulator:
    """Sums gaussian profiles, integrated over each sub-pixel, into an (n, N_WORK) array in one pass.

    ``area`` is the profile's integral in sub-pixel units; ``equivalent_width_area`` converts a
    rest-frame equivalent width (A) to it, which does not depend on redshift on a log grid.
    """

    def __init__(self, n: int, loglam0: float = float(WORK_LOGLAM[0]), step: float = STEP, width: int = N_WORK):
        self.n, self.loglam0, self.step, self.width = n, loglam0, step, width
        self._index: list[np.ndarray] = []
        self._value: list[np.ndarray] = []

    def add(self, rows: np.ndarray, obs_wave: np.ndarray, sigma_kms: np.ndarray, area: np.ndarray) -> None:
        rows, obs_wave, sigma_kms, area = (a.ravel() for a in np.broadcast_arrays(
            np.asarray(rows, dtype=np.int64), np.asarray(obs_wave, dtype=np.float64),
            np.asarray(sigma_kms, dtype=np.float64), np.asarray(area, dtype=np.float64)))
        centre = (np.log10(np.maximum(obs_wave, 1.0)) - self.loglam0) / self.step
        sigma = np.maximum(sigma_kms / (C_KMS * LN10 * self.step), 0.2)
        half = np.ceil(np.where(sigma > 3.0, 4.0, 5.0) * sigma) + 1
        keep = (area != 0) & (centre + half >= 0) & (centre - half <= self.width - 1)
        if not keep.any():
            return
        rows, centre, sigma, area, half = rows[keep], centre[keep], sigma[keep], area[keep], half[keep]
        # group by window size so broad lines do not make every narrow one pay for a wide window
        group = np.minimum(np.ceil(half / 8.0) * 8, 4096).astype(int)
        for w in np.unique(group):
            sel = group == w
            offs = np.arange(-w, w + 1)
            idx = np.floor(centre[sel])[:, None] + offs[None, :]
            x = (idx - centre[sel][:, None]) / sigma[sel][:, None]
            if w > 16:  # wide enough that the pixel integral is the density at the centre
                val = area[sel][:, None] / (np.sqrt(2 * np.pi) * sigma[sel][:, None]) * np.exp(-0.5 * x * x)
            else:
                s = 0.5 / sigma[sel][:, None]
                val = area[sel][:, None] * (ndtr(x + s) - ndtr(x - s))
            inside = (idx >= 0) & (idx < self.width)
            flat = rows[sel][:, None] * self.width + idx.astype(np.int64)
            self._index.append(flat[inside])
            self._value.append(val[inside])

    def render(self) -> np.ndarray:
        out = np.zeros(self.n * self.width)
        if self._index:
            out = np.bincount(np.concatenate(self._index), np.concatenate(self._value), minlength=self.n * self.width)
        return out.reshape(self.n, self.width)


def equivalent_width_area(ew_rest: np.ndarray, rest_wave: np.ndarray, step: float = STEP) -> np.ndarray:
    """Rest equivalent width (A) of a line at ``rest_wave`` -> profile area in grid pixels."""
    return np.asarray(ew_rest) / (np.asarray(rest_wave) * LN10 * step)


def add_strong_lines(acc: LineAccumulator, rows: np.ndarray, obs_wave: np.ndarray, rest_wave: np.ndarray,
                     sigma_kms: np.ndarray, ew: np.ndarray) -> None:
    """Absorption lines as optical depth with damping wings: a core holding 40% of the area and wings,
    both widened (beyond ``sigma_kms``) with the line's strength, so a line of several A is not a
    saturated needle with a fraction of its equivalent width (as Ca II K, Mg b and Na D are not)."""
    width = C_KMS * np.asarray(ew) / np.asarray(rest_wave)  # the equivalent width in km/s
    wing = np.maximum(sigma_kms, 0.6 * width)
    core = np.maximum(sigma_kms, 0.16 * width)  # peak optical depth of the core stays near 1
    area = equivalent_width_area(ew, rest_wave, acc.step)
    acc.add(rows, obs_wave, core, 0.4 * area)
    acc.add(rows, obs_wave, wing, 0.6 * area)


def planck(wave: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """B_lambda(T) up to a constant, normalised to 1 at 5500 A (keeps fluxes O(1) for any T)."""
    t = np.asarray(temperature, dtype=np.float64)
    def b(w: np.ndarray) -> np.ndarray:
        return (5500.0 / w) ** 5 / np.expm1(np.minimum(HC_OVER_K / (w * t), 700.0))
    return b(np.asarray(wave, dtype=np.float64)) / b(np.full_like(t, 5500.0))


def smooth_step(x: np.ndarray, edge: np.ndarray, width: np.ndarray) -> np.ndarray:
    """0 well below ``edge``, 1 well above: a logistic of the given width."""
    return 0.5 * (1.0 + np.tanh((x - edge) / np.maximum(width, 1e-6)))


def calzetti_k(wave: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) starburst attenuation k(lambda) (R_V = 4.05), wave in A."""
    um = np.clip(np.asarray(wave, dtype=np.float64) / 1e4, 0.09, 2.2)
    short = 2.659 * (-2.156 + 1.509 / um - 0.198 / um**2 + 0.011 / um**3) + 4.05
    long = 2.659 * (-1.857 + 1.040 / um) + 4.05
    return np.maximum(np.where(um < 0.63, short, long), 0.0)


def ccm_k(wave: np.ndarray, r_v: float = 3.1) -> np.ndarray:
    """Cardelli, Clayton & Mathis (1989) A(lambda)/E(B-V), optical and near-IR pieces, wave in A."""
    x = 1e4 / np.clip(np.asarray(wave, dtype=np.float64), 3030.0, 30000.0)
    y = x - 1.82
    a_opt = 1 + 0.17699 * y - 0.50447 * y**2 - 0.02427 * y**3 + 0.72085 * y**4 + 0.01979 * y**5 - 0.77530 * y**6 + 0.32999 * y**7
    b_opt = 1.41338 * y + 2.28305 * y**2 + 1.07233 * y**3 - 5.38434 * y**4 - 0.62251 * y**5 + 5.30260 * y**6 - 2.09002 * y**7
    a_ir, b_ir = 0.574 * x**1.61, -0.527 * x**1.61
    a, b = np.where(x >= 1.1, a_opt, a_ir), np.where(x >= 1.1, b_opt, b_ir)
    return r_v * a + b


def smc_k(wave: np.ndarray) -> np.ndarray:
    """An SMC-like power law A(lambda)/E(B-V) = 1.39 lambda_um^-1.2 (Prevot et al. 1984), for QSO dust."""
    return 1.39 * (np.maximum(np.asarray(wave, dtype=np.float64), 500.0) / 1e4) ** -1.2


def dust(wave: np.ndarray, ebv: np.ndarray, law=calzetti_k) -> np.ndarray:
    """Transmission 10^(-0.4 E(B-V) k(lambda)), ``ebv`` broadcast against ``wave``."""
    return 10.0 ** (-0.4 * np.asarray(ebv) * law(wave))


def band_heads(rest: np.ndarray, heads: np.ndarray, scales: np.ndarray, depth: np.ndarray, toward_red: bool) -> np.ndarray:
    """Optical depth of molecular bands: a sharp head that fades over ``scales`` A (to the red or violet).

    ``rest`` (n, W); ``heads``, ``scales`` (B,); ``depth`` (n, B). Returns (n, W).
    """
    tau = np.zeros_like(rest)
    for j, (h, s) in enumerate(zip(heads, scales)):
        d = depth[:, j][:, None]
        if not np.any(d):
            continue
        off = (rest - h) if toward_red else (h - rest)
        tau += d * smooth_step(off, 0.0, 2.0) * np.exp(-np.maximum(off, 0.0) / s)
    return tau


def log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


#: a rest-frame log grid with the working step, wide enough for any redshift drawn (QSOs to z 4.5)
REST_LOGLAM = np.arange(2.75, 3.975, STEP)
REST_WAVE = 10.0**REST_LOGLAM


def redshifted(rest_values: np.ndarray, z: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
    """Sample a function tabulated on REST_WAVE at the working grid's rest wavelengths for each z: (n, N_WORK).

    ``rest_values`` is (N_REST,) or (K, N_REST) with ``which`` (n,) choosing a row per spectrum.
    """
    pos = (WORK_LOGLAM[None, :] - np.log10(1.0 + np.asarray(z, dtype=np.float64))[:, None] - REST_LOGLAM[0]) / STEP
    pos = np.clip(pos, 0.0, REST_LOGLAM.size - 1.001)
    i0 = pos.astype(np.int64)
    frac = pos - i0
    if which is not None:
        i0 = i0 + (np.asarray(which, dtype=np.int64) * REST_LOGLAM.size)[:, None]
        rest_values = rest_values.ravel()
    return rest_values[i0] * (1.0 - frac) + rest_values[i0 + 1] * frac
