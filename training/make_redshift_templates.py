"""Make model/data/redshift_templates.npz, the templates the redshift refinement fits (model/redshift.py).

    python training/make_redshift_templates.py [--templates ../shared/data/templates]

From the public SDSS template files in ``../shared/data/templates/sdss``:

- STAR: the 123 spectra of spEigenStar-55734 (their NAMEi give the MK types) and the mean
  (eigenvector 0) of spEigenCVstar-55734, a cataclysmic variable;
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
from pathlib import Path

import numpy as np

from lamost_classify.mocks.templates import default_templates_dir, star_subclass
from lamost_classify.pipeline.grid import LOG_WAVELENGTH, N_PIXELS

STEP = float(LOG_WAVELENGTH[1] - LOG_WAVELENGTH[0])
# Redshift range each class is fitted over. Stars: radial velocities to ~1,000 km/s. Galaxies: LAMOST's
# galaxies lie below z ~ 0.6; 1.2 leaves room (spEigenGal reaches 1183 A, enough to z = 2.1). QSOs: the
# 3690 A blue end reaches Ly-alpha at z = 2, and spEigenQSO's 450 A blue end allows z up to 7.
Z_RANGE = {"STAR": (-0.004, 0.004), "GALAXY": (-0.005, 1.2), "QSO": (0.0, 6.0)}
OUT = Path(__file__).resolve().parents[1] / "model" / "data" / "redshift_templates.npz"


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
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    root = args.templates or default_templates_dir()
    if root is None or not (root / "sdss").is_dir():
        raise SystemExit("no SDSS templates found: pass --templates DIR (the one holding sdss/spEigen*.fits)")
    sdss = root / "sdss"
    out: dict[str, np.ndarray] = {"step": np.float64(STEP), "loglam_first_pixel": np.float64(LOG_WAVELENGTH[0])}

    k0, rest = class_grid("STAR")
    loglam, stars, header = read(sdss / "spEigenStar-55734.fits")
    names = [str(header.get(f"NAME{i}", f"star{i}")).strip() for i in range(len(stars))]
    cv_loglam, cv, _ = read(sdss / "spEigenCVstar-55734.fits")
    cv_mean = cv[:1] if np.median(cv[0]) > 0 else -cv[:1]
    basis = np.concatenate([rebin_log(loglam, stars, rest), rebin_log(cv_loglam, cv_mean, rest)])
    labels = [_star_label(n) for n in names] + ["CV"]
    out.update(STAR_basis=basis.astype(np.float32), STAR_k0=np.int64(k0),
               STAR_names=np.array(names + ["CV (spEigenCVstar mean)"]), STAR_subclass=np.array(labels))

    for objclass, name in (("GALAXY", "spEigenGal-56436.fits"), ("QSO", "spEigenQSO-55732.fits")):
        k0, rest = class_grid(objclass)
        loglam, eigen, _ = read(sdss / name)
        out[f"{objclass}_basis"] = rebin_log(loglam, eigen, rest).astype(np.float32)
        out[f"{objclass}_k0"] = np.int64(k0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): "
          + ", ".join(f"{c} {out[f'{c}_basis'].shape}" for c in ("STAR", "GALAXY", "QSO")))


def _star_label(name: str) -> str:
    """The catalog subclass of an spEigenStar type name: MK letter and subtype ('K3', 'A0'), or the
    letter alone when the name has no digit ('Am' -> 'A'), 'WD', 'C' (carbon), 'L'."""
    label = star_subclass(name)
    return {"Carbon": "C"}.get(label, label)


if __name__ == "__main__":
    main()
