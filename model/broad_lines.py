"""Does a spectrum show a narrow H-alpha and no broad one at a given redshift? What the catalog asks of a QSO.

A QSO (a type 1 AGN) has broad permitted lines; a star-forming galaxy, a Seyfert 2 or a LINER has narrow ones
only, and SDSS and LAMOST call those GALAXY. The network, shown such a galaxy with strong lines, can call it
QSO, and its QSO fit then lies at the galaxy's own redshift. So where H-alpha's window lies on the grid at the
QSO fit's redshift (z up to 0.33), the window is fitted twice by weighted least squares:

- narrow only: a quadratic continuum, H-alpha in emission, and the forbidden lines ([N II] and [O I] doublets
  at their fixed ratios, [S II] 6716 and 6731), Gaussians averaged over the pixel, H-alpha's width (up to
  ``BALMER_NARROW_MAX_KMS``: wider is a broad line's core) and the forbidden lines' width each chosen from a
  grid (they differ in LINERs), the whole at a velocity offset within +-``MAX_SHIFT_KMS`` of the fit's z;
- the same plus a broad H-alpha, sigma from ``contract.BROAD_MIN_SIGMA_KMS`` up (``BROAD_SIGMA_KMS``), in
  emission (a negative one would carve a broad line's peak into a narrow H-alpha and a trough).

The spectrum shows narrow lines only when the first fit's H-alpha is ``NARROW_MIN_SIGNIFICANCE`` sigma from
zero and the second fit rules a broad H-alpha out: its flux plus ``BROAD_UPPER_SIGMA`` sigma stays below
``BROAD_MAX_RATIO`` of the narrow H-alpha's, and it is not a wide one (sigma >= ``WIDE_SIGMA_KMS``, no narrow
line's wing) detected at ``WIDE_MIN_SIGNIFICANCE`` sigma, however faint beside the narrow line (a Seyfert 1.9
is a type 1 AGN). A faint component at the widest sigma of the grid is no such line: a Gaussian of FWHM 9,300
km/s spans most of the window, where it fits the curvature of a galaxy's continuum under H-alpha as well as
a line (a QSO's line that wide carries more flux than its narrow H-alpha, which the share cut sees). Not
judged: a spectrum too faint to rule a broad line out (a faint QSO whose narrow core shows and whose wings
drown), a window every fit of which wants a broad trough (a BAL, a wrong redshift), H-alpha off the grid. The
cuts were set on the `physical` and `survey` mock families at their true redshifts (docs/families.md, "Narrow
lines are not a QSO's").

The other way round, a spectrum shows a broad H-alpha (a type 1 AGN, whatever its host's light makes the
network say) when the narrow H-alpha is ``NARROW_MIN_SIGNIFICANCE`` sigma from zero and the second fit's broad
one is wide (sigma from ``WIDE_SIGMA_KMS`` to below the grid's widest, as above), carries at least
``BROAD_MAX_RATIO`` of the narrow line's flux and is ``BROAD_SHOWN_SIGNIFICANCE`` sigma from zero: set on the
same two families at their true redshifts (the weakest cut at which at most 2 of their 3,186 galaxies with
H-alpha on the grid pass; 190 of their 378 QSOs do), docs/families.md, "A galaxy shows no broad H-alpha".
"""

from __future__ import annotations

import numpy as np

from lamost_classify.contract import BROAD_MIN_SIGMA_KMS, WAVELENGTH

