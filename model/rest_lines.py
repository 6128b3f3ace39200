"""Does a spectrum show the Balmer series in emission at rest? A Galactic star's lines, not a QSO's.

A cataclysmic variable (and a dMe or Be star with strong lines) has broad Balmer lines at z ~ 0; the network
can call it QSO, and its QSO fit then aliases to wherever a QSO's lines fall on them (z 1.35 reads H-alpha as
Mg II, z 4.4 as Lyman-alpha, z 0.74 reads H-beta as Mg II), above ``QSO_MIN_Z``, where the at-rest test of
``published_class`` does not see it. So H-alpha, H-beta and H-gamma are fitted together, each in its own
window (+-``HALF_WINDOW_KMS``, a quadratic continuum), as Gaussians in emission sharing one radial velocity
(within +-``MAX_RV_KMS``) and one width (``SIGMA_KMS``); each line's significance is then divided by the square
root of its window's reduced chi-square where that exceeds 1, so a misfit does not count as a detection: lines
near those wavelengths but at other places or widths fit badly, and their scaled significance grows little
with S/N, while a star's lines at rest fit. The series is at rest when every line is ``MIN_SCALED_SIGNIFICANCE``
from zero and more so than the weakest of a QSO's strong lines (``QSO_LINES``) on the grid at the QSO fit's z,
fitted the same way: a QSO's lines fall near the series at some redshifts (at z 0.12 its H-gamma on H-beta,
He I and [Ne III] near H-alpha and H-gamma; at z 1.34 Mg II on H-alpha, Al III and C III] near H-gamma) and can
pass the cut at rest, but its own lines at its own z fit better, while an aliased star shows one of them at
most. The cut was set on the `physical` and `survey` mock families (docs/families.md, "A Balmer series at rest
is a star's").
"""

from __future__ import annotations

import functools

import numpy as np

from lamost_classify.contract import QSO_MIN_Z, WAVELENGTH

from .broad_lines import C_KMS, line_profiles, quadratic_continuum, solve_normal

BALMER = (6564.61, 4862.68, 4341.68)  # H-alpha, H-beta, H-gamma, vacuum A as the grid
QSO_LINES = (1215.67, 1549.06, 1908.73, 2798.75, 4862.68, 6564.61)  # Ly-alpha, C IV, C III], Mg II, H-beta, H-alpha
HALF_WINDOW_KMS = 8000.0  # each line's window: a CV's lines (sigma up to ~1,500 km/s) and continuum beside them
MIN_WINDOW_COVERAGE = 0.8  # fraction of each window's pixels that must be valid
MAX_RV_KMS = 500.0  # Galactic stars' radial velocities
RV_STEP_KMS = 50.0
SIGMA_KMS = 100.0 * 1.3 ** np.arange(12)  # 100-1,800 km/s: dMe to CV lines
MIN_SCALED_SIGNIFICANCE = 10.0

_LOG_GRID = np.log(WAVELENGTH)
_WINDOW_PIXELS = 2 * HALF_WINDOW_KMS / C_KMS / (_LOG_GRID[1] - _LOG_GRID[0])


def balmer_series_at_rest(flux: np.ndarray, ivar: np.ndarray, qso_z: np.ndarray) -> np.ndarray:
    """(B,) bool: H-alpha, H-beta and H-gamma in emission at rest, each ``MIN_SCALED_SIGNIFICANCE`` from zero,
    and, where the QSO fit's ``qso_z`` is a QSO's (``QSO_MIN_Z`` or more), more so than the weakest of a QSO's
    lines on the grid there (module docstring); False where a window at rest has too few valid pixels.
    ``flux`` and ``ivar`` (B, N_PIXELS)."""
    flux, ivar = np.asarray(flux, float), np.asarray(ivar, float).reshape(np.shape(flux))
    out = np.zeros(len(flux), bool)
    for row, z in enumerate(np.asarray(qso_z, float).reshape(len(flux))):
        weakest = np.min(line_significance(flux[row], ivar[row], BALMER))  # NaN where a window is missing
        if weakest >= MIN_SCALED_SIGNIFICANCE:
            if z < QSO_MIN_Z:  # at rest or nearly: a QSO's lines there would be these
                out[row] = True
                continue
            qso = line_significance(flux[row], ivar[row], QSO_LINES, z)
            out[row] = bool(np.isnan(qso).all() or weakest > np.nanmin(qso))
    return out


