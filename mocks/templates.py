"""Rest-frame spectral templates for the mock simulator, read from real template files.

Every template set ends up on the same kind of grid: log-uniform rest wavelength (vacuum), step
``REST_LOG_STEP`` = 2.5e-5 dex (a quarter of a LAMOST pixel), so that shifting by a redshift is a shift
in log wavelength and linear interpolation costs no resolution. Each set remembers the resolving power
its spectra have after loading (``resolution``); the instrument model smooths the rest of the way down to
the LAMOST line-spread function per mock.

Sets read from a template directory (``--templates``, default ``../shared/data/templates``):

=================  ======  ==================================================================
set                class   source
=================  ======  ==================================================================
sdss-star          STAR    spEigenStar-55734: 123 real stellar spectra (NAME0..NAME122 = types)
rr-star-<T>        STAR    redrock rrtemplate-STAR-<T>-v0.1: ARCHETYPE_COEFF x BASIS_VECTORS
rr-galaxy          GALAXY  redrock rrtemplate-galaxy: 750 archetypes
sdss-galaxy        GALAXY  spEigenGal-56436: 4 eigenspectra, coefficients drawn around eigen 0
sdss-qso           QSO     spEigenQSO-55732: 4 eigenspectra; z drawn from its HDU 1 REDSHIFT
rr-qso-loz/hiz     QSO     redrock rrtemplate-QSO-LOZ/HIZ-v1.1: 4 eigenvectors; z from REDSHIFTS
=================  ======  ==================================================================

Without a template directory :func:`analytic_templates` builds a small built-in library (black-body-like
continua with line lists) so ``simulate`` works on a fresh machine; it is much less realistic.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

C_KMS = 299792.458
SIGMA_PER_FWHM = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
REST_LOG_STEP = 2.5e-5  #: dex per rest-frame sample

#: Resolving power of the SDSS/BOSS spectra the spEigen* files were made from (about 1800-2200).
SDSS_RESOLUTION = 2000.0
#: The redrock templates are far sharper than LAMOST; they are smoothed to this R when read, which keeps
#: them sharper than any LAMOST LSF the instrument model may draw.
REDROCK_RESOLUTION = 3000.0

LYA = 1215.67
#: Vacuum rest wavelengths of lines used to sort galaxies into emission-line and passive ones.
HALPHA, OII = 6564.61, 3728.48


@dataclass
class TemplateSet:
    """A family of rest-frame spectra on a log grid.

    Spectra are ``coeffs @ basis``. A library of fixed spectra (the 123 SDSS stars) has ``coeffs=None``
    and each basis row is one spectrum. Archetype sets have one coefficient row per archetype. Eigen
    sets (QSOs, spEigenGal) have ``coeffs=None`` and ``eigen=True``: coefficients are drawn around the
    first eigenspectrum by :meth:`draw`.
    """

    name: str
    objclass: str  # STAR, GALAXY or QSO
    loglam0: float  # log10 of the first rest wavelength
    basis: np.ndarray  # (k, n) float32
    resolution: float  # resolving power of the loaded spectra
    labels: list[str]  # subclass of each spectrum (library/archetype) or of the set (eigen: one label)
    coeffs: np.ndarray | None = None  # (m, k) archetype coefficients
    eigen: bool = False
    eigen_spread: float = 0.12  # sigma of the fractional coefficients of eigenvectors 1.. (eigen sets)
    redshifts: np.ndarray | None = None  # a table to draw z from (QSO sets)
    template_names: list[str] = field(default_factory=list)  # per spectrum (library/archetype)

    @property
    def n_pixels(self) -> int:
        return self.basis.shape[1]

    @property
    def loglam(self) -> np.ndarray:
        return self.loglam0 + REST_LOG_STEP * np.arange(self.n_pixels)

    @property
    def wave_range(self) -> tuple[float, float]:
        return 10.0**self.loglam0, 10.0 ** (self.loglam0 + REST_LOG_STEP * (self.n_pixels - 1))

    def __len__(self) -> int:
        if self.eigen:
            return 1
        return len(self.coeffs) if self.coeffs is not None else len(self.basis)

    def spectra(self, index: np.ndarray) -> np.ndarray:
        """The rest-frame spectra number ``index`` (library/archetype sets), clipped at zero."""
        index = np.asarray(index)
        out = self.basis[index] if self.coeffs is None else self.coeffs[index] @ self.basis
        return np.clip(out, 0.0, None).astype(np.float32)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str], list[str]]:
        """``n`` spectra with their subclass and template name.

        Eigen sets: spectrum = e0 + sum_k a_k e_k with unit-norm eigenvectors and a_k ~ N(0, spread);
        a draw whose continuum goes negative anywhere (smoothed over ~20 A, so noise in the templates'
        far ends does not count) is rejected and drawn again. That keeps every mock a physical spectrum.
        """
        if not self.eigen:
            index = rng.integers(0, len(self), n)
            return self.spectra(index), [self.labels[i] for i in index], [self.template_names[i] for i in index]
        unit = self.basis / np.linalg.norm(self.basis, axis=1, keepdims=True)
        out = np.empty((n, self.n_pixels), np.float32)
        filled = 0
        for _ in range(50):
            a = rng.normal(0.0, self.eigen_spread, (n - filled, len(unit) - 1))
            cand = unit[0][None, :] + a @ unit[1:]
            ok = _smooth_min(cand, self._physical_range()) > 0
            take = cand[ok][: n - filled]
            out[filled : filled + len(take)] = take
            filled += len(take)
            if filled == n:
                break
        if filled < n:  # pathological spread: fall back to the first eigenspectrum
            out[filled:] = unit[0]
        out = np.clip(out, 0.0, None)
        return out, [self.labels[0]] * n, [self.name] * n

    def _physical_range(self) -> slice:
        # Where the continuum must stay positive: the part of the rest range a LAMOST spectrum can see at
        # the set's redshifts, leaving out the noisy extreme ends of the eigenspectra.
        lo, hi = 0, self.n_pixels
        if self.redshifts is not None and len(self.redshifts):
            lo = int(np.clip((np.log10(3700.0 / (1 + self.redshifts.max())) - self.loglam0) / REST_LOG_STEP, 0, hi))
            hi = int(np.clip((np.log10(9100.0 / (1 + self.redshifts.min())) - self.loglam0) / REST_LOG_STEP, lo + 1, hi))
        lo = max(lo, int(np.clip((np.log10(LYA * 1.02) - self.loglam0) / REST_LOG_STEP, 0, hi - 1)))
        return slice(lo, hi)


def _smooth_min(spectra: np.ndarray, region: slice, width: int = 200) -> np.ndarray:
    """Minimum of a running mean (``width`` samples) over ``region``, per row."""
    x = spectra[:, region]
    if x.shape[1] <= width:
        return x.mean(axis=1)
    c = np.cumsum(np.pad(x, ((0, 0), (1, 0))), axis=1)
    return ((c[:, width:] - c[:, :-width]) / width).min(axis=1)


@dataclass
class TemplateLibrary:
    """All template sets, grouped by class, and the source they were read from."""

    sets: list[TemplateSet]
    source: str  # directory read, or 'analytic'

    def by_class(self, objclass: str) -> list[TemplateSet]:
        return [s for s in self.sets if s.objclass == objclass]

    def get(self, name: str) -> TemplateSet:
        for s in self.sets:
            if s.name == name:
                return s
        raise KeyError(f"no template set {name!r}; have {[s.name for s in self.sets]}")


# --------------------------------------------------------------------------------------------------
# grids and smoothing


def log_grid(wave_min: float, wave_max: float) -> tuple[float, int]:
    """(loglam0, n) of the rest log grid covering [wave_min, wave_max]."""
    lo = np.log10(wave_min)
    n = int(np.floor((np.log10(wave_max) - lo) / REST_LOG_STEP)) + 1
    return float(lo), n


def rebin_linear_to_log(wave: np.ndarray, flux: np.ndarray, loglam0: float, n: int) -> np.ndarray:
    """Flux-conserving average of (k, N) spectra sampled at ``wave`` onto the log grid (k, n)."""
    edges_src = np.concatenate([[wave[0] - (wave[1] - wave[0]) / 2], (wave[1:] + wave[:-1]) / 2,
                                [wave[-1] + (wave[-1] - wave[-2]) / 2]])
    cum = np.concatenate([np.zeros((flux.shape[0], 1)), np.cumsum(flux * np.diff(edges_src), axis=1)], axis=1)
    loglam = loglam0 + REST_LOG_STEP * np.arange(n)
    edges = 10.0 ** np.concatenate([[loglam[0] - REST_LOG_STEP / 2], loglam + REST_LOG_STEP / 2])
    at = np.stack([np.interp(edges, edges_src, c) for c in cum])
    return np.diff(at, axis=1) / np.diff(edges)


def gaussian_smooth_log(flux: np.ndarray, sigma_kms: float, log_step: float = REST_LOG_STEP) -> np.ndarray:
    """Convolve (k, n) spectra on a log grid with a Gaussian of ``sigma_kms`` (FFT, edges reflected)."""
    if sigma_kms <= 0:
        return flux
    sigma_pix = sigma_kms / (C_KMS * np.log(10.0) * log_step)
    half = int(np.ceil(5 * sigma_pix))
    x = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (x / sigma_pix) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(flux, ((0, 0), (half, half)), mode="reflect")
    n = padded.shape[1] + len(kernel) - 1
    out = np.fft.irfft(np.fft.rfft(padded, n) * np.fft.rfft(kernel, n), n)
    return out[:, 2 * half : 2 * half + flux.shape[1]]


def resolution_sigma_kms(resolution: float) -> float:
    """Gaussian sigma (km/s) of a line-spread function of resolving power R = lambda / FWHM."""
    return C_KMS / resolution * SIGMA_PER_FWHM


def _log_to_rest_grid(loglam_src: np.ndarray, flux: np.ndarray) -> tuple[float, np.ndarray]:
    """Interpolate (k, N) spectra on a log grid (any step) onto the REST_LOG_STEP grid."""
    loglam0 = float(loglam_src[0])
    n = int(np.floor((loglam_src[-1] - loglam0) / REST_LOG_STEP)) + 1
    grid = loglam0 + REST_LOG_STEP * np.arange(n)
    return loglam0, np.stack([np.interp(grid, loglam_src, f) for f in flux])


# --------------------------------------------------------------------------------------------------
# readers of the real template files


def default_templates_dir() -> Path | None:
    """``$LAMOST_TEMPLATES``, ``$LAMOST_SHARED_DATA/templates``, ``../shared/data/templates`` beside the
    repo, else None (the analytic fallback)."""
    candidates = [Path(os.environ["LAMOST_TEMPLATES"])] if os.environ.get("LAMOST_TEMPLATES") else []
    if os.environ.get("LAMOST_SHARED_DATA"):
        candidates.append(Path(os.environ["LAMOST_SHARED_DATA"]) / "templates")
    repo = Path(__file__).resolve().parents[1]
    candidates.append(repo.parent / "shared" / "data" / "templates")
    for c in candidates:
        if (c / "sdss").is_dir() or (c / "redrock").is_dir():
            return c
    return None


def star_subclass(name: str) -> str:
    """A LAMOST-style subclass ('A1', 'K5', 'WD', 'Carbon', ...) from an SDSS/redrock star type name."""
    if "WD" in name:
        return "WD"
    if name.startswith("Carbon"):
        return "Carbon"
    if name.startswith("Ldwarf"):
        return "L"
    m = re.match(r"^(?:sd:?)?([OBAFGKM])(\d?)", name)
    if not m:
        return name.split()[0]
    return m.group(1) + m.group(2)


def read_sdss_stars(path: Path) -> TemplateSet:
    from astropy.io import fits

    with fits.open(path) as h:
        data = np.asarray(h[0].data, dtype=np.float64)
        hdr = h[0].header
        loglam = hdr["COEFF0"] + hdr["COEFF1"] * np.arange(data.shape[1])
        names = [str(hdr.get(f"NAME{i}", f"star{i}")).strip() for i in range(data.shape[0])]
    loglam0, basis = _log_to_rest_grid(loglam, data)
    return TemplateSet(
        name="sdss-star", objclass="STAR", loglam0=loglam0, basis=basis.astype(np.float32),
        resolution=SDSS_RESOLUTION, labels=[star_subclass(n) for n in names],
        template_names=[f"sdss-star:{n}" for n in names],
    )


def read_redrock_archetypes(path: Path, objclass: str, name: str, wave_max: float = 11000.0) -> TemplateSet:
    """A redrock file with linear BASIS_VECTORS and ARCHETYPE_COEFF, smoothed to REDROCK_RESOLUTION."""
    from astropy.io import fits

    with fits.open(path) as h:
        basis = np.asarray(h["BASIS_VECTORS"].data, dtype=np.float64)
        hdr = h["BASIS_VECTORS"].header
        coeffs = np.asarray(h["ARCHETYPE_COEFF"].data, dtype=np.float64)
        subtype = str(hdr.get("RRSUBTYP", "")).strip()
    wave = hdr["CRVAL1"] + hdr["CDELT1"] * np.arange(basis.shape[1])
    keep = wave <= wave_max * 1.01
    wave, basis = wave[keep], basis[:, keep]
    loglam0, n = log_grid(wave[0] + 1.0, wave[-1] - 1.0)
    # Smooth on a fine log grid first: the basis is linear in wavelength and much sharper than needed.
    onlog = rebin_linear_to_log(wave, basis, loglam0, n)
    smooth = gaussian_smooth_log(onlog, resolution_sigma_kms(REDROCK_RESOLUTION))
    if objclass == "STAR":
        labels = [star_subclass(subtype)] * len(coeffs)
    else:
        labels = _galaxy_kinds(coeffs @ smooth, loglam0)
    return TemplateSet(
        name=name, objclass=objclass, loglam0=loglam0, basis=smooth.astype(np.float32),
        resolution=REDROCK_RESOLUTION, labels=labels, coeffs=coeffs.astype(np.float32),
        template_names=[f"{name}:{i}" for i in range(len(coeffs))],
    )


def _line_ew(spectra: np.ndarray, loglam0: float, line: float, half_width: float = 8.0) -> np.ndarray:
    """Emission equivalent width (A, positive = emission) of a line against side bands, per row."""
    loglam = loglam0 + REST_LOG_STEP * np.arange(spectra.shape[1])
    wave = 10.0**loglam
    core = np.abs(wave - line) < half_width
    side = (np.abs(wave - line) > 3 * half_width) & (np.abs(wave - line) < 6 * half_width)
    if not core.any() or not side.any():
        return np.zeros(len(spectra))
    cont = np.median(spectra[:, side], axis=1)
    return ((spectra[:, core] - cont[:, None]).sum(axis=1) * np.median(np.diff(wave[core]))) / np.maximum(cont, 1e-30)


def _galaxy_kinds(spectra: np.ndarray, loglam0: float) -> list[str]:
    """'STARFORMING' when H alpha or [O II] is in emission with EW > 3 A, else 'PASSIVE'."""
    ew = np.maximum(_line_ew(spectra, loglam0, HALPHA), _line_ew(spectra, loglam0, OII))
    return ["STARFORMING" if e > 3.0 else "PASSIVE" for e in ew]


def read_eigen(path: Path, objclass: str, name: str, label: str, spread: float,
               redshift_hdu: int | str | None = None, redshift_column: str | None = None,
               resolution: float = SDSS_RESOLUTION) -> TemplateSet:
    """spEigen* (COEFF0/COEFF1) or redrock QSO (CRVAL1/CDELT1 with LOGLAM=1) eigenspectra."""
    from astropy.io import fits

    with fits.open(path) as h:
        data = np.asarray(h[0].data, dtype=np.float64)
        hdr = h[0].header
        if "COEFF0" in hdr:
            loglam = hdr["COEFF0"] + hdr["COEFF1"] * np.arange(data.shape[1])
        elif hdr.get("LOGLAM"):
            loglam = hdr["CRVAL1"] + hdr["CDELT1"] * np.arange(data.shape[1])
        else:
            raise ValueError(f"{path}: neither COEFF0 nor a log-lambda CRVAL1 grid")
        redshifts = None
        if redshift_hdu is not None:
            z = h[redshift_hdu].data
            redshifts = np.asarray(z[redshift_column] if redshift_column else z, dtype=np.float64)
    loglam0, basis = _log_to_rest_grid(loglam, data)
    if resolution > SDSS_RESOLUTION:  # redrock QSO eigenvectors: bring them to the SDSS-like resolution
        basis = gaussian_smooth_log(basis, resolution_sigma_kms(REDROCK_RESOLUTION))
        resolution = REDROCK_RESOLUTION
    # Eigenvector 0 is the mean spectrum up to a sign; make it positive.
    if np.median(basis[0]) < 0:
        basis[0] = -basis[0]
    return TemplateSet(
        name=name, objclass=objclass, loglam0=loglam0, basis=basis.astype(np.float32), resolution=resolution,
        labels=[label], eigen=True, eigen_spread=spread, redshifts=redshifts,
    )


def load_templates(directory: str | Path | None = None) -> TemplateLibrary:
    """Read every template set found under ``directory`` (see the module docstring).

    ``directory=None`` uses :func:`default_templates_dir`; when that finds nothing, or the directory
    holds none of the files, the analytic fallback is returned.
    """
    root = Path(directory) if directory is not None else default_templates_dir()
    if root is None:
        return analytic_templates()
    if not root.is_dir():
        raise FileNotFoundError(f"template directory {root} does not exist")
    sets: list[TemplateSet] = []
    sdss, rr = root / "sdss", root / "redrock"
    if (f := sdss / "spEigenStar-55734.fits").exists():
        sets.append(read_sdss_stars(f))
    for f in sorted(rr.glob("rrtemplate-STAR-*-v0.1.fits")):
        sub = f.name.split("-")[2]
        if sub == "CV":  # no archetypes: a 3-vector PCA basis
            continue
        sets.append(read_redrock_archetypes(f, "STAR", f"rr-star-{sub}"))
    if (f := rr / "rrtemplate-galaxy.fits").exists():
        sets.append(read_redrock_archetypes(f, "GALAXY", "rr-galaxy", wave_max=10000.0))
    if (f := sdss / "spEigenGal-56436.fits").exists():
        s = read_eigen(f, "GALAXY", "sdss-galaxy", "GALAXY", spread=0.15)
        sets.append(s)
    if (f := sdss / "spEigenQSO-55732.fits").exists():
        sets.append(read_eigen(f, "QSO", "sdss-qso", "QSO", spread=0.10, redshift_hdu=1, redshift_column="REDSHIFT"))
    for sub in ("LOZ", "HIZ"):
        if (f := rr / f"rrtemplate-QSO-{sub}-v1.1.fits").exists():
            sets.append(read_eigen(f, "QSO", f"rr-qso-{sub.lower()}", sub, spread=0.12,
                                   redshift_hdu="REDSHIFTS", resolution=1e5))
    if not sets:
        return analytic_templates()
    missing = {"STAR", "GALAXY", "QSO"} - {s.objclass for s in sets}
    if missing:  # a partial directory: fill the missing classes from the analytic library
        sets += [s for s in analytic_templates().sets if s.objclass in missing]
    return TemplateLibrary(sets=sets, source=str(root))


# --------------------------------------------------------------------------------------------------
# the analytic fallback


# (vacuum wavelength A, strength) of absorption lines; strengths are depths at R ~ 3000 for the type.
_STAR_LINES = {
    "H": [(6564.61, 1.0), (4862.68, 1.0), (4341.68, 0.9), (4102.89, 0.85), (3971.20, 0.8), (3890.17, 0.7),
          (3836.47, 0.6), (3798.98, 0.5)],
    "metal": [(3934.78, 1.0), (3969.59, 0.9), (4305.0, 0.5), (5176.7, 0.5), (5895.9, 0.5), (5891.6, 0.5),
              (4227.9, 0.4), (8500.4, 0.3), (8544.4, 0.4), (8664.5, 0.4)],
}
# (Teff, hydrogen depth, metal depth, TiO, subclass)
_STAR_TYPES = [(25000, 0.35, 0.02, 0.0, "B5"), (9500, 0.6, 0.1, 0.0, "A0"), (8000, 0.55, 0.25, 0.0, "A7"),
               (6800, 0.35, 0.4, 0.0, "F5"), (5800, 0.2, 0.6, 0.0, "G2"), (5000, 0.12, 0.75, 0.0, "K0"),
               (4300, 0.08, 0.85, 0.1, "K5"), (3700, 0.05, 0.8, 0.5, "M1"), (3300, 0.04, 0.7, 0.8, "M4")]
_TIO_BANDS = [(7054, 7150), (6159, 6250), (7589, 7700), (8432, 8520), (4955, 5060), (5448, 5560)]
# (vacuum wavelength, relative flux) of galaxy emission lines, normalised to H alpha.
_GAL_EMISSION = [(3727.09, 1.2), (3729.88, 1.6), (4862.68, 0.35), (4960.30, 0.25), (5008.24, 0.75),
                 (6549.86, 0.1), (6564.61, 1.0), (6585.27, 0.3), (6718.29, 0.18), (6732.67, 0.13)]
# (vacuum wavelength, relative flux, FWHM km/s) of QSO broad lines, normalised to the continuum at 1450.
_QSO_LINES = [(1215.67, 8.0, 4000), (1240.14, 1.0, 3000), (1397.0, 0.6, 5000), (1549.06, 2.5, 5000),
              (1908.73, 1.0, 5000), (2798.75, 1.0, 5000), (4341.68, 0.2, 4000), (4862.68, 0.5, 4500),
              (5008.24, 0.15, 500), (6564.61, 1.5, 4000)]


def _planck(wave: np.ndarray, teff: float) -> np.ndarray:
    x = 1.4388e8 / (wave * teff)
    return 1.0 / (wave**5 * np.expm1(np.minimum(x, 700.0)))


def _gauss_lines(wave: np.ndarray, lines: list[tuple[float, float]], sigma_kms: float) -> np.ndarray:
    out = np.zeros_like(wave)
    for lam, amp in lines:
        s = lam * sigma_kms / C_KMS
        out += amp * np.exp(-0.5 * ((wave - lam) / s) ** 2)
    return out


def analytic_templates() -> TemplateLibrary:
    """A built-in library with no file input: 9 star types, 2 galaxy kinds, a QSO (all R = 3000)."""
    loglam0, n = log_grid(1000.0, 11500.0)
    wave = 10.0 ** (loglam0 + REST_LOG_STEP * np.arange(n))
    sig = resolution_sigma_kms(REDROCK_RESOLUTION)
    stars, labels = [], []
    for teff, h_depth, metal_depth, tio, sub in _STAR_TYPES:
        cont = _planck(wave, teff)
        cont = cont / np.median(cont[(wave > 5000) & (wave < 6000)])
        absorb = h_depth * _gauss_lines(wave, _STAR_LINES["H"], 250.0) + metal_depth * _gauss_lines(wave, _STAR_LINES["metal"], 120.0)
        for lo, hi in _TIO_BANDS:  # molecular bands: a sharp head then a slow recovery to the red
            band = (wave > lo) & (wave < hi)
            absorb[band] += tio * (1 - (wave[band] - lo) / (hi - lo))
        balmer_jump = np.where(wave < 3646, 0.4 * h_depth, 0.0)
        stars.append(cont * np.clip(1 - absorb - balmer_jump, 0.02, None))
        labels.append(sub)
    star_set = TemplateSet(name="analytic-star", objclass="STAR", loglam0=loglam0,
                           basis=gaussian_smooth_log(np.array(stars), sig).astype(np.float32),
                           resolution=REDROCK_RESOLUTION, labels=labels,
                           template_names=[f"analytic-star:{s}" for s in labels])
    # Galaxies: an old population (K-giant-like continuum with a 4000 A break) and a young one.
    old = _planck(wave, 4600) * np.where(wave < 4000, 0.55, 1.0)
    old *= np.clip(1 - 0.9 * _gauss_lines(wave, _STAR_LINES["metal"], 200.0) - 0.1 * _gauss_lines(wave, _STAR_LINES["H"], 200.0), 0.05, None)
    old /= np.median(old[(wave > 5000) & (wave < 6000)])
    young = _planck(wave, 12000) * np.clip(1 - 0.3 * _gauss_lines(wave, _STAR_LINES["H"], 300.0), 0.1, None)
    young /= np.median(young[(wave > 5000) & (wave < 6000)])
    emission = _gauss_lines(wave, _GAL_EMISSION, 60.0)
    passive = old
    starforming = 0.5 * old + 0.5 * young + 0.6 * emission
    gal_set = TemplateSet(name="analytic-galaxy", objclass="GALAXY", loglam0=loglam0,
                          basis=gaussian_smooth_log(np.array([passive, starforming]), sig).astype(np.float32),
                          resolution=REDROCK_RESOLUTION, labels=["PASSIVE", "STARFORMING"],
                          template_names=["analytic-galaxy:passive", "analytic-galaxy:starforming"])
    # QSO: power law f_nu ~ nu^-0.5 (f_lambda ~ lambda^-1.5) + broad lines; eigen-like variants by line strength.
    cont = (wave / 1450.0) ** -1.5
    lines = np.zeros_like(wave)
    for lam, amp, fwhm in _QSO_LINES:
        lines += amp * np.exp(-0.5 * ((wave - lam) / (lam * fwhm * SIGMA_PER_FWHM / C_KMS)) ** 2) * (lam / 1450.0) ** -1.5 * 0.1
    qso_basis = np.array([cont + lines, lines, cont * (wave / 3000.0) ** 0.5 - cont])
    qso_set = TemplateSet(name="analytic-qso", objclass="QSO", loglam0=loglam0,
                          basis=gaussian_smooth_log(qso_basis, sig).astype(np.float32), resolution=REDROCK_RESOLUTION,
                          labels=["QSO"], eigen=True, eigen_spread=0.1,
                          redshifts=np.random.default_rng(0).gamma(4.0, 0.4, 2000) + 0.1)
    return TemplateLibrary(sets=[star_set, gal_set, qso_set], source="analytic")
