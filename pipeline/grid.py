"""Resample spectra onto the paper's 2600-pixel 3690-9100 A grid and min-max normalise them.

The grid is log-linear (constant step in log10 wavelength, ~104 km/s per pixel), not linear:
LAMOST's native sampling is itself log-linear (step 1e-4 dex), so a log grid keeps every pixel
1.5 native pixels wide across the whole range, line widths (set by velocity) stay the same number of
pixels from the blue to the red end, which suits the network's fixed kernel sizes, and a redshift is a
plain shift. A linear 2.08 A grid would over-sample the blue arm by 1.8x against the red.

Resampling is flux-conserving: each output pixel is the average of f_lambda over its width, computed
from the cumulative integral of the valid native pixels, so masked pixels carry no weight and an output
pixel is valid only when at least half of its width is covered by valid data.
All functions work on a whole (batch, n_native) block at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamost_classify.contract import (ARM_JOIN, ARM_MIN_VALID, FILL_VALUE, LOG_WAVELENGTH, LOW_SNR, MAX_MASKED_FRACTION,
                                      MIN_COVERAGE, N_PIXELS, NEGATIVE_SIGMA, SPIKE_FACTOR, SPIKE_PIXELS, WAVELENGTH, Flag,
                                      fill_masked)

from .spectrum import Spectrum

_LOG_STEP = LOG_WAVELENGTH[1] - LOG_WAVELENGTH[0]
OUTPUT_EDGES = 10.0 ** np.concatenate(
    [[LOG_WAVELENGTH[0] - _LOG_STEP / 2], (LOG_WAVELENGTH[:-1] + LOG_WAVELENGTH[1:]) / 2,
     [LOG_WAVELENGTH[-1] + _LOG_STEP / 2]]
)

_F32_MAX = float(np.finfo(np.float32).max)  # outputs are float32: extreme inputs saturate, never overflow
# the grid pixels of each arm, either side of the join
ARMS = (WAVELENGTH < ARM_JOIN[0], WAVELENGTH > ARM_JOIN[1])

#: An output pixel counts as valid when at least this fraction of its width holds valid native data.
MIN_PIXEL_COVER = 0.5


@dataclass
class Resampled:
    """A batch on the output grid: flux and ivar (0 where invalid), and per-pixel coverage."""

    flux: np.ndarray  # (B, 2600) float32
    ivar: np.ndarray  # (B, 2600) float32
    valid: np.ndarray  # (B, 2600) bool: enough valid native data under the pixel
    covered: np.ndarray  # (B, 2600) bool: the spectrum's wavelength range reaches the pixel


@dataclass
class PreparedBatch:
    """What the network needs, plus the per-spectrum quality the catalog keeps."""

    flux: np.ndarray  # (B, 2600) float32 normalised to [0, 1], masked pixels interpolated (contract.fill_masked)
    flags: np.ndarray  # (B,) uint32, reader flags | preparation flags
    snr: np.ndarray  # (B,) float32 median S/N per output pixel over valid pixels (nan if none)
    coverage: np.ndarray  # (B,) float32 fraction of the grid covered by the spectrum
    ivar: np.ndarray | None = None  # (B, 2600) float32 inverse variance of ``flux`` (normalised units), 0 where masked
    # (B,) float32 Fmin / (Fmax - Fmin), what the normalisation subtracted: flux + pedestal is the spectrum over
    # its span, 0 at zero flux, as a template times a polynomial describes it (the star fit); 0 without a range
    pedestal: np.ndarray | None = None


def native_edges(wavelength: np.ndarray) -> np.ndarray:
    """Pixel edges (..., N+1) from pixel centres (..., N), halfway in log wavelength."""
    logw = np.log10(wavelength)
    mid = 0.5 * (logw[..., 1:] + logw[..., :-1])
    first = logw[..., :1] - (mid[..., :1] - logw[..., :1])
    last = logw[..., -1:] + (logw[..., -1:] - mid[..., -1:])
    return 10.0 ** np.concatenate([first, mid, last], axis=-1)


def _cumulative_at(edges: np.ndarray, cumulative: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Evaluate piecewise-linear cumulative sums (B, N+1) defined on ``edges`` at ``query`` (Q,).

    ``edges`` is (N+1,) shared by every row or (B, N+1) per row. Outside the edges the cumulative is
    clamped, so uncovered parts of an output pixel contribute nothing.
    """
    n = cumulative.shape[1] - 1
    if edges.ndim == 1:
        idx = np.clip(np.searchsorted(edges, query, side="right") - 1, 0, n - 1)  # (Q,)
        lo, hi = edges[idx], edges[idx + 1]
        t = np.clip((query - lo) / (hi - lo), 0.0, 1.0)
        c_lo = cumulative[:, idx]
        return c_lo + t * (cumulative[:, idx + 1] - c_lo)
    # Per-row edges: one searchsorted over all rows at once, each row shifted to its own band of the
    # real line (log wavelength spans < 1 dex, rows are 10 dex apart).
    b = edges.shape[0]
    shift = 10.0 * np.arange(b)[:, None]
    flat = (np.log10(edges) + shift).ravel()
    q = (np.log10(query)[None, :] + shift).ravel()
    idx = np.searchsorted(flat, q, side="right").reshape(b, -1) - 1 - np.arange(b)[:, None] * (n + 1)
    idx = np.clip(idx, 0, n - 1)
    lo = np.take_along_axis(edges, idx, axis=1)
    hi = np.take_along_axis(edges, idx + 1, axis=1)
    t = np.clip((query[None, :] - lo) / (hi - lo), 0.0, 1.0)
    c_lo = np.take_along_axis(cumulative, idx, axis=1)
    return c_lo + t * (np.take_along_axis(cumulative, idx + 1, axis=1) - c_lo)


