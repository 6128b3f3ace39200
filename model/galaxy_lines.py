"""Does a spectrum show a galaxy's emission lines at one redshift beyond the stars'? Then it is no star.

A network that never saw a kind of galaxy can call a plain emission-line galaxy STAR (docs/families.md: the
`physical` fold's star-forming, LINER and Seyfert galaxies at S/N 13-54). Its lines are not a star's: no
star shows [O II], [O III], [N II] or [S II] (a planetary nebula or a symbiotic star would, and is no
Galactic star of the survey either), nor H-alpha and H-beta at z >= ``MIN_Z`` (3,000 km/s, beyond any
Galactic velocity). So each line is looked for with a matched filter on the log-lambda grid (Gaussians of
``SIGMAS_PIXELS``, the continuum a weighted mean over +-``CONTINUUM_HALF_PIXELS``, each significance divided
by the square root of the reduced chi-square beside the line where that exceeds 1, so a star's absorption
forest or band heads do not count as a detection), in ``GROUPS`` that are independent evidence (a doublet with
its fixed ratio counts once); at some z from ``MIN_Z`` to ``MAX_Z`` at least ``MIN_GROUPS`` of them must each be
``MIN_SIGNIFICANCE`` from zero, one of them forbidden. A group whose line falls within ``VETO_KMS`` of a star's
own line at rest (``STELLAR_LINES``: a CV's, Be or dMe star's emission, Ca II, Paschen, Na D, M stars' TiO
band heads) does not count there, so an emission-line star cannot line up its lines as a galaxy's at an alias
z; and three groups, not two, so that two unmasked spikes cannot make a galaxy. The cuts were set on the three
mock families' stars and emission-line galaxies (docs/families.md, "A galaxy's emission lines are no star's").
"""

from __future__ import annotations

import numpy as np
import torch

from lamost_classify.contract import GALAXY_LINES_MIN_Z, WAVELENGTH

from .broad_lines import C_KMS

# (lines, flux ratios) per group, vacuum A as the grid; a group's first line is its strongest
GROUPS = {
    "[O II]": ((3728.48,), (1.0,)),  # the 3726/3729 doublet, unresolved at LAMOST's resolution
    "H-beta": ((4862.68,), (1.0,)),
    "[O III]": ((5008.24, 4960.30), (1.0, 1 / 2.98)),
    "H-alpha": ((6564.61,), (1.0,)),
    "[N II]": ((6585.27, 6549.86), (1.0, 1 / 2.95)),
    "[S II]": ((6718.29, 6732.67), (1.0, 1.0)),
}
FORBIDDEN = ("[O II]", "[O III]", "[N II]", "[S II]")
# a star's lines at rest, in emission (CVs, Be, dMe: Balmer, He I, He II, Ca II H, K and triplet, Paschen, O I,
# Fe II) or edges that look like one beside a trough (Na D; M stars' TiO band heads)
STELLAR_LINES = (
    6564.61, 4862.68, 4341.68, 4102.89, 3971.20, 3890.17, 3836.49, 3798.98,  # Balmer
    4027.3, 4472.7, 5877.2, 6679.99, 7067.1, 4687.0,  # He I, He II
    3934.78, 3969.59, 8500.36, 8544.44, 8664.52,  # Ca II
    9231.5, 9017.4, 8865.2, 8752.9, 8667.4, 8600.8, 8547.7, 8504.8,  # Paschen
    7774.2, 8448.6, 4925.0, 5018.4, 5170.5, 5891.6, 5897.6,  # O I, Fe II, Na D
    4956.0, 5168.0, 5448.0, 5598.0, 5849.0, 6160.0, 6653.0, 7055.0, 7590.0, 8434.0,  # TiO band heads
)
VETO_KMS = 700.0  # a star's velocity (+-500 km/s) and a line's half width
MIN_Z, MAX_Z = GALAXY_LINES_MIN_Z, 1.0  # beyond z ~0.8 only [O II] stays on the grid
SIGMAS_PIXELS = (1.0, 1.7, 3.0)  # ~100-300 km/s: LAMOST's resolution to a massive galaxy's lines
CONTINUUM_HALF_PIXELS = 30  # ~3,100 km/s each side
LINE_HALF_PIXELS = 5  # the line itself, left out of the misfit beside it
MIN_SIGNIFICANCE = 7.0  # a sigma above the lowest cut that no mock star passed (6)
MIN_GROUPS = 3
CHUNK_ROWS = 256  # rows at a time: the scan's arrays stay in cache

