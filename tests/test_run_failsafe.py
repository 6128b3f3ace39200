"""Whatever kills a worker costs only that spectrum; a rerun retries it; the disk filling up stops the run
with one line and loses nothing; the local cluster listens on the loopback only. Small untrained model:
these tests check the plumbing, not the classes."""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

import dask
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from distributed import Client, LocalCluster, WorkerPlugin

from lamost_classify.cli import main
from lamost_classify.mocks.release import write_release
from lamost_classify.mocks.simulate import simulate
from lamost_classify.model.densenet import build_model
from lamost_classify.model.weights import save_weights
from lamost_classify.pipeline import catalog
from lamost_classify.pipeline.flags import Flag
from lamost_classify.pipeline.arguments import ClusterArguments, ModelArguments, RunArguments
from lamost_classify.pipeline.cluster import LOCAL_CLUSTER_SETTINGS
from lamost_classify.pipeline.run import run

pytestmark = pytest.mark.slow

POISON = "spec-55858-MOCK0001_sp09-999.fits.gz"


class KillWorkerOnPoison(WorkerPlugin):
    """Makes the worker process die (as the kernel's OOM killer or the nanny's memory limit would kill it)
    whenever it reads the poison file, wherever that file sits in a batch."""

    name = "kill-on-poison"

    def setup(self, worker) -> None:
        from lamost_classify.pipeline import stages

        self.original = stages.read_sources

        def read_sources(sources):
            if any(s.endswith(POISON) for s in sources):
                os._exit(137)
            return self.original(sources)

        stages.read_sources = read_sources

    def teardown(self, worker) -> None:
        from lamost_classify.pipeline import stages

        stages.read_sources = self.original


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("release")
    write_release(simulate(15, seed=7, class_mix="balanced", chunk_size=15), root, seed=7)
    good = sorted(root.rglob("spec-*.fits.gz"))[0]
    shutil.copy(good, good.parent / POISON)  # readable: it kills only while the plugin is loaded
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    import torch

    torch.manual_seed(0)
    widths = {"growth_rate": 4, "branch_channels": 2, "stem_channels": 4, "n_dense_blocks": 2}
    return str(save_weights(build_model("fast", **widths), tmp_path_factory.mktemp("model") / "tiny.safetensors",
                            name="tiny", overrides=widths))


