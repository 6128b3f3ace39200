"""Galaxy continua of each mock family beside real galaxies': two numbers any spectrum gives at its z.

    python training/galaxy_continua.py [--data work/families]

D4000n (Balogh et al. 1999): mean flux 4000-4100 A over 3850-3950 A, rest frame; the 4000 A break, ~1.1-1.3
for star-forming and ~1.8-2.2 for old populations in SDSS (Kauffmann et al. 2003). C: median flux
4200-4400 A over 6000-6200 A, rest frame (F_lambda); a flat F_nu (g - r ~ 0, bluer than nearly every real
galaxy) gives C = 2.0, and A0 stars ~3. g - r: the rest-frame AB colour through top-hat bands (g 3900-5500 A,
r 5450-6950 A; to z 0.3 on the LAMOST grid), for comparison with SDSS's red (~0.75) and blue (~0.2-0.65)
sequences (Strateva et al. 2001, Baldry et al. 2004). Per family: the percentiles of its ``lofo_test``
galaxies with S/N > 10 and z < 0.4 (6200 A must stay on the grid), PASSIVE apart; its stars for comparison.
Then the same numbers for the real SDSS galaxies in ../shared (validation only: reported beside the
mocks, never used to make them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from validate_redshift import SHARED, prepared  # noqa: E402

from lamost_classify.contract import WAVELENGTH  # noqa: E402

PERCENTILES = (5, 25, 50, 75, 95)


def continuum_numbers(flux: np.ndarray, z: np.ndarray, wavelength: np.ndarray = WAVELENGTH) -> np.ndarray:
    """(B, 3): D4000n, C and g - r of each spectrum (F_lambda on the log-uniform ``wavelength`` grid; the
    pipeline's by default) at its redshift; NaN where a window has <= 5 usable pixels or leaves the grid
    (masked pixels are 0 in a prepared spectrum)."""
    out = np.full((len(flux), 3), np.nan)
    for i, (f, zz) in enumerate(zip(flux, z)):
        rest = wavelength / (1.0 + zz)

        def level(lo: float, hi: float, how=np.mean, of=f) -> np.float64:
            k = (rest >= lo) & (rest < hi) & (f != 0)
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


def percentiles(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    if not len(values):
        return "n=0"
    return f"n={len(values):4d}  " + " ".join(f"{v:5.2f}" for v in np.percentile(values, PERCENTILES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("work/families"), help="one directory per family")
    args = parser.parse_args()
    import pyarrow.parquet as pq

    print("percentiles " + "/".join(str(p) for p in PERCENTILES))
    for family in sorted(d.name for d in args.data.iterdir() if (d / "lofo_test_flux.npy").exists()):
        flux = np.load(args.data / family / "lofo_test_flux.npy", mmap_mode="r")
        truth = pq.read_table(args.data / family / "lofo_test_truth.parquet").to_pydict()
        cls, sub = np.array(truth["class"]), np.array(truth["subclass"])
        z, snr = np.array(truth["z"]), np.array(truth["snr_g"])
        groups = {"passive galaxies": (cls == "GALAXY") & (sub == "PASSIVE"),
                  "other galaxies": (cls == "GALAXY") & (sub != "PASSIVE"), "stars": cls == "STAR"}
        for name, rows in groups.items():
            rows = np.flatnonzero(rows & (snr > 10) & (z < 0.4))
            numbers = continuum_numbers(np.asarray(flux[rows]), z[rows])
            print(f"{family:9s} {name:17s} D4000n {percentiles(numbers[:, 0])}   C {percentiles(numbers[:, 1])}   "
                  f"g-r {percentiles(numbers[:, 2])}")
    files = sorted(str(p) for p in (SHARED / "sdss" / "galaxy").glob("spec-*"))
    if not files:
        print(f"no real galaxies in {SHARED / 'sdss' / 'galaxy'}")
        return
    spectra, batch = prepared(files)
    numbers = continuum_numbers(batch.flux, np.array([s.meta.get("lamost_z") for s in spectra], float))
    for s, (d4000, colour, g_r) in zip(spectra, numbers):
        print(f"real SDSS {str(s.meta.get('lamost_subclass') or '-'):12s} z {s.meta.get('lamost_z'):.3f}  "
              f"D4000n {d4000:.2f}  C {colour:.2f}  g-r {g_r:.2f}")


if __name__ == "__main__":
    main()
