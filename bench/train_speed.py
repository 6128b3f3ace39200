"""Training speed of each preset: spectra per second through augmentation + forward + backward + Adam
step, batch 64, as ``model.train.fit`` does it (every spectrum augmented: the worst case).

    python bench/train_speed.py [--presets fast,paper] [--threads 2] [--steps 10]

Prints, per preset, the median and best of ``--steps`` timed steps after 2 warm-up steps, plus the
load average: on a shared machine other jobs' load slows these numbers, so report them with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from lamost_classify.model.augment import BalancedSpectra
from lamost_classify.model.densenet import build_model, count_flops, count_parameters
from lamost_classify.model.runtime import denormals_flushed, set_threads


@denormals_flushed()  # as fit() trains
def bench(preset: str, steps: int, batch_size: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    n = batch_size * (steps + 2)
    flux = rng.uniform(0, 1, size=(n, 2600)).astype(np.float32)
    labels = np.repeat(np.arange(3), -(-n // 3))[:n]
    labels[:3] = (0, 1, 2)
    # per_class above every class size: all but one copy of each spectrum are augmented copies.
    data = BalancedSpectra(flux, labels, seed=0, per_class=n)
    torch.manual_seed(0)
    model = build_model(preset).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    times = []
    batches = data.batches(batch_size)
    for step in range(steps + 2):
        started = time.perf_counter()
        x, y = next(batches)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - started)
    return batch_size / statistics.median(times), batch_size / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="fast,paper")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    print(f"torch {torch.__version__}, {threads} threads, batch {args.batch_size}, "
          f"load average before {os.getloadavg()[0]:.1f}")
    for preset in args.presets.split(","):
        model = build_model(preset)
        median, best = bench(preset, args.steps, args.batch_size)
        print(f"{preset:16s} {count_parameters(model):>11,d} params {count_flops(model) / 1e6:8.1f} MFLOPs/spectrum  "
              f"train {median:7.1f} spectra/s median, {best:7.1f} best  (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
