"""The real LAMOST stars that may be trained on, as a training-set directory train_shipped.py takes.

    python training/make_real_star_set.py --out work/realstars --repeat 10

Every real LAMOST star in ../shared (lamost/dr1, dr2, releases, dr10-stars-A, lamost-dr8-stars; the file's
own CLASS is STAR) that is NOT held out (``mocks.instrument.is_held_out``: the fixed 30% kept out of every
use, on which train_shipped.py and validate_real.py report), read and prepared by the pipeline's own
readers and grid, repeated ``--repeat`` times (each copy is augmented afresh by the training draw), as
``train_flux.npy`` + ``train_truth.parquet`` (class STAR, label 0, z = the file's Z, family 'real').
The SDSS and lamost-qso spectra are validation only and never read here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STAR_DIRS = ("lamost/dr1", "lamost/dr2", "lamost/releases", "lamost/dr10-stars-A", "lamost-dr8-stars")


def star_files(held_out: bool = False) -> list[str]:
    """The real LAMOST star files (by directory) that may be trained on, or (``held_out``) the fixed 30% kept
    out of every use but judging, in a fixed order."""
    from lamost_classify.mocks.instrument import is_held_out

    return [str(f) for sub in STAR_DIRS for f in sorted((SHARED / sub).rglob("spec-*")) if is_held_out(f) == held_out]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args()
    from lamost_classify.contract import Flag
    from lamost_classify.model.labelled import save_set
    from lamost_classify.pipeline import grid
    from lamost_classify.pipeline.readers import read_batch

    files = star_files()
    spectra = read_batch(files)
    keep = [i for i, s in enumerate(spectra) if (s.meta.get("lamost_class") or "").upper() == "STAR"]
    prepared = grid.prepare([spectra[i] for i in keep])
    usable = (prepared.flags & int(Flag.UNREADABLE)) == 0
    flux = np.repeat(prepared.flux[usable], args.repeat, axis=0)
    rows = [keep[i] for i in np.flatnonzero(usable)]
    truth = {"id": [Path(files[i]).name for i in rows], "class": ["STAR"] * len(rows), "label": [0] * len(rows),
             "subclass": [str(spectra[i].meta.get("lamost_subclass") or "") for i in rows],
             "z": [float(spectra[i].meta.get("lamost_z") or 0.0) for i in rows],
             "snr_g": prepared.snr[usable].astype(float).tolist(), "family": ["real"] * len(rows)}
    truth = {k: [v for v in values for _ in range(args.repeat)] for k, values in truth.items()}
    save_set(args.out, "train", flux, truth)
    print(f"{len(rows)} real stars (of {len(files)} files not held out) x {args.repeat} -> {args.out}")


if __name__ == "__main__":
    main()
