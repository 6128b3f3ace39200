"""Make the labelled mock sets the shipped model is trained, validated and tested on.

Each set is simulated in shards (one per process), put through the pipeline's own resample +
normalise (``grid.prepare_arrays``), and stored as ``<set>_flux.npy`` (N, 2600) float32 plus
``<set>_truth.parquet`` (class, label, template, z, snr_g, snr_r, flags); test sets also as
``<set>_ivar.npy`` and ``<set>_pedestal.npy``. Real-template mocks use
../shared/data/templates and real LAMOST noise donors (held-out stars excluded); a share of
analytic-template mocks (what the package ships, and what the built-in sample is made of) keeps the
model usable on those too.

    python training/make_training_set.py --out work/trainset

``--family NAME`` makes the same sets from another mock family (mocks/families.py; default 'survey',
mocks/simulate.py, as before); every truth table has a ``family`` column. The ``lofo_*`` sets are the
leave-one-family-out yardstick's (training/leave_one_family_out.py), one directory per family:

    python training/make_training_set.py --family eigen --sets lofo_train lofo_val lofo_test lofo_test_snr

writes work/families/eigen/lofo_train_flux.npy, ..._truth.parquet (``--out`` defaults to
work/families/<family>; ``--n-<set>`` changes a set's size).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from lamost_classify import CLASS_NAMES
from lamost_classify.model.labelled import save_set

# set name -> (number of spectra, seed, templates: 'real' or 'analytic', class mix, S/N distribution:
# 'real' = the real files' (mostly bright stars), 'loguniform' = uniform in log S/N over 2-100, so that
# every S/N bin of every class, faint galaxies and QSOs included, holds enough spectra to score)
SETS = {
    "train": (48_000, 1, "real", "balanced", "real"),
    "train_analytic": (9_000, 2, "analytic", "balanced", "real"),
    "val": (6_000, 3, "real", "balanced", "real"),
    "test": (6_000, 4, "real", "balanced", "real"),
    "test_survey": (20_000, 5, "real", "survey", "real"),
    "test_snr": (9_000, 6, "real", "balanced", "loguniform"),
    "train_snr": (60_000, 7, "real", "balanced", "loguniform"),
    "val_snr": (3_000, 8, "real", "balanced", "loguniform"),
    # leave-one-family-out: the same four sets for every family, sized for 2 cores
    "lofo_train": (12_000, 11, "real", "balanced", "real"),
    "lofo_val": (1_500, 12, "real", "balanced", "real"),
    "lofo_test": (3_000, 13, "real", "balanced", "real"),
    "lofo_test_snr": (3_000, 14, "real", "balanced", "loguniform"),
}
# Test sets keep their ivar and pedestal too: they are scored as the catalog publishes, whose class takes a
# redshift fit (a QSO must have a QSO redshift); the training sets, ten times larger, need only the flux.
SCORED_AS_PUBLISHED = ("test", "lofo_test")
LOGUNIFORM_SNR = (2.0, 100.0)
REAL_SNR_RANGE = (2.0, 300.0)  # Simulator's default, which the survey family's sets were always made with


def shard(args: tuple[str, str, int, int, int, str, str, str]) -> dict:
    family, name, start, n, seed, templates, mix, snr = args
    from lamost_classify.mocks.families import generate
    from lamost_classify.mocks.noise_donors import noise_library
    from lamost_classify.mocks.simulate import Simulator, simulate
    from lamost_classify.mocks.templates import analytic_templates
    from lamost_classify.pipeline.grid import prepare_arrays
    from lamost_classify.mocks.instrument import WAVELENGTH

    mix_values = {"balanced": (1 / 3, 1 / 3, 1 / 3), "survey": (0.985, 0.012, 0.003)}[mix]
    snr_args = {"snr_distribution": snr, "snr_range": LOGUNIFORM_SNR if snr == "loguniform" else REAL_SNR_RANGE}
    if templates == "analytic":  # the survey family's built-in analytic library (checked in make_set)
        sim = Simulator(templates=analytic_templates(), library=noise_library("summary"), class_mix=mix_values,
                        **snr_args)
        chunks = simulate(n, seed, start=start, simulator=sim)
    else:
        chunks = generate(family, n, seed, start=start, class_mix=mix_values, **snr_args)
    flux, ivar, pedestal, truth = [], [], [], []
    for chunk in chunks:
        prepared = prepare_arrays(WAVELENGTH, chunk.flux, chunk.ivar, chunk.andmask)
        flux.append(prepared.flux)
        ivar.append(prepared.ivar)
        pedestal.append(prepared.pedestal)
        t = chunk.truth_table().to_pydict()
        t["family"] = [family] * len(chunk)
        t["flags"] = prepared.flags.tolist()
        t["snr_pixel"] = prepared.snr.tolist()
        truth.append(t)
    merged = {k: sum((t[k] for t in truth), []) for k in truth[0]}
    out = {"flux": np.concatenate(flux), "truth": merged}
    if name.startswith(SCORED_AS_PUBLISHED):
        out.update(ivar=np.concatenate(ivar), pedestal=np.concatenate(pedestal))
    return out


def make_set(name: str, out: Path, workers: int, family: str = "survey", n: int | None = None) -> None:
    """Write ``<out>/<name>_flux.npy`` and ``_truth.parquet``: set ``name`` of ``SETS`` made by ``family``
    (``n`` spectra instead of the table's)."""
    size, seed, templates, mix, snr = SETS[name]
    n = size if n is None else n
    if n < 1:
        raise SystemExit(f"set {name}: asked for {n} spectra; give at least 1")
    if templates == "analytic" and family != "survey":
        raise SystemExit(f"set {name} is made from the survey family's analytic templates; "
                         f"it has no {family!r} version: leave it out of --sets")
    step = max(1, -(-n // workers))
    jobs = [(family, name, s, min(step, n - s), seed, templates, mix, snr) for s in range(0, n, step)]
    t0 = time.time()
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(shard, jobs))
    flux = np.concatenate([p["flux"] for p in parts])
    truth = {k: sum((p["truth"][k] for p in parts), []) for k in parts[0]["truth"]}
    truth["label"] = [CLASS_NAMES.index(c) for c in truth["class"]]
    truth["templates"] = [templates] * len(flux)
    noise = {k: np.concatenate([p[k] for p in parts]) for k in ("ivar", "pedestal") if k in parts[0]}
    save_set(out, name, flux, truth, **noise)
    counts = {c: truth["class"].count(c) for c in CLASS_NAMES}
    print(f"{name}: {len(flux)} spectra {counts} in {time.time() - t0:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="survey", help="mock family (mocks/families.py)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: work/families/<family>)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sets", nargs="*", default=[s for s in SETS if not s.startswith("lofo_")],
                        choices=list(SETS), metavar="SET", help=f"sets to make, of: {' '.join(SETS)}")
    for name in SETS:
        parser.add_argument(f"--n-{name.replace('_', '-')}", type=int, default=None, metavar="N",
                            help=f"size of set {name} (default {SETS[name][0]})")
    args = parser.parse_args()
    from lamost_classify.mocks.families import FAMILIES

    if args.family not in FAMILIES:
        parser.error(f"--family {args.family}: known families are {', '.join(FAMILIES)}")
    out = args.out or Path("work") / "families" / args.family
    out.mkdir(parents=True, exist_ok=True)
    for name in args.sets:
        make_set(name, out, args.workers, args.family, getattr(args, f"n_{name}"))


if __name__ == "__main__":
    main()
