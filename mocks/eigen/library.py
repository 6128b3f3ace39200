"""The eigen family's own readers of the data files: the SDSS eigenspectra, the redrock galaxy and star
archetypes, and the real LAMOST DR8 stars (noise shapes and star templates), cached per template root."""

from __future__ import annotations

import functools
import glob
import os
import re
from pathlib import Path

import numpy as np

from lamost_classify.contract import NATIVE_COEFF1

from .common import G_BAND, HALPHA, LOGW, NPIX

#: redrock stellar archetype sets used (subclass = the set's letter), and how many archetypes of each
REDROCK_STAR_SETS = ("A", "B", "F", "G", "K", "M", "WD")  # STAR-CV has a basis but no archetypes
REDROCK_ARCHETYPES_PER_SET = 48
LAMOST_TEMPLATE_MIN_SNR = 30.0

REPO_SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _shared_data_candidates() -> list[Path]:
    env = os.environ.get("LAMOST_SHARED_DATA")
    return ([Path(env)] if env else []) + [REPO_SHARED_DATA]


def templates_root(templates_dir: str | Path | None) -> Path:
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


@functools.lru_cache(maxsize=2)
def load_library(root_str: str) -> dict:
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


def is_supergiant(name: str) -> bool:
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
        offset = int(round((float(h.get("COEFF0", LOGW[0])) - LOGW[0]) / NATIVE_COEFF1))
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