def pixel_validity(flux: np.ndarray, ivar: np.ndarray,
                   andmask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(valid, nonfinite, negative, spike): valid = finite flux other than exactly 0, ivar > 0, andmask ==
    0 and neither ``negative``, a pixel more than NEGATIVE_SIGMA below zero, nor ``spike``, one SPIKE_FACTOR
    times the row's (SPIKE_PIXELS + 1)-th largest |flux| (no flux is either: defects whose values, as the
    min-max normalisation's minimum or maximum, would lift the rest of the spectrum off zero or squash
    it); nonfinite marks NaN/inf found. No measured flux is exactly 0: LAMOST's files fill pixels with 0
    (most at the red end, often with an ivar, up to ~250x their neighbours'), a value the redshift fit
    would otherwise weigh as data."""
    nonfinite = ~np.isfinite(flux) | ~np.isfinite(ivar)
    valid = ~nonfinite & (ivar > 0) & (flux != 0)
    if andmask is not None:
        valid &= andmask == 0
    # float64: flux x sqrt(ivar) of extreme (but finite) float32 values overflows float32
    flux64 = np.where(valid, flux, 0.0).astype(np.float64, copy=False)
    sigmas = flux64 * np.sqrt(np.where(valid, ivar, 0.0).astype(np.float64, copy=False))
    negative = valid & (sigmas < -NEGATIVE_SIGMA)
    valid &= ~negative
    spike = np.zeros_like(valid)
    k = flux64.shape[1] - 1 - SPIKE_PIXELS
    if k >= 0:
        # the (SPIKE_PIXELS + 1)-th largest |flux| of the valid pixels (the others' as 0); 0, no test, in
        # a row with fewer
        magnitude = np.abs(flux64)
        magnitude[negative] = 0.0
        level = np.partition(magnitude, k, axis=1)[:, k:k + 1]
        spike = valid & (level > 0) & (flux64 > SPIKE_FACTOR * level)
    return valid & ~spike, nonfinite, negative, spike


def resample(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, valid: np.ndarray) -> Resampled:
    """Flux-conserving rebin of a (B, N) block onto the 2600-pixel grid.

    ``wavelength`` is (N,) when the batch shares one native grid (the LAMOST case), else (B, N).
    Invalid native pixels get zero weight; ivar is propagated as the variance of the weighted mean.
    """
    flux = np.atleast_2d(flux)
    ivar = np.atleast_2d(ivar)
    valid = np.atleast_2d(valid)
    edges = native_edges(np.asarray(wavelength, dtype=np.float64))
    width = np.diff(edges, axis=-1)  # (N,) or (B, N)
    weight = np.where(valid, width, 0.0)
    safe_flux = np.where(valid, flux, 0.0)
    var_width = np.where(valid, width / np.where(valid, ivar, 1.0), 0.0)

    def cum(x: np.ndarray) -> np.ndarray:
        x = np.broadcast_to(x, flux.shape)
        return np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x, axis=1, dtype=np.float64)], axis=1)

    at = lambda c: np.diff(_cumulative_at(edges, c, OUTPUT_EDGES), axis=1)  # noqa: E731
    w_sum = at(cum(weight))
    f_sum = at(cum(weight * safe_flux))
    v_sum = at(cum(weight * var_width))
    span = at(cum(width))
    out_width = np.diff(OUTPUT_EDGES)[None, :]

    good = w_sum >= MIN_PIXEL_COVER * out_width
    # Pixels without data divide by zero here; np.where then discards those results.
    with np.errstate(invalid="ignore", divide="ignore"):
        out_flux = np.where(good, f_sum / w_sum, 0.0)
        out_ivar = np.where(good & (v_sum > 0), w_sum**2 / v_sum, 0.0)
    # An absurd ivar in the file (~1e38) can exceed float32 after propagation: saturate, never inf.
    return Resampled(
        flux=np.clip(out_flux, -_F32_MAX, _F32_MAX).astype(np.float32),
        ivar=np.minimum(out_ivar, _F32_MAX).astype(np.float32),
        valid=good,
        covered=span >= MIN_PIXEL_COVER * out_width,
    )


def normalise(flux: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The paper's min-max normalisation (F - Fmin) / (Fmax - Fmin) over each row's valid pixels.

    Returns (normalised float32, invalid pixels interpolated between valid ones (``fill_masked``) and
    FILL_VALUE throughout a row without a range, flags uint32 with NO_FLUX or CONSTANT_FLUX).
    """
    out, flags, _, _ = _normalise_with_span(flux, valid)
    return out, flags


def _normalise_with_span(flux: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``normalise`` plus each row's Fmax - Fmin, which scales the ivar, and Fmin / (Fmax - Fmin), the
    pedestal (both float64, 0 where undefined)."""
    flux = np.atleast_2d(flux).astype(np.float64)
    valid = np.atleast_2d(valid)
    any_valid = valid.any(axis=1)
    fmin = np.where(valid, flux, np.inf).min(axis=1)
    fmax = np.where(valid, flux, -np.inf).max(axis=1)
    span = fmax - fmin
    constant = any_valid & ~(span > 0)
    scale = np.where(span > 0, span, 1.0)
    offset = np.where(any_valid, fmin, 0.0)
    out = fill_masked(np.where(valid, (flux - offset[:, None]) / scale[:, None], FILL_VALUE), valid)
    out[~any_valid | constant] = FILL_VALUE
    np.clip(out, 0.0, 1.0, out=out)
    flags = np.where(any_valid, 0, int(Flag.NO_FLUX)) | np.where(constant, int(Flag.CONSTANT_FLUX), 0)
    return (out.astype(np.float32), flags.astype(np.uint32), np.where(span > 0, span, 0.0),
            np.where(span > 0, offset / scale, 0.0))


def prepare_arrays(
    wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, andmask: np.ndarray | None = None
) -> PreparedBatch:
    """Resample + normalise + quality flags for one (B, N) block sharing a layout."""
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
    valid, nonfinite, negative, spike = pixel_validity(flux, ivar, None if andmask is None else np.atleast_2d(andmask))
    res = resample(wavelength, flux, ivar, valid)
    norm, flags, span, pedestal = _normalise_with_span(res.flux, res.valid)
    # The inverse variance in normalised units (ivar x span^2): what a template fit of ``flux`` weighs by.
    ivar_norm = np.where(res.valid, res.ivar.astype(np.float64) * span[:, None] ** 2, 0.0)

    n_covered = res.covered.sum(axis=1)
    coverage = n_covered / N_PIXELS
    masked_fraction = 1.0 - res.valid.sum(axis=1) / np.maximum(n_covered, 1)
    # float64: flux x sqrt(ivar) of extreme (but finite) float32 values overflows float32.
    snr_pix = np.where(res.valid, res.flux.astype(np.float64) * np.sqrt(res.ivar.astype(np.float64)), np.nan)
    has_valid = res.valid.any(axis=1)
    snr = np.full(flux.shape[0], np.nan)
    if has_valid.any():
        snr[has_valid] = np.nanmedian(snr_pix[has_valid], axis=1)

    flags |= np.where(nonfinite.any(axis=1), int(Flag.NONFINITE_REPAIRED), 0).astype(np.uint32)
    flags |= np.where(negative.any(axis=1), int(Flag.NEGATIVE_MASKED), 0).astype(np.uint32)
    flags |= np.where(spike.any(axis=1), int(Flag.SPIKE_MASKED), 0).astype(np.uint32)
    flags |= np.where(coverage < MIN_COVERAGE, int(Flag.LOW_COVERAGE), 0).astype(np.uint32)
    flags |= np.where(has_valid & (masked_fraction > MAX_MASKED_FRACTION), int(Flag.MANY_MASKED), 0).astype(np.uint32)
    flags |= np.where(has_valid & ~(snr >= LOW_SNR), int(Flag.LOW_SNR), 0).astype(np.uint32)
    arm_valid = np.stack([res.valid[:, arm].mean(axis=1) for arm in ARMS], axis=1)
    flags |= np.where(has_valid & (arm_valid.min(axis=1) < ARM_MIN_VALID), int(Flag.ARM_MISSING), 0).astype(np.uint32)
    return PreparedBatch(flux=norm, flags=flags, snr=np.clip(snr, -_F32_MAX, _F32_MAX).astype(np.float32),
                         coverage=coverage.astype(np.float32), ivar=np.minimum(ivar_norm, _F32_MAX).astype(np.float32),
                         pedestal=np.clip(pedestal, -_F32_MAX, _F32_MAX).astype(np.float32))


def _placeable(s: Spectrum) -> bool:
    """At least two pixels, equal 1-D arrays, a finite, positive, strictly increasing wavelength grid."""
    n = s.flux.size
    if n < 2 or any(np.shape(a) != (n,) for a in (s.wavelength, s.flux, s.ivar, s.andmask)):
        return False
    w = np.asarray(s.wavelength, dtype=np.float64)
    return bool(np.all(np.isfinite(w)) and w[0] > 0 and np.all(np.diff(w) > 0))


def prepare(spectra: list[Spectrum]) -> PreparedBatch:
    """Prepare a list of spectra of any layouts: spectra sharing a native grid go through one block call."""
    b = len(spectra)
    out = PreparedBatch(
        flux=np.full((b, N_PIXELS), FILL_VALUE, np.float32),
        flags=np.array([s.flags for s in spectra], dtype=np.uint32),
        snr=np.full(b, np.nan, np.float32),
        coverage=np.zeros(b, np.float32),
        ivar=np.zeros((b, N_PIXELS), np.float32),
        pedestal=np.zeros(b, np.float32),
    )
    groups: dict[bytes, list[int]] = {}
    for i, s in enumerate(spectra):
        if s.flags & Flag.UNREADABLE:
            continue
        if not _placeable(s):
            # Arrays that do not line up on an increasing grid: the record says so, the batch goes on.
            out.flags[i] |= Flag.UNREADABLE if s.flux.size >= 2 else Flag.NO_FLUX
            continue
        # The grid's bytes as the key: spectra share a block only when their grids are identical.
        groups.setdefault(s.wavelength.astype(np.float64, copy=False).tobytes(), []).append(i)
    for rows in groups.values():
        first = spectra[rows[0]]
        block = prepare_arrays(
            first.wavelength,
            np.stack([spectra[i].flux for i in rows]),
            np.stack([spectra[i].ivar for i in rows]),
            np.stack([spectra[i].andmask for i in rows]),
        )
        out.flux[rows] = block.flux
        out.flags[rows] |= block.flags
        out.snr[rows] = block.snr
        out.coverage[rows] = block.coverage
        out.ivar[rows] = block.ivar
        out.pedestal[rows] = block.pedestal
    return out