C_KMS = 299_792.458
H_ALPHA = 6564.61  # vacuum, as the grid
# Forbidden lines in H-alpha's window (vacuum A): each group is one column, its lines at fixed ratios.
FORBIDDEN = (
    ((6585.27, 6549.86), (1.0, 1 / 2.95)),  # [N II]
    ((6302.05, 6365.54), (1.0, 1 / 3.0)),  # [O I]
    ((6718.29,), (1.0,)),  # [S II]
    ((6732.67,), (1.0,)),
)
WINDOW = (6250.0, 6850.0)  # rest A
MIN_WINDOW_COVERAGE = 0.8  # fraction of the window's pixels that must be valid
# Narrow widths and offsets are searched coarse, then fine around the best: a coarse grid alone leaves a narrow
# line's misfit for a broad component to fill (a sigma of 150 km/s fitted from 120 and 170 took one of 39%).
NARROW_SIGMA_KMS = 50.0 * 1.4 ** np.arange(7)  # the forbidden lines': 50-376 km/s, then +-40% by 10%
BALMER_NARROW_MAX_KMS = 340.0  # H-alpha's: wider is a broad line's core
FINE_BALMER_STEP, FINE_FORBIDDEN_STEP = 1.04, 1.1
BROAD_SIGMA_KMS = BROAD_MIN_SIGMA_KMS * np.sqrt(2.0) ** np.arange(6)  # up to 5.7x: FWHM ~9,300 km/s
MAX_SHIFT_KMS = 400.0
SHIFT_STEP_KMS = 50.0  # then +-50 km/s by 12.5
NARROW_MIN_SIGNIFICANCE = 5.0
BROAD_MAX_RATIO = 0.7
BROAD_UPPER_SIGMA = 2.0
WIDE_SIGMA_KMS = 1900.0  # FWHM 4,500 km/s
WIDE_MIN_SIGNIFICANCE = 5.0
BROAD_SHOWN_SIGNIFICANCE = 35.0
PROFILE_REACH = 8.0  # sigmas: exp(-32) ~ 1e-14, below the solve's 1e-12 ridge

_LOG_GRID = np.log(WAVELENGTH)
_LOG_STEP = float(_LOG_GRID[1] - _LOG_GRID[0])
_SUBPIXELS = (np.arange(5) - 2) / 5 * _LOG_STEP


def window_on_grid(z: np.ndarray) -> np.ndarray:
    """(B,) bool: H-alpha's whole window lies on the grid at redshift ``z``."""
    z = np.asarray(z, float)
    return (WINDOW[0] * (1 + z) >= WAVELENGTH[0]) & (WINDOW[1] * (1 + z) <= WAVELENGTH[-1])


