"""Pipeline benchmark: does the whole run reach the speed of its stages, and is worker memory flat?

In one run, on a simulated release of N spectra:
  - each stage alone, on W single-threaded workers (a LocalCluster set up as the pipeline's own,
    ``pipeline.cluster.LOCAL_CLUSTER_SETTINGS``): read, prepare (resample + normalise),
    the network alone, infer (network + calibration + priors + the redshift fit: what the pipeline runs),
    infer without the redshift outputs (the same stage on batches without their ivar, as it ran before
    them), write; as spectra/s per core (spectra over the worker-seconds the stage took) and on the wall clock;
  - the whole run: ``lamost-classify run`` on a fresh cluster of W workers, model loading included, in a
    child process, so that its peak memory is the client's (discovery, plan, graph, summary);
  - per core: the stages' bound 1 / sum(1 / rate) (with no GPU every stage shares the cores), the whole
    run (spectra/s over W), and the ratio of the two; the bound with infer as it was before the redshift
    outputs, and the share of spectra/s they cost (also against the network alone in infer's place, which
    charges the calibration and priors to them too);
  - peak memory of the whole run's workers and of its client.
``--scale N`` then builds a hard-linked DR5-shaped tree of N files from the simulated ones
({obsdate}/{planid}/spec-*.fits.gz, 4,000 to a plan) and prints discovery + plan alone (client peak
memory) and the whole run on it.

    python bench/pipeline.py [--n 4000] [--batch-size 1000] [--workers 2] [--model PATH] [--release DIR]
                             [--scale N] [--skip-stages] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
from distributed import Client, LocalCluster, get_worker, wait

from lamost_classify.pipeline.cluster import LOCAL_CLUSTER_SETTINGS

PLAN_FILES = 4000  # spectra per plan directory in a LAMOST release (16 spectrographs x 250 fibres)
# The CLI, reporting its own peak memory on the way out.
# (VmHWM, not ru_maxrss: ru_maxrss keeps, across exec, the size of the parent at fork.)
PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
CLIENT = (f"import atexit, sys; atexit.register(lambda: print('client peak MB', {PEAK}, file=sys.stderr)); "
          "from lamost_classify.cli import main; sys.argv[0] = 'lamost-classify'; main()")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def network_seconds(records) -> float:
    """The network alone (Classifier.fast) on a batch's usable spectra, on this worker."""
    from lamost_classify.pipeline.graph import PLUGIN_NAME

    model = get_worker().plugins[PLUGIN_NAME].classifier()
    t = time.perf_counter()
    model.fast(records.flux[records.usable])
    return time.perf_counter() - t


WITH_REDSHIFT = "infer (network + redshift fit)"
WITHOUT_REDSHIFT = "infer without the redshift outputs"


def infer_without_redshift(records):
    """infer as the pipeline ran before the redshift outputs: the same stage on the batch without its ivar
    (``stages.classify`` then takes the network's probabilities alone)."""
    from dataclasses import replace

    from lamost_classify.pipeline.graph import infer_task

    return infer_task(replace(records, ivar=None), False)


def warm_up(dask_worker) -> None:
    """Load the model and the redshift templates, and run each once, before anything is timed."""
    import numpy as np

    from lamost_classify.pipeline.graph import PLUGIN_NAME

    model = dask_worker.plugins[PLUGIN_NAME].classifier()
    flux = np.random.default_rng(0).random((8, 2600), np.float32)
    model.predict_with_redshift(flux, np.ones_like(flux))