_LOG_GRID = np.log(WAVELENGTH)
_LOG_STEP = float(_LOG_GRID[1] - _LOG_GRID[0])
_SHIFTS = np.arange(int(np.ceil(np.log1p(MIN_Z) / _LOG_STEP)), int(np.log1p(MAX_Z) / _LOG_STEP) + 1)
# (groups, shifts): where the group's strongest line falls on a star's own line at rest (``STELLAR_LINES``)
_VETOED = np.stack([(np.abs(np.log(lines[0]) + _SHIFTS[:, None] * _LOG_STEP - np.log(STELLAR_LINES)) < VETO_KMS / C_KMS
                     ).any(axis=1) for lines, _ in GROUPS.values()])


def _line_place(rest: float) -> tuple[int, int, int]:
    """Where a line at ``rest`` falls over ``_SHIFTS``: the shifts [a, b) at which it lies on the grid (clear of
    the continuum's reach at the ends) and its pixel at shift a (contiguous on from there)."""
    pixel = int(round((np.log(rest) - _LOG_GRID[0]) / _LOG_STEP)) + _SHIFTS
    on_grid = np.flatnonzero((pixel >= CONTINUUM_HALF_PIXELS) & (pixel < len(_LOG_GRID) - CONTINUUM_HALF_PIXELS))
    return (int(on_grid[0]), int(on_grid[-1]) + 1, int(pixel[on_grid[0]])) if len(on_grid) else (0, 0, 0)


_LINE_PLACES = [[_line_place(rest) for rest in lines] for lines, _ in GROUPS.values()]
# a group's lines with their ratios as one unit-norm template: what divides its summed significances
_GROUP_NORMS = [np.sqrt(np.sum(np.square(ratios))) for _, ratios in GROUPS.values()]
_FORBIDDEN_ROWS = [list(GROUPS).index(g) for g in FORBIDDEN]


def find_galaxy_lines(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B,) bool, a galaxy's emission lines at one z from ``MIN_Z`` to ``MAX_Z`` (module docstring), and (B,)
    that z (the one with the most significance summed over the groups; NaN where none). ``flux`` and
    ``ivar`` (B, N_PIXELS), as the network reads them."""
    flux = np.atleast_2d(np.asarray(flux, float))
    ivar = np.asarray(ivar, float).reshape(flux.shape)
    found, z = np.zeros(len(flux), bool), np.full(len(flux), np.nan)
    for start in range(0, len(flux), CHUNK_ROWS):
        rows = np.arange(start, min(start + CHUNK_ROWS, len(flux)))
        line = _line_significance(flux[rows], ivar[rows])  # (widths, rows, pixels)
        # Each line's best width first: a bound on every group's significance (a doublet's two lines may
        # prefer two widths), so the rows it rules out are ruled out; the few left are scanned width by width.
        # Before that scan, the bound's own bound: each group's lines at their best anywhere on their reach.
        best = line.max(axis=0, keepdims=True)
        maybe = _may_be_found(best[0])
        maybe[maybe] = _found_at(_scan(best[:, maybe])).any(axis=1)
        if not maybe.any():
            continue
        significance = _scan(line[:, maybe])  # (groups, rows, shifts), NaN off the grid
        found_at = _found_at(significance)
        hit = rows[maybe]
        found[hit] = found_at.any(axis=1)
        score = np.where(found_at, np.where(significance > 0, significance, 0.0).sum(axis=0), -1.0)
        z[hit] = np.where(found[hit], np.expm1(_SHIFTS[score.argmax(axis=1)] * _LOG_STEP), np.nan)
    return found, z


def _may_be_found(line: np.ndarray) -> np.ndarray:
    """(B,) bool, a bound on ``_found_at(_scan(line[None])).any(axis=1)`` from ``line`` (B, N): ``MIN_GROUPS``
    groups, one of them forbidden, whose lines, each at its best on the pixels it reaches over the z range (not
    at one z, and without the veto), could add up to ``MIN_SIGNIFICANCE``."""
    reach = np.stack([sum(ratio * (line[:, first:first + b - a].max(axis=1) if b > a else -np.inf)
                          for (a, b, first), ratio in zip(places, ratios)) / norm
                      for places, (_, ratios), norm in zip(_LINE_PLACES, GROUPS.values(), _GROUP_NORMS)])
    return _enough_groups(reach >= MIN_SIGNIFICANCE * (1 - 1e-5))  # float32 sums in another order than _scan's


def _found_at(significance: np.ndarray) -> np.ndarray:
    """(B, shifts) bool: ``MIN_GROUPS`` groups counted there, one of them forbidden."""
    return _enough_groups((significance >= MIN_SIGNIFICANCE) & ~_VETOED[:, None, :])


def _enough_groups(counted: np.ndarray) -> np.ndarray:
    """``counted`` (groups, ...) bool reduced over the groups: ``MIN_GROUPS`` of them, one forbidden."""
    return (counted.sum(axis=0) >= MIN_GROUPS) & counted[_FORBIDDEN_ROWS].any(axis=0)


def _line_significance(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """(widths, B, N): a line's scaled significance centred on every pixel, for each width."""
    weight = np.where((ivar > 0) & np.isfinite(flux), ivar, 0.0)
    flux = np.where(weight > 0, flux, 0.0)
    (flux_sum,), (weight_sum,) = _running_sums(weight * flux), _running_sums(weight)
    residual = flux - flux_sum / np.maximum(weight_sum, 1e-30)  # less the running mean continuum
    valid, misfit = _running_sums((weight > 0).astype(float), True), _running_sums(weight * residual**2, True)
    chi2 = (misfit[0] - misfit[1]) / np.maximum(valid[0] - valid[1], 1.0)  # beside the line, not on it
    scale = np.sqrt(np.maximum(chi2, 1.0))
    amplitude, norm = _matched_filters(weight * residual, weight)  # (widths, B, N) each
    return np.where(norm > 0, amplitude / np.sqrt(np.maximum(norm, 1e-30)) / scale.astype(np.float32), 0.0)