def narrow_lines_only(flux: np.ndarray, ivar: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(B,) bool: H-alpha's window is on the grid at ``z`` (finite), enough of it valid, and it shows a narrow
    H-alpha and no broad one (module docstring). ``flux`` and ``ivar`` (B, N_PIXELS), in any one unit."""
    return _verdicts(flux, ivar, z, "narrow_only")


def broad_line_shown(flux: np.ndarray, ivar: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(B,) bool: H-alpha's window is on the grid at ``z`` (finite), enough of it valid, and it shows a narrow
    H-alpha and beside it a broad one (module docstring). ``flux`` and ``ivar`` (B, N_PIXELS), any one unit."""
    return _verdicts(flux, ivar, z, "broad_shown")


def _verdicts(flux: np.ndarray, ivar: np.ndarray, z: np.ndarray, verdict: str) -> np.ndarray:
    flux, ivar = np.asarray(flux, float), np.asarray(ivar, float)
    z = np.asarray(z, float).reshape(len(flux))
    out = np.zeros(len(flux), bool)
    for row in np.flatnonzero(np.isfinite(z) & window_on_grid(np.nan_to_num(z, nan=-1.0))):
        fit = fit_h_alpha(flux[row], ivar[row], float(z[row]))
        out[row] = fit is not None and fit[verdict]
    return out


def line_profiles(log_wave: np.ndarray, centre: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """(..., pixels) unit-area Gaussians in velocity, averaged over each pixel; ``centre`` (log A) and
    ``sigma`` (km/s) broadcast together."""
    v = ((log_wave[:, None] + _SUBPIXELS) - centre[..., None, None]) * C_KMS
    area = sigma[..., None] / C_KMS / _LOG_STEP * np.sqrt(2 * np.pi)
    return np.exp(-0.5 * (v / sigma[..., None, None]) ** 2).mean(-1) / area


def quadratic_continuum(log_wave: np.ndarray) -> np.ndarray:
    """(pixels, 3): 1, x and x^2 of the pixels' place in their window (x from -1/2 to 1/2), a window's continuum."""
    x = (log_wave - log_wave.mean()) / np.ptp(log_wave)
    return np.stack([np.ones_like(x), x, x * x], -1)


def solve_normal(normal: np.ndarray, rhs: np.ndarray, weighted_square: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares from its normal equations, for each of the stack (..., k, k) and (..., k):
    coefficients and chi2, with ``weighted_square`` the data's sum of ivar * flux**2."""
    coef = np.linalg.solve(normal + 1e-12 * np.eye(normal.shape[-1]), rhs[..., None])[..., 0]
    return coef, weighted_square - np.einsum("...i,...i->...", coef, rhs)


def fit_h_alpha(flux: np.ndarray, ivar: np.ndarray, z: float) -> dict | None:
    """The two fits of H-alpha's window of one spectrum at ``z`` (module docstring): None when too little of
    the window is valid; else the narrow-only fit's H-alpha in sigmas from zero (``narrow_significance``), the
    second fit's broad ``sigma_kms``, its flux's ``ratio`` to the narrow H-alpha's, that ratio's upper bound
    (``ratio_upper``) and the broad flux in sigmas from zero (``broad_significance``), and the verdicts,
    ``narrow_only`` and ``broad_shown``."""
    rest = WAVELENGTH / (1 + z)
    valid = (rest > WINDOW[0]) & (rest < WINDOW[1]) & (ivar > 0) & np.isfinite(flux)
    if valid.sum() < MIN_WINDOW_COVERAGE * np.log(WINDOW[1] / WINDOW[0]) / _LOG_STEP:
        return None
    window = _Window(_LOG_GRID[valid], flux[valid], ivar[valid], np.log(1 + z))
    # narrow only: coarse, then fine around the best
    shift, balmer, forbidden = window.best_narrow(np.arange(-MAX_SHIFT_KMS, MAX_SHIFT_KMS + 1, SHIFT_STEP_KMS),
                                                  NARROW_SIGMA_KMS[NARROW_SIGMA_KMS <= BALMER_NARROW_MAX_KMS],
                                                  NARROW_SIGMA_KMS)[0]
    fine_shifts = shift + np.arange(-4, 5) * SHIFT_STEP_KMS / 4
    fine_balmer = balmer * FINE_BALMER_STEP ** np.arange(-9, 10)
    fine_balmer = fine_balmer[fine_balmer <= BALMER_NARROW_MAX_KMS]
    (shift, balmer, forbidden), narrow_significance = window.best_narrow(
        fine_shifts, fine_balmer, forbidden * FINE_FORBIDDEN_STEP ** np.arange(-3, 4))
    if not np.isfinite(narrow_significance):
        return {"narrow_significance": 0.0, "sigma_kms": np.nan, "ratio": np.nan, "ratio_upper": np.nan,
                "broad_significance": np.nan, "narrow_only": False, "broad_shown": False}
    # plus a broad H-alpha in emission, next to the narrow fit's offset, at every fine H-alpha width
    coef, chi2, normal = window.solve(shift + np.arange(-1, 2) * SHIFT_STEP_KMS / 4, fine_balmer, np.array([forbidden]),
                                      BROAD_SIGMA_KMS)
    chi2 = np.where(coef[..., -1] >= 0, chi2, np.inf)
    best = np.unravel_index(np.argmin(chi2), chi2.shape)
    if not np.isfinite(chi2[best]):  # every fit wants a broad trough: a misfit window (a BAL, a wrong z)
        return {"narrow_significance": narrow_significance, "sigma_kms": np.nan, "ratio": np.nan,
                "ratio_upper": np.nan, "broad_significance": np.nan, "narrow_only": False, "broad_shown": False}
    c = coef[best]
    error = float(np.sqrt(np.linalg.inv(normal[best])[-1, -1]))
    # beside a broad line the narrow H-alpha may vanish: then the line is all broad
    narrow = float(c[3])
    ratio = float(c[-1]) / narrow if narrow > 0 else np.inf
    ratio_upper = float(c[-1] + BROAD_UPPER_SIGMA * error) / narrow if narrow > 0 else np.inf
    sigma = float(BROAD_SIGMA_KMS[best[3]])
    broad_significance = float(c[-1]) / error
    wide = WIDE_SIGMA_KMS <= sigma < BROAD_SIGMA_KMS[-1]
    narrow_shows = narrow_significance >= NARROW_MIN_SIGNIFICANCE
    return {"narrow_significance": narrow_significance, "sigma_kms": sigma, "ratio": ratio, "ratio_upper": ratio_upper,
            "broad_significance": broad_significance,
            "narrow_only": bool(narrow_shows and ratio_upper < BROAD_MAX_RATIO
                                and not (wide and broad_significance >= WIDE_MIN_SIGNIFICANCE)),
            "broad_shown": bool(narrow_shows and wide and ratio >= BROAD_MAX_RATIO
                                and broad_significance >= BROAD_SHOWN_SIGNIFICANCE)}


class _Window:
    """H-alpha's window of one spectrum: its valid pixels, and least squares over grids of line models. Every
    combination's normal equations are read from one Gram matrix per offset of all its distinct columns (the
    continuum, a narrow H-alpha per width, a forbidden group per width, a broad H-alpha per width), not summed
    over each combination's design matrix: the same sums, tens of columns instead of thousands of designs."""

    def __init__(self, log_wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, log_z: float):
        self.log_wave, self.flux, self.ivar, self.log_z = log_wave, flux, ivar, log_z
        self.continuum = quadratic_continuum(log_wave)

    def lines(self, rest_wave: float, shifts: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
        """(shifts, sigmas, pixels) unit-area lines at ``rest_wave`` offset by ``shifts`` km/s, zero beyond
        ``PROFILE_REACH`` sigmas of the farthest offset (where a Gaussian is below 1e-14 of its peak)."""
        centre = np.log(rest_wave) + self.log_z + shifts / C_KMS
        reach = (np.abs(shifts).max() + PROFILE_REACH * sigmas.max()) / C_KMS
        near = np.flatnonzero(np.abs(self.log_wave - (np.log(rest_wave) + self.log_z)) <= reach + _LOG_STEP)
        out = np.zeros((len(shifts), len(sigmas), len(self.log_wave)))
        if len(near):
            out[..., near] = line_profiles(self.log_wave[near], *np.broadcast_arrays(centre[:, None], sigmas[None, :]))
        return out

    def solve(self, shifts: np.ndarray, balmer: np.ndarray, forbidden: np.ndarray,
              broad: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weighted least squares for every combination of the offsets and widths: coefficients, chi2 and normal
        matrix, each (shifts, balmer, forbidden[, broad], ...), of the columns continuum (3), narrow H-alpha, the
        forbidden groups (each at its own fixed ratios) [, broad H-alpha]."""
        n_shifts, n_pixels, g = len(shifts), len(self.flux), len(FORBIDDEN)
        groups = np.stack([sum(r * self.lines(x, shifts, forbidden) for x, r in zip(waves, ratios))
                           for waves, ratios in FORBIDDEN], 2)  # (shifts, forbidden, groups, pixels)
        columns = [np.broadcast_to(self.continuum.T, (n_shifts, 3, n_pixels)), self.lines(H_ALPHA, shifts, balmer),
                   groups.reshape(n_shifts, -1, n_pixels)]
        if broad is not None:
            columns.append(self.lines(H_ALPHA, shifts, broad))
        columns = np.concatenate(columns, 1)  # (shifts, distinct columns, pixels)
        weighted = columns * self.ivar
        gram, projections = weighted @ columns.transpose(0, 2, 1), weighted @ self.flux
        # each combination's columns, in their order, as places among the distinct ones
        grid = (len(balmer), len(forbidden)) + (() if broad is None else (len(broad),))
        at = np.indices(grid)[..., None]
        index = [np.broadcast_to(np.arange(3), grid + (3,)), 3 + at[0], 3 + len(balmer) + at[1] * g + np.arange(g)]
        if broad is not None:
            index.append(3 + len(balmer) + len(forbidden) * g + at[2])
        index = np.concatenate(index, -1)[None]  # (1, *grid, k)
        shift = np.arange(n_shifts).reshape((-1,) + (1,) * len(grid) + (1,))
        normal = gram[shift[..., None], index[..., :, None], index[..., None, :]]
        return *solve_normal(normal, projections[shift, index], np.sum(self.ivar * self.flux**2)), normal

    def best_narrow(self, shifts: np.ndarray, balmer: np.ndarray,
                    forbidden: np.ndarray) -> tuple[tuple[float, float, float], float]:
        """The narrow-only fit with H-alpha in emission over the grid: its (shift, H-alpha's width, the forbidden
        lines' width) and H-alpha in sigmas from zero (NaN where no fit has it in emission)."""
        coef, chi2, normal = self.solve(shifts, balmer, forbidden)
        chi2 = np.where(coef[..., 3] > 0, chi2, np.inf)
        best = np.unravel_index(np.argmin(chi2), chi2.shape)
        if not np.isfinite(chi2[best]):
            return (0.0, float(balmer[0]), float(forbidden[0])), np.nan
        significance = float(coef[best][3] / np.sqrt(np.linalg.inv(normal[best])[3, 3]))
        return (float(shifts[best[0]]), float(balmer[best[1]]), float(forbidden[best[2]])), significance
