"""Mock family "eigen": SDSS eigenspectra, real LAMOST stars and their noise, through our own instrument.

Built independently of mocks/simulate.py, instrument.py and templates.py: only the ``MockChunk``
container and the native ``WAVELENGTH`` grid are shared. Every reader, line list, LSF, dust law, IGM and
noise model here is this module's own.

- GALAXY: linear combinations of the 4 spEigenGal-56436 eigenspectra. Plausible coefficients come from
  projecting the 750 DESI redrock galaxy archetypes onto that basis (the archetypes never enter a mock
  themselves); a mock is a convex combination of two projected archetypes of the same kind (passive or
  line-emitting, by the H-alpha equivalent width of the eigen combination), so it stays positive. A
  share of them gains a narrow AGN line set (Seyfert or LINER ratios) of our own; subclasses come from
  the BPT diagram measured on the rest-frame spectrum. Stellar velocity dispersion 50-350 km/s,
  Calzetti-like dust.
- QSO: spEigenQSO-55732 (rest frame from 450 A) with eigen-1..3 coefficients drawn around the mean and
  kept only where the spectrum stays positive; SMC-like dust; a Lyman-alpha/beta forest of random
  absorbers whose mean optical depth follows a Madau-1995-like power law, plus Lyman-limit absorption;
  BAL troughs in a share; host-galaxy light (a passive eigen galaxy) below z 0.5.
- STAR: the 123 real spEigenStar spectra, the real LAMOST DR8 stars with S/N > 30 (already at LAMOST
  resolution), spEigenCVstar and made emission-line stars (Be, dMe, CV), each with a radial velocity.
- Instrument: resolution varying with wavelength (R 1300-2500), flux-calibration tilt, blue/red arm
  scale mismatch at a join in 5700-5900 A, Milky Way dust, sky-subtraction residuals at sky-line
  wavelengths, cosmic rays, rare huge unmasked spikes, fibre throughput, and noise with the real
  per-pixel noise shape and bad-pixel mask of a LAMOST DR8 star, scaled to the drawn S/N.

Determinism: mock ``i`` belongs to block ``i // BLOCK`` whose random stream is
``np.random.SeedSequence([seed, block])``: any chunking of the same (seed, ids) gives the same mocks.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .instrument import WAVELENGTH
from .simulate import MockChunk

FAMILY = "eigen"
BLOCK = 256  #: mocks per random stream
C_KMS = 299792.458
NPIX = WAVELENGTH.size
LOGW = np.log10(WAVELENGTH)
KMS_PER_PIX = C_KMS * np.log(10.0) * 1e-4
#: g and r bands in which snr_g / snr_r are measured (median S/N per pixel)
G_BAND = (WAVELENGTH > 4000.0) & (WAVELENGTH < 5500.0)
R_BAND = (WAVELENGTH > 5500.0) & (WAVELENGTH < 7000.0)
#: Line-of-sight dispersion (km/s) already in the SDSS templates: SDSS's own LSF (R ~ 2000)
TEMPLATE_SIGMA_KMS = 64.0
#: Broadening already in the eigen-galaxy lines: SDSS's LSF plus a typical galaxy's dispersion
EIGEN_GALAXY_SIGMA_KMS = 120.0
ANDMASK_BADPIX = 1 << 0  # our own bad-pixel bit (LAMOST's "BADCCD"-like)
ANDMASK_DONOR = 1 << 1  # masked in the real file whose noise shape we use

# vacuum rest wavelengths (A)
HALPHA, HBETA, HGAMMA, HDELTA = 6564.61, 4862.68, 4341.68, 4102.89
NII_6585, OIII_5008, OIII_4960, OII_3728 = 6585.27, 5008.24, 4960.30, 3728.48
SII_6718, SII_6733, OI_6302, NII_6550 = 6718.29, 6732.67, 6302.05, 6549.86
HEI_5877, HEII_4687, CAII_K, CAII_H = 5877.25, 4687.02, 3934.78, 3969.59
LYA, LYB, LYLIMIT = 1215.67, 1025.72, 911.75
CIV, SIIV, MGII = 1549.06, 1397.61, 2799.12

#: Night-sky emission lines (vacuum A): Hg, O I, Na D, O I, and the strongest OH lines in the red.
SKY_LINES = np.array([4359.6, 5578.9, 5891.6, 5897.6, 6302.0, 6365.5, 6865.0, 6925.0, 7278.0, 7318.0,
                      7343.0, 7371.0, 7404.0, 7526.0, 7573.0, 7752.0, 7796.0, 7823.0, 7855.0, 7916.0,
                      7966.0, 7995.0, 8346.0, 8401.0, 8432.0, 8467.0, 8507.0, 8763.0, 8769.0, 8829.0,
                      8888.0, 8921.0, 8945.0, 8990.0, 9003.0])

#: each sky line as seen through the spectrograph (unit peak, ~1.8 A sigma), and all of them
SKY_LINE_PROFILES = np.exp(-0.5 * ((WAVELENGTH[None, :] - SKY_LINES[:, None]) / 1.8) ** 2)
SKY_PROFILE = SKY_LINE_PROFILES.sum(axis=0)

STAR_SOURCES = {"sdss": 0.28, "lamost": 0.26, "redrock": 0.16, "be": 0.08, "dme": 0.08, "cv": 0.06, "wd": 0.04,
                "carbon": 0.04}
#: redrock stellar archetype sets used (subclass = the set's letter), and how many archetypes of each
REDROCK_STAR_SETS = ("A", "B", "F", "G", "K", "M", "WD")  # STAR-CV has a basis but no archetypes
REDROCK_ARCHETYPES_PER_SET = 48
#: Line-of-sight broadening left in redrock archetypes after averaging them into 1e-4 dex pixels
REDROCK_SIGMA_KMS = 20.0
AGN_FRACTION = 0.25  #: share of line-emitting galaxies given an AGN narrow-line set
PASSIVE_FRACTION = 0.4  #: share of galaxies mixed from two passive projected archetypes
#: share mixed from a passive and a line-emitting one (weights 0.03-0.5 on the latter): the projected
#: emitters alone have H-alpha EW 35-155 A (5-95%), far stronger than most galaxies'
WEAK_EMITTER_FRACTION = 0.2
BAL_FRACTION = 0.12
LAMOST_TEMPLATE_MIN_SNR = 30.0


# --------------------------------------------------------------------------------------------------
# reading the data files (our own readers)

REPO_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _shared_data_candidates() -> list[Path]:
    env = os.environ.get("LAMOST_SHARED_DATA")
    return ([Path(env)] if env else []) + [REPO_SHARED_DATA]


def _templates_root(templates_dir: str | Path | None) -> Path:
    """``templates_dir``, else $LAMOST_TEMPLATES, $LAMOST_SHARED_DATA/templates, ../shared/data/templates."""
    if templates_dir:
        root = Path(templates_dir)
    else:
        env = os.environ.get("LAMOST_TEMPLATES")
        candidates = ([Path(env)] if env else []) + [d / "templates" for d in _shared_data_candidates()]
        root = next((c for c in candidates if c.is_dir()), candidates[-1])
    needed = [root / "sdss" / f for f in ("spEigenGal-56436.fits", "spEigenQSO-55732.fits", "spEigenStar-55734.fits",
                                          "spEigenCVstar-55734.fits")]
    needed += [root / "redrock" / f for f in ("rrtemplate-galaxy.fits", "rrtemplate-STAR-M-v0.1.fits")]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"mock family 'eigen' needs the SDSS/redrock templates: missing {', '.join(missing)} (put "
                                "../shared/data/templates beside the repo, set $LAMOST_TEMPLATES or pass templates_dir)")
    return root


def _stars_dir(root: Path) -> Path:
    """lamost-dr8-stars beside the templates, else in $LAMOST_SHARED_DATA or ../shared/data."""
    candidates = [root.parent / "lamost-dr8-stars"] + [d / "lamost-dr8-stars" for d in _shared_data_candidates()]
    for stars in candidates:
        if glob.glob(str(stars / "spec-*.fits*")):
            return stars
    raise FileNotFoundError(f"mock family 'eigen' needs the real LAMOST DR8 stars (noise shapes, star templates): "
                            f"no spec-*.fits* in {', '.join(map(str, candidates))}")


def _read_log_grid(path: Path) -> tuple[np.ndarray, np.ndarray, object]:
    from astropy.io import fits

    with fits.open(path) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float64)
        header = hdul[0].header.copy()
    loglam = header["COEFF0"] + header["COEFF1"] * np.arange(data.shape[-1])
    return loglam, data, header


def _to_native(loglam_rest: np.ndarray, spectra: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Sample rest-frame spectra (rows) at the native pixels of an observer at redshift z (0 outside)."""
    out = np.empty((len(spectra), NPIX))
    shift = np.log10(1.0 + z)
    for k in range(len(spectra)):
        out[k] = np.interp(LOGW - shift[k], loglam_rest, spectra[k], left=0.0, right=0.0)
    return out