def test_a_worker_killing_file_costs_only_its_own_row_and_a_rerun_retries_it(release, model, tmp_path):
    out = tmp_path / "cat"
    # Two deaths per task before it counts as failed (default four), so the test waits less per split level.
    with dask.config.set({**LOCAL_CLUSTER_SETTINGS, "distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.register_plugin(KillWorkerOnPoison())
        opts = RunArguments(output=out, inputs=[str(release)], model=ModelArguments(model, device="cpu"),
                            cluster=ClusterArguments(scheduler=cluster.scheduler_address), batch_size=8, progress=False)
        summary = run(opts)
        rows = pq.read_table(out / "parquet").sort_by("row").to_pylist()
        assert [r["row"] for r in rows] == list(range(16))
        poison_row = next(r for r in rows if r["source"].endswith(POISON))
        batch = poison_row["row"] // 8
        assert poison_row["class"] is None
        assert poison_row["flags"] & Flag.INFERENCE_FAILED and poison_row["flags"] & Flag.UNREADABLE, poison_row["error"]
        assert "worker process died" in poison_row["error"]
        others = [r for r in rows if r is not poison_row]
        assert all(r["class"] is not None and not r["flags"] & Flag.INFERENCE_FAILED for r in others)
        assert summary["rows_lost"] == 1 and summary["failed_batches"] == [batch]
        assert batch in summary["batches_split"]
        assert summary["lost"] == [{"row": poison_row["row"], "source": poison_row["source"],
                                    "error": poison_row["error"]}]
        assert json.loads((out / "summary.json").read_text())["rows_lost"] == 1

        # The file is fine again (the plugin gone): the same command retries exactly that batch.
        client.unregister_worker_plugin(KillWorkerOnPoison.name)
        # A worker the nanny was still restarting can take the plugin from the scheduler before it is gone
        # (seen once in CI, under load): fresh worker processes are certain not to have it.
        client.restart()
        log: list[str] = []
        summary = run(opts, log=log.append)
        assert any("1 already done, 1 to run (1 of them to retry" in line for line in log), log
        assert summary["batches_run"] == 1 and summary["rows_lost"] == 0 and summary["failed_batches"] == []
        rows = pq.read_table(out / "parquet").sort_by("row").to_pylist()
        assert [r["row"] for r in rows] == list(range(16))
        assert all(r["class"] is not None for r in rows)


def test_a_finished_batch_whose_result_dies_with_its_worker_is_split_not_fatal(release, model, tmp_path,
                                                                               monkeypatch):
    """A batch's result lost with the worker that held it is computed again, and the recomputation can be
    killed too (a worker's death counts against every task queued on it): the batch is then redone in parts,
    like any failed batch, instead of stopping the run."""
    from distributed.scheduler import KilledWorker

    from lamost_classify.pipeline import graph

    real_gather = graph.gather_while_workers
    lost: list[str] = []

    def gather_losing_batch_1(client, futures):
        keys = [f.key for f in futures]
        if not lost and any(k.startswith("process-") and k.endswith("batch-000001") for k in keys):
            real_gather(client, futures)  # it did finish; then its worker died and the recomputation failed
            lost.append(keys[0])
            raise KilledWorker(keys[0], None, 1)
        return real_gather(client, futures)

    monkeypatch.setattr(graph, "gather_while_workers", gather_losing_batch_1)
    out = tmp_path / "cat"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        opts = RunArguments(output=out, inputs=[str(release)], model=ModelArguments(model, device="cpu"),
                            cluster=ClusterArguments(scheduler=cluster.scheduler_address), batch_size=8, progress=False)
        summary = run(opts)
    assert lost and summary["batches_split"] == [1] and summary["rows_lost"] == 0
    rows = pq.read_table(out / "parquet").sort_by("row").to_pylist()
    assert [r["row"] for r in rows] == list(range(16)) and all(r["class"] is not None for r in rows)


def test_disk_full_stops_with_one_line_and_the_rerun_resumes(release, model, tmp_path, monkeypatch):
    out = tmp_path / "cat"
    real_write = catalog.pq.write_table

    def write_table(table, where, **kwargs):
        name = str(Path(where).name)
        if name.startswith(".batch-") and not name.startswith((".batch-000000.", ".batch-000001.")):
            Path(where).write_bytes(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
        return real_write(table, where, **kwargs)

    args = ["run", "--input", str(release), "--output", str(out), "--model", model, "--batch-size", "4",
            "--device", "cpu", "--no-progress"]
    # Workers in this process, so the full disk (a patched write) is theirs too.
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        args += ["--scheduler", cluster.scheduler_address]
        monkeypatch.setattr(catalog.pq, "write_table", write_table)
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and "no space left" in errors[0] and "nothing is lost" in errors[0], result.output
        assert "rerun the same command to resume" in errors[0]
        # The stopped run's tasks still executing on the worker finish (disk still full) before the count:
        # once the disk is back one of them would write a batch under the rerun's feet.
        with Client(cluster) as client:
            deadline = time.monotonic() + 60
            while sum(client.run(lambda dask_worker: dask_worker.state.executing_count).values()) \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
        # The run stops at the first full-disk write: batches 0 and 1 may or may not have been written by then.
        written = sorted(p.name for p in (out / "parquet").glob("batch-*.parquet"))
        assert set(written) <= {"batch-000000.parquet", "batch-000001.parquet"}
        assert list((out / "parquet").glob(".batch-*.tmp"))  # what a full disk leaves: half-written files

        monkeypatch.setattr(catalog.pq, "write_table", real_write)
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert f"{len(written)} already done, {4 - len(written)} to run" in result.output
    assert not list((out / "parquet").glob(".batch-*.tmp"))
    rows = pq.read_table(out / "parquet").sort_by("row").to_pylist()
    assert [r["row"] for r in rows] == list(range(16))


def test_local_cluster_listens_on_the_loopback_only():
    from lamost_classify.pipeline.cluster import open_client

    with open_client(ClusterArguments(workers=1)) as client:
        scheduler = client.cluster.scheduler
        assert scheduler.address.startswith("tcp://127.0.0.1:")
        bound = [s.getsockname()[0] for s in scheduler.http_server._sockets.values()]
        assert bound and set(bound) == {"127.0.0.1"}, bound


def test_local_cluster_workers_do_not_sample_their_stacks():
    from lamost_classify.pipeline.cluster import open_client

    with open_client(ClusterArguments(workers=1)) as client:
        enabled = client.run(lambda: dask.config.get("distributed.worker.profile.enabled"))
    assert list(enabled.values()) == [False]
    assert dask.config.get("distributed.worker.profile.enabled")  # the caller's own config is left as it was


def test_a_cluster_without_workers_stops_with_one_line(release, model, tmp_path, monkeypatch):
    from lamost_classify.pipeline import graph

    monkeypatch.setattr(graph, "NO_WORKERS_TIMEOUT_S", 3.0)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        result = CliRunner().invoke(main, ["run", "--input", str(release), "--output", str(tmp_path / "cat"),
                                           "--model", model, "--batch-size", "4", "--device", "cpu",
                                           "--no-progress", "--scheduler", cluster.scheduler_address])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "no worker for 3 s" in errors[0] and "rerun the same command" in errors[0]


def test_overwrite_repairs_a_corrupt_manifest_and_clears_strays(release, model, tmp_path):
    out = tmp_path / "cat"
    (out / "parquet").mkdir(parents=True)
    (out / "manifest.json").write_text('{\n "fingerprint": "ab')
    (out / "parquet" / "batch-000003 (copy).parquet").write_bytes(b"x")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        args = ["run", "--input", str(release), "--output", str(out), "--model", model, "--batch-size", "4",
                "--device", "cpu", "--no-progress", "--scheduler", cluster.scheduler_address]
        refused = CliRunner().invoke(main, args)
        assert refused.exit_code == 1 and "manifest.json is corrupt" in refused.output, refused.output
        result = CliRunner().invoke(main, [*args, "--overwrite"])
        assert result.exit_code == 0, result.output
        again = CliRunner().invoke(main, args)
        assert again.exit_code == 0 and "4 already done, 0 to run" in again.output, again.output
    assert sorted(p.name for p in (out / "parquet").iterdir()) == [f"batch-{i:06d}.parquet" for i in range(4)]
    assert json.loads((out / "manifest.json").read_text())["finished"] == [0, 1, 2, 3]
