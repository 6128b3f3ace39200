"""Redshift and spectral type by template fitting on the pipeline's grid, vectorised over a batch.

Every spectrum is fitted with the templates of the class the network gave it (``model/data/
redshift_templates.npz``, made by ``training/make_redshift_templates.py`` from the SDSS spEigen*
files and medians of real LAMOST stars), by least squares weighted with the spectrum's inverse variance, at redshifts that are whole
numbers of grid pixels (the grid is log-linear: a redshift is a shift):

- STAR: each typed star template (medians of real LAMOST stars per LAMOST subclass and colour, and spEigenStar
  spectra for the types those lack) times a degree-4 polynomial and a step across the arm join
  (``star_multiplier``: it absorbs flux-calibration and extinction tilts and the two arms' scales; a quadratic
  and the step in the first pass over all of them, which only shortlists); at the star's own radial velocity
  (the first type's fit over +-``STAR_MAX_SHIFT`` pixels) the shortlist is fitted again, and the letter
  classifier trained on real LAMOST stars (``model/star_letter.py``) gives the letter: the best template of
  that letter is the subclass (MK letter and subtype), unless the best of all is of a type the classifier does
  not give (O, B, WD, CV, C, L) or more than one letter from its letter, which is then the subclass; the best
  template's fit over that window gives the radial velocity (``_fit_stars``).
- GALAXY (spEigenGal, 4 eigenspectra) and QSO (spEigenQSO, 4 eigenspectra): the eigenspectra plus a
  quadratic polynomial and a ramp across the arm join, added. Every sum the normal equations need, at
  every shift, is a correlation of a template (or a product of two) with the spectrum's weights, so one
  FFT per sum gives the whole chi2(z) curve of a class's redshift range at once (galaxies: -0.005 to
  1.2, QSOs: 0 to 6). Solutions that need the mean eigenspectrum (eigenvector 0) with a negative
  amplitude are not taken.

A galaxy or QSO whose best fit misses a pixel by more than ``OUTLIER_SIGMA`` (a cosmic ray, an unmasked
spike, a sky residual), and a star whose best template's ``SPIKE_PIXELS`` worst pixels carry most of its
chi2, is fitted again with such pixels down-weighted to count as that many sigma, as in one step of
iteratively reweighted least squares; its ``chi2`` is then that of the second fit.
The redshift is the lowest chi2 of that curve, plus a Gaussian prior in log(1 + z) when the network's
redshift head gives a proposal (``proposal``; its sigma is floored at ``PRIOR_SIGMA_FLOOR`` so that an
overconfident head cannot overrule a clear fit), scaled by the best fit's reduced chi2 where that is
above 1 (``_misfit``: in a bright spectrum that no template describes well, template mismatch must not
outvote it), and the search kept within ``PRIOR_WINDOW_SIGMA`` of its sigmas of the proposal (a best at
the window's edge is flagged as one at the range's edge). A parabola through the minimum and its two
neighbours gives the sub-pixel redshift, and its curvature the 1-sigma error (delta chi2 = 1).
``delta_chi2`` is the chi2 of the second-best solution minus the best: for galaxies and QSOs the lowest
other local minimum more than ``EXCLUDE_KMS`` away (an ambiguous redshift when small, as redrock's ZWARN;
< 0 where one outside the proposal's window fits better), for stars the best template of another MK letter
(an ambiguous type; < 0 where the classifier's letter is not the one the templates alone fit best).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from lamost_classify.contract import (ARM_JOIN, CLASS_NAMES, LOG_WAVELENGTH, MIN_GOOD_PIXELS, N_PIXELS,
                                      PRIOR_WINDOW_SIGMA, SMALL_DELTA_CHI2, Flag)

from .star_letter import MK_ORDER, LetterClassifier, star_letter_features
from .subclass import C_KMS, KMS_PER_PIXEL, STEP, galaxy_subclass, qso_subclass

STAR_MAX_SHIFT = 4  # pixels: +-4 x 104 km/s, stellar radial velocities to ~400 km/s
N_POLY = 3  # polynomial terms (Legendre degree 0..2) added to the galaxy and QSO eigenspectra
# plus a ramp across the blue/red arm join: the two arms' flux scales differ by a few per cent, a step that
# a quadratic cannot follow and that a wrong redshift could otherwise explain with a template feature
STAR_N_POLY = 5  # terms of the polynomial multiplying each star template (degree 4: the continuum shape is
#   left to the polynomial, the type to the lines; 1-3 terms typed the real LAMOST stars worse)
STAR_RETYPE_BEST = 3  # shortlisted templates per star fitted again at its own radial velocity, besides the
#   best of the classifier's letter (the rest fit far worse)
# Below this median S/N per pixel the letter classifier's linear features read noise as lines: it only
# nominates its letter's best template to the refit, whose chi2 then types the star (README)
LETTER_MIN_SNR = 20.0
STAR_SHORTLIST_POLY = 3  # polynomial terms in the first pass over every template: it only shortlists
STAR_SHORTLIST_BIN = 2  # pixels summed (inverse-variance weighted) in that first pass, for half its sums: 2 x 104
#   km/s, about LAMOST's resolution element (R ~ 1,800: 170 km/s), is enough to shortlist
# Earth's atmosphere's absorption bands (O2 B and A, H2O), in A: they are in every LAMOST spectrum at z = 0,
# deeper or shallower with airmass and humidity, and no star's type; left out of the star fit, they no
# longer pull stars to templates whose bands happen to match.
STAR_TELLURIC_BANDS = ((6860.0, 6960.0), (7150.0, 7350.0), (7580.0, 7700.0), (8100.0, 8350.0), (8900.0, 9100.0))
EXCLUDE_KMS = {"GALAXY": 1000.0, "QSO": 3000.0}  # a second solution must lie this far from the best
# What the chi2 curvature does not see: templates that are not the object (a star template's own zero
# point, a galaxy's lines against the eigenspectra's, a QSO's broad lines shifted from its systemic
# redshift, its Lyman-alpha forest). Added in quadrature to every z_err: per class, and for QSOs per
# redshift range (its lines change), as (upper z, km/s) pairs; the floor for which the errors' pulls have
# NMAD 1: for galaxies on galaxies composed of real LAMOST stars (real continua scatter against the
# eigenspectra more than the mocks' do), for stars and QSOs on the three mock families pooled
# (training/calibrate_z_err.py; docs/redshift.md).
Z_ERR_FLOOR_KMS: dict[str, tuple[tuple[float, float], ...]] = {
    "STAR": ((np.inf, 9.0),), "GALAXY": ((np.inf, 35.0),),
    "QSO": ((1.6, 20.0), (2.5, 94.0), (np.inf, 322.0)),
}
SCAN_ROWS = 32  # galaxies or QSOs fitted together (bounds the memory of a batch that is all QSOs)
STAR_ROWS = 64  # stars fitted together
OUTLIER_SIGMA = 10.0  # residuals beyond this many sigma count as this many in every fit's second pass
# A star is fitted twice where its best template's SPIKE_PIXELS worst pixels carry most of its chi2: a few
# cosmic rays or spikes, not a template that differs from a bright star over hundreds of pixels.
SPIKE_PIXELS = 20
PRIOR_SIGMA_FLOOR = 0.01  # in log(1 + z): the head's proposal narrows the search, never to below this
# An ivar above this (normalised flux units: S/N 10^6 in a pixel of unit flux) is a file's nonsense, e.g. one
# saturated at float32's largest by pipeline/grid.py; weighed, that one pixel decides the fit. Such a
# pixel is left out (``usable_pixels``), as one with ivar <= 0 is.
IVAR_LIMIT = 1e12


@dataclass
class RedshiftResult:
    """Per spectrum of the batch (NaN / None where not fitted: no class, or no valid pixel)."""

    z: np.ndarray  # (B,) float64
    z_err: np.ndarray  # (B,) float64, 1 sigma from the chi2 curvature
    subclass: list[str | None]
    chi2: np.ndarray  # (B,) best chi2
    delta_chi2: np.ndarray  # (B,) second-best solution's chi2 minus the best (see the module docstring)
    n_good: np.ndarray  # (B,) valid pixels used
    small_delta_chi2: np.ndarray  # (B,) bool: galaxy/QSO redshift ambiguous (delta_chi2 < SMALL_DELTA_CHI2)
    at_edge: np.ndarray  # (B,) bool: best redshift at the edge of the class's range
    few_pixels: np.ndarray  # (B,) bool: fewer than MIN_GOOD_PIXELS valid pixels
    # z and z_err of the class the balanced prior picks (Classifier.predict_with_redshift fits it where it is
    # not the published class; equal to z, z_err elsewhere); None where nobody fitted it
    z_balanced: np.ndarray | None = None
    z_err_balanced: np.ndarray | None = None
    # the class index each row was fitted as (-1: none), and where the network's QSO (published or under the
    # balanced prior) had its lines at rest (fitted only below QSO_MIN_Z, or the Balmer series at rest) or showed
    # a narrow H-alpha alone (Classifier.predict_with_redshift)
    classes: np.ndarray | None = None
    no_qso_redshift: np.ndarray | None = None
    no_broad_line: np.ndarray | None = None
    galaxy_lines: np.ndarray | None = None  # the network's STAR showed a galaxy's emission lines: published GALAXY
    carbon_bands: np.ndarray | None = None  # a GALAXY (published or balanced) showed a carbon star's bands: STAR
    broad_h_alpha: np.ndarray | None = None  # a GALAXY showed a broad H-alpha beside a narrow one: published QSO

    @property
    def flags(self) -> np.ndarray:
        """(B,) int64: the catalog's redshift warning bits (contract.Flag.Z_*) and the class rules' (NO_QSO_REDSHIFT,
        NO_BROAD_LINE, GALAXY_LINES, CARBON_BANDS, BROAD_H_ALPHA)."""
        bits = [(self.small_delta_chi2, Flag.Z_SMALL_DELTA_CHI2), (self.at_edge, Flag.Z_FIT_LIMIT),
                (self.few_pixels, Flag.Z_FEW_PIXELS), (self.no_qso_redshift, Flag.NO_QSO_REDSHIFT),
                (self.no_broad_line, Flag.NO_BROAD_LINE), (self.galaxy_lines, Flag.GALAXY_LINES),
                (self.carbon_bands, Flag.CARBON_BANDS), (self.broad_h_alpha, Flag.BROAD_H_ALPHA)]
        flags = np.zeros(len(self.z), np.int64)
        for set_where, flag in bits:
            if set_where is not None:  # a class rule's mask is None where no rule ran
                flags |= np.where(set_where, int(flag), 0)
        return flags

    def replace_rows(self, rows: np.ndarray, other: RedshiftResult) -> None:
        """Rows ``rows`` of this result become ``other``'s (a fit of those rows alone, in that order)."""
        for name in ("z", "z_err", "chi2", "delta_chi2", "n_good", "small_delta_chi2", "at_edge", "few_pixels"):
            getattr(self, name)[rows] = getattr(other, name)
        for row, label in zip(rows, other.subclass):
            self.subclass[row] = label