@functools.lru_cache(maxsize=2)
def _library(root_str: str) -> dict:
    root = Path(root_str)
    lib: dict = {}
    # galaxies: eigenbasis and the projected redrock archetypes
    lg, eig, _ = _read_log_grid(root / "sdss" / "spEigenGal-56436.fits")
    lib["gal_loglam"], lib["gal_eigen"] = lg, eig
    coeff, emission = _project_archetypes(root / "redrock" / "rrtemplate-galaxy.fits", lg, eig)
    lib["gal_passive"], lib["gal_emitting"] = coeff[~emission], coeff[emission]
    # QSOs
    lq, qeig, _ = _read_log_grid(root / "sdss" / "spEigenQSO-55732.fits")
    lib["qso_loglam"], lib["qso_eigen"] = lq, qeig
    # stars
    ls, stars, header = _read_log_grid(root / "sdss" / "spEigenStar-55734.fits")
    names = [str(header.get(f"NAME{i}", "")).strip() for i in range(len(stars))]
    lib["star_loglam"], lib["star_flux"], lib["star_names"] = ls, stars, names
    lib["star_subclass"] = [_sdss_subclass(n) for n in names]
    lc, cv, _ = _read_log_grid(root / "sdss" / "spEigenCVstar-55734.fits")
    lib["cv_loglam"], lib["cv_eigen"] = lc, cv
    lib["rr_loglam"] = np.arange(np.log10(3050.0), np.log10(10900.0), 1e-4)
    rr_flux, rr_sub, rr_name = [], [], []
    for letter in REDROCK_STAR_SETS:
        path = root / "redrock" / f"rrtemplate-STAR-{letter}-v0.1.fits"
        if path.is_file():
            flux, picked = _redrock_archetypes(path, lib["rr_loglam"], REDROCK_ARCHETYPES_PER_SET)
            rr_flux.append(flux)
            rr_sub += [letter] * len(flux)
            rr_name += [f"rrtemplate-STAR-{letter}:{i}" for i in picked]
    lib["rr_flux"], lib["rr_subclass"], lib["rr_name"] = np.concatenate(rr_flux), rr_sub, rr_name
    lib.update(_read_lamost_stars(_stars_dir(root)))
    return lib


def _binned_to_log(wave: np.ndarray, spectra: np.ndarray, loglam: np.ndarray) -> np.ndarray:
    """Average spectra on a fine linear grid into log pixels centred on ``loglam`` (step 1e-4 dex)."""
    edges = 10.0 ** np.concatenate([loglam - 0.5e-4, [loglam[-1] + 0.5e-4]])
    idx = np.searchsorted(wave, edges)
    cums = np.concatenate([np.zeros((spectra.shape[0], 1)), np.cumsum(spectra, axis=1)], axis=1)
    out = (cums[:, idx[1:]] - cums[:, idx[:-1]]) / np.maximum(idx[1:] - idx[:-1], 1)
    out[:, (edges[:-1] < wave[0]) | (edges[1:] > wave[-1])] = 0.0
    return out


