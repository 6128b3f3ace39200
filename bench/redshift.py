"""What the redshift outputs cost per spectrum, against the network alone, in one process.

On a simulated release (LAMOST files, survey-family mocks: the survey's class mix and a balanced one):
  read + prepare (pipeline stage 1), the network alone (the shipped model's fast path without its
  redshift head), the shipped network with its head, and the template
  refinement per class (stars, galaxies, QSOs), each the best of ``--rounds`` rounds on one thread;
then the pipeline's cost per spectrum at the survey mix with and without the refinement, the share it
adds, and the share a CPU-only pipeline loses (all stages on the same cores).

    python bench/redshift.py [--n 2000] [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def best_time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="spectra per class mix")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="spectra per call (the pipeline's batch)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lamost_classify.mocks.release import write_release
    from lamost_classify.mocks.simulate import simulate
    from lamost_classify.model.densenet import build_model
    from lamost_classify.model.ensemble import LogitMean
    from lamost_classify.model.inference import Classifier
    from lamost_classify.model.redshift import RedshiftFitter
    from lamost_classify.model.weights import load_weights
    from lamost_classify.pipeline import stages
    from lamost_classify.pipeline.plan import discover_inputs, make_plan

    root = Path(tempfile.mkdtemp(prefix="lamost-bench-z-"))
    write_release(simulate(args.n, seed=12, class_mix="survey"), root / "survey", seed=12)
    plan = make_plan(discover_inputs([str(root / "survey")]), args.batch)
    read_s = best_time(lambda: [stages.read_and_prepare(b) for b in plan.batches()], 1)
    records = [stages.read_and_prepare(b) for b in plan.batches()]
    flux = np.concatenate([r.flux for r in records])
    ivar = np.concatenate([r.ivar for r in records])
    pedestal = np.concatenate([r.pedestal for r in records])
    usable = np.concatenate([r.usable for r in records])
    flux, ivar, pedestal = flux[usable], ivar[usable], pedestal[usable]
    n = len(flux)

    # The shipped model carries a redshift head: "the network alone" is the same weights without it.
    with_head = Classifier.load("default", device="cpu")
    net, card = load_weights("default")
    overrides = {k: v for k, v in card.get("overrides", {}).items() if k != "redshift_hidden"}
    headless = build_model(net.preset, **overrides)
    if isinstance(net, LogitMean):
        headless = LogitMean([headless] + [build_model(net.preset, **overrides) for _ in net.members[1:]])
    headless.load_state_dict(net.state_dict(), strict=False)
    classifier = Classifier(headless.eval(), card, "cpu")
    fitter = RedshiftFitter()
    classes = classifier.predict_proba(flux).argmax(1)

    def batched(fn):
        return lambda: [fn(i) for i in range(0, n, args.batch)]

    sl = lambda i: slice(i, i + args.batch)  # noqa: E731
    t_net = best_time(batched(lambda i: classifier.predict_proba_and_balanced(flux[sl(i)])), args.rounds)
    t_head = best_time(batched(lambda i: with_head.fast.outputs(flux[sl(i)])), args.rounds)
    t_fit = best_time(batched(lambda i: fitter.fit(flux[sl(i)], ivar[sl(i)], classes[sl(i)], pedestal=pedestal[sl(i)])),
                      args.rounds)
    t_all = best_time(batched(lambda i: with_head.predict_with_redshift(flux[sl(i)], ivar[sl(i)], pedestal[sl(i)])),
                      args.rounds)

    # Per class, on a balanced set (the survey mix has too few galaxies and QSOs to time them alone).
    bal = simulate(min(args.n, 900), seed=13, class_mix="balanced")
    from lamost_classify.mocks.instrument import WAVELENGTH
    from lamost_classify.pipeline.grid import prepare_arrays

    per_class = {}
    chunks = list(bal)
    prepared = [prepare_arrays(WAVELENGTH, c.flux, c.ivar, c.andmask) for c in chunks]
    bflux, bivar = np.concatenate([b.flux for b in prepared]), np.concatenate([b.ivar for b in prepared])
    bpedestal = np.concatenate([b.pedestal for b in prepared])
    btrue = np.concatenate([c.truth["class"] for c in chunks])
    for label, name in enumerate(("STAR", "GALAXY", "QSO")):
        rows = np.flatnonzero(btrue == name)
        cls = np.full(len(rows), label)
        t = best_time(lambda: fitter.fit(bflux[rows], bivar[rows], cls, pedestal=bpedestal[rows]), args.rounds)
        per_class[name] = 1e3 * t / len(rows)

    ms = lambda t: 1e3 * t / n  # noqa: E731
    read_ms = 1e3 * read_s / len(np.concatenate([r.flags for r in records]))
    print(f"{n} usable survey-mix spectra ({(classes == 0).sum()} called STAR, {(classes == 1).sum()} GALAXY, "
          f"{(classes == 2).sum()} QSO), {args.threads} thread(s), batches of {args.batch}, best of {args.rounds}:")
    print(f"  read + prepare (stage 1)          {read_ms:7.3f} ms/spectrum")
    print(f"  network alone                     {ms(t_net):7.3f} ms/spectrum  ({n / t_net:6.0f} spectra/s)")
    print(f"  network with a redshift head      {ms(t_head):7.3f} ms/spectrum  (+{100 * (t_head / t_net - 1):.1f}%)")
    print(f"  refinement, survey mix            {ms(t_fit):7.3f} ms/spectrum  ({100 * t_fit / t_net:.0f}% of the network)")
    print(f"  network + refinement (one call)   {ms(t_all):7.3f} ms/spectrum")
    for name, v in per_class.items():
        print(f"  refinement, {name:6s} alone         {v:7.3f} ms/spectrum")
    total_before = read_ms + ms(t_net)
    total_after = read_ms + ms(t_all)
    print(f"  CPU-only pipeline per spectrum: {total_before:.3f} -> {total_after:.3f} ms: "
          f"{100 * (1 - total_before / total_after):.1f}% fewer spectra/s (goal: at most 20%)")


if __name__ == "__main__":
    main()