@dataclass
class ClassTemplates:
    basis: torch.Tensor  # (K, M) float64, rest frame on the grid's step
    k0: int  # template pixel j sits at the grid's pixel (j - k0) at z = 0
    subclass: list[str] | None = None  # stars: one label per template

    @property
    def n_shifts(self) -> int:
        return self.basis.shape[1] - N_PIXELS + 1

    def z_of_offset(self, u: np.ndarray | float) -> np.ndarray:
        """Redshift of template offset ``u`` (the template pixel under grid pixel 0); shift s = k0 - u."""
        return 10.0 ** ((self.k0 - np.asarray(u, dtype=np.float64)) * STEP) - 1.0


def templates_path() -> Path:
    return Path(str(resources.files("lamost_classify.model") / "data" / "redshift_templates.npz"))


@functools.lru_cache(maxsize=2)
def load_templates(path: str | None = None) -> dict[str, ClassTemplates]:
    """The shipped template library (or ``path``), one ``ClassTemplates`` per class, checked against the grid."""
    file = Path(path) if path else templates_path()
    if not file.exists():
        raise FileNotFoundError(f"redshift templates {file} are missing: run training/make_redshift_templates.py")
    with np.load(file) as data:
        if abs(float(data["step"]) - STEP) > 1e-12 or abs(float(data["loglam_first_pixel"]) - LOG_WAVELENGTH[0]) > 1e-12:
            raise ValueError(f"{file} was made for another wavelength grid: rerun training/make_redshift_templates.py")
        return {c: ClassTemplates(torch.from_numpy(data[f"{c}_basis"].astype(np.float64)), int(data[f"{c}_k0"]),
                                  [str(s) for s in data["STAR_subclass"]] if c == "STAR" else None)
                for c in CLASS_NAMES}


@functools.lru_cache(maxsize=2)
def load_letter_classifier(path: str | None = None) -> LetterClassifier:
    """The star letter classifier stored with the shipped templates (or those at ``path``)."""
    file = Path(path) if path else templates_path()
    with np.load(file) as data:
        if "STAR_letter_weight" not in data:
            raise ValueError(f"{file} has no star letter classifier: rerun training/make_redshift_templates.py")
        return LetterClassifier.from_arrays(data)


def arm_join_ramp(log_wavelength: np.ndarray = LOG_WAVELENGTH) -> torch.Tensor:
    """(1, pixels) over ``log_wavelength`` (the pipeline grid's by default): 0 blueward of the arm join, 1
    redward, linear across ``ARM_JOIN``."""
    wavelength = 10.0 ** np.asarray(log_wavelength)
    lo, hi = ARM_JOIN
    return torch.from_numpy(np.clip((wavelength - lo) / (hi - lo), 0.0, 1.0)[None, :])


def legendre_basis(n_terms: int = N_POLY, n_pixels: int = N_PIXELS) -> torch.Tensor:
    """(n_terms, n_pixels) Legendre polynomials over the grid mapped to [-1, 1]."""
    x = np.linspace(-1.0, 1.0, n_pixels)
    return torch.from_numpy(np.stack([np.polynomial.legendre.Legendre.basis(k)(x) for k in range(n_terms)]))


def upper_pairs(n: int) -> list[tuple[int, int]]:
    """The (j, k) pairs, j <= k < n, in the order every fit here sums the products of its terms."""
    return [(j, k) for j in range(n) for k in range(j, n)]