def _redrock_archetypes(path: Path, loglam: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` archetypes spread evenly through a redrock star file, clipped at zero, on the log grid."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        basis = np.asarray(hdul[0].data, dtype=np.float64)
        arche = np.asarray(hdul[1].data, dtype=np.float64)
        wave = hdul[0].header["CRVAL1"] + hdul[0].header["CDELT1"] * np.arange(basis.shape[1])
    picked = np.unique(np.linspace(0, len(arche) - 1, count).astype(int))
    flux = np.clip(_binned_to_log(wave, basis, loglam).T @ arche[picked].T, 0.0, None).T
    return flux, picked


def _sdss_subclass(name: str) -> str:
    """MK letter + subtype from an spEigenStar NAME ('K3III (101673)' -> 'K3'); WD, C, L for the specials."""
    if "WD" in name:
        return "WD"
    if name.startswith("Carbon"):
        return "C"
    if name.startswith("Ldwarf"):
        return "L"
    m = re.match(r"^(?:sd:?)?([OBAFGKM])(\d+(?:\.\d)?)?", name)
    return (m.group(1) + (m.group(2) or "")) if m else name


def _is_supergiant(name: str) -> bool:
    """Luminosity class I or II in an spEigenStar NAME ('A1Iae (12953)', 'F6II (61295)')."""
    m = re.match(r"^(?:sd:?)?[OBAFGKM][\d.]*(?:/[OBAFGKM]?[\d.]*)?(\S*)", name)
    lum = m.group(1) if m else ""
    return lum.startswith("I") and not lum.startswith(("III", "IV"))


def _project_archetypes(path: Path, loglam: np.ndarray, eigen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares spEigenGal coefficients of each redrock galaxy archetype, scaled to unit 5000-5500 A flux,
    keeping those whose eigen combination is positive over 2400-9100 A; and which of them emit (H-alpha EW)."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        basis = np.asarray(hdul[0].data, dtype=np.float64)
        arche = np.asarray(hdul[1].data, dtype=np.float64)
        wave = hdul[0].header["CRVAL1"] + hdul[0].header["CDELT1"] * np.arange(basis.shape[1])
    # average the 0.1 A archetypes into the eigen grid's log pixels (a boxcar LSF, close to SDSS's)
    edges = 10.0 ** np.concatenate([loglam - 0.5e-4, [loglam[-1] + 0.5e-4]])
    inside = (edges[:-1] > wave[0]) & (edges[1:] < wave[-1])
    spectra = (arche @ _binned_to_log(wave, basis, loglam))[:, inside]
    wl = 10.0 ** loglam[inside]
    fit_range = (wl > 3000) & (wl < 9000)
    coeff = np.linalg.lstsq(eigen[:, inside][:, fit_range].T, spectra[:, fit_range].T, rcond=None)[0].T
    model = coeff @ eigen
    wfull = 10.0 ** loglam
    norm = model[:, (wfull > 5000) & (wfull < 5500)].mean(axis=1)
    keep = (norm > 0) & (model[:, (wfull > 2400) & (wfull < 9100)].min(axis=1) > 0)
    coeff, model = coeff[keep] / norm[keep, None], model[keep] / norm[keep, None]
    ew_ha = _equivalent_width(wfull, model, HALPHA, 8.0)
    return coeff, ew_ha > 3.0


def _equivalent_width(wave: np.ndarray, spectra: np.ndarray, line: float, half_width: float) -> np.ndarray:
    """Emission EW (A, positive for emission) in line +- half_width against sidebands 30-60 A away."""
    inner = (wave > line - half_width) & (wave < line + half_width)
    side = ((wave > line - 60) & (wave < line - 30)) | ((wave > line + 30) & (wave < line + 60))
    cont = spectra[:, side].mean(axis=1)
    dl = np.gradient(wave)[inner]
    return ((spectra[:, inner] - cont[:, None]) * dl).sum(axis=1) / np.maximum(cont, 1e-30)


def _read_lamost_stars(stars: Path) -> dict:
    """Real LAMOST DR8 stars: noise shapes (1/sqrt(ivar)) with masks for every file, flux templates for S/N > 30."""
    from astropy.io import fits

    sigma, donor_mask, snr_g, tmpl, tmpl_sub, tmpl_z, tmpl_name, tmpl_snr = [], [], [], [], [], [], [], []
    for path in sorted(glob.glob(str(stars / "spec-*.fits*"))):
        with fits.open(path) as hdul:
            data = np.asarray(hdul[0].data, dtype=np.float64)
            h = hdul[0].header
        # files start a few pixels apart: place each on the native grid by its COEFF0
        offset = int(round((float(h.get("COEFF0", LOGW[0])) - LOGW[0]) / 1e-4))
        if data.ndim != 2 or data.shape[0] < 4 or not 0 <= offset < NPIX:
            continue
        width = min(data.shape[1], NPIX - offset)
        flux, ivar, andmask = np.zeros(NPIX), np.zeros(NPIX), np.zeros(NPIX, dtype=np.int64)
        flux[offset:offset + width], ivar[offset:offset + width] = data[0, :width], data[1, :width]
        andmask[offset:offset + width] = data[3, :width].astype(np.int64)
        good = (ivar > 0) & np.isfinite(flux) & (andmask == 0)
        if good.sum() < 0.8 * NPIX:
            continue
        sig = np.zeros(NPIX)
        sig[good] = 1.0 / np.sqrt(ivar[good])
        # the noise shape relative to the g-band median noise: scaled per mock to the drawn S/N
        sig /= np.median(sig[good & G_BAND])
        sigma.append(sig)
        donor_mask.append(~good)
        snr_g.append(float(h.get("SNRG", 0.0)))
        if float(h.get("SNRG", 0.0)) > LAMOST_TEMPLATE_MIN_SNR and str(h.get("CLASS", "")).strip() == "STAR":
            f = flux.copy()
            f[~good] = np.interp(np.flatnonzero(~good), np.flatnonzero(good), flux[good])
            f = np.clip(f, 0.0, None)
            tmpl.append(f / np.median(f[G_BAND]))
            mk = re.match(r"^[OBAFGKM]\d?(?:\.\d)?", str(h.get("SUBCLASS", "")).strip())  # 'A2IV' -> 'A2'
            tmpl_sub.append(mk.group(0) if mk else "?")
            tmpl_z.append(float(h.get("Z", 0.0)) if np.isfinite(float(h.get("Z", 0.0))) else 0.0)
            tmpl_name.append(Path(path).name.split(".fits")[0])
            tmpl_snr.append(float(h.get("SNRG", 0.0)))
    return {"noise_sigma": np.array(sigma), "noise_mask": np.array(donor_mask), "real_snr_g": np.array(snr_g),
            "lamost_flux": np.array(tmpl), "lamost_subclass": tmpl_sub, "lamost_z": np.array(tmpl_z),
            "lamost_name": tmpl_name, "lamost_snr": np.array(tmpl_snr)}


# --------------------------------------------------------------------------------------------------
# physics pieces (our own)

def _gaussian_lines(loglam: np.ndarray, centers_obs: np.ndarray, fluxes: np.ndarray, sigma_kms: float) -> np.ndarray:
    """Sum of Gaussian lines of total flux ``fluxes`` (flux x A) at observed wavelengths, on a log grid."""
    out = np.zeros_like(loglam)
    wave = 10.0**loglam
    for c, f in zip(centers_obs, fluxes):
        s = c * sigma_kms / C_KMS
        near = np.abs(wave - c) < 6 * s + 5
        out[near] += f * np.exp(-0.5 * ((wave[near] - c) / s) ** 2) / (s * np.sqrt(2 * np.pi))
    return out


def _local_continuum(spectrum: np.ndarray, wave: np.ndarray, line: float) -> float:
    side = (np.abs(wave - line) > 20) & (np.abs(wave - line) < 80)
    return float(np.median(spectrum[side])) if side.any() else float(np.median(spectrum))


def _calzetti_k(wave_a: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) starburst attenuation k(lambda), R_V = 4.05, extrapolated linearly beyond."""
    um = np.clip(wave_a / 1e4, 0.12, 2.2)
    blue = 2.659 * (-2.156 + 1.509 / um - 0.198 / um**2 + 0.011 / um**3) + 4.05
    red = 2.659 * (-1.857 + 1.040 / um) + 4.05
    return np.where(um < 0.63, blue, red)


def _smc_k(wave_a: np.ndarray) -> np.ndarray:
    """SMC-bar-like extinction as a power law in 1/lambda (A_lambda / E(B-V), 2.74 at V)."""
    return 2.74 * (np.clip(wave_a, 800.0, None) / 5500.0) ** -1.6


def _milky_way_k(wave_a: np.ndarray) -> np.ndarray:
    """Diffuse Galactic extinction, optical: a smooth power law (A_lambda / E(B-V), 3.1 at V)."""
    return 3.1 * (wave_a / 5500.0) ** -1.3


def _lyman_forest(rng: np.random.Generator, wave_obs: np.ndarray, z: float) -> np.ndarray:
    """Transmission of a random Lyman-alpha/beta forest whose mean transmission follows a Madau-like law."""
    tau_mean = np.zeros_like(wave_obs)
    for line, amp in ((LYA, 0.0036), (LYB, 0.0017)):
        covered = wave_obs < line * (1 + z)
        tau_mean[covered] += amp * (wave_obs[covered] / line) ** 3.46
    # absorbers: Poisson per pixel, exponential strength, smoothed to about 1.5 pixels
    width_pix, mean_strength = 1.5, 1.2
    expected = tau_mean / (mean_strength * width_pix * np.sqrt(2 * np.pi))
    counts = rng.poisson(np.clip(expected, 0, 50))
    tau = rng.gamma(np.maximum(counts, 1e-9), mean_strength) * (counts > 0)
    tau = gaussian_filter1d(tau, width_pix) * width_pix * np.sqrt(2 * np.pi)
    covered = tau_mean > 0
    if covered.any() and tau[covered].any():
        # Madau's law is the effective depth, -ln <exp(-tau)>: scale the clumpy field until it has that mean transmission
        target = np.exp(-tau_mean[covered]).sum()
        lo, hi = 0.0, 50.0
        for _ in range(30):
            k = 0.5 * (lo + hi)
            lo, hi = (k, hi) if np.exp(-k * tau[covered]).sum() > target else (lo, k)
        tau = tau * 0.5 * (lo + hi)
    below_limit = wave_obs < LYLIMIT * (1 + z)
    tau[below_limit] += rng.exponential(1.5)  # Lyman-limit systems along the line of sight
    return np.exp(-tau)


# --------------------------------------------------------------------------------------------------
# the three classes, rendered onto the native grid (before the instrument)

def _draw_galaxy(rng: np.random.Generator, lib: dict, info: dict) -> tuple[np.ndarray, str, str, float, float]:
    loglam, eigen = lib["gal_loglam"], lib["gal_eigen"]
    u = rng.random()
    passive, emitting = lib["gal_passive"], lib["gal_emitting"]
    if u < PASSIVE_FRACTION:
        kind, first, second, t = "passive", passive, passive, rng.random()
    elif u < PASSIVE_FRACTION + WEAK_EMITTER_FRACTION:  # mostly old light with a little star formation
        kind, first, second, t = "weak-emitting", passive, emitting, rng.uniform(0.03, 0.5)
    else:
        kind, first, second, t = "emitting", emitting, emitting, rng.random()
    a, b = int(rng.integers(len(first))), int(rng.integers(len(second)))
    rest = ((1 - t) * first[a] + t * second[b]) @ eigen
    wave_rest = 10.0**loglam
    template = f"spEigenGal-56436 archetype-mix {kind} {a}/{b} t={t:.2f}"
    if kind == "passive":
        subclass = "PASSIVE"
    else:
        if rng.random() < AGN_FRACTION:
            agn = "SEYFERT" if rng.random() < 0.5 else "LINER"
            rest = rest + _agn_lines(rng, loglam, rest, agn)
            template += f" +{agn.lower()} lines"
        subclass = _bpt_subclass(wave_rest, rest)
    # dust in the galaxy (rest frame)
    ebv = info["ebv"] = rng.exponential(0.08)
    rest = rest * 10.0 ** (-0.4 * ebv * _calzetti_k(wave_rest))
    # redshift: LAMOST-like, most below 0.3
    z = float(np.clip(0.5 * rng.beta(1.5, 4.0), 0.003, 0.5))
    flux = _to_native(loglam, rest[None], np.array([z]))[0]
    sigma_v = info["velocity_dispersion"] = float(rng.uniform(50.0, 350.0))
    return _with_dispersion(flux, sigma_v), subclass, template, z, TEMPLATE_SIGMA_KMS


def _with_dispersion(flux: np.ndarray, sigma_v: float) -> np.ndarray:
    """Broaden an eigen-galaxy spectrum on the native grid to a stellar velocity dispersion sigma_v (km/s)."""
    extra = np.sqrt(max(sigma_v**2 - EIGEN_GALAXY_SIGMA_KMS**2, 0.0)) / KMS_PER_PIX
    return gaussian_filter1d(flux, extra) if extra > 0.3 else flux


def _agn_lines(rng: np.random.Generator, loglam: np.ndarray, rest: np.ndarray, kind: str) -> np.ndarray:
    """Narrow AGN lines (Seyfert: high [O III]/H-beta; LINER: strong [N II], [S II], [O I]) of our own."""
    wave = 10.0**loglam
    ha_flux = rng.uniform(5.0, 60.0) * _local_continuum(rest, wave, HALPHA)  # EW(H-alpha) 5-60 A
    hb = ha_flux / 3.1 * rng.uniform(0.6, 1.0)  # Balmer decrement with some reddening
    # ([O III]/H-beta, [N II]/H-alpha, [S II]/H-alpha, [O I]/H-alpha) ranges
    ranges = ((4, 12), (0.6, 1.5), (0.4, 0.8), (0.05, 0.2)) if kind == "SEYFERT" else ((0.8, 2.5), (1.0, 2.5), (0.6, 1.2), (0.2, 0.5))
    o3, n2, s2, o1 = (rng.uniform(*r) * base for r, base in zip(ranges, (hb, ha_flux, ha_flux, ha_flux)))
    centers = np.array([HALPHA, HBETA, OIII_5008, OIII_4960, NII_6585, NII_6550, SII_6718, SII_6733, OI_6302, OII_3728])
    fluxes = np.array([ha_flux, hb, o3, o3 / 2.98, n2, n2 / 2.95, s2 * 0.55, s2 * 0.45, o1, rng.uniform(1, 3) * hb])
    return _gaussian_lines(loglam, centers, fluxes, rng.uniform(150.0, 400.0))


def _bpt_subclass(wave: np.ndarray, rest: np.ndarray) -> str:
    """Star forming, composite (MIXED) or AGN from the BPT line ratios measured on the spectrum."""
    flux = {}
    for name, line in (("ha", HALPHA), ("n2", NII_6585), ("hb", HBETA), ("o3", OIII_5008)):
        inner = np.abs(wave - line) < 4.0
        flux[name] = float((rest[inner] - _local_continuum(rest, wave, line)).sum())
    if min(flux.values()) <= 0:
        return "STARFORMING"
    x, y = np.log10(flux["n2"] / flux["ha"]), np.log10(flux["o3"] / flux["hb"])
    if x < 0.05 and y < 0.61 / (x - 0.05) + 1.3:  # Kauffmann et al. 2003
        return "STARFORMING"
    if x < 0.47 and y < 0.61 / (x - 0.47) + 1.19:  # Kewley et al. 2001
        return "MIXED"
    return "SEYFERT" if y > 1.05 * x + 0.45 else "LINER"  # Schawinski et al. 2007


def _draw_qso(rng: np.random.Generator, lib: dict, info: dict) -> tuple[np.ndarray, str, str, float, float]:
    loglam, eigen = lib["qso_loglam"], lib["qso_eigen"]
    wave_rest = 10.0**loglam
    check = (wave_rest > 1250) & (wave_rest < 7500)
    rms = np.sqrt((eigen[:, check] ** 2).mean(axis=1))
    coeff = np.concatenate([[1.0], rng.normal(0.0, 0.1, 3) * rms[0] / rms[1:]])
    for _ in range(6):  # shrink toward the mean until the spectrum is positive
        rest = coeff @ eigen
        if rest[check].min() > 0:
            break
        coeff[1:] *= 0.5
    rest = np.clip(rest, 0.02 * np.median(rest[check]), None)
    u = rng.random()
    z = float(rng.uniform(0.05, 0.3) if u < 0.15 else rng.uniform(0.3, 2.5) if u < 0.85 else rng.uniform(2.5, 4.5))
    subclass, template = "BROADLINE", "spEigenQSO-55732 c=" + ",".join(f"{c:.3f}" for c in coeff[1:])
    if rng.random() < BAL_FRACTION:
        subclass = "BAL"
        rest = rest * _bal_troughs(rng, wave_rest)
    info["ebv"] = rng.exponential(0.04)
    rest = rest * 10.0 ** (-0.4 * info["ebv"] * _smc_k(wave_rest))
    if z < 0.5:  # host-galaxy light, a passive eigen galaxy, fading with redshift
        pool = lib["gal_passive"]
        host = pool[rng.integers(len(pool))] @ lib["gal_eigen"]
        host_rest = np.interp(loglam, lib["gal_loglam"], host, left=0.0, right=0.0)
        at5100 = (wave_rest > 5050) & (wave_rest < 5150)
        share = rng.uniform(0.1, 0.6) * (1 - z / 0.5)
        scale = share / max(1 - share, 1e-3) * rest[at5100].mean() / max(host_rest[at5100].mean(), 1e-30)
        rest = rest + scale * host_rest
        template += f" +host {share:.2f}"
    flux = _to_native(loglam, rest[None], np.array([z]))[0]
    flux = flux * _lyman_forest(rng, WAVELENGTH, z)
    return flux, subclass, template, z, TEMPLATE_SIGMA_KMS


def _bal_troughs(rng: np.random.Generator, wave_rest: np.ndarray) -> np.ndarray:
    """Broad absorption blueward of C IV and Si IV (and Mg II in a third: LoBALs)."""
    v_center, v_width, depth = rng.uniform(3000, 20000), rng.uniform(2000, 10000), rng.uniform(0.3, 0.9)
    lines = [CIV, SIIV] + ([MGII] if rng.random() < 0.3 else [])
    trans = np.ones_like(wave_rest)
    for line in lines:
        center = line * (1 - v_center / C_KMS)
        sigma = line * v_width / C_KMS / 2.355
        trans *= 1 - depth * np.exp(-0.5 * ((wave_rest - center) / sigma) ** 2)
    return trans


def _draw_star(rng: np.random.Generator, lib: dict, info: dict) -> tuple[np.ndarray, str, str, float, float]:
    kinds = list(STAR_SOURCES)
    p = np.array(list(STAR_SOURCES.values()))
    kind = kinds[rng.choice(len(kinds), p=p / p.sum())]
    v = float(np.clip(rng.normal(0, 200) if rng.random() < 0.1 else rng.normal(0, 50), -480, 480))
    z = v / C_KMS
    names, subs = lib["star_names"], lib["star_subclass"]
    sigma_kms = TEMPLATE_SIGMA_KMS
    if kind == "lamost":
        k = int(rng.integers(len(lib["lamost_flux"])))
        dv = float(rng.normal(0, 20))  # a small extra shift: the star keeps its own RV
        flux = np.interp(LOGW - np.log10(1 + dv / C_KMS), LOGW, lib["lamost_flux"][k])
        info["intrinsic_snr"] = float(lib["lamost_snr"][k])  # its own noise counts toward the drawn S/N
        return flux, lib["lamost_subclass"][k], f"lamost-dr8:{lib['lamost_name'][k]}", lib["lamost_z"][k] + dv / C_KMS, 0.0
    if kind == "cv":
        if rng.random() < 0.5:
            coeff = np.concatenate([[1.0], rng.normal(0, 0.15, lib["cv_eigen"].shape[0] - 1)])
            rest = np.clip(coeff @ lib["cv_eigen"], 0.0, None)
            flux = _to_native(lib["cv_loglam"], rest[None], np.array([z]))[0]
            return flux, "CV", "spEigenCVstar-55734", z, sigma_kms
        flux = _made_cv(rng, z)
        return flux, "CV", "made: blue continuum + broad Balmer/He", z, 1.0  # made at full resolution
    if kind == "wd":
        pick = [i for i, s in enumerate(subs) if s == "WD"]
    elif kind == "carbon":
        pick = [i for i, s in enumerate(subs) if s == "C"]
    elif kind == "be":
        pick = [i for i, s in enumerate(subs) if s[:1] == "B" or s in ("A0", "A1", "A2")]
    elif kind in ("dme", "redrock"):
        # the SDSS library's M stars are giants: M dwarfs come from the redrock M archetypes
        pool = [i for i, s in enumerate(lib["rr_subclass"]) if kind == "redrock" or s == "M"]
        k = pool[int(rng.integers(len(pool)))]
        flux = _to_native(lib["rr_loglam"], lib["rr_flux"][k][None], np.array([z]))[0]
        subclass, template = lib["rr_subclass"][k], lib["rr_name"][k]
        if kind == "dme":
            flux = flux + _balmer_emission(rng, LOGW, flux, z, "dme")
            # 'Me' as the physical family writes 'M3e': these archetypes carry no subtype
            subclass, template = "Me", template + " +Balmer emission (dMe)"
        return flux, subclass, template, z, REDROCK_SIGMA_KMS
    else:  # any SDSS library star; supergiants are rare among LAMOST targets
        weight = np.array([0.15 if _is_supergiant(n) else 1.0 for n in names])
        pick = list(range(len(names)))
        k = int(rng.choice(pick, p=weight / weight.sum()))
        flux = _to_native(lib["star_loglam"], lib["star_flux"][k][None], np.array([z]))[0]
        return flux, subs[k], f"spEigenStar-55734:{names[k]}", z, sigma_kms
    k = int(pick[int(rng.integers(len(pick)))])
    flux = _to_native(lib["star_loglam"], lib["star_flux"][k][None], np.array([z]))[0]
    subclass, template = subs[k], f"spEigenStar-55734:{names[k]}"
    if kind == "be":
        flux = flux + _balmer_emission(rng, LOGW, flux, z, kind)
        subclass, template = "Be", template + " +Balmer emission"
    return flux, subclass, template, z, sigma_kms


def _balmer_emission(rng: np.random.Generator, loglam: np.ndarray, flux: np.ndarray, z: float, kind: str) -> np.ndarray:
    """Be: H-alpha EW 5-50 A, H-beta weaker, 200-500 km/s wide; dMe: narrow Balmer EW 1-15 A and Ca II H&K."""
    wave = 10.0**loglam
    if kind == "be":
        ew_ha, width = rng.uniform(5, 50), rng.uniform(200, 500)
        lines = [(HALPHA, ew_ha), (HBETA, ew_ha * rng.uniform(0.1, 0.35)), (HGAMMA, ew_ha * rng.uniform(0.0, 0.1))]
    else:
        ew_ha, width = rng.uniform(1, 15), 30.0
        lines = [(HALPHA, ew_ha), (HBETA, ew_ha * rng.uniform(0.5, 1.5)), (HGAMMA, ew_ha * rng.uniform(0.5, 1.5)),
                 (HDELTA, ew_ha * rng.uniform(0.3, 1.0)), (CAII_K, ew_ha * rng.uniform(0.5, 2.0)),
                 (CAII_H, ew_ha * rng.uniform(0.5, 2.0))]
    centers = np.array([c * (1 + z) for c, _ in lines])
    fluxes = np.array([ew * (1 + z) * max(_local_continuum(flux, wave, c), 0.0) for (_, ew), c in zip(lines, centers)])
    return _gaussian_lines(loglam, centers, fluxes, width)


def _made_cv(rng: np.random.Generator, z: float) -> np.ndarray:
    """A dwarf nova in quiescence: a hot blue continuum plus broad Balmer and He I/He II emission."""
    wave = WAVELENGTH / (1 + z)
    temp = rng.uniform(10000, 30000)
    cont = wave**-5 / np.expm1(1.4388e8 / (wave * temp))
    cont /= np.median(cont[G_BAND])
    width = rng.uniform(600, 1500)
    lines = [(HALPHA, rng.uniform(20, 120)), (HBETA, rng.uniform(10, 60)), (HGAMMA, rng.uniform(5, 40)),
             (HDELTA, rng.uniform(3, 25)), (HEI_5877, rng.uniform(2, 15)), (HEII_4687, rng.uniform(0, 20))]
    centers = np.array([c * (1 + z) for c, _ in lines])
    fluxes = np.array([ew * (1 + z) * np.interp(c, WAVELENGTH, cont) for (_, ew), c in zip(lines, centers)])
    return cont + _gaussian_lines(LOGW, centers, fluxes, width)


# --------------------------------------------------------------------------------------------------
# the instrument (our own)

def _lsf(rng: np.random.Generator, flux: np.ndarray, template_sigma_kms: float) -> tuple[np.ndarray, float]:
    """Blur to a resolution R(lambda) = R5500 (lambda/5500)^gamma within 1300-2500; returns R at 5500 A achieved."""
    r5500 = rng.uniform(1500.0, 2200.0)
    gamma = rng.uniform(0.2, 0.9)
    ends = np.clip(r5500 * (np.array([3700.0, 9100.0]) / 5500.0) ** gamma, 1300.0, 2500.0)
    sig_ends = C_KMS / (2.3548 * ends)
    extra = np.sqrt(np.maximum(sig_ends**2 - template_sigma_kms**2, 0.09 * KMS_PER_PIX**2)) / KMS_PER_PIX
    blue, red = gaussian_filter1d(flux, extra[0]), gaussian_filter1d(flux, extra[1])
    weight = (LOGW - LOGW[0]) / (LOGW[-1] - LOGW[0])
    out = (1 - weight) * blue + weight * red
    sig5500 = np.sqrt(np.interp(np.log10(5500.0), LOGW[[0, -1]], extra) ** 2 * KMS_PER_PIX**2 + template_sigma_kms**2)
    return out, float(C_KMS / (2.3548 * sig5500))


def _real_snr(rng: np.random.Generator, lib: dict, snr_distribution: str, lo: float, hi: float) -> float:
    if snr_distribution == "loguniform":
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    real = lib["real_snr_g"][(lib["real_snr_g"] > 0)]
    for _ in range(20):  # LAMOST files' own S/N spread, jittered
        s = float(real[rng.integers(len(real))] * np.exp(rng.normal(0, 0.2)))
        if lo <= s <= hi:
            return s
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _instrument(rng: np.random.Generator, lib: dict, flux: np.ndarray, snr: float,
                intrinsic_snr: float = np.inf) -> tuple[np.ndarray, ...]:
    """Dust, calibration, arms, throughput, noise, sky, cosmic rays, masks: (flux, ivar, andmask, snr_g, snr_r,
    arm scale, arm join). ``intrinsic_snr``: the S/N of noise the template already carries (real spectra)."""
    wave = WAVELENGTH
    flux = flux * 10.0 ** (-0.4 * rng.exponential(0.04) * _milky_way_k(wave))
    flux = np.nan_to_num(flux, nan=0.0, posinf=0.0, neginf=0.0)
    flux = flux / max(np.median(flux[G_BAND]), 1e-3 * np.median(flux[R_BAND]), 1e-30)
    # flux calibration: a power-law tilt and a gentle curvature
    x = (wave - 6400.0) / 2700.0
    flux = flux * (wave / 5500.0) ** rng.normal(0, 0.15) * (1 + rng.normal(0, 0.04) * (x**2 - 1 / 3))
    # blue/red arms: the red arm scaled against the blue, a big mismatch in one spectrum of five
    big = rng.random() < 0.2
    arm = np.exp(rng.normal(0, 0.3)) if big else np.exp(rng.normal(0, 0.04))
    join = rng.uniform(5700.0, 5900.0)
    flux = flux * (1 + (arm - 1) / (1 + np.exp(-(wave - join) / 8.0)))
    throughput = rng.uniform(0.3, 1.0)  # fibre throughput: a fainter fibre sees relatively more sky
    flux = flux * throughput * 100.0
    # noise: the per-pixel noise shape and mask of a real LAMOST star, scaled to the drawn S/N
    d = int(rng.integers(len(lib["noise_sigma"])))
    shape, donor_masked = lib["noise_sigma"][d], lib["noise_mask"][d]
    # a g band emptied by the Lyman forest must not make the red side noiseless
    level = max(np.median(np.abs(flux[G_BAND])), 0.1 * np.median(np.abs(flux[R_BAND]))) / snr
    level_intrinsic = level * snr / intrinsic_snr
    added = shape * np.sqrt(max(level**2 - level_intrinsic**2, (0.2 * level) ** 2))
    # sky-subtraction residuals (a sky that outshines faint objects) and the sky lines' photon noise
    sky_peak = level * rng.uniform(3, 30) * (0.65 / throughput)
    added = np.sqrt(added**2 + (0.15 * sky_peak * SKY_PROFILE) ** 2)
    sigma = np.sqrt(added**2 + (shape * level_intrinsic) ** 2)
    residual = sky_peak * (rng.normal(0, 0.04, len(SKY_LINES)) @ SKY_LINE_PROFILES)  # per-line subtraction errors
    noisy = flux + added * rng.standard_normal(NPIX) + residual
    # cosmic rays (1-3 pixels, unmasked) and, rarely, a huge spike of the kind that sets min-max scaling
    for _ in range(rng.poisson(1.0)):
        p = int(rng.integers(NPIX - 3))
        noisy[p:p + int(rng.integers(1, 4))] += level * rng.uniform(5, 50)
    if rng.random() < 0.05:
        noisy[int(rng.integers(NPIX))] += np.sign(rng.normal()) * np.max(np.abs(flux)) * rng.uniform(3, 30)
    ivar = np.where(sigma > 0, 1.0 / np.maximum(sigma, 1e-30) ** 2, 0.0)
    andmask = np.zeros(NPIX, dtype=np.int32)
    andmask[donor_masked] |= ANDMASK_DONOR
    if rng.random() < 0.1:  # a bad CCD column stretch
        p = int(rng.integers(NPIX - 40))
        andmask[p:p + int(rng.integers(3, 40))] |= ANDMASK_BADPIX
    masked = andmask != 0
    ivar[masked], noisy[masked] = 0.0, 0.0
    good = ~masked
    snr_g = float(np.median((noisy * np.sqrt(ivar))[G_BAND & good])) if (G_BAND & good).any() else 0.0
    snr_r = float(np.median((noisy * np.sqrt(ivar))[R_BAND & good])) if (R_BAND & good).any() else 0.0
    return noisy, ivar, andmask, snr_g, snr_r, arm, join


# --------------------------------------------------------------------------------------------------
# the interface

def _block(seed: int, block: int, lib: dict, class_mix: np.ndarray, snr_distribution: str,
           snr_range: tuple[float, float]) -> dict:
    rng = np.random.default_rng(np.random.SeedSequence([seed, block]))
    n = BLOCK
    classes = np.array(["STAR", "GALAXY", "QSO"])[rng.choice(3, size=n, p=class_mix)]
    rows: dict[str, list] = {k: [] for k in ("flux", "ivar", "andmask", "class", "subclass", "template", "z", "snr_g",
                                               "snr_r", "resolution", "snr_requested", "arm_mismatch", "arm_join",
                                               "velocity_dispersion", "ebv")}
    drawers = {"STAR": _draw_star, "GALAXY": _draw_galaxy, "QSO": _draw_qso}
    for cls in classes:
        info: dict = {}
        flux, subclass, template, z, tmpl_sigma = drawers[cls](rng, lib, info)
        if tmpl_sigma > 0:
            flux, resolution = _lsf(rng, flux, tmpl_sigma)
        else:  # real LAMOST stars: already at LAMOST's resolution
            resolution = 1800.0
        snr = _real_snr(rng, lib, snr_distribution, *snr_range)
        noisy, ivar, andmask, snr_g, snr_r, arm, join = _instrument(rng, lib, flux, snr,
                                                                    info.get("intrinsic_snr", np.inf))
        for key, value in (("flux", noisy), ("ivar", ivar), ("andmask", andmask), ("class", cls), ("subclass", subclass),
                           ("template", template), ("z", z), ("snr_g", snr_g), ("snr_r", snr_r),
                           ("resolution", resolution), ("snr_requested", snr), ("arm_mismatch", float(np.log(arm))),
                           ("arm_join", join),
                           ("velocity_dispersion", info.get("velocity_dispersion", np.nan)),
                           ("ebv", info.get("ebv", 0.0))):
            rows[key].append(value)
    return rows


def simulate(n: int, seed: int, *, class_mix: Sequence[float] = (1 / 3, 1 / 3, 1 / 3), snr_distribution: str = "real",
             snr_range: tuple[float, float] = (2.0, 100.0), start: int = 0, chunk_size: int = 1000,
             templates_dir: str | Path | None = None) -> Iterator[MockChunk]:
    """Yield mocks ``start .. start + n - 1`` of this family in chunks of ``chunk_size`` (see the module docstring)."""
    if snr_distribution not in ("real", "loguniform"):
        raise ValueError(f"snr_distribution must be 'real' or 'loguniform', not {snr_distribution!r}")
    mix = np.asarray(class_mix, dtype=np.float64)
    if mix.shape != (3,) or (mix < 0).any() or mix.sum() <= 0:
        raise ValueError(f"class_mix must be three non-negative fractions (STAR, GALAXY, QSO), not {tuple(class_mix)}")
    mix = mix / mix.sum()
    lib = _library(str(_templates_root(templates_dir)))
    cache: dict[int, dict] = {}
    for lo in range(start, start + n, chunk_size):
        hi = min(lo + chunk_size, start + n)
        parts: dict[str, list] = {}
        for i in range(lo, hi):
            b = i // BLOCK
            if b not in cache:
                cache.clear()
                cache[b] = _block(seed, b, lib, mix, snr_distribution, tuple(snr_range))
            for key, values in cache[b].items():
                parts.setdefault(key, []).append(values[i - b * BLOCK])
        m = hi - lo
        truth = {
            "id": np.arange(lo, hi, dtype=np.int64),
            "class": np.array(parts["class"], dtype=str), "subclass": np.array(parts["subclass"], dtype=str),
            "template": np.array(parts["template"], dtype=str), "z": np.array(parts["z"], dtype=np.float64),
            "snr_g": np.array(parts["snr_g"], dtype=np.float32), "snr_r": np.array(parts["snr_r"], dtype=np.float32),
            "resolution": np.array(parts["resolution"], dtype=np.float32), "family": np.full(m, FAMILY),
            "snr_requested": np.array(parts["snr_requested"], dtype=np.float32),
            "arm_mismatch": np.array(parts["arm_mismatch"], dtype=np.float32),  # ln(red arm / blue arm scale)
            "arm_join": np.array(parts["arm_join"], dtype=np.float32),
            # galaxies' stellar velocity dispersion (km/s; NaN for others) and intrinsic E(B-V) (0 for stars)
            "velocity_dispersion": np.array(parts["velocity_dispersion"], dtype=np.float32),
            "ebv": np.array(parts["ebv"], dtype=np.float32),
        }
        yield MockChunk(np.array(parts["flux"], dtype=np.float32), np.array(parts["ivar"], dtype=np.float32),
                        np.array(parts["andmask"], dtype=np.int32), truth)
