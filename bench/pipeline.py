"""Pipeline benchmark: is the graph close to its slowest stage?

On a simulated release of N spectra, in one run on one LocalCluster:
  (a) stage 1 alone: read + resample + normalise, every batch, results kept on the workers;
  (b) the model alone, on those in-memory batches;
  (c) the whole pipeline (`run`, writing the catalog);
and prints spectra/s for each, the ratio c / min(a, b) (goal >= 0.8) and each worker's peak memory.

    python bench/pipeline.py --n 4000 [--batch-size 500] [--model PATH] [--workers 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster, wait


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--model", default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--release", type=Path, default=None, help="reuse a simulated release directory")
    args = parser.parse_args()

    from lamost_classify.mocks.release import write_release
    from lamost_classify.mocks.simulate import simulate
    from lamost_classify.pipeline import stages
    from lamost_classify.pipeline.cluster import local_cluster_size
    from lamost_classify.pipeline.graph import PLUGIN_NAME, ModelPlugin, infer_task
    from lamost_classify.pipeline.plan import discover_inputs, make_plan
    from lamost_classify.pipeline.arguments import ClusterArguments, ModelArguments, RunArguments
    from lamost_classify.pipeline.run import run

    tmp = Path(tempfile.mkdtemp(prefix="lamost-bench-"))
    root = args.release or tmp / "release"
    if not (root / "mock_catalog.csv").exists():
        t = time.time()
        write_release(simulate(args.n, seed=11), root, seed=11)
        print(f"simulated {args.n} spectra in {time.time() - t:.0f} s")
    plan = make_plan(discover_inputs([str(root)]), args.batch_size)
    n = len(plan)
    workers = args.workers or local_cluster_size()[0]

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        model = ModelArguments(args.model)
        client.register_plugin(ModelPlugin(model), name=PLUGIN_NAME)
        client.run(lambda: __import__("lamost_classify.model.inference"))  # imports out of the timings

        t = time.time()
        prepared = client.map(stages.read_and_prepare, plan.batches(), pure=False)
        wait(prepared)
        t_read = time.time() - t

        client.submit(infer_task, prepared[0], False, pure=False).result()  # model loaded on one worker
        client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].classifier())  # ... and on all
        t = time.time()
        wait(client.map(infer_task, prepared, [False] * len(prepared), pure=False))
        t_model = time.time() - t
        del prepared

        t = time.time()
        run(RunArguments(output=tmp / "catalog", inputs=[str(root)], model=model, batch_size=args.batch_size,
                         cluster=ClusterArguments(scheduler=cluster.scheduler_address), progress=False),
            log=lambda *a: None)
        t_all = time.time() - t
        peaks = client.run(peak_rss_mb)

    a, b, c = n / t_read, n / t_model, n / t_all
    print(f"\n{n} spectra, {plan.n_batches} batches of {args.batch_size}, {workers} workers x 1 thread")
    print(f"{'stage':<34}{'spectra/s':>12}")
    print(f"{'(a) read + resample + normalise':<34}{a:>12.1f}")
    print(f"{'(b) model only (in-memory)':<34}{b:>12.1f}")
    print(f"{'(c) whole pipeline (run)':<34}{c:>12.1f}")
    print(f"ratio c / min(a, b) = {c / min(a, b):.2f}   (goal >= 0.8)")
    # With no GPU, reading and inference share the same cores, so the best the graph can do is the
    # two stages' costs added: 1 / (1/a + 1/b). This ratio says what the graph itself costs.
    shared = 1.0 / (1.0 / a + 1.0 / b)
    print(f"ratio c / (1/(1/a + 1/b)) = {c / shared:.2f}   (stages sharing the same cores: {shared:.1f} spectra/s)")
    print("peak memory per worker (MB): " + ", ".join(f"{v:.0f}" for v in peaks.values()))


if __name__ == "__main__":
    main()
