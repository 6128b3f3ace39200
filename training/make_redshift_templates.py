"""Make model/data/redshift_templates.npz, the templates the redshift refinement fits (model/redshift.py).

    python training/make_redshift_templates.py [--templates ../shared/data/templates] [--shared ../shared/data]

From the public SDSS template files in ``../shared/data/templates/sdss``:

- STAR (``star_library``): LAMOST-derived templates, made from the real LAMOST stars in ../shared
  (``--shared``) that are not held out (``is_held_out``): per LAMOST subclass (MK letter and subtype,
  luminosity class dropped) with at least ``MIN_MEMBERS`` members, split into up to ``MAX_COLOUR_BINS`` pseudo
  g-r colour bins as LAMOST's own template library was; each star shifted to rest by LAMOST's own Z, brought
  to the group's continuum by the multiplier the fit uses (a degree ``STAR_N_POLY`` - 1 polynomial and the
  arm-join step), and median-combined. LAMOST types stars against templates made from LAMOST spectra, so its
  boundaries (A/F, F/G, G/K) are those of its own spectra; these templates give the catalog the same ones.
  From spEigenStar-55734 (its NAMEi give the MK types): one spectrum per subtype that LAMOST's stars do not
  give (O, B, the rest of M, ...; the dwarf where there is one), and the white dwarfs, the carbon star and the
  L dwarf; the mean (eigenvector 0) of spEigenCVstar-55734, a cataclysmic variable. Only these derived means
  ship, never the LAMOST files;
- GALAXY: the 4 eigenspectra of spEigenGal-56436;
- QSO: the 4 eigenspectra of spEigenQSO-55732.

Each is rebinned, flux-conserving, onto a rest-frame log grid with the pipeline grid's own step and
phase (pipeline/grid.py: 2600 pixels, 3690-9100 A), so that a redshift of 10**(k * step) - 1 is a shift
by k whole pixels. The spEigen* spectra are at SDSS resolution (R ~ 2000), close to LAMOST's (~1800),
so they are not smoothed further. Each class's grid covers its redshift range (``Z_RANGE``) over the
whole observed grid. Stored float32; the file is what ships, so a fresh machine fits without ../shared.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from lamost_classify.mocks.instrument import is_held_out
from lamost_classify.mocks.templates import default_templates_dir, star_subclass
from lamost_classify.model.redshift import STAR_N_POLY, RedshiftFitter, arm_join_ramp, star_telluric_free
from lamost_classify.model.star_letter import LetterClassifier, fit_letter_classifier, star_letter_features
from lamost_classify.model.subclass import STEP
from lamost_classify.pipeline.grid import LOG_WAVELENGTH, N_PIXELS

# Redshift range each class is fitted over. Stars: radial velocities to ~1,000 km/s. Galaxies: LAMOST's
# galaxies lie below z ~ 0.6; 1.2 leaves room (spEigenGal reaches 1183 A, enough to z = 2.1). QSOs: the
# 3690 A blue end reaches Ly-alpha at z = 2, and spEigenQSO's 450 A blue end allows z up to 7.
Z_RANGE = {"STAR": (-0.004, 0.004), "GALAXY": (-0.005, 1.2), "QSO": (0.0, 6.0)}
OUT = Path(__file__).resolve().parents[1] / "model" / "data" / "redshift_templates.npz"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LAMOST_STAR_DIRS = ("lamost-dr8-stars", "lamost/dr10-stars-A", "lamost/dr1", "lamost/dr2", "lamost/releases")
# Members a LAMOST subclass needs for a template: a median of fewer is as noisy as one star and carries
# its peculiarities; rarer subclasses are left to spEigenStar.
MIN_MEMBERS = 5
# LAMOST built its own templates per subclass and pseudo g-r colour: a subclass's stars are split into
# up to this many colour bins of MIN_MEMBERS or more (chosen by cross-validation on the stars not held
# out, within the star fit's time budget: more bins cost time for little)
MAX_COLOUR_BINS = 4
MIN_COVER = 0.5  # fraction of a group's members that must have a pixel for its median to be kept there
SPECIAL_STAR_TYPES = ("WD", "C", "L")  # spEigenStar types kept whatever LAMOST's stars give


def rebin_log(loglam_src: np.ndarray, flux: np.ndarray, loglam_out: np.ndarray) -> np.ndarray:
    """Flux-conserving average of (k, N) spectra on the log grid ``loglam_src`` onto ``loglam_out``."""
    def edges(loglam: np.ndarray) -> np.ndarray:
        mid = (loglam[1:] + loglam[:-1]) / 2
        return 10.0 ** np.concatenate([[2 * loglam[0] - mid[0]], mid, [2 * loglam[-1] - mid[-1]]])

    src, out = edges(loglam_src), edges(loglam_out)
    if out[0] < src[0] or out[-1] > src[-1]:
        raise ValueError(f"templates cover {src[0]:.0f}-{src[-1]:.0f} A, {out[0]:.0f}-{out[-1]:.0f} A needed")
    cum = np.concatenate([np.zeros((len(flux), 1)), np.cumsum(flux * np.diff(src), axis=1)], axis=1)
    at = np.stack([np.interp(out, src, c) for c in cum])
    return np.diff(at, axis=1) / np.diff(out)


def class_grid(objclass: str) -> tuple[int, np.ndarray]:
    """(k0, rest log-lambda) of a class: template pixel j sits at LOG_WAVELENGTH[0] + (j - k0) * STEP."""
    z_lo, z_hi = Z_RANGE[objclass]
    k0 = int(np.ceil(np.log10(1 + z_hi) / STEP))  # shift of the highest redshift, in pixels
    k_lo = int(np.floor(np.log10(1 + z_lo) / STEP))  # (negative) shift of the lowest
    n = N_PIXELS + k0 - k_lo
    return k0, LOG_WAVELENGTH[0] + (np.arange(n) - k0) * STEP


def read(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from astropy.io import fits

    with fits.open(path) as h:
        data = np.asarray(h[0].data, dtype=np.float64)
        header = dict(h[0].header)
    return header["COEFF0"] + header["COEFF1"] * np.arange(data.shape[1]), data, header


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=Path, default=None, help="template directory (default: ../shared)")
    parser.add_argument("--shared", type=Path, default=SHARED_DATA,
                        help="real spectra directory holding the LAMOST star folders (default: ../shared/data)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    root = args.templates or default_templates_dir()
    if root is None or not (root / "sdss").is_dir():
        raise SystemExit("no SDSS templates found: pass --templates DIR (the one holding sdss/spEigen*.fits)")
    sdss = root / "sdss"
    out: dict[str, np.ndarray] = {"step": np.float64(STEP), "loglam_first_pixel": np.float64(LOG_WAVELENGTH[0])}

    k0, rest = class_grid("STAR")
    stars = list(lamost_stars(args.shared))  # read once: the templates and the letter classifier
    if not stars:
        raise SystemExit(f"no LAMOST stars under {args.shared} ({', '.join(LAMOST_STAR_DIRS)}): pass --shared DIR")
    basis, labels, names = star_library(sdss, stars, rest)
    out.update(STAR_basis=basis.astype(np.float32), STAR_k0=np.int64(k0), STAR_names=np.array(names),
               STAR_subclass=np.array(labels))
    print(f"STAR: {len(names)} templates: " + "; ".join(names))
    letters, chosen = letter_classifier(stars)
    out.update(letters.arrays())
    print(f"STAR letter classifier: letters {', '.join(letters.letters)}, weight decay {chosen['weight_decay']}; "
          "5-fold cross-validated agreement, averaged over the letters (all stars) " + ", ".join(
              f"{k:g}: {v:.3f} ({chosen['cv_agreement'][k]:.3f})" for k, v in chosen["cv_letter_agreement"].items()))

    for objclass, name in (("GALAXY", "spEigenGal-56436.fits"), ("QSO", "spEigenQSO-55732.fits")):
        k0, rest = class_grid(objclass)
        loglam, eigen, _ = read(sdss / name)
        out[f"{objclass}_basis"] = rebin_log(loglam, eigen, rest).astype(np.float32)
        out[f"{objclass}_k0"] = np.int64(k0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): "
          + ", ".join(f"{c} {out[f'{c}_basis'].shape}" for c in ("STAR", "GALAXY", "QSO")))


def star_library(sdss: Path, stars: list[tuple[str, float, np.ndarray, np.ndarray]], rest: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
    """(templates on ``rest``, subclass labels, names): the LAMOST-derived templates, and of spEigenStar
    one spectrum per subtype that LAMOST's stars do not give (the dwarf where there is one: survey stars
    are mostly dwarfs), every special type (WD, C, L) and the spEigenCVstar mean. The 123 spEigenStar
    spectra repeat subtypes with giants, supergiants and emission-line stars; where LAMOST's own
    templates cover a subtype the duplicates only cost time and pull real LAMOST stars to other letters."""
    lamost_basis, lamost_labels, lamost_names = lamost_star_templates(stars, rest)
    loglam, stars, header = read(sdss / "spEigenStar-55734.fits")
    names = [str(header.get(f"NAME{i}", f"star{i}")).strip() for i in range(len(stars))]
    chosen: dict[str, int] = {}
    for i, name in enumerate(names):
        label = _star_label(name)
        if label in lamost_labels or not re.match(r"^[OBAFGKM]\d$", label):
            continue
        if label not in chosen or (_is_dwarf(name) and not _is_dwarf(names[chosen[label]])):
            chosen[label] = i
    keep = sorted(chosen.values()) + [i for i, n in enumerate(names) if _star_label(n) in SPECIAL_STAR_TYPES]
    cv_loglam, cv, _ = read(sdss / "spEigenCVstar-55734.fits")
    cv_mean = cv[:1] if np.median(cv[0]) > 0 else -cv[:1]
    basis = np.concatenate([rebin_log(loglam, stars[keep], rest), rebin_log(cv_loglam, cv_mean, rest), lamost_basis])
    labels = [_star_label(names[i]) for i in keep] + ["CV"] + lamost_labels
    return basis, labels, [f"spEigenStar {names[i]}" for i in keep] + ["spEigenCVstar mean"] + lamost_names


def _is_dwarf(name: str) -> bool:
    """Whether an spEigenStar type name has luminosity class V ('B2.5V', 'B2IV-V', 'G0Va', 'K1V...')."""
    luminosity = re.sub(r"^(?:sd:?)?[OBAFGKM][\d.:/OBAFGKM]*", "", name.split()[0])
    return luminosity.startswith(("V", "IV-V"))


def lamost_star_label(subclass: str) -> str | None:
    """The catalog subclass of a LAMOST star SUBCLASS: MK letter and subtype without the luminosity
    class ('A1V' -> 'A1', 'dM5' -> 'M5'); None when it has no subtype ('Non', 'DoubleStar', 'WD')."""
    m = re.match(r"^(?:sd|d|g)?([OBAFGKM])(\d)", subclass.strip())
    return m.group(1) + m.group(2) if m else None


def lamost_star_templates(stars: list[tuple[str, float, np.ndarray, np.ndarray]], rest: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
    """(templates (T, len(rest)), subclass labels, names) made from the real LAMOST stars not held out
    (``lamost_stars``), on the rest grid ``rest``: per subclass with at least ``MIN_MEMBERS`` members,
    one per pseudo g-r colour bin (up to ``MAX_COLOUR_BINS``, each of ``MIN_MEMBERS`` or more)."""
    members: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for label, z, flux, ivar in stars:
        members.setdefault(label, []).append(_to_rest(flux, ivar, z, rest))
    basis, labels, names = [], [], []
    for label in sorted(members, key=lambda c: ("OBAFGKM".index(c[0]), c[1:])):
        group = members[label]
        n_bins = min(MAX_COLOUR_BINS, len(group) // MIN_MEMBERS)
        if n_bins == 0:
            continue
        colour = np.array([_pseudo_colour(f, w, rest) for f, w in group])
        for b, part in enumerate(np.array_split(np.argsort(colour), n_bins)):
            basis.append(_combine(np.stack([group[i][0] for i in part]), np.stack([group[i][1] for i in part]), rest))
            labels.append(label)
            names.append(f"LAMOST {label} (median of {len(part)}, g-r bin {b + 1}/{n_bins})")
    return np.stack(basis), labels, names


def lamost_stars(shared: Path) -> Iterator[tuple[str, float, np.ndarray, np.ndarray]]:
    """(catalog subclass, LAMOST's Z, grid flux plus its pedestal, ivar) of each real LAMOST star under
    ``shared`` that is not held out and has a subtype, a Z and valid pixels."""
    from lamost_classify.pipeline.grid import prepare
    from lamost_classify.pipeline.readers import read_batch

    for sub in LAMOST_STAR_DIRS:
        files = sorted(str(p) for p in (shared / sub).glob("spec-*") if not is_held_out(p))
        if not files:
            continue
        spectra = read_batch(files)
        batch = prepare(spectra)
        for i, spectrum in enumerate(spectra):
            label = lamost_star_label(str(spectrum.meta.get("lamost_subclass") or ""))
            z = spectrum.meta.get("lamost_z")
            if (str(spectrum.meta.get("lamost_class") or "").upper() == "STAR" and label is not None
                    and z is not None and np.isfinite(z) and batch.ivar[i].any()):
                # with the pedestal the normalisation subtracted, as the fit sees a star (model/redshift.py)
                yield label, float(z), batch.flux[i] + batch.pedestal[i], batch.ivar[i]


def rest_frame_letter_features(flux: np.ndarray, ivar: np.ndarray, z: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(letter features (B, F), usable rest-frame pixels (B, N)) of grid spectra (B, N) moved to rest by
    their z (B,), the telluric bands left out: a star as the fit's letter classifier sees it."""
    f = torch.from_numpy(np.asarray(flux)).float()
    w = torch.from_numpy(np.asarray(ivar) * star_telluric_free()).float()
    shift = torch.from_numpy(np.log10(1.0 + np.asarray(z, np.float64)) / STEP).float()
    f_rest, w_rest = RedshiftFitter._star_rest_frame(f, w, shift)
    return star_letter_features(f_rest, w_rest > 0), w_rest > 0


def letter_classifier(stars: list[tuple[str, float, np.ndarray, np.ndarray]]) -> tuple[LetterClassifier, dict]:
    """The star letter classifier (model/star_letter.py) trained on the LAMOST stars not held out
    (``lamost_stars``), each moved to rest by LAMOST's own Z and with the telluric bands left out, as the
    fit does."""
    features, _ = rest_frame_letter_features(np.stack([f for _, _, f, _ in stars]), np.stack([w for _, _, _, w in stars]),
                                             np.array([z for _, z, _, _ in stars]))
    return fit_letter_classifier(features.numpy(), [label[0] for label, *_ in stars])


def _pseudo_colour(flux: np.ndarray, ivar: np.ndarray, rest: np.ndarray) -> float:
    """A g - r colour from the spectrum itself (median flux over 4000-5500 A against 5500-7000 A)."""
    lam = 10.0 ** rest
    g = (ivar > 0) & (lam > 4000) & (lam < 5500)
    r = (ivar > 0) & (lam > 5500) & (lam < 7000)
    if not g.any() or not r.any():
        return np.nan
    return float(-2.5 * np.log10(max(np.median(flux[g]), 1e-6) / max(np.median(flux[r]), 1e-6)))


def _to_rest(flux: np.ndarray, ivar: np.ndarray, z: float, rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A star's grid flux and ivar at rest-frame ``rest`` (ivar 0 where a neighbouring pixel is invalid)."""
    observed = LOG_WAVELENGTH - np.log10(1.0 + z)
    good = np.interp(rest, observed, (ivar > 0).astype(np.float64), left=0.0, right=0.0) > 0.999
    f = np.interp(rest, observed, flux.astype(np.float64))
    w = np.interp(rest, observed, ivar.astype(np.float64))
    return np.where(good, f, 0.0), np.where(good, w, 0.0)


def _combine(flux: np.ndarray, ivar: np.ndarray, rest: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Median of (n, M) spectra of one type on the rest grid ``rest`` after dividing each by the multiplier
    (the fit's own: degree ``STAR_N_POLY`` - 1 and the arm-join ramp) that best brings the current median
    to it: flux calibration, reddening and the two arms' scales differ from star to star, the lines of one
    type do not. Unit median."""
    good = ivar > 0
    x = np.linspace(-1.0, 1.0, flux.shape[1])
    poly = np.stack([np.polynomial.legendre.Legendre.basis(k)(x) for k in range(STAR_N_POLY)]
                    + [arm_join_ramp(rest)[0].numpy()])
    scale = np.array([np.median(f[g]) for f, g in zip(flux, good)])
    scaled = flux / np.where(scale > 0, scale, 1.0)[:, None]
    template = _masked_median(scaled, good)
    for _ in range(iterations):
        normalised = np.empty_like(scaled)
        for i, (f, w) in enumerate(zip(scaled, ivar)):
            design = (template * poly).T * np.sqrt(w)[:, None]
            coeffs = np.linalg.lstsq(design, f * np.sqrt(w), rcond=None)[0]
            continuum = coeffs @ poly
            # A polynomial that nears zero somewhere fits no real continuum: the star is left out there.
            good[i] &= continuum > 0.1 * np.median(continuum)
            normalised[i] = f / np.where(good[i], continuum, 1.0)
        template = _masked_median(normalised, good)
    return template / np.median(template)


def _masked_median(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Per-pixel median over the spectra good there; pixels that too few cover (the grid's ends) take the
    nearest covered value."""
    cover = good.mean(0) >= MIN_COVER
    median = np.nanmedian(np.where(good, values, np.nan)[:, cover], axis=0)
    return np.interp(np.arange(values.shape[1]), np.flatnonzero(cover), median)


def _star_label(name: str) -> str:
    """The catalog subclass of an spEigenStar type name: MK letter and subtype ('K3', 'A0'), or the
    letter alone when the name has no digit ('Am' -> 'A'), 'WD', 'C' (carbon), 'L'."""
    label = star_subclass(name)
    return {"Carbon": "C"}.get(label, label)


if __name__ == "__main__":
    main()