def stages_alone(client: Client, plan, catalog_dir: Path, workers: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Per stage: (spectra/s per core, spectra/s on the wall clock of the W workers). Read + prepare, the
    network alone and infer without and with the redshift outputs (whose ratio is their cost) run ``rounds``
    times in turn and keep their best; write runs once."""
    from lamost_classify.pipeline import stages
    from lamost_classify.pipeline.catalog import create_arrays
    from lamost_classify.pipeline.graph import infer_task, write_task

    n = len(plan)
    batches = plan.batches()
    rates: dict[str, tuple[float, float]] = {}

    def best(rate: tuple[float, float], key: str) -> None:
        rates[key] = max(rates.get(key, (0.0, 0.0)), rate)

    def timed_infer(task, *args, key: str) -> list:
        """The infer stage (``task`` over the prepared batches) timed as ``key``; its futures."""
        t = time.time()
        futures = client.map(task, *args, pure=False)
        wait(futures)
        wall = time.time() - t
        infer = sum(client.gather(client.map(lambda c: c.seconds["infer"], futures, pure=False)))
        best((n / infer, n / wall), key)
        return futures

    # Every stage in every round, best kept: a shared machine's speed drifts over minutes, and a
    # stage timed once in a slow spell skews the bound and the fit's share.
    for _ in range(rounds):
        t = time.time()
        prepared = client.map(stages.read_and_prepare, batches, pure=False)
        wait(prepared)
        wall = time.time() - t
        seconds = client.gather(client.map(lambda r: r.seconds, prepared, pure=False))
        read, prep = sum(s["read"] for s in seconds), sum(s["prepare"] for s in seconds)
        best((n / read, n / wall * read / (read + prep)), "read")
        best((n / prep, n / wall * prep / (read + prep)), "prepare")

        t = time.time()
        network = client.gather(client.map(network_seconds, prepared, pure=False))
        best((n / sum(network), n / (time.time() - t)), "network alone")

        timed_infer(infer_without_redshift, prepared, key=WITHOUT_REDSHIFT)  # futures dropped: results not kept
        classified = timed_infer(infer_task, prepared, [False] * len(prepared), key=WITH_REDSHIFT)

    create_arrays(catalog_dir, n, plan.batch_size, False, False)
    t = time.time()
    written = client.gather(client.map(write_task, prepared, classified, [str(catalog_dir)] * len(prepared),
                                       ["bench"] * len(prepared), [False] * len(prepared), pure=False))
    rates["write"] = (n / sum(w[3]["write"] for w in written), n / (time.time() - t))
    del prepared, classified
    return rates


def whole_run(inputs: list[str], output: Path, batch_size: int, workers: int, model: str | None) -> dict:
    """``lamost-classify run`` in a child process against a fresh cluster: its summary, plus the client's
    and the workers' peak memory (MB) and the wall time of the child."""
    with dask.config.set(LOCAL_CLUSTER_SETTINGS), \
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        command = [sys.executable, "-c", CLIENT, "run", "--output", str(output), "--scheduler",
                   cluster.scheduler_address, "--batch-size", str(batch_size), "--no-progress", "--overwrite",
                   "--device", "cpu"]
        for item in inputs:
            command += ["--input", item]
        if model:
            command += ["--model", model]
        t = time.time()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.time() - t
        if done.returncode:
            raise SystemExit(f"the run failed:\n{done.stdout}\n{done.stderr}")
        summary = json.loads((output / "summary.json").read_text())
        summary["worker_peak_mb"] = max(client.run(peak_rss_mb).values())
    summary["client_peak_mb"] = float(done.stderr.rsplit("client peak MB ", 1)[1].split()[0])
    summary["child_wall_s"] = wall
    summary["stage_line"] = next((ln for ln in done.stdout.splitlines() if ln.startswith("stages,")), "")
    return summary


def link_tree(files: list[Path], root: Path, n: int) -> None:
    """``n`` hard links to ``files`` (in turn), laid out as a LAMOST release."""
    for i in range(n):
        plan = i // PLAN_FILES
        planid = f"B{plan:05d}"
        directory = root / f"2012{plan // 28 % 12 + 1:02d}{plan % 28 + 1:02d}" / planid
        if i % PLAN_FILES == 0:
            directory.mkdir(parents=True, exist_ok=True)
        spid, fiber = i % PLAN_FILES // 250 + 1, i % 250 + 1
        os.link(files[i % len(files)], directory / f"spec-{55800 + plan}-{planid}_sp{spid:02d}-{fiber:03d}.fits.gz")


def plan_alone(root: Path) -> tuple[float, float, int]:
    """Discovery + plan of ``root`` in a child process: (seconds, the child's peak MB, spectra)."""
    code = ("import sys, time; from lamost_classify.pipeline.plan import iter_inputs, make_plan; "
            "t = time.time(); p = make_plan(iter_inputs([sys.argv[1]]), 1000); p.fingerprint; "
            f"print(time.time() - t, {PEAK}, len(p))")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True)
    seconds, peak, n = out.stdout.split()
    return float(seconds), float(peak), int(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000, help="simulated spectra")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--model", default=None)
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--release", type=Path, default=None, help="reuse a simulated release directory")
    parser.add_argument("--scale", type=int, default=0, help="also run on a hard-linked DR5-shaped tree of N files")
    parser.add_argument("--skip-stages", action="store_true", help="only the whole run(s)")
    parser.add_argument("--rounds", type=int, default=3, help="turns of read + prepare, the network alone and infer, best kept")
    args = parser.parse_args()

    from lamost_classify.host import available_cpus
    from lamost_classify.mocks.release import write_release
    from lamost_classify.mocks.simulate import simulate
    from lamost_classify.pipeline.arguments import ModelArguments
    from lamost_classify.pipeline.graph import PLUGIN_NAME, ModelPlugin
    from lamost_classify.pipeline.plan import iter_inputs, make_plan

    workers = args.workers or available_cpus()
    tmp = Path(tempfile.mkdtemp(prefix="lamost-bench-"))
    root = args.release or tmp / "release"
    if not (root / "mock_catalog.csv").exists():
        t = time.time()
        write_release(simulate(args.n, seed=11), root, seed=11)
        print(f"simulated {args.n} spectra in {time.time() - t:.0f} s", flush=True)
    plan = make_plan(iter_inputs([str(root)]), args.batch_size)
    n = len(plan)
    load = os.getloadavg()[0]
    print(f"# bench/pipeline.py  {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}\ncommand: python "
          f"{' '.join(sys.argv)}\n{n} spectra, {plan.n_batches} batches of {args.batch_size}, {workers} workers x 1 "
          f"thread; load average at start {load:.1f}", flush=True)

    rows: list[tuple[str, float, float]] = []
    if not args.skip_stages:
        with dask.config.set(LOCAL_CLUSTER_SETTINGS), \
                LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            client.register_plugin(ModelPlugin(ModelArguments(args.model, device="cpu")), name=PLUGIN_NAME)
            client.run(warm_up)
            rates = stages_alone(client, plan, tmp / "stages-catalog", workers, args.rounds)
        rows = [(stage, per_core, wall) for stage, (per_core, wall) in rates.items()]

    run = whole_run([str(root)], tmp / "catalog", args.batch_size, workers, args.model)
    whole = run["spectra_per_s"]
    print(f"\n| stage | spectra/s per core | spectra/s, {workers} workers (wall) |\n|---|---:|---:|")
    for stage, per_core, wall in rows:
        print(f"| {stage} | {per_core:,.0f} | {wall:,.0f} |")
    if rows:
        def stages_bound(infer_as: str) -> float:
            """1 / sum(1 / rate) over read, prepare, write and ``infer_as`` in infer's place."""
            kept = ("read", "prepare", "write", infer_as)
            return 1.0 / sum(1.0 / per_core for stage, per_core, _ in rows if stage in kept)

        bound = stages_bound(WITH_REDSHIFT)
        print(f"| stages' bound (read + prepare + infer + write) | {bound:,.0f} | {bound * workers:,.0f} |")
        # The pipeline as it was before the redshift outputs, and (as measured until 2026-12-02) with the
        # network alone in infer's place, which also charges the calibration and priors to them.
        unfitted = stages_bound(WITHOUT_REDSHIFT)
        network_only = stages_bound("network alone")
        print(f"| stages' bound without the redshift outputs | {unfitted:,.0f} | {unfitted * workers:,.0f} |")
        print(f"| stages' bound with the network alone for infer | {network_only:,.0f} | "
              f"{network_only * workers:,.0f} |")
    print(f"| whole run (`run`, model loading included) | {whole / workers:,.0f} | {whole:,.0f} |")
    if rows:
        print(f"\nratio whole run / stages' bound = {whole / workers / bound:.2f}   (goal >= 0.8); "
              f"whole run per core {whole / workers:,.0f} (goal >= 300)")
        print(f"the redshift outputs cost {100 * (1 - bound / unfitted):.1f}% of the stages' spectra/s (goal <= 20%); "
              f"against the network alone for infer, {100 * (1 - bound / network_only):.1f}%")
    print(f"in the run itself: {run['stage_line']}")
    print(f"peak memory: worker {run['worker_peak_mb']:,.0f} MB, client {run['client_peak_mb']:,.0f} MB "
          f"(batch {args.batch_size}); load average at end {os.getloadavg()[0]:.1f}", flush=True)

    if args.scale:
        files = sorted(p for p in root.rglob("spec-*.fits.gz") if p.stat().st_size > 1000)
        tree = tmp / "dr5-shaped"
        t = time.time()
        link_tree(files, tree, args.scale)
        print(f"\n--scale {args.scale}: linked a DR5-shaped tree of {args.scale} files in {time.time() - t:.0f} s",
              flush=True)
        seconds, peak, planned = plan_alone(tree)
        print(f"discovery + plan alone: {planned} spectra in {seconds:.1f} s, client peak {peak:,.0f} MB", flush=True)
        scaled = whole_run([str(tree)], tmp / "scale-catalog", args.batch_size, workers, args.model)
        print(f"whole run: {scaled['spectra']} spectra in {scaled['wall_time_s']:.0f} s, "
              f"{scaled['spectra_per_s']:,.0f} spectra/s ({scaled['spectra_per_s'] / workers:,.0f} per core); "
              f"peak memory: worker {scaled['worker_peak_mb']:,.0f} MB, client {scaled['client_peak_mb']:,.0f} MB")
        print(f"in the run itself: {scaled['stage_line']}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
