"""Reading speed on the real DR10 files, one process (not a test).

    python bench/read.py [--data ../shared/data/lamost/dr10-stars-A] [--limit N] [--rounds 3]

Prints files/s per core for (a) astropy's plain fits.open + reading the data, (b) our read_spectrum,
(c) the floor: reading the bytes and gunzipping them, and the ratios b/a and b/c; then spectra/s for
resample + normalise (grid.prepare_arrays) on a (1000, 3909) block. Rates are per CPU-second of this
process (best of --rounds), so other jobs on a shared machine disturb them less; wall-clock rates are
printed alongside.
"""

from __future__ import annotations

import argparse
import gzip
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits

from lamost_classify.pipeline import grid
from lamost_classify.pipeline.readers import read_batch, read_spectrum

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lamost" / "dr10-stars-A"


def astropy_plain(path: Path) -> None:
    """What a user would write: open, touch the header and every array of the COADD row."""
    with fits.open(path) as hdul:
        header = hdul[0].header
        _ = header["OBSID"], header["RA"], header["DEC"]
        row = hdul[1].data[0]
        _ = row["FLUX"] + 0, row["IVAR"] + 0, row["WAVELENGTH"] + 0, row["ANDMASK"] + 0


def gunzip_zlib(path: Path) -> None:
    zlib.decompress(path.read_bytes(), wbits=31)


def gunzip_gzip(path: Path) -> None:
    gzip.decompress(path.read_bytes())


def rates(methods: dict[str, Callable[[Path], object]], files: list[Path], rounds: int) -> dict[str, tuple[float, float]]:
    """Per method (files per CPU-second, files per wall-second), best of ``rounds``. The methods take turns
    within each round, so a burst of load from other jobs hits all of them alike."""
    best = {name: (0.0, 0.0) for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            cpu, wall = time.process_time(), time.perf_counter()
            for path in files:
                fn(path)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            best[name] = (max(best[name][0], len(files) / max(cpu, 1e-9)), max(best[name][1], len(files) / wall))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N files (0: all)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    files = sorted(args.data.glob("*.fits*"))
    if args.limit:
        files = files[: args.limit]
    if not files:
        raise SystemExit(f"no FITS files in {args.data}")
    for path in files:  # warm the page cache so every method reads from memory
        path.read_bytes()

    methods = {
        "(a) astropy fits.open + data": astropy_plain,
        "(b) read_spectrum": read_spectrum,
        "(c) read + gunzip (zlib)": gunzip_zlib,
        "(c') read + gzip.decompress": gunzip_gzip,
    }
    results = rates(methods, files, args.rounds)
    print(f"{len(files)} files from {args.data}, best of {args.rounds}\n")
    print(f"{'method':32s} {'files/s/core':>13s} {'files/s wall':>13s}")
    for name, (cpu, wall) in results.items():
        print(f"{name:32s} {cpu:13.0f} {wall:13.0f}")
    a, b, c = (results[k][0] for k in ("(a) astropy fits.open + data", "(b) read_spectrum", "(c) read + gunzip (zlib)"))
    print(f"\nb/a = {b / a:.1f}x astropy     b/c = {b / c:.2f} of the gunzip floor")

    spectra = read_batch(files[:1000])
    same_grid = [s for s in spectra if s.flux.size == spectra[0].flux.size]
    reps = -(-1000 // len(same_grid))
    flux = np.stack([s.flux for s in same_grid] * reps)[:1000]
    ivar = np.stack([s.ivar for s in same_grid] * reps)[:1000]
    andmask = np.stack([s.andmask for s in same_grid] * reps)[:1000]
    best = 0.0
    for _ in range(args.rounds):
        cpu = time.process_time()
        grid.prepare_arrays(same_grid[0].wavelength, flux, ivar, andmask)
        best = max(best, flux.shape[0] / (time.process_time() - cpu))
    print(f"\ngrid.prepare_arrays on a {flux.shape} block: {best:,.0f} spectra/s/core")


if __name__ == "__main__":
    main()
