"""Galaxy and QSO subclasses from a spectrum on the pipeline grid and its fitted redshift.

- Galaxies: emission-line fluxes at the fitted z against the local continuum; STARFORMING, AGN (BPT,
  Kauffmann et al. 2003) or PASSIVE.
- QSOs: BAL when the balnicity index (Weymann et al. 1991) measured against the fitted QSO model is > 0,
  else BROADLINE.
"""

from __future__ import annotations

import numpy as np

from lamost_classify.contract import LOG_WAVELENGTH, N_PIXELS, WAVELENGTH

C_KMS = 299792.458
STEP = float(LOG_WAVELENGTH[1] - LOG_WAVELENGTH[0])  # dex per grid pixel
KMS_PER_PIXEL = C_KMS * np.log(10.0) * STEP


# Emission lines (vacuum, A) for the galaxy subclass.
LINES = {"OII": 3728.48, "HBETA": 4862.68, "OIII": 5008.24, "HALPHA": 6564.61, "NII": 6585.27}
LINE_HALF_WIDTH = 2  # pixels each side of the line centre summed (~+-210 km/s)
SIDEBAND = (12, 25)  # pixels: continuum from this range on both sides (clear of [N II] around H alpha)


def line_fluxes(flux: np.ndarray, ivar: np.ndarray, z: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per line: (flux above the local continuum, its S/N, equivalent width in A), (B,) each; NaN where
    the line falls off the grid or on masked pixels."""
    observed = np.array(list(LINES.values()))[None, :] * (1.0 + np.asarray(z))[:, None]  # (B, lines)
    centre = np.round(np.log10(observed / WAVELENGTH[0]) / STEP).astype(int)
    core = centre[..., None] + np.arange(-LINE_HALF_WIDTH, LINE_HALF_WIDTH + 1)  # (B, lines, core pixels)
    side_off = np.arange(SIDEBAND[0], SIDEBAND[1] + 1)
    side = np.concatenate([centre[..., None] - side_off, centre[..., None] + side_off], -1)  # (B, lines, side)
    inside = (side.min(-1) >= 0) & (side.max(-1) < N_PIXELS)  # the sidebands lie outside the core
    rows = np.arange(len(flux))[:, None, None]
    core_c, side_c = np.clip(core, 0, N_PIXELS - 1), np.clip(side, 0, N_PIXELS - 1)
    fc, wc = flux[rows, core_c], ivar[rows, core_c]
    fs, ws = flux[rows, side_c], ivar[rows, side_c]
    good = inside & (wc > 0).all(-1) & ((ws > 0).sum(-1) > side.shape[-1] // 2)
    cont = np.where(good, masked_median(fs, ws > 0), np.nan)
    line = (fc - cont[..., None]).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        noise = np.sqrt((1.0 / np.where(wc > 0, wc, np.inf)).sum(-1))
        pixel_a = WAVELENGTH[np.clip(centre, 0, N_PIXELS - 1)] * np.log(10.0) * STEP
        ew = line * pixel_a / cont / (1.0 + np.asarray(z))[:, None]  # rest frame
        snr = line / noise
    measured = [np.where(good, x, np.nan) for x in (line, snr, ew)]
    return {name: tuple(x[:, j] for x in measured) for j, name in enumerate(LINES)}


def masked_median(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(...) the median of the ``valid`` values (..., K) along the last axis, NaN where none is:
    ``np.nanmedian``'s answer without its overhead per call, which outweighed a few galaxies' fit."""
    ordered = np.sort(np.where(valid, values, np.inf), axis=-1)
    count = valid.sum(-1, keepdims=True)
    lower = np.take_along_axis(ordered, np.maximum(count - 1, 0) // 2, -1)[..., 0]
    upper = np.take_along_axis(ordered, count // 2, -1)[..., 0]  # count // 2 < K: count <= K
    with np.errstate(invalid="ignore"):
        return np.where(count[..., 0] > 0, (lower + upper) / 2, np.nan)


def galaxy_subclass(flux: np.ndarray, ivar: np.ndarray, z: np.ndarray) -> list[str]:
    """STARFORMING or AGN when emission lines are detected (S/N > 3, rest EW > 3 A, as the mocks label
    star-forming), AGN above Kauffmann et al.'s (2003) BPT line when H beta, [O III], H alpha and [N II]
    are all measured; else PASSIVE."""
    lines = line_fluxes(flux, ivar, z)

    def detected(name: str) -> np.ndarray:
        _, snr, ew = lines[name]
        return np.nan_to_num(snr) > 3.0

    emission = np.zeros(len(flux), bool)
    for name in ("HALPHA", "OII", "HBETA"):
        emission |= detected(name) & (np.nan_to_num(lines[name][2]) > 3.0)
    bpt = detected("HALPHA") & detected("NII") & detected("HBETA") & detected("OIII")
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log10(lines["NII"][0] / lines["HALPHA"][0])
        y = np.log10(lines["OIII"][0] / lines["HBETA"][0])
        agn = bpt & ((x >= 0.05) | (y > 0.61 / (x - 0.05) + 1.3))
    return ["AGN" if a else "STARFORMING" if e else "PASSIVE" for a, e in zip(agn, emission)]


# Broad absorption (Weymann et al. 1991) blueward of Si IV and C IV (vacuum, A), on the grid at z > ~1.5.
# Mg II (low-ionisation BALs) is not searched: there the eigenspectra's Fe II fits real-looking QSOs too
# loosely, and its troughs came out mostly false (bench/RESULTS.md).
BAL_LINES = {"SiIV": 1396.76, "CIV": 1549.06}
BAL_VELOCITY = (3000.0, 25000.0)  # km/s blueward of the line: the balnicity index's window
BAL_MIN_WIDTH = 2000.0  # km/s below 0.9 of the continuum, unbroken, before a trough counts
BAL_MIN_SNR = 5.0  # the trough's mean absorption over its error: noise alone must not make a BAL
BAL_MIN_DEPTH = 0.2  # mean absorption below the continuum, beyond that of the line's red wing mirrored


def balnicity(flux: np.ndarray, ivar: np.ndarray, continuum: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(B,) the largest balnicity index (km/s) over ``BAL_LINES``: the modified Weymann index, counting
    only troughs whose mean absorption is detected at ``BAL_MIN_SNR`` and exceeds that of the line's red
    wing at the mirrored velocities by ``BAL_MIN_DEPTH``; 0 where there is none.

    ``continuum`` is the fitted QSO model: the index is measured on flux / continuum, smoothed over 3 pixels.
    """
    b = len(flux)
    bi = np.zeros(b)
    v_pixel = KMS_PER_PIXEL
    min_run = int(np.ceil(BAL_MIN_WIDTH / v_pixel))
    kernel = np.ones(3) / 3.0
    for i in range(b):
        cont, good = continuum[i], (ivar[i] > 0) & (continuum[i] > 0)
        if not np.isfinite(z[i]) or good.sum() < min_run:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(good, flux[i] / cont, 1.0)
            err = np.where(good, 1.0 / (np.sqrt(ivar[i]) * cont), np.inf)
        smooth = np.convolve(ratio, kernel, mode="same")
        for rest in BAL_LINES.values():
            # grid pixels of outflow velocities 3,000-25,000 km/s (lambda = rest (1 + z) exp(-v / c))
            lo = np.log10(rest * (1.0 + z[i]) * np.exp(-BAL_VELOCITY[1] / C_KMS) / WAVELENGTH[0]) / STEP
            hi = np.log10(rest * (1.0 + z[i]) * np.exp(-BAL_VELOCITY[0] / C_KMS) / WAVELENGTH[0]) / STEP
            lo, hi = max(int(np.ceil(lo)), 0), min(int(np.floor(hi)), N_PIXELS - 1)
            if hi - lo < min_run or good[lo:hi + 1].mean() < 0.8:
                continue
            below = (smooth[lo:hi + 1] < 0.9) & good[lo:hi + 1]
            # runs of unbroken absorption below 0.9
            edges = np.diff(np.concatenate([[0], below.astype(np.int8), [0]]))
            for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
                if stop - start < min_run:
                    continue
                seg = slice(lo + start, lo + stop)
                depth = 1.0 - ratio[seg]
                snr = depth.mean() / (np.sqrt(np.sum(err[seg] ** 2)) / (stop - start))
                # a broad line the model makes too strong dips both wings; an outflow absorbs the blue one
                centre = np.log10(rest * (1.0 + z[i]) / WAVELENGTH[0]) / STEP
                mirror = np.round(2 * centre - np.arange(lo + start, lo + stop)).astype(int)
                mirror = mirror[(mirror >= 0) & (mirror < N_PIXELS)]
                mirror = mirror[good[mirror]]
                red_depth = float(np.mean(1.0 - ratio[mirror])) if len(mirror) > min_run // 2 else 0.0
                if snr < BAL_MIN_SNR or depth.mean() - max(red_depth, 0.0) < BAL_MIN_DEPTH:
                    continue
                counted = slice(lo + start + min_run, lo + stop)
                bi[i] = max(bi[i], float(np.sum(1.0 - smooth[counted] / 0.9) * v_pixel))
    return bi


def qso_subclass(flux: np.ndarray, ivar: np.ndarray, continuum: np.ndarray, z: np.ndarray) -> list[str]:
    """BAL where a broad absorption trough is detected (``balnicity`` > 0), else BROADLINE."""
    return ["BAL" if x > 0 else "BROADLINE" for x in balnicity(flux, ivar, continuum, z)]