def _scan(line: np.ndarray) -> np.ndarray:
    """(groups, B, shifts): each group's significance at every z of ``_SHIFTS`` from ``line`` (widths, B, N),
    the best of the widths (a group's lines with their ratios as one template); NaN where a line is off the
    grid."""
    m = len(_SHIFTS)
    out = np.empty((len(GROUPS), line.shape[1], m), np.float32)
    for g, (places, (_, ratios), norm) in enumerate(zip(_LINE_PLACES, GROUPS.values(), _GROUP_NORMS)):
        total = np.zeros(line.shape[:2] + (m,), np.float32)
        for (a, b, first), ratio in zip(places, ratios):
            if b == a:
                total[:] = np.nan
                continue
            total[..., :a] = np.nan
            total[..., b:] = np.nan
            total[..., a:b] += ratio * line[..., first:first + b - a]
        out[g] = np.max(total, axis=0) / norm
    return out


def _matched_filters(weighted_residual: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row correlated with a Gaussian of every width in ``SIGMAS_PIXELS`` (the line's amplitude estimate's
    numerator), and the weights with its square (the normaliser): (widths, B, N) each."""
    reach = int(np.ceil(3 * max(SIGMAS_PIXELS)))
    offsets = np.arange(-reach, reach + 1)
    taps = np.stack([np.exp(-0.5 * (offsets / sigma) ** 2) for sigma in SIGMAS_PIXELS])
    taps[np.abs(offsets)[None, :] > np.ceil(3 * np.array(SIGMAS_PIXELS))[:, None]] = 0.0
    with torch.no_grad():
        x = torch.from_numpy(np.stack([weighted_residual, weight], axis=1).astype(np.float32))  # (B, 2, N)
        kernel = torch.from_numpy(np.concatenate([taps, taps**2]).astype(np.float32))[:, None, :]  # (2 x widths, 1, K)
        y = torch.nn.functional.conv1d(x, kernel, padding=reach, groups=2)  # residual by taps, weight by taps**2
    y = y.numpy()
    k = len(SIGMAS_PIXELS)
    return y[:, :k].transpose(1, 0, 2), y[:, k:].transpose(1, 0, 2)


def _running_sums(x: np.ndarray, line_too: bool = False) -> tuple[np.ndarray, ...]:
    """Sums over pixels i-h .. i+h of each row (zero beyond the ends) for h = ``CONTINUUM_HALF_PIXELS`` and,
    with ``line_too``, ``LINE_HALF_PIXELS``, from one cumulative sum."""
    outer = CONTINUUM_HALF_PIXELS
    c = np.cumsum(np.pad(x, ((0, 0), (outer + 1, outer))), axis=1)
    n = x.shape[1]
    window = lambda h: c[:, outer + h + 1:outer + h + 1 + n] - c[:, outer - h:outer - h + n]  # noqa: E731
    return (window(outer), window(LINE_HALF_PIXELS)) if line_too else (window(outer),)
