"""Does a spectrum show a carbon star's C2 Swan band heads at rest? Then it is no galaxy.

A carbon star's Swan bands are degraded to the violet: at each band head the flux drops going blue and
recovers slowly further blue, a sawtooth. A network that never saw a family's carbon stars can call them
GALAXY (docs/families.md: the `physical` fold's, balanced GALAXY 0.76-0.96), and at the survey's 98.5% stars
each such star costs the galaxies' precision more than a galaxy found gains. No galaxy has an edge at all
three heads (``HEADS``) at once within a Galactic star's velocity of rest, while the Lyman-alpha forest of a
z ~ 4 QSO, a 4000 A break or a G band can show one or two edges anywhere. So at each velocity the jump at a
head is the mean flux over ``WINDOW_A`` just red of it less the mean just blue of it (``GAP_A`` from the head
each side), relative to the spectrum's level there (the normalisation's pedestal given back), and a spectrum's
jump is its smallest over the three heads. The bands are at rest when that jump within +-``REST_KMS`` exceeds
the largest found at ``OFF_KMS`` from rest (where a sawtooth's heads are not) by ``MIN_EXCESS``, and every
head's jump at rest is ``MIN_SIGMA`` from zero. The cuts were set on the three mock families' galaxies (none
passes) and the `survey` and `eigen` families' carbon stars (docs/families.md, "A carbon star's bands are no
galaxy's").
"""

from __future__ import annotations

import numpy as np

from lamost_classify.contract import WAVELENGTH

from .broad_lines import C_KMS

HEADS = (4738.4, 5166.6, 5637.1)  # C2 Swan (1,0), (0,0), (0,1) band heads, vacuum A as the grid
WINDOW_A = 30.0  # each side's window beside a head
GAP_A = 3.0  # left out each side of a head: the edge itself, under the resolution
REST_KMS = np.arange(-600.0, 601.0, 100.0)  # Galactic stars' radial velocities
OFF_KMS = np.concatenate([np.arange(-20000.0, -1499.0, 250.0), np.arange(1500.0, 20001.0, 250.0)])
MIN_EXCESS = 0.2
MIN_SIGMA = 5.0
MIN_OFF_MEASURED = 0.5  # of OFF_KMS with every head's windows measurable


def swan_bands_at_rest(flux: np.ndarray, ivar: np.ndarray, pedestal: np.ndarray | None = None) -> np.ndarray:
    """(B,) bool: the three Swan band heads at rest (module docstring); False where a window at rest has no
    valid pixel or fewer than ``MIN_OFF_MEASURED`` of the velocities away from rest can be measured.
    ``flux`` and ``ivar`` (B, N_PIXELS), normalised as the network reads them; ``pedestal`` (B,), what the
    normalisation subtracted (``grid.PreparedBatch.pedestal``; None: 0)."""
    flux = np.asarray(flux, float)
    ivar = np.asarray(ivar, float).reshape(flux.shape)
    level = np.zeros(len(flux)) if pedestal is None else np.asarray(pedestal, float).reshape(len(flux))
    jump, sigma = _jumps(flux, ivar, level, np.concatenate([REST_KMS, OFF_KMS]))
    # an edge seen at rest says nothing unless the same spectrum could be measured away from rest too
    compared = np.isfinite(jump[:, len(REST_KMS):]).sum(axis=1) >= MIN_OFF_MEASURED * len(OFF_KMS)
    jump = np.where(np.isnan(jump), -np.inf, jump)
    at_rest = np.argmax(jump[:, :len(REST_KMS)], axis=1)
    rows = np.arange(len(flux))
    with np.errstate(invalid="ignore"):
        excess = jump[rows, at_rest] - jump[:, len(REST_KMS):].max(axis=1)
        return compared & (excess >= MIN_EXCESS) & (sigma[rows, at_rest] >= MIN_SIGMA)


def _jumps(flux: np.ndarray, ivar: np.ndarray, level: np.ndarray, velocities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, V) each: at each velocity, the smallest over the heads of the relative jump and of its significance."""
    valid = (ivar > 0) & np.isfinite(flux)
    zeros = np.zeros((len(flux), 1))
    # running sums over pixels, so that any window's mean and variance are two lookups
    total = np.hstack([zeros, np.cumsum(np.where(valid, flux, 0.0), axis=1)])
    count = np.hstack([zeros, np.cumsum(valid, axis=1)])
    variance = np.hstack([zeros, np.cumsum(np.where(valid, 1.0 / np.where(valid, ivar, 1.0), 0.0), axis=1)])

    def window(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.searchsorted(WAVELENGTH, low, "right"), np.searchsorted(WAVELENGTH, high, "left")
        n = count[:, hi] - count[:, lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, (total[:, hi] - total[:, lo]) / n, np.nan), (variance[:, hi] - variance[:, lo]) / n**2

    heads = np.multiply.outer(1.0 + np.asarray(velocities) / C_KMS, HEADS)  # (V, heads)
    red, red_var = window(heads + GAP_A, heads + GAP_A + WINDOW_A)  # (B, V, heads)
    blue, blue_var = window(heads - GAP_A - WINDOW_A, heads - GAP_A)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = (red - blue) / np.maximum(np.abs((red + blue) / 2 + level[:, None, None]), 1e-3)
        significance = (red - blue) / np.sqrt(red_var + blue_var)
    return relative.min(axis=2), significance.min(axis=2)