@functools.cache
def pair_index(n: int) -> torch.Tensor:
    """(n, n) the position in ``upper_pairs(n)`` of each (j, k) and (k, j): sums[..., pair_index(n)] are
    the symmetric matrices of normal equations from their sums over the pairs."""
    index = torch.empty(n, n, dtype=torch.long)
    for i, (j, k) in enumerate(upper_pairs(n)):
        index[j, k] = index[k, j] = i
    return index


@functools.lru_cache(maxsize=8)
def star_multiplier(n_terms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What multiplies a star template, and its pieces: ``n_terms`` Legendre terms and the arm-join ramp
    (the two arms' flux scales differ, by up to 2x in real files: a step a polynomial cannot follow, which
    typed an F star K), (n_terms + 1, N), and their products P_j P_k over ``upper_pairs`` (pairs, N)
    float32, with which every spectrum's sums are one matmul."""
    poly = torch.cat([legendre_basis(n_terms), arm_join_ramp()])
    return poly, torch.stack([poly[j] * poly[k] for j, k in upper_pairs(len(poly))]).float()


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solutions of the normal equations a x = b (..., p, p), (..., p), lightly regularised so that
    a template that is zero under the valid pixels gives x = 0 instead of an error.

    The system is scaled to a unit diagonal first, so that the ridge is the same small fraction of every
    parameter's own scale: a ridge from the mean diagonal was dominated by a bright template (a QSO's
    rest-frame UV) and pinned the polynomial terms, which overstated chi2 at high redshift."""
    diagonal = torch.diagonal(a, dim1=-2, dim2=-1)
    # A template outside the window has a diagonal of FFT round-off, not zero: floor it far below the rest.
    floor = 1e-12 * diagonal.amax(-1, keepdim=True)
    scale = torch.sqrt(torch.maximum(diagonal, floor).clamp_min(1e-300))
    unit = a / (scale.unsqueeze(-1) * scale.unsqueeze(-2))
    unit = unit + 1e-9 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    x, info = torch.linalg.solve_ex(unit, (b / scale).unsqueeze(-1))
    if bool((info != 0).any()):  # round-off made a system singular: least squares for those alone
        bad = info != 0
        x[bad] = torch.linalg.pinv(unit[bad]) @ (b[bad] / scale[bad]).unsqueeze(-1)
    return x.squeeze(-1) / scale


def solve_each(sums: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``_solve`` for many small symmetric systems laid out along a last axis: ``sums`` (B, pairs, U) the
    matrices' entries over ``upper_pairs(n)``, ``b`` (B, n, U); returns x (B, n, U). The same scaling and
    ridge, solved by a Cholesky factorisation written out over whole (B, U) arrays; a system it cannot
    factor (not positive definite to round-off) goes to ``_solve`` alone."""
    n = b.shape[1]
    at = {pair: i for i, pair in enumerate(upper_pairs(n))}

    def entry(j: int, k: int) -> torch.Tensor:
        return sums[:, at[min(j, k), max(j, k)]]

    diagonal = torch.stack([entry(j, j) for j in range(n)], 1)
    floor = 1e-12 * diagonal.amax(1, keepdim=True)
    scale = torch.sqrt(torch.maximum(diagonal, floor).clamp_min(1e-300))  # (B, n, U)
    factor: dict[tuple[int, int], torch.Tensor] = {}  # lower triangle, L[j, k] for k <= j
    positive = torch.ones_like(b[:, 0], dtype=torch.bool)
    for k in range(n):
        pivot = entry(k, k) / scale[:, k].square() + 1e-9 - sum(factor[k, m].square() for m in range(k))
        positive &= pivot > 0
        factor[k, k] = torch.sqrt(pivot.clamp_min(1e-300))
        for j in range(k + 1, n):
            unit = entry(j, k) / (scale[:, j] * scale[:, k])
            factor[j, k] = (unit - sum(factor[j, m] * factor[k, m] for m in range(k))) / factor[k, k]
    y: list[torch.Tensor] = []
    for j in range(n):
        y.append((b[:, j] / scale[:, j] - sum(factor[j, m] * y[m] for m in range(j))) / factor[j, j])
    x: list[torch.Tensor] = [torch.empty(0)] * n
    for j in reversed(range(n)):
        x[j] = (y[j] - sum(factor[m, j] * x[m] for m in range(j + 1, n))) / factor[j, j]
    out = torch.stack(x, 1) / scale
    failed = torch.nonzero(~positive | ~torch.isfinite(out).all(1))
    if len(failed):
        rows, offsets = failed[:, 0], failed[:, 1]
        matrices = sums[rows, :, offsets][:, pair_index(n).to(sums.device)]  # (F, n, n)
        out[rows, :, offsets] = _solve(matrices, b[rows, :, offsets])
    return out


def fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFTs of such lengths run about as fast as of powers of two."""
    best = 1 << (n - 1).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            length = power35 << max(0, (n - 1) // power35).bit_length()  # times the smallest 2^a reaching n
            best = min(best, length)
            power35 *= 3
        power5 *= 5
    return best


def z_err_floor_kms(name: str, z: np.ndarray) -> np.ndarray:
    """The systematic floor (km/s) of a class's z_err at redshifts ``z`` (``Z_ERR_FLOOR_KMS``)."""
    upper, floor = np.array(Z_ERR_FLOOR_KMS[name]).T
    return floor[np.searchsorted(upper, np.asarray(z), side="right").clip(max=len(floor) - 1)]


def _z_err(name: str, z: np.ndarray, sigma_pixels: np.ndarray, reduced_chi2: np.ndarray) -> np.ndarray:
    """1-sigma of z: the chi2 curvature's (in pixels), scaled up by sqrt(reduced chi2) when the best
    template fits worse than the noise allows (template mismatch, underestimated noise), and the class's
    systematic floor at that z (``z_err_floor_kms``) added in quadrature."""
    formal = np.log(10.0) * STEP * sigma_pixels * np.sqrt(np.maximum(reduced_chi2, 1.0))
    return (1.0 + z) * np.hypot(formal, z_err_floor_kms(name, z) / C_KMS)


def _outlier_weight(squared: torch.Tensor) -> torch.Tensor:
    """The factor on each pixel's weight that makes its squared misfit in sigmas (``squared``) count as at
    most ``OUTLIER_SIGMA``: one step of iteratively reweighted least squares (1 where it is within)."""
    return (OUTLIER_SIGMA**2 / squared.clamp_min(torch.finfo(squared.dtype).tiny)).clamp(max=1.0)


def _misfit(allowed: torch.Tensor, dof: torch.Tensor) -> torch.Tensor:
    """(B,) the best fit's reduced chi2, at least 1: how much worse than its noise the templates describe
    each spectrum. Where they describe it badly (a bright spectrum unlike every template), chi2 differences
    between redshifts overstate the evidence by about that factor, so the proposal's prior is scaled by it
    to keep its weight against them (as if the errors were inflated to the misfit)."""
    best = allowed.min(1).values
    return torch.where(torch.isfinite(best), best / dof, torch.ones_like(best)).clamp_min(1.0)


