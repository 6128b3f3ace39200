"""Does inference need denormal floats flushed to zero, as training does?

    python bench/denormals.py [--models single,default] [--threads 2] [--n 2048] [--rounds 4] [--seed 11]

Training flushes denormals inside ``fit()`` only (``model/runtime.py: denormals_flushed``: Adam's moment
estimates decay into them, 10-100x slower on x86); inference runs with torch's default (off). This times
each shipped model's forward pass on ``--n`` balanced mocks (``bench/infer.py``'s set, prepared as the
pipeline does) with the flush off and on, in alternated rounds of one process (so that other jobs' load
hits both alike), and prints the best round of each, their ratio, and the largest difference of a logit
between the two.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from infer import mock_set  # bench/ is the script's directory

from lamost_classify.model.inference import Classifier
from lamost_classify.model.runtime import set_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="single,default")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    flux, _ = mock_set(args.n, args.seed)
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
