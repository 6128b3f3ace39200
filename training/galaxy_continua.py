"""Galaxy continua and passive galaxies' Lick indices of each mock family, beside real and published galaxies'.

    python training/galaxy_continua.py [--families survey eigen physical] [--n 3000] [--seed 23]

D4000n (Balogh et al. 1999): mean flux 4000-4100 A over 3850-3950 A, rest frame; the 4000 A break, ~1.1-1.3
for star-forming and ~1.8-2.2 for old populations in SDSS (Kauffmann et al. 2003). C: median flux
4200-4400 A over 6000-6200 A, rest frame (F_lambda); a flat F_nu (g - r ~ 0, bluer than nearly every real
galaxy) gives C = 2.0, and A0 stars ~3. g - r: the rest-frame AB colour through top-hat bands (g 3900-5500 A,
r 5450-6950 A; to z 0.3 on the LAMOST grid), for comparison with SDSS's red (~0.75) and blue (~0.2-0.65)
sequences (Strateva et al. 2001, Baldry et al. 2004). Per family: the percentiles of ``--n`` of its mocks
(half stars, half galaxies; S/N log-uniform 10-100, the real files' instrument as the family draws it)
with z < 0.4 (6200 A must stay on the grid), PASSIVE apart; its stars for comparison. Every spectrum is
measured as the pipeline prepares it with the normalisation's pedestal added back (the spectrum itself,
scaled: a ratio of fluxes read on the min-max normalised flux is not the spectrum's). Then the same
numbers for the real SDSS galaxies in ../shared (validation only: reported beside the mocks, never used to
make them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from validate_redshift import SHARED, prepared, prepared_mocks  # noqa: E402

from lamost_classify.contract import WAVELENGTH  # noqa: E402

PERCENTILES = (5, 25, 50, 75, 95)
#: Lick indices (Worthey et al. 1994, Trager et al. 1998; air wavelengths, A): index band, blue and red
#: pseudo-continua, and whether the index is in magnitudes (molecular) rather than an equivalent width
LICK = {
    "G4300": ((4281.375, 4316.375), (4266.375, 4282.625), (4318.875, 4335.125), False),
    "Fe4383": ((4369.125, 4420.375), (4359.125, 4370.375), (4442.875, 4455.375), False),
    "Hbeta": ((4847.875, 4876.625), (4827.875, 4847.875), (4876.625, 4891.625), False),
    "Mg2": ((5154.125, 5196.625), (4895.125, 4957.625), (5301.125, 5366.125), True),
    "Mgb": ((5160.125, 5192.625), (5142.625, 5161.375), (5191.375, 5206.375), False),
    "Fe5270": ((5245.650, 5285.650), (5233.150, 5248.150), (5285.650, 5318.150), False),
    "Fe5335": ((5312.125, 5352.125), (5304.625, 5315.875), (5353.375, 5363.375), False),
    "NaD": ((5876.875, 5909.375), (5860.625, 5875.625), (5922.125, 5948.125), False),
}


def continuum_numbers(flux: np.ndarray, z: np.ndarray, wavelength: np.ndarray = WAVELENGTH,
                      usable: np.ndarray | None = None) -> np.ndarray:
    """(B, 3): D4000n, C and g - r of each spectrum (F_lambda on the log-uniform ``wavelength`` grid; the
    pipeline's by default) at its redshift; NaN where a window has <= 5 ``usable`` pixels (default: flux
    not 0) or leaves the grid."""
    out = np.full((len(flux), 3), np.nan)
    usable = np.asarray(flux) != 0 if usable is None else np.asarray(usable)
    for i, (f, zz, good) in enumerate(zip(flux, z, usable)):
        rest = wavelength / (1.0 + zz)

        def level(lo: float, hi: float, how=np.mean, of=f) -> np.float64:
            k = (rest >= lo) & (rest < hi) & good
            inside = rest[0] <= lo and rest[-1] >= hi
            # np.float64, not float: a zero level then divides to inf instead of raising
            return np.float64(how(of[k])) if k.sum() > 5 and inside else np.float64(np.nan)

        # AB band flux on a log-uniform grid: the mean of F_lambda lambda^2 over the band's pixels
        f_nu = f * rest**2
        with np.errstate(divide="ignore", invalid="ignore"):
            out[i] = (level(4000, 4100) / level(3850, 3950),
                      level(4200, 4400, np.median) / level(6000, 6200, np.median),
                      -2.5 * np.log10(level(3900, 5500, of=f_nu) / level(5450, 6950, of=f_nu)))
    return out


def lick_indices(flux: np.ndarray, z: np.ndarray, usable: np.ndarray, wavelength: np.ndarray = WAVELENGTH) -> np.ndarray:
    """(B, len(LICK)) Lick indices of each spectrum at its redshift (equivalent widths in A, Mg2 in
    magnitudes), the bands moved to vacuum: the pseudo-continuum the line through the mean flux of the two
    side bands at their centres; NaN where a band has fewer than 3 ``usable`` pixels. Measured at the
    spectrum's own resolution, not broadened to Lick's (~8-11 A FWHM): at LAMOST's (~3 A) and a velocity
    dispersion of ~200 km/s the two are alike, and narrower lines read a little stronger here."""
    from lamost_classify.pipeline.readers.sdss_spspec import air_to_vacuum

    step = np.log(wavelength[1] / wavelength[0])  # ln-wavelength step: d(lambda) = lambda * step
    vacuum = [([air_to_vacuum(np.array(b)) for b in bands[:3]], bands[3]) for bands in LICK.values()]
    out = np.full((len(flux), len(LICK)), np.nan)
    for i, (f, zz, good) in enumerate(zip(flux, z, usable)):
        rest = wavelength / (1.0 + zz)
        for j, (bands, magnitudes) in enumerate(vacuum):
            inside = [(rest >= lo) & (rest < hi) & good for lo, hi in bands]
            if min(k.sum() for k in inside) < 3:
                continue
            (w_b, f_b), (w_r, f_r) = ((rest[k].mean(), f[k].mean()) for k in inside[1:])
            k = inside[0]
            continuum = f_b + (f_r - f_b) * (rest[k] - w_b) / (w_r - w_b)
            ratio = f[k] / continuum
            if magnitudes:
                out[i, j] = -2.5 * np.log10(np.sum(ratio * rest[k]) / np.sum(rest[k]))
            else:
                out[i, j] = np.sum((1.0 - ratio) * rest[k] * step)
    return out


def percentiles(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    if not len(values):
        return "n=0"
    return f"n={len(values):4d}  " + " ".join(f"{v:5.2f}" for v in np.percentile(values, PERCENTILES))


def family_spectra(family: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(flux with its pedestal, usable pixels, truth) of ``n`` of ``family``'s mocks, half stars and half
    galaxies, S/N log-uniform 10-100, as the pipeline prepares them."""
    flux, ivar, pedestal, truth = prepared_mocks(family, n, seed, (0.5, 0.5, 0.0), (10.0, 100.0), ("class", "subclass", "z"))
    return flux + pedestal[:, None], ivar > 0, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["survey", "eigen", "physical"])
    parser.add_argument("--n", type=int, default=3000, help="mocks per family, half of them galaxies")
    parser.add_argument("--seed", type=int, default=23)
    args = parser.parse_args()

    print("percentiles " + "/".join(str(p) for p in PERCENTILES))
    for family in args.families:
        flux, usable, truth = family_spectra(family, args.n, args.seed)
        cls, sub, z = truth["class"], truth["subclass"], truth["z"].astype(float)
        groups = {"passive galaxies": (cls == "GALAXY") & (sub == "PASSIVE"),
                  "other galaxies": (cls == "GALAXY") & (sub != "PASSIVE"), "stars": cls == "STAR"}
        for name, rows in groups.items():
            rows = np.flatnonzero(rows & (z < 0.4))
            numbers = continuum_numbers(flux[rows], z[rows], usable=usable[rows])
            print(f"{family:9s} {name:17s} D4000n {percentiles(numbers[:, 0])}   C {percentiles(numbers[:, 1])}   "
                  f"g-r {percentiles(numbers[:, 2])}")
        passive = np.flatnonzero(groups["passive galaxies"] & (z < 0.4))
        indices = lick_indices(flux[passive], z[passive], usable[passive])
        for j, name in enumerate(LICK):
            print(f"{family:9s} passive galaxies  {name:7s} {percentiles(indices[:, j])}")
    files = sorted(str(p) for p in (SHARED / "sdss" / "galaxy").glob("spec-*"))
    if not files:
        print(f"no real galaxies in {SHARED / 'sdss' / 'galaxy'}")
        return
    spectra, batch = prepared(files)
    flux, z, usable = batch.flux + batch.pedestal[:, None], np.array([s.meta.get("lamost_z") for s in spectra], float), batch.ivar > 0
    numbers, indices = continuum_numbers(flux, z, usable=usable), lick_indices(flux, z, usable)
    for s, (d4000, colour, g_r), lick in zip(spectra, numbers, indices):
        print(f"real SDSS {str(s.meta.get('lamost_subclass') or '-'):12s} z {s.meta.get('lamost_z'):.3f}  "
              f"D4000n {d4000:.2f}  C {colour:.2f}  g-r {g_r:.2f}  "
              + " ".join(f"{name} {value:.2f}" for name, value in zip(LICK, lick)))


if __name__ == "__main__":
    main()