def _best_shift(allowed: torch.Tensor, penalty: torch.Tensor, window: torch.Tensor,
                dof: torch.Tensor) -> torch.Tensor:
    """(B,) the shift of least chi2 plus the proposal's prior, within the proposal's window where any
    solution there is allowed, else over the whole range."""
    score = allowed + penalty * _misfit(allowed, dof)[:, None]
    inside = torch.where(window, score, torch.full_like(score, float("inf")))
    return torch.where(torch.isfinite(inside).any(1), inside.argmin(1), score.argmin(1))


def _curve_minimum(chi2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(position of the minimum in samples, sub-sample; its 1-sigma in samples; at the curve's edge) of
    chi2 curves (B, S), from a parabola through the lowest sample and its neighbours."""
    ar = torch.arange(len(chi2), device=chi2.device)
    best = chi2.argmin(1)
    edge = (best == 0) | (best == chi2.shape[1] - 1)
    mid = best.clamp(1, chi2.shape[1] - 2)
    offset, sigma = _parabola(chi2[ar, mid - 1], chi2[ar, mid], chi2[ar, mid + 1])
    offset = torch.where(edge, torch.zeros_like(offset), offset + (mid - best))
    return best + offset, sigma, edge


def _parabola(c_minus: torch.Tensor, c0: torch.Tensor, c_plus: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(offset of the vertex from the middle point in pixels, 1-sigma in pixels) of chi2 samples at -1, 0, +1.

    Where the three are not convex (the best allowed point next to a lower, excluded one), the vertex
    stays on the middle point and sigma comes from the rise to the higher neighbour, as if it were the
    parabola's (chi2 = c0 + rise s^2): wider than the curvature would give.
    """
    curvature = c_minus - 2 * c0 + c_plus
    ok = (curvature > 0) & torch.isfinite(curvature)
    safe = torch.where(ok, curvature, torch.ones_like(curvature))
    offset = torch.where(ok, 0.5 * (c_minus - c_plus) / safe, torch.zeros_like(c0)).clamp(-0.5, 0.5)
    rise = torch.maximum(c_minus, c_plus) - c0
    one_sided = torch.where(rise > 0, torch.rsqrt(rise.clamp_min(1e-300)), torch.full_like(c0, float("nan")))
    sigma = torch.where(ok, torch.sqrt(2.0 / safe), one_sided)
    return offset, sigma


class RedshiftFitter:
    """Fits batches of normalised spectra on the pipeline grid with their inverse variances.

    ``fit(flux, ivar, classes, proposal=None, pedestal=None)``: ``classes`` are class indices (-1: skip the
    row); ``proposal`` is the network head's (z, z_err) per row, or None; ``pedestal`` what the min-max
    normalisation subtracted per row (``grid.PreparedBatch.pedestal``; None: nothing), added back for the
    star fit, whose templates are spectra times a polynomial with no offset.
    """

    def __init__(self, templates: dict[str, ClassTemplates] | None = None, device: str | torch.device = "cpu",
                 star_poly: int = STAR_N_POLY, scan_poly: int = N_POLY) -> None:
        self.templates = templates or load_templates()
        self.device = torch.device(device)
        self.letters = load_letter_classifier()
        missing = set(self.letters.letters) - {_letter(s) for s in self.templates["STAR"].subclass}
        if missing:
            raise ValueError(f"the star letter classifier gives {sorted(missing)}, which no star template has")
        # each star template's letter as an index into the classifier's letters (-1: one it does not give),
        # and the classifier's letters' places in the MK sequence
        given = self.letters.letters
        self.template_letter = torch.tensor([given.index(_letter(s)) if _letter(s) in given else -1
                                             for s in self.templates["STAR"].subclass], device=self.device)
        self.letter_place = torch.tensor([MK_ORDER.index(c) for c in self.letters.letters], device=self.device)
        # each star template's letter, the classifier's or not, as an index
        _, letter = np.unique([_letter(s) for s in self.templates["STAR"].subclass], return_inverse=True)
        self.template_letter_any = torch.from_numpy(letter).to(self.device)
        self.poly = torch.cat([legendre_basis(scan_poly), arm_join_ramp()]).to(self.device)
        self.star_poly, self.star_pair_products = self._multiplier(star_poly)
        self.shortlist_poly, self.shortlist_pair_products = self._multiplier(STAR_SHORTLIST_POLY)
        stars = self.templates["STAR"]
        k0, shifts = stars.k0, np.arange(-STAR_MAX_SHIFT, STAR_MAX_SHIFT + 1)
        if k0 - shifts.max() < 0 or k0 - shifts.min() + N_PIXELS > stars.basis.shape[1]:
            raise ValueError("the star templates do not cover the radial-velocity window")
        self.star_shifts = shifts
        # each template over the grid and the velocity window's margins, (T, N + 2 STAR_MAX_SHIFT) float32,
        # and at rest, (T, N)
        self.star_window = stars.basis[:, k0 - shifts.max():k0 - shifts.min() + N_PIXELS].float().to(self.device)
        self.star_at_rest = self.star_window[:, STAR_MAX_SHIFT:STAR_MAX_SHIFT + N_PIXELS].contiguous()
        # the first pass's sums' factors on the binned grid, (T * pairs, M) and (T * terms, M): template t's
        # P_j P_k T_t^2 and P_j T_t in the rows t * pairs + pair and t * terms + j (T and P as bin means)
        at_rest = shortlist_bins(self.star_at_rest) / STAR_SHORTLIST_BIN
        poly = shortlist_bins(self.shortlist_poly.float()) / STAR_SHORTLIST_BIN
        pair_products = torch.stack([poly[j] * poly[k] for j, k in upper_pairs(len(poly))])
        squares = at_rest.square().unsqueeze(1) * pair_products.unsqueeze(0)  # (T, pairs, M)
        products = at_rest.unsqueeze(1) * poly.unsqueeze(0)  # (T, terms, M)
        self.shortlist_design = (squares.reshape(-1, poly.shape[1]).contiguous(),
                                 products.reshape(-1, poly.shape[1]).contiguous())
        self._spectra_fft: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _multiplier(self, n_terms: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What multiplies a star template (``star_multiplier``) on the fitter's device."""
        poly, products = star_multiplier(n_terms)
        return poly.to(self.device), products.to(self.device)

    # ------------------------------------------------------------------------------------------
    def fit(self, flux: np.ndarray, ivar: np.ndarray, classes: np.ndarray,
            proposal: tuple[np.ndarray, np.ndarray] | None = None,
            pedestal: np.ndarray | None = None) -> RedshiftResult:
        flux, ivar, classes = np.asarray(flux), np.asarray(ivar), np.asarray(classes)
        b = len(flux)
        good = usable_pixels(ivar)
        n_good = good.sum(1)
        weight = np.where(good, ivar, 0.0)  # the unusable pixels' ivar as 0
        out = RedshiftResult(z=np.full(b, np.nan), z_err=np.full(b, np.nan), subclass=[None] * b,
                             chi2=np.full(b, np.nan), delta_chi2=np.full(b, np.nan), n_good=n_good,
                             small_delta_chi2=np.zeros(b, bool), at_edge=np.zeros(b, bool),
                             few_pixels=(n_good < MIN_GOOD_PIXELS) & (classes >= 0),
                             classes=classes.astype(np.int64), no_qso_redshift=np.zeros(b, bool),
                             no_broad_line=np.zeros(b, bool), galaxy_lines=np.zeros(b, bool),
                             carbon_bands=np.zeros(b, bool), broad_h_alpha=np.zeros(b, bool))
        for label, name in enumerate(CLASS_NAMES):
            rows = np.flatnonzero((classes == label) & (n_good > 0))
            if len(rows) == 0:
                continue
            if name == "STAR":
                star_flux = flux[rows] if pedestal is None else flux[rows] + np.asarray(pedestal)[rows, None]
                self._fit_stars(star_flux.astype(np.float32), weight[rows].astype(np.float32), rows, out)
            else:
                # SCAN_ROWS at a time: a QSO's normal equations at every redshift take ~2 MB (~0.5 GB for 32).
                for part in np.array_split(rows, -(-len(rows) // SCAN_ROWS)):
                    prior = None if proposal is None else (np.asarray(proposal[0])[part], np.asarray(proposal[1])[part])
                    self._fit_scan(name, flux[part].astype(np.float64), weight[part].astype(np.float64), part, out,
                                   prior)
        return out

    # ------------------------------------------------------------------------------------------
    def _star_chi2(self, f: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """chi2 (B, T) of each spectrum, binned by ``STAR_SHORTLIST_BIN`` pixels, against each star template
        at rest times a polynomial of ``STAR_SHORTLIST_POLY`` terms: the first pass, which only shortlists
        (fewer terms and pixels than the fit that types, for a quarter of the sums; README gives what that
        changed on the real LAMOST stars).

        Model T(x) * sum_j a_j P_j(x): A_jk = sum w P_j P_k T^2 and b_j = sum w f P_j T are two matmuls
        of the batch's binned weights (times its flux) with every template's (squared) polynomial products
        (``shortlist_design``), then T small solves per spectrum. Each product P_j P_k has its own row:
        recombining the sums over fewer Legendre polynomials (degree <= 2 (n_poly - 1)) cancelled in float32
        at high S/N and gave chi2 < 0 for a template near zero over part of the grid (an M8 was the best
        fit to A stars).
        """
        squares, products = self.shortlist_design
        w32 = w.float()
        w_bin, wf_bin = shortlist_bins(w32), shortlist_bins(w32 * f.float())
        # sum over bins of w_bin f_bin^2, f_bin = wf_bin / w_bin: the binned spectrum's own weighted square
        wff = (wf_bin.double().square() / w_bin.double().clamp_min(1e-300)).sum(1)
        gram = pixel_sums(w_bin, squares).reshape(len(f), -1, len(self.shortlist_pair_products))
        rhs = pixel_sums(wf_bin, products).reshape(len(f), -1, len(self.shortlist_poly))
        coeffs = self._star_coefficients(gram, rhs)
        return wff.unsqueeze(1) - (rhs.double() * coeffs).sum(-1)

    def _star_misfits(self, f: torch.Tensor, w: torch.Tensor, templates: torch.Tensor,
                      choice: torch.Tensor) -> torch.Tensor:
        """Weighted squared residuals (B, K, N) of each spectrum against its own K templates (``choice``,
        (B, K) indices), each times its polynomial fitted by least squares. Their sum over pixels is the
        chi2: at high S/N chi2 is a small difference of large sums (``_star_chi2``), which float32 knows
        to ~1%, enough to shortlist templates but not to choose between close ones."""
        p = self.star_poly.float()
        t = templates[choice]  # (B, K, N)
        w32, f32 = w.float().unsqueeze(1), f.float().unsqueeze(1)
        wt = w32 * t
        coeffs = self._star_coefficients(pixel_sums(wt * t, self.star_pair_products), pixel_sums(wt * f32, p))
        residual = f32 - t * (coeffs.float() @ p)
        return w32 * residual.square()

    def _star_coefficients(self, gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        """Polynomial coefficients (..., n_poly), float64, from the sums of w T^2 P_j P_k over
        ``upper_pairs(n_poly)`` (..., pairs) and of w f T P_j (..., n_poly)."""
        return _solve(gram.double()[..., pair_index(rhs.shape[-1]).to(self.device)], rhs.double())

    def _fit_stars(self, flux: np.ndarray, ivar: np.ndarray, rows: np.ndarray, out: RedshiftResult) -> None:
        """``_fit_star_passes``, then once more for the rows where the best template's ``SPIKE_PIXELS``
        worst pixels carry most of its chi2 (a cosmic ray, an unmasked spike: one such pixel outweighs
        every line of the star, and a 100x cosmic ray typed an F5 star CV at the velocity window's edge),
        each pixel beyond ``OUTLIER_SIGMA`` down-weighted to count as that many sigma and left out of the
        letter classifier's features (which read a spike as a line: it moved G and K stars' letters). Not
        wherever a pixel is beyond it, as in the galaxy and QSO fits: a bright star differs from every
        template by more over hundreds of pixels, and its velocity and type were no better for a second
        pass (README)."""
        # STAR_ROWS at a time, through every pass: each pass's (rows, pixels) arrays then stay in the CPU's
        # cache, and the sums are in float32 (as the fit takes them) but for chi2's own.
        again, factors = [], []
        for part in (np.arange(i, min(i + STAR_ROWS, len(rows))) for i in range(0, len(rows), STAR_ROWS)):
            spiked, factor = self._fit_star_passes(flux[part], ivar[part], rows[part], out)
            again.append(part[spiked])
            factors.append(factor)
        again, factors = np.concatenate(again), np.concatenate(factors)
        for i in range(0, len(again), STAR_ROWS):
            part = again[i:i + STAR_ROWS]
            factor = factors[i:i + STAR_ROWS]
            self._fit_star_passes(flux[part], ivar[part] * factor, rows[part], out, factor < 1)

    def _fit_star_passes(self, flux: np.ndarray, ivar: np.ndarray, rows: np.ndarray, out: RedshiftResult,
                         outliers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Passes that spare each spectrum most templates at most shifts: every template at z = 0, with a
        ``STAR_SHORTLIST_POLY``-term polynomial, gives a first type and a shortlist; the first type's fit
        over +-``STAR_MAX_SHIFT`` pixels the radial velocity; on the spectrum moved to rest by that
        velocity (sub-pixel: a star at 100-200 km/s, common in the halo, has its lines one or two pixels
        off a rest-frame template) the letter classifier gives a letter, and the ``STAR_RETYPE_BEST``
        shortlisted templates plus the first pass's best of that letter are fitted again (the full
        polynomial): the best of that letter is the type, or the best of all where its letter is one the
        classifier does not give or not a neighbour of its letter, or where the spectrum's median S/N is
        below ``LETTER_MIN_SNR``; then delta chi2; the best template's fit over the window gives z, its
        error and chi2. Returns whether (B,) the best template's ``SPIKE_PIXELS`` worst pixels carry more
        than half its chi2, one of them beyond ``OUTLIER_SIGMA``, and, for those rows, the factor (S, N)
        at every observed pixel that makes its misfit there count as at most that (1 where it is within).
        Every pass leaves out the telluric bands (``STAR_TELLURIC_BANDS``), the letter classifier also the
        ``outliers`` (S, N), where given."""
        stars = self.templates["STAR"]
        n_t = len(stars.subclass)
        at_rest = self.star_at_rest
        f = torch.from_numpy(flux).to(self.device)
        # the catalog's snr_pixel (the flux here has the normalisation's pedestal back) from every 4th pixel: the
        # median of 650 is as good for a threshold, at a quarter of the cost
        f4, w4 = f[:, ::4], torch.from_numpy(ivar[:, ::4]).to(self.device)
        snr = torch.where(w4 > 0, f4 * w4.sqrt(), torch.nan).nanmedian(1).values
        ivar = ivar * star_telluric_free().astype(ivar.dtype)
        w = torch.from_numpy(ivar).to(self.device)
        wff = weighted_square(f, w)
        per_template = self._star_chi2(f, w)
        t_first = per_template.argmin(1)
        first_curve = self._star_shift_curve(f, w, wff, t_first)
        shift, _, edge = _curve_minimum(first_curve)
        # A velocity at the window's edge is no measurement: that spectrum is typed where it is.
        velocity = torch.where(edge, torch.zeros_like(shift), shift + float(self.star_shifts[0]))
        f_rest, w_rest = self._star_rest_frame(f.float(), w.float(), velocity.float())
        # LAMOST's letter boundaries are those of its own spectra: a classifier trained on all of its stars
        # draws them better than the one best template (held-out LAMOST stars: README).
        usable = w_rest > 0
        if outliers is not None:
            kept = w.float().masked_fill(torch.from_numpy(outliers).to(self.device), 0.0)
            usable = self._star_rest_frame(f.float(), kept, velocity.float())[1] > 0
        predicted = self.letters.predict(star_letter_features(f_rest, usable))
        inf = torch.tensor(float("inf"), dtype=torch.float64, device=self.device)
        of_letter = torch.where(self.template_letter[None, :] == predicted[:, None], per_template, inf)
        choice = torch.cat([per_template.topk(min(STAR_RETYPE_BEST, n_t), dim=1, largest=False).indices,
                            of_letter.argmin(1, keepdim=True)], 1)
        misfits = self._star_misfits(f_rest, w_rest, at_rest, choice)
        chosen = misfits.sum(-1).double()
        best_of_all = chosen.argmin(1, keepdim=True)
        t_fit = choice.gather(1, best_of_all).squeeze(1)
        agrees = self.template_letter[choice] == predicted[:, None]
        t_letter = choice.gather(1, torch.where(agrees, chosen, inf).argmin(1, keepdim=True)).squeeze(1)
        # It moves a star to a neighbouring letter only: a spectrum far from every LAMOST star it learnt
        # from (a late M dwarf, whose bands LAMOST's early M stars lack) is outside what it knows.
        fit_letter = self.template_letter[t_fit]
        apart = (self.letter_place[fit_letter.clamp_min(0)] - self.letter_place[predicted]).abs()
        neighbour = (fit_letter >= 0) & (apart <= 1)
        t_best = torch.where(neighbour & (snr >= LETTER_MIN_SNR), t_letter, t_fit)
        curve = first_curve.clone()
        # The velocity is the best-fitting template's, whichever letter the type takes.
        changed = torch.nonzero(t_fit != t_first).squeeze(1)
        if len(changed):
            curve[changed] = self._star_shift_curve(f[changed], w[changed], wff[changed], t_fit[changed])
        shift, sigma, edge = _curve_minimum(curve)
        shift = shift + float(self.star_shifts[0])
        best_chi2 = curve.min(1).values
        subclass = [stars.subclass[t] for t in t_best.tolist()]
        # delta chi2: the best shortlisted template of another letter against the type, in the typing fit
        # (< 0 where the classifier's letter is not the template fit's best); where the whole shortlist
        # shares the type's letter, the first pass's own (another scale).
        letter = self.template_letter_any
        other = letter[choice] != letter[t_best][:, None]
        own = torch.where(choice == t_best[:, None], chosen, inf).min(1).values
        delta = torch.where(other, chosen, inf).min(1).values - own
        first_other = torch.where(letter[None, :] != letter[t_best][:, None], per_template, inf).min(1).values
        first_delta = first_other - per_template.gather(1, t_best[:, None]).squeeze(1)
        delta = torch.where(torch.isfinite(delta), delta, first_delta)
        z = 10.0 ** (shift.cpu().numpy() * STEP) - 1.0
        dof = np.maximum((ivar > 0).sum(1) - len(self.star_poly), 1)
        out.z[rows] = z
        out.z_err[rows] = _z_err("STAR", z, sigma.cpu().numpy(), best_chi2.cpu().numpy() / dof)
        out.chi2[rows] = best_chi2.cpu().numpy()
        out.delta_chi2[rows] = delta.cpu().numpy()
        out.at_edge[rows] = edge.cpu().numpy()
        for r, label in zip(rows, subclass):
            out.subclass[r] = label
        squared = misfits.gather(1, best_of_all[:, :, None].expand(-1, -1, N_PIXELS)).squeeze(1)
        spiked = ((squared.topk(SPIKE_PIXELS, dim=1).values.sum(1) > 0.5 * squared.sum(1))
                  & (squared.max(1).values > OUTLIER_SIGMA**2))
        factor = self._observed_factor(_outlier_weight(squared[spiked]), velocity[spiked].floor().long())
        return spiked.cpu().numpy(), factor.cpu().numpy()

    @staticmethod
    def _observed_factor(rest_factor: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
        """Weights' factors (B, N) at the observed pixels from factors (B, N) at the rest-frame pixels of
        ``_star_rest_frame`` moved by ``whole`` (B,) whole pixels: an observed pixel takes the smallest of
        the two rest-frame pixels it was interpolated into."""
        b, n = rest_factor.shape
        pad = STAR_MAX_SHIFT + 2
        factor = torch.ones(b, n + 2 * pad, dtype=rest_factor.dtype, device=rest_factor.device)
        lower = torch.arange(pad, pad + n, device=rest_factor.device) + whole.unsqueeze(1)
        for index in (lower, lower + 1):
            factor.scatter_reduce_(1, index, rest_factor, reduce="amin")
        return factor[:, pad:pad + n]

    @staticmethod
    def _star_rest_frame(f: torch.Tensor, w: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spectra (B, N) and weights moved blueward by ``shift`` (B,) pixels (a redshift of that many
        pixels removed), by linear interpolation between valid neighbours, else the nearer one where it is
        valid; weight 0 where that is invalid or off the grid."""
        pad = STAR_MAX_SHIFT + 2
        f_pad, w_pad = torch.nn.functional.pad(f, (pad, pad)), torch.nn.functional.pad(w, (pad, pad))
        whole = shift.floor().long()
        t = (shift - whole).to(f.dtype).unsqueeze(1)
        lower = torch.arange(pad, pad + N_PIXELS, device=f.device) + whole.unsqueeze(1)  # (B, N) pixel below
        f0, f1 = f_pad.gather(1, lower), f_pad.gather(1, lower + 1)
        w0, w1 = w_pad.gather(1, lower), w_pad.gather(1, lower + 1)
        both = (w0 > 0) & (w1 > 0)
        # the interpolated value's variance, as the neighbours' variances weighted alike
        weight = 1.0 / ((1 - t) / w0.clamp_min(1e-30) + t / w1.clamp_min(1e-30))
        # One neighbour invalid (a masked pixel): the nearer one alone, when it is valid (weight 0 if not).
        nearer = t >= 0.5
        f_near, w_near = torch.where(nearer, f1, f0), torch.where(nearer, w1, w0)
        flux = torch.where(both, f0 + t * (f1 - f0), torch.where(w_near > 0, f_near, 0.0))
        return flux, torch.where(both, weight, w_near)

    def _star_shift_curve(self, f: torch.Tensor, w: torch.Tensor, wff: torch.Tensor,
                          template: torch.Tensor) -> torch.Tensor:
        """chi2 (B, S) of each spectrum against its own template (index per row) at every allowed shift
        (``wff``: the rows' ``weighted_square``), the template's polynomial fixed at its fit at z = 0 and
        only its scale refitted: a star's velocity is a pixel or two, which barely moves the continuum
        (velocities within 0.015 pixel of a full refit at every shift, for 2.4x less work)."""
        window = self.star_window[template]  # (B, N + 2 STAR_MAX_SHIFT): shift +STAR_MAX_SHIFT first
        at_rest = window[:, STAR_MAX_SHIFT:STAR_MAX_SHIFT + N_PIXELS]
        w32, f32 = w.float(), f.float()
        wt = w32 * at_rest
        coeffs = self._star_coefficients(pixel_sums(wt * at_rest, self.star_pair_products),
                                         pixel_sums(wt * f32, self.star_poly.float()))
        continuum = coeffs.float() @ self.star_poly.float()  # (B, N)
        # chi2(s) = sum w f^2 - (sum w f P T_s)^2 / sum w P^2 T_s^2, the scale of P T_s fitted, T_s the
        # window's slice (``star_shifts`` reversed); torch's sums round less than a matmul's
        a, b, squared = w32 * f32 * continuum, w32 * continuum.square(), window.square()
        starts = range(len(self.star_shifts) - 1, -1, -1)
        cross = torch.stack([(a * window[:, i:i + N_PIXELS]).sum(1) for i in starts], 1).double()
        norm = torch.stack([(b * squared[:, i:i + N_PIXELS]).sum(1) for i in starts], 1).double()
        return wff.unsqueeze(1) - cross.square() / norm.clamp_min(1e-300)

    # ------------------------------------------------------------------------------------------
    def _template_fft(self, name: str, n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
        """FFTs of a class's eigenspectra (K, F) and of their pairwise products (pairs, F), cached."""
        key = (name, n_fft)
        if key not in self._spectra_fft:
            e = self.templates[name].basis.to(self.device)
            products = torch.stack([e[i] * e[j] for i, j in upper_pairs(len(e))])
            self._spectra_fft[key] = (torch.fft.rfft(e, n_fft), torch.fft.rfft(products, n_fft))
        return self._spectra_fft[key]

    def _scan(self, name: str, f: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(chi2, coefficients, allowed chi2) of spectra ``f`` with weights ``w`` (B, N) at every offset of
        the class's templates: (B, U), (B, parameters, U), (B, U)."""
        tpl = self.templates[name]
        k, m = tpl.basis.shape
        n_u = tpl.n_shifts
        n_fft = fft_length(m)
        e_fft, ee_fft = self._template_fft(name, n_fft)
        p = self.poly
        n_poly = len(p)

        # Every sum at every offset u is a correlation sum_i signal[b, i] * template[u + i], a convolution
        # with the flipped signal; a circular one as long as the template is exact at these offsets (what
        # wraps round lands on the offsets past U, which are not read). All signals in one FFT.
        signals = torch.cat([w.unsqueeze(1), w.unsqueeze(1) * p.unsqueeze(0), (w * f).unsqueeze(1)], 1)
        s_fft = torch.fft.rfft(signals.flip(-1), n_fft)  # (B, 1 + n_poly + 1, F): w, w P_j, w f
        window = slice(N_PIXELS - 1, N_PIXELS - 1 + n_u)
        ee = torch.fft.irfft(ee_fft.unsqueeze(0) * s_fft[:, :1], n_fft)[..., window]  # (B, pairs, U): sum w E_i E_j
        ep = torch.fft.irfft(e_fft[None, :, None] * s_fft[:, None, 1:], n_fft)[..., window]  # (B, K, n_poly+1, U)
        cross, rhs_e = ep[:, :, :n_poly], ep[:, :, n_poly]  # sum w E_k P_j (B, K, n_poly, U); sum w f E_k (B, K, U)
        # The polynomial's own sums do not depend on the redshift: eliminate it (Schur complement), so that
        # each redshift solves a K x K system instead of a (K + n_poly) one. The offsets stay the last,
        # contiguous axis throughout: every step is then a few passes over (B, U) arrays (per-offset 4 x 4
        # matmuls and LAPACK calls cost more than the FFTs: bench/RESULTS.md).
        pp = torch.einsum("bn,jn,ln->bjl", w, p, p)
        rhs_p = (w * f) @ p.T  # (B, n_poly)
        eye = torch.eye(n_poly, dtype=torch.float64, device=self.device)
        pp_inv = torch.stack([_solve(pp, eye[j].expand_as(rhs_p)) for j in range(n_poly)], -1)  # (B, n_poly, n_poly)
        cross_pinv = torch.einsum("bkju,bjl->bklu", cross, pp_inv)  # (B, K, n_poly, U)
        reduced = torch.stack([ee[:, i] - (cross_pinv[:, j] * cross[:, l]).sum(1)
                               for i, (j, l) in enumerate(upper_pairs(k))], 1)  # (B, pairs, U)
        reduced_rhs = rhs_e - (cross_pinv * rhs_p[:, None, :, None]).sum(2)  # (B, K, U)
        x_e = solve_each(reduced, reduced_rhs)  # (B, K, U)
        x_p = torch.einsum("bjl,blu->bju", pp_inv, rhs_p.unsqueeze(-1) - (cross * x_e.unsqueeze(2)).sum(1))
        coeffs = torch.cat([x_e, x_p], 1)  # (B, K + n_poly, U)
        chi2 = (weighted_square(f, w) - (rhs_p * (pp_inv @ rhs_p.unsqueeze(-1)).squeeze(-1)).sum(1)).unsqueeze(1) \
            - (reduced_rhs * x_e).sum(1)  # (B, U)
        # Eigenspectrum 0 is the class's mean spectrum: a fit that needs it negative (the others then
        # build some other spectrum) is no galaxy or QSO at that redshift. ``allowed`` is the chi2 of the
        # others (all, for a spectrum with none); the parabola still reads the smooth unconstrained curve.
        physical = coeffs[:, 0] > 0
        physical |= ~physical.any(1, keepdim=True)
        return chi2, coeffs, torch.where(physical, chi2, torch.full_like(chi2, float("inf")))

    def _model_at(self, name: str, coeffs: torch.Tensor, u_best: torch.Tensor) -> torch.Tensor:
        """(B, N) the fitted spectrum of each row at its offset ``u_best``."""
        tpl = self.templates[name]
        k = len(tpl.basis)
        best = coeffs[torch.arange(len(coeffs), device=coeffs.device), :, u_best]  # (B, parameters)
        idx = u_best[:, None] + torch.arange(N_PIXELS, device=coeffs.device)[None, :]
        windows = tpl.basis.to(coeffs.device)[:, idx].transpose(0, 1)  # (B, K, N)
        return torch.einsum("bk,bkn->bn", best[:, :k], windows) + best[:, k:] @ self.poly

    def _fit_scan(self, name: str, flux: np.ndarray, ivar: np.ndarray, rows: np.ndarray, out: RedshiftResult,
                  prior: tuple[np.ndarray, np.ndarray] | None) -> None:
        tpl = self.templates[name]
        k = len(tpl.basis)
        n_u = tpl.n_shifts
        f = torch.from_numpy(flux).to(self.device)
        w = torch.from_numpy(ivar).to(self.device)
        nb = len(f)
        penalty = torch.zeros(nb, n_u, dtype=torch.float64, device=self.device)
        if prior is not None:
            z_grid = torch.from_numpy(tpl.z_of_offset(np.arange(n_u))).to(self.device)
            mu = torch.from_numpy(np.log1p(prior[0]).astype(np.float64)).to(self.device)
            sig = torch.from_numpy(np.asarray(prior[1], np.float64) / (1.0 + np.asarray(prior[0], np.float64)))
            sig = torch.nan_to_num(sig, nan=np.inf).clamp_min(PRIOR_SIGMA_FLOOR).to(self.device)
            gauss = ((torch.log1p(z_grid)[None, :] - mu[:, None]) / sig[:, None]) ** 2
            penalty = torch.where(torch.isfinite(mu)[:, None], gauss, penalty)
        # Nor is the search wider than PRIOR_WINDOW_SIGMA of the proposal's sigmas: a bright QSO's fit can prefer
        # an alias far from a right proposal (a BAL trough read as the Lyman-alpha forest, Lyman alpha on H
        # alpha) by more than the prior outweighs. A row whose window holds no allowed solution is searched
        # over the whole range (_best_shift).
        window = penalty <= PRIOR_WINDOW_SIGMA**2
        chi2, coeffs, allowed = self._scan(name, f, w)
        dof = torch.from_numpy(np.maximum((ivar > 0).sum(1) - k - len(self.poly), 1)).to(self.device)
        # One reweighting pass (a robust fit): a pixel the best fit misses by more than OUTLIER_SIGMA
        # (a cosmic ray, an unmasked spike, a sky residual) is down-weighted to count as OUTLIER_SIGMA, and
        # the scan is redone; otherwise one such pixel outweighs every line of the right redshift.
        first = _best_shift(allowed, penalty, window, dof)
        squared = (f - self._model_at(name, coeffs, first)) ** 2 * w
        again = (squared > OUTLIER_SIGMA**2).any(1)  # rows without such a pixel keep their first scan
        if bool(again.any()):
            w = w * _outlier_weight(squared)
            chi2[again], coeffs[again], allowed[again] = self._scan(name, f[again], w[again])
        u_best = _best_shift(allowed, penalty, window, dof)
        ar = torch.arange(nb, device=self.device)
        edge = (u_best == 0) | (u_best == n_u - 1)
        mid = u_best.clamp(1, n_u - 2)
        # at the window's edge the data want a redshift outside it: as at the range's edge, Z_FIT_LIMIT
        edge |= window[ar, u_best] & (~window[ar, mid - 1] | ~window[ar, mid + 1])
        offset, sigma = _parabola(chi2[ar, mid - 1], chi2[ar, mid], chi2[ar, mid + 1])
        offset = torch.where(edge, torch.zeros_like(offset), offset + (mid - u_best))
        u_hat = (u_best + offset).cpu().numpy()
        z = tpl.z_of_offset(u_hat)
        # Second solution: the lowest local minimum of chi2 further than EXCLUDE_KMS from the best.
        exclude = int(np.ceil(EXCLUDE_KMS[name] / KMS_PER_PIXEL))
        local_min = torch.isfinite(allowed)
        local_min[:, 1:] &= allowed[:, 1:] <= allowed[:, :-1]
        local_min[:, :-1] &= allowed[:, :-1] <= allowed[:, 1:]
        far = (torch.arange(n_u, device=self.device)[None, :] - u_best[:, None]).abs() > exclude
        second = torch.where(local_min & far, allowed, torch.full_like(allowed, float("inf"))).min(1).values
        best = chi2[ar, u_best]
        out.z[rows] = z
        out.z_err[rows] = _z_err(name, z, sigma.cpu().numpy(), (best / dof).cpu().numpy())
        out.chi2[rows] = best.cpu().numpy()
        delta = (second - best).cpu().numpy()
        out.delta_chi2[rows] = delta
        out.small_delta_chi2[rows] = delta < SMALL_DELTA_CHI2
        out.at_edge[rows] = edge.cpu().numpy()
        if name == "GALAXY":
            labels = galaxy_subclass(flux, ivar, z)
        else:  # the best fit is the continuum a BAL trough is measured against
            labels = qso_subclass(flux, ivar, self._model_at(name, coeffs, u_best).cpu().numpy(), z)
        for r, s in zip(rows, labels):
            out.subclass[r] = s


@functools.lru_cache(maxsize=1)
def star_telluric_free() -> np.ndarray:
    """(N_PIXELS,) 1.0 outside ``STAR_TELLURIC_BANDS``, 0.0 inside."""
    wavelength = 10.0 ** LOG_WAVELENGTH
    inside = np.zeros(N_PIXELS, bool)
    for lo, hi in STAR_TELLURIC_BANDS:
        inside |= (wavelength >= lo) & (wavelength <= hi)
    return np.where(inside, 0.0, 1.0)


def usable_pixels(ivar: np.ndarray) -> np.ndarray:
    """(B, N) bool: the pixels the fit weighs, those whose ivar is finite, > 0 and below ``IVAR_LIMIT``."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(ivar) & (ivar > 0) & (ivar < IVAR_LIMIT)


def shortlist_bins(x: torch.Tensor) -> torch.Tensor:
    """(..., N) -> (..., N // STAR_SHORTLIST_BIN): sums over runs of ``STAR_SHORTLIST_BIN`` pixels (the
    grid's last odd pixel left out)."""
    end = x.shape[-1] // STAR_SHORTLIST_BIN * STAR_SHORTLIST_BIN
    # strided slices added: 8x faster than a reshape and sum over a last axis of 2
    return sum(x[..., k:end:STAR_SHORTLIST_BIN] for k in range(STAR_SHORTLIST_BIN))


def pixel_sums(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Sums over the pixels of ``x`` (..., N) times each of ``rows`` (c, N): (..., c). Taken as
    rows @ x^T, the way round in which MKL runs products with few columns faster (bench/RESULTS.md)."""
    flat = x.reshape(-1, x.shape[-1])
    return (rows @ flat.T).T.reshape(*x.shape[:-1], len(rows))


def weighted_square(f: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(B,) sum of w f^2 in float64: chi2 is a small difference from it at high S/N."""
    f = f.double()
    return (w.double() * f * f).sum(1)


def _letter(subclass: str) -> str:
    return subclass if subclass in SPECIAL_TYPES else subclass[0]


SPECIAL_TYPES = ("WD", "CV", "C", "L")