def line_significance(flux: np.ndarray, ivar: np.ndarray, lines: tuple[float, ...], z: float = 0.0) -> np.ndarray:
    """(len(lines),) each line's scaled significance at redshift ``z`` in their joint fit of one spectrum
    (module docstring): NaN for a line whose window has too few valid pixels (off the grid, masked), the others
    fitted together; 0 where no shared velocity and width has every such line in emission."""
    out = np.full(len(lines), np.nan)
    fits = {k: _window_fit(flux, ivar, rest * (1 + z)) for k, rest in enumerate(lines)}
    on_grid = [k for k, fit in fits.items() if fit is not None]
    if not on_grid:
        return out
    amplitude, error, chi2, dof = (np.stack(part) for part in zip(*(fits[k] for k in on_grid)))
    total = np.where((amplitude > 0).all(axis=0), chi2.sum(axis=0), np.inf)
    best = np.unravel_index(np.argmin(total), total.shape)
    if not np.isfinite(total[best]):
        out[on_grid] = 0.0
        return out
    at = (slice(None),) + best
    out[on_grid] = amplitude[at] / error[at] / np.sqrt(np.maximum(chi2[at] / dof, 1.0))
    return out


def _window_fit(flux: np.ndarray, ivar: np.ndarray,
                rest: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Weighted least squares of one line's window for every (velocity, width): the line's amplitude, its
    error and the chi-square, each (velocities, widths), and the degrees of freedom; None when too little of
    the window is valid."""
    pixels, lines = _window_lines(rest)
    valid = (ivar[pixels] > 0) & np.isfinite(flux[pixels])
    if valid.sum() < MIN_WINDOW_COVERAGE * _WINDOW_PIXELS:  # off the grid, or masked
        return None
    line, y, w = lines[..., valid], flux[pixels][valid], ivar[pixels][valid]
    continuum = quadratic_continuum(_LOG_GRID[pixels][valid])
    # the normal equations of continuum + line for every (velocity, width) from the columns' inner products
    weighted_line = line * w
    normal = np.empty(line.shape[:-1] + (4, 4))
    normal[..., :3, :3] = (continuum.T * w) @ continuum
    normal[..., :3, 3] = normal[..., 3, :3] = weighted_line @ continuum
    normal[..., 3, 3] = np.einsum("...p,...p->...", weighted_line, line)
    rhs = np.concatenate([np.broadcast_to((continuum.T * w) @ y, line.shape[:-1] + (3,)),
                          (weighted_line @ y)[..., None]], -1)
    coef, chi2 = solve_normal(normal, rhs, np.sum(w * y * y))
    error = np.sqrt(np.linalg.inv(normal + 1e-12 * np.eye(4))[..., -1, -1])
    return coef[..., -1], error, chi2, np.array(valid.sum() - 4, float)


@functools.lru_cache(maxsize=len(BALMER) + len(QSO_LINES))
def _window_lines(centre: float) -> tuple[np.ndarray, np.ndarray]:
    """The grid pixels of a line's window at ``centre`` (observed A) and the line's unit-area profiles there,
    (velocities, widths, pixels): the same for every spectrum at rest, so computed once."""
    pixels = np.flatnonzero(np.abs(_LOG_GRID - np.log(centre)) < HALF_WINDOW_KMS / C_KMS)
    rv = np.arange(-MAX_RV_KMS, MAX_RV_KMS + 1, RV_STEP_KMS)
    lines = line_profiles(_LOG_GRID[pixels], *np.broadcast_arrays((np.log(centre) + rv / C_KMS)[:, None],
                                                                  SIGMA_KMS[None, :]))
    return pixels, lines
