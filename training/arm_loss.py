"""How the shipped model reads spectra with part of one arm missing (the ARM_MISSING flag's evidence).

    python training/arm_loss.py [--mocks 600] [--model default]

Real LAMOST stars (lamost-dr8-stars, lamost/dr1, lamost/dr2 in ../shared; LAMOST's CLASS STAR) and
physical-family mock galaxies and QSOs (S/N log-uniform 5-100, seed 41) have one arm set to no data (flux
0, ivar 0) from its outer end, leaving a share of its log-wavelength range next to the arm join; for each
share, the fraction of stars published STAR (survey prior) and STAR under the balanced prior, and of
galaxies and QSOs published and balanced as their class. Then the same for the stars whose own files
start beyond 4,000 A (DR1 and DR2 plates' blue ends, lost in the instrument, not blanked here), held out
(``is_held_out``) and not; and every real LAMOST star in ../shared by the share of its blue arm's grid
pixels that hold data, as ARM_MISSING measures it (the flag is set below half).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_redshift import SHARED, STAR_DIRS  # noqa: E402

LEFT = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
BLANKED_DIRS = ("lamost-dr8-stars", "lamost/dr1", "lamost/dr2")  # the stars the table blanks
BLUE_SHARES = ((0.5, 0.7), (0.7, 0.9), (0.9, 1.0))


def gone(wavelength: np.ndarray, arm: str, left: float) -> np.ndarray:
    """The pixels of ``arm`` ('blue' or 'red') beyond the share ``left`` of its range nearest the join."""
    from lamost_classify.contract import ARM_JOIN, LOG_WAVELENGTH

    log_w = np.log10(wavelength)
    if arm == "blue":
        join = np.log10(ARM_JOIN[0])
        return log_w < join - left * (join - LOG_WAVELENGTH[0])
    join = np.log10(ARM_JOIN[1])
    return log_w > join + left * (LOG_WAVELENGTH[-1] - join)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mocks", type=int, default=600, help="physical-family galaxies and QSOs")
    parser.add_argument("--model", default="default", help="a shipped model's name or a weights path")
    args = parser.parse_args()
    from lamost_classify import CLASS_NAMES
    from lamost_classify.mocks.families import generate
    from lamost_classify.mocks.instrument import WAVELENGTH, is_held_out
    from lamost_classify.model.inference import Classifier
    from lamost_classify.pipeline import grid
    from lamost_classify.pipeline.readers import read_batch

    model = Classifier.load(args.model)
    found = [(sub, str(p)) for sub in STAR_DIRS for p in sorted((SHARED / sub).glob("spec-*"))]
    spectra = read_batch([f for _, f in found])
    is_star = [(s.meta.get("lamost_class") or "").upper() == "STAR" for s in spectra]
    every_star = [s for s, star in zip(spectra, is_star) if star]  # every real LAMOST star, read once
    found = [sf for sf, star in zip(found, is_star) if star]
    in_table = np.array([sub in BLANKED_DIRS for sub, _ in found])
    stars = [s for s, k in zip(every_star, in_table) if k]
    held_out = np.array([is_held_out(Path(f)) for _, f in found])
    if not stars:
        raise SystemExit(f"no LAMOST stars under {SHARED}")
    chunks = list(generate("physical", args.mocks, 41, class_mix=(0.0, 0.5, 0.5), snr_distribution="loguniform",
                           snr_range=(5.0, 100.0)))
    truth = np.array([CLASS_NAMES.index(c) for chunk in chunks for c in chunk.truth["class"]])
    print(f"{len(stars)} real stars, {len(truth)} physical galaxies and QSOs; per share of the arm left: stars "
          "STAR published / balanced, galaxies and QSOs right published / balanced")
    for arm in ("blue", "red"):
        for left in LEFT:
            blanked = []
            for s in stars:
                out = gone(np.asarray(s.wavelength), arm, left)
                blanked.append(dataclasses.replace(s, flux=np.where(out, 0, s.flux).astype(np.float32),
                                                   ivar=np.where(out, 0, s.ivar).astype(np.float32)))
            published, balanced = model.predict_proba_and_balanced(grid.prepare(blanked).flux)
            out = gone(WAVELENGTH, arm, left)
            mocks = grid.prepare_arrays(WAVELENGTH, np.concatenate([np.where(out, 0, c.flux) for c in chunks]),
                                        np.concatenate([np.where(out, 0, c.ivar) for c in chunks]),
                                        np.concatenate([c.andmask for c in chunks]))
            mock_published, mock_balanced = model.predict_proba_and_balanced(mocks.flux)
            print(f"{arm:4s} arm {left:4.0%} left: stars {np.mean(published.argmax(1) == 0):.3f} / "
                  f"{np.mean(balanced.argmax(1) == 0):.3f}   galaxies and QSOs "
                  f"{np.mean(mock_published.argmax(1) == truth):.3f} / {np.mean(mock_balanced.argmax(1) == truth):.3f}",
                  flush=True)
    prepared = grid.prepare(every_star)
    published, balanced = model.predict_proba_and_balanced(prepared.flux)
    first = np.array([np.asarray(s.wavelength)[np.asarray(s.ivar) > 0].min(initial=np.inf) for s in every_star])
    short = in_table & np.isfinite(first) & (first > 4000.0)
    if short.any():
        for name, part in (("held out", short & held_out), ("not held out", short & ~held_out)):
            print(f"stars whose files start at {first[short].min():.0f}-{first[short].max():.0f} A, {name}: "
                  f"{np.sum(published[part].argmax(1) == 0)} / {np.sum(balanced[part].argmax(1) == 0)} of "
                  f"{part.sum()} STAR published / balanced")
    share = (prepared.ivar[:, grid.ARMS[0]] > 0).mean(axis=1)
    for low, high in BLUE_SHARES:
        part = (share >= low) & ((share < high) if high < 1.0 else (share <= high))
        print(f"real stars with {low:.0%}-{high:.0%} of the blue arm's grid pixels holding data: "
              f"{np.sum(published[part].argmax(1) == 0)} / {np.sum(balanced[part].argmax(1) == 0)} of {part.sum()} "
              "STAR published / balanced", flush=True)


if __name__ == "__main__":
    main()
