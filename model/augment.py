"""The paper's data augmentation and class balancing (section 4.2).

Three noises, applied to normalised spectra (values in [0, 1], masked pixels interpolated), each its own function:
``ccd_noise`` (4.2.1), ``bad_pixels`` (4.2.2), ``cosmic_ray`` (4.2.3), and ``combined`` (4.2.4) in the
paper's order: noise -> cosmic ray -> bad pixels. One of ours, ``survey_artefacts``, adds the defects
of real LAMOST files that the mocks lack (spikes that set the normalisation, arm-scale errors) to a
fraction of every class's spectra, and ``continuum_tilt`` gives a fraction a random smooth colour, so that no
family's idea of a continuum's shape (its flux calibration, its synthetic or empirical continua) is
learnt as a class, and ``arm_end_lost`` blanks the outer end of one arm (91 of the 1,374 real LAMOST
files in ../shared miss a fifth of an arm or more). Every function takes a (n_pixels,) spectrum or a
(batch, n_pixels) block (rows drawn independently), returns a new float32 array, leaves its input
alone, and draws from the ``rng`` it is given (a ``np.random.Generator`` or a seed).

Balancing to 1:1:1: each epoch keeps ``per_class`` spectra of every class; a class with more
(STAR) is undersampled without replacement, a class with fewer (GALAXY, QSO) keeps all of its
spectra once and is topped up with augmented copies of randomly drawn members. Independently of
that, ``artefact_fraction`` of every epoch's spectra, of every class, get ``survey_artefacts``,
``tilt_fraction`` of them ``continuum_tilt`` and ``arm_loss_fraction`` of them ``arm_end_lost``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from lamost_classify.contract import ARM_JOIN, CLASS_NAMES, FILL_VALUE, N_PIXELS, WAVELENGTH, fill_masked

# Defaults; the paper gives neither value. Normalised LAMOST spectra of S/N 10-50 scatter by
# ~0.01-0.05 per pixel, so 0.02 is noise of a typical spectrum; 100 pixels is ~4% of the grid (~200 A).
NOISE_SIGMA = 0.02
BAD_PIXEL_MAX_LENGTH = 100
COSMIC_RAY_VALUE = 1.0  # the normalised maximum
# continuum_tilt: (lambda/6000)**beta, beta ~ N(0, TILT_SIGMA), times exp(gamma * P2), gamma ~ N(0, CURVE_SIGMA).
# Twice the widest tilt of any family's flux calibration (the physical family's, 0.25).
TILT_SIGMA = 0.5
CURVE_SIGMA = 0.1

RngLike = np.random.Generator | int | None


def _rows(x: np.ndarray) -> np.ndarray:
    out = np.array(x, dtype=np.float32, copy=True)
    if out.ndim not in (1, 2):
        raise ValueError(f"expected a spectrum (n_pixels,) or a block (batch, n_pixels), got shape {out.shape}")
    return out


def ccd_noise(x: np.ndarray, sigma: float = NOISE_SIGMA, rng: RngLike = None) -> np.ndarray:
    """CCD electronic noise: an independent Gaussian N(0, sigma) draw added to every pixel."""
    rng = np.random.default_rng(rng)
    out = _rows(x)
    out += rng.normal(0.0, sigma, size=out.shape).astype(np.float32)
    return out


def bad_pixels(x: np.ndarray, max_length: int = BAD_PIXEL_MAX_LENGTH, rng: RngLike = None) -> np.ndarray:
    """Bad CCD pixels: one contiguous band of random length in [1, max_length] at a random place, masked as
    the pipeline masks pixels (``contract.fill_masked``: the line between the band's neighbours). The
    paper sets them to 0, the value masked pixels held in the pipeline before."""
    rng = np.random.default_rng(rng)
    out = _rows(x)
    block = out.reshape(-1, out.shape[-1])
    n = block.shape[1]
    max_length = int(min(max(max_length, 1), n))
    lengths = rng.integers(1, max_length + 1, size=block.shape[0])
    starts = rng.integers(0, n - lengths + 1)
    pixel = np.arange(n)
    band = (pixel >= starts[:, None]) & (pixel < (starts + lengths)[:, None])
    block[:] = fill_masked(block, ~band)
    return out


def cosmic_ray(x: np.ndarray, rng: RngLike = None) -> np.ndarray:
    """A cosmic-ray hit: one random pixel set to 1, the normalised maximum."""
    rng = np.random.default_rng(rng)
    out = _rows(x)
    block = out.reshape(-1, out.shape[-1])
    hit = rng.integers(0, block.shape[1], size=block.shape[0])
    block[np.arange(block.shape[0]), hit] = COSMIC_RAY_VALUE
    return out


def combined(
    x: np.ndarray, rng: RngLike = None, sigma: float = NOISE_SIGMA, max_length: int = BAD_PIXEL_MAX_LENGTH
) -> np.ndarray:
    """All three, in the paper's order (4.2.4): CCD noise -> cosmic ray -> bad pixels."""
    rng = np.random.default_rng(rng)
    return bad_pixels(cosmic_ray(ccd_noise(x, sigma, rng), rng), max_length, rng)


def survey_artefacts(x: np.ndarray, rng: RngLike = None) -> np.ndarray:
    """Defects seen in real LAMOST files that the mocks lack, applied before the network sees them.

    The real stars our first shipped model got wrong (6 of 1,152) all carried one of two defects:
    an unmasked spike (a cosmic ray, a sky residual or the edge of a masked region: 2-5 native
    pixels, 3-300x the continuum) that sets the maximum of the min-max normalisation and squashes
    the spectrum under it; or the two arms' flux scales disagreeing by up to 2x at the 5700-5900 A
    join. Each row gets one or both, drawn at random, then is renormalised to a maximum of 1
    (pixels at 0 stay 0). Meant for every class alike, so that a defect says nothing of the class.
    """
    rng = np.random.default_rng(rng)
    out = _rows(x)
    block = out.reshape(-1, out.shape[-1])
    n = block.shape[1]
    join_lo, join_hi = np.searchsorted(WAVELENGTH, ARM_JOIN) * n // N_PIXELS
    for row in block:
        valid = np.flatnonzero(row != FILL_VALUE)
        if len(valid) == 0:
            continue
        kind = rng.integers(0, 3)  # 0: spikes, 1: arm scale, 2: both
        if kind >= 1:
            join = rng.integers(join_lo, join_hi + 1)
            row[join:] *= np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        if kind != 1:
            for _ in range(rng.integers(1, 4)):
                width = int(rng.integers(1, 5))
                start = int(rng.choice(valid))
                hit = slice(start, min(start + width, n))
                # Heights log-uniform from 0.5x to 30x the spectrum's maximum (before renormalising).
                row[hit] = np.where(row[hit] != FILL_VALUE,
                                    row[hit] + row.max() * np.exp(rng.uniform(np.log(0.5), np.log(30.0))), row[hit])
        peak = row.max()
        if peak > 0:
            row /= peak
    return out


def arm_end_lost(x: np.ndarray, rng: RngLike = None) -> np.ndarray:
    """One arm's outer end without data: the blue arm from the grid's blue end, or the red arm from its
    red end (either at even odds), over a share of the arm drawn uniformly from 0 to 1, filled as the
    pipeline fills masked pixels (``contract.fill_masked``: the nearest valid value), then min-max
    normalised again. Real files lose such ends (docs/realism.md), and a network that never saw them read
    real stars without most of their blue arm as galaxies and QSOs (README, ARM_MISSING)."""
    rng = np.random.default_rng(rng)
    out = _rows(x)
    block = out.reshape(-1, out.shape[-1])
    n = block.shape[1]
    join_lo, join_hi = np.searchsorted(WAVELENGTH, ARM_JOIN) * n // N_PIXELS
    pixel = np.arange(n)
    for row in block:
        share = rng.uniform(0.0, 1.0)
        lost = pixel < int(share * join_lo) if rng.random() < 0.5 else pixel >= n - int(share * (n - join_hi))
        if not lost.any() or not (row != FILL_VALUE).any():  # nothing lost, or a row without data
            continue
        row[:] = fill_masked(row[None], ~lost[None])[0]
        low, high = row[~lost].min(), row[~lost].max()
        if high > low:
            row[:] = (row - low) / (high - low)
    return out


def continuum_tilt(x: np.ndarray, rng: RngLike = None, tilt_sigma: float = TILT_SIGMA,
                   curve_sigma: float = CURVE_SIGMA) -> np.ndarray:
    """A random smooth colour: every row times (lambda/6000)**beta * exp(gamma * P2(t)), t from -1 (blue
    end) to 1 (red end), then renormalised to a maximum of 1. The minimum pixel (0 after min-max
    normalisation) and masked pixels (0) stay 0, so the row is still min-max normalised."""
    rng = np.random.default_rng(rng)
    out = _rows(x)
    block = out.reshape(-1, out.shape[-1])
    n = block.shape[1]
    wave = np.interp(np.linspace(0, N_PIXELS - 1, n), np.arange(N_PIXELS), WAVELENGTH)
    t = np.linspace(-1.0, 1.0, n)
    beta = rng.normal(0.0, tilt_sigma, (len(block), 1))
    gamma = rng.normal(0.0, curve_sigma, (len(block), 1))
    block *= np.exp(beta * np.log(wave / 6000.0) + gamma * 0.5 * (3 * t**2 - 1)).astype(np.float32)
    peak = block.max(axis=1, keepdims=True)
    np.divide(block, peak, out=block, where=peak > 0)
    return out


def default_per_class(labels: np.ndarray, n_classes: int = len(CLASS_NAMES)) -> int:
    """The median class size: the middle class stays as it is, the largest is cut, the smallest grown.

    At the survey's mix that keeps every galaxy, oversamples QSOs ~4x and uses ~1 star in 85 per
    epoch (a fresh draw of stars each epoch, so all stars are seen over a run).
    """
    counts = np.bincount(labels, minlength=n_classes)
    return int(np.median(counts))


def balanced_epoch_indices(
    labels: np.ndarray, rng: RngLike, per_class: int | None = None, n_classes: int = len(CLASS_NAMES)
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's plan at 1:1:1: (indices into ``labels``, augment flags), shuffled together.

    Indices of a class larger than ``per_class`` are drawn without replacement; a smaller class
    contributes every member once (unaugmented) plus randomly drawn members flagged for augmentation.
    """
    rng = np.random.default_rng(rng)
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=n_classes)
    if len(counts) > n_classes or (labels < 0).any():
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {np.unique(labels).tolist()}")
    missing = [CLASS_NAMES[c] if c < len(CLASS_NAMES) else str(c) for c in range(n_classes) if counts[c] == 0]
    if missing:
        raise ValueError(f"cannot balance: no training spectra of class {', '.join(missing)}")
    per_class = default_per_class(labels, n_classes) if per_class is None else int(per_class)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    indices, augment = [], []
    for c in range(n_classes):
        members = np.flatnonzero(labels == c)
        if len(members) >= per_class:
            indices.append(rng.choice(members, per_class, replace=False))
            augment.append(np.zeros(per_class, bool))
        else:
            extra = rng.choice(members, per_class - len(members), replace=True)
            indices.append(np.concatenate([members, extra]))
            augment.append(np.concatenate([np.zeros(len(members), bool), np.ones(len(extra), bool)]))
    order = rng.permutation(per_class * n_classes)
    return np.concatenate(indices)[order], np.concatenate(augment)[order]


class BalancedSpectra(Dataset):
    """A training set balanced 1:1:1 afresh each epoch, oversampled copies augmented with ``combined``.

    Deterministic: the epoch's plan comes from (seed, epoch) and item i's noise from (seed, epoch, i),
    so batches, workers or a resumed run see the same data. ``flux`` may be a memory map: only the
    rows of a batch are read and copied.
    """

    def __init__(
        self,
        flux: np.ndarray,
        labels: np.ndarray,
        seed: int = 0,
        per_class: int | None = None,
        augment: bool = True,
        sigma: float = NOISE_SIGMA,
        max_length: int = BAD_PIXEL_MAX_LENGTH,
        artefact_fraction: float = 0.0,
        tilt_fraction: float = 0.0,
        arm_loss_fraction: float = 0.0,
    ) -> None:
        if len(flux) != len(labels):
            raise ValueError(f"{len(flux)} spectra but {len(labels)} labels")
        self.flux = flux
        self.labels = np.asarray(labels, dtype=np.int64)
        self.seed = seed
        self.per_class = per_class
        self.augment = augment
        self.sigma = sigma
        self.max_length = max_length
        self.artefact_fraction = artefact_fraction
        self.tilt_fraction = tilt_fraction
        self.arm_loss_fraction = arm_loss_fraction
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.indices, self.augmented = balanced_epoch_indices(self.labels, (self.seed, epoch), self.per_class)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, items: list[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        items = np.asarray(items)
        rows = self.indices[items]
        # Read in sorted order (fast on a memory map), then put back in the batch's order.
        order = np.argsort(rows, kind="stable")
        x = np.empty((len(rows), self.flux.shape[1]), np.float32)
        x[order] = self.flux[rows[order]]
        if self.augment:
            for j in range(len(items)):
                rng = np.random.default_rng((self.seed, self.epoch, int(items[j])))
                if self.augmented[items[j]]:
                    x[j] = combined(x[j], rng, self.sigma, self.max_length)
                if rng.random() < self.artefact_fraction:
                    x[j] = survey_artefacts(x[j], rng)
                # Drawn only when asked for, so that runs without tilts see the data they saw before.
                if self.tilt_fraction and rng.random() < self.tilt_fraction:
                    x[j] = continuum_tilt(x[j], rng)
                if self.arm_loss_fraction and rng.random() < self.arm_loss_fraction:
                    x[j] = arm_end_lost(x[j], rng)
        return torch.from_numpy(x), torch.from_numpy(self.labels[rows])

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([item])
        return x[0], y[0]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch in order, ``batch_size`` at a time (the plan is already shuffled)."""
        for start in range(0, len(self), batch_size):
            yield self.__getitems__(np.arange(start, min(start + batch_size, len(self))))
