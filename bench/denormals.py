"""Does inference need denormal floats flushed to zero, as training does?

    python bench/denormals.py [--models single,default] [--threads 2] [--n 2048] [--rounds 4]

Training flushes denormals inside ``fit()`` only (``model/runtime.py: denormals_flushed``: Adam's moment
estimates decay into them, 10-100x slower on x86); inference runs with torch's default (off). This times
each shipped model's forward pass on ``--n`` prepared survey-family mocks with the flush off and on, in
alternated rounds of one process (so that other jobs' load hits both alike), and prints the best round of
each, their ratio, and the largest difference of a logit between the two.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from lamost_classify.model.inference import Classifier
from lamost_classify.model.runtime import set_threads


def prepared_mocks(n: int, seed: int = 5) -> np.ndarray:
    from lamost_classify.mocks.families import generate
    from lamost_classify.mocks.instrument import WAVELENGTH
    from lamost_classify.pipeline.grid import prepare_arrays

    return np.concatenate([prepare_arrays(WAVELENGTH, c.flux, c.ivar, c.andmask).flux
                           for c in generate("survey", n, seed, class_mix=(1 / 3, 1 / 3, 1 / 3))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="single,default")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    flux = prepared_mocks(args.n)
    print(f"{len(flux)} spectra, {threads} threads, load average {os.getloadavg()[0]:.2f}")
    for name in args.models.split(","):
        classifier = Classifier.load(name, device="cpu")
        classifier.predict_proba(flux[:256])  # warm-up
        rates: dict[bool, list[float]] = {False: [], True: []}
        logits: dict[bool, np.ndarray] = {}
        try:
            for _ in range(args.rounds):
                for flush in (False, True):
                    torch.set_flush_denormal(flush)
                    t0 = time.perf_counter()
                    logits[flush] = classifier.logits(flux)
                    rates[flush].append(len(flux) / (time.perf_counter() - t0))
        finally:
            torch.set_flush_denormal(False)
        off, on = max(rates[False]), max(rates[True])
        print(f"{name} ({classifier.name}): spectra/s flush off {off:.0f}, on {on:.0f} (best of {args.rounds}; "
              f"on/off {on / off:.3f}); largest logit difference {np.abs(logits[True] - logits[False]).max():.2e}")


if __name__ == "__main__":
    main()
