"""The Dask graph end to end: placement of inference on GPU-resource workers, resume, refusal,
a worker killed mid-run, and the command itself killed and rerun. Uses a small untrained model: these
tests check the plumbing (exactly once, resume), not the classes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster

from lamost_classify.mocks.release import write_release
from lamost_classify.mocks.simulate import simulate
from lamost_classify.model.densenet import build_model
from lamost_classify.model.weights import save_weights
from lamost_classify.pipeline.manifest import ResumeRefused
from lamost_classify.pipeline.arguments import ClusterArguments, ModelArguments, RunArguments
from lamost_classify.pipeline.run import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    write_release(simulate(48, seed=5, class_mix="balanced", chunk_size=48), root, seed=5)
    (root / "20111024" / "MOCK0001" / "spec-55858-MOCK0001_sp16-250.fits.gz").write_bytes(b"\x1f\x8bbroken")
    return root


def tiny_model(path: Path, seed: int) -> str:
    import torch

    torch.manual_seed(seed)
    widths = {"growth_rate": 4, "branch_channels": 2, "stem_channels": 4, "n_dense_blocks": 2}
    return str(save_weights(build_model("fast", **widths), path, name=f"tiny-{seed}", overrides=widths))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return tiny_model(d / "a.safetensors", 1), tiny_model(d / "b.safetensors", 2)


def catalog_rows(out: Path) -> list[dict]:
    return pq.read_table(out / "parquet").sort_by("row").to_pylist()


def check_exactly_once(out: Path, n: int) -> list[dict]:
    rows = catalog_rows(out)
    assert [r["row"] for r in rows] == list(range(n))
    assert len({r["source"] for r in rows}) == n
    return rows


def test_inference_only_on_gpu_resource_workers_and_resume(release, models, tmp_path):
    spec = {
        "scheduler": {"cls": Scheduler, "options": {"dashboard_address": ":0"}},
        "workers": {
            "cpu": {"cls": Nanny, "options": {"nthreads": 1}},
            "gpu": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
        },
    }
    out = tmp_path / "cat"
    with SpecCluster(**spec) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        gpu_addr = [a for a, w in client.scheduler_info()["workers"].items() if w["resources"].get("GPU")]
        opts = RunArguments(output=out, inputs=[str(release)], model=ModelArguments(models[0], device="cpu"),
                            cluster=ClusterArguments(scheduler=cluster.scheduler_address), batch_size=7, progress=False)
        summary = run(opts)
        assert summary["inference_workers"] == gpu_addr
        n = summary["spectra"]
        assert n == 49 and summary["batches_run"] == 7
        rows = check_exactly_once(out, n)
        broken = [r for r in rows if r["source"].endswith("sp16-250.fits.gz")]
        assert len(broken) == 1 and broken[0]["class"] is None and broken[0]["error"]

        # Lose two finished batches: a rerun of the same command writes only those two.
        before = {p.name: p.stat().st_mtime_ns for p in (out / "parquet").iterdir()}
        (out / "parquet" / "batch-000002.parquet").unlink()
        (out / "parquet" / "batch-000005.parquet").unlink()
        summary = run(opts)
        assert summary["batches_run"] == 2 and summary["batches_resumed"] == 5
        after = {p.name: p.stat().st_mtime_ns for p in (out / "parquet").iterdir()}
        assert {k for k in after if after[k] != before.get(k)} == {"batch-000002.parquet", "batch-000005.parquet"}
        assert catalog_rows(out) == rows

        # Another model over the same directory is refused, unless --overwrite.
        other = replace(opts, model=replace(opts.model, weights=models[1]))
        with pytest.raises(ResumeRefused, match="model differs"):
            run(other)
        assert run(replace(other, overwrite=True))["batches_run"] == 7
        assert {r["model"] for r in catalog_rows(out)} == {summary_model(models[1])}


def summary_model(path: str) -> str:
    from lamost_classify.model.weights import read_card
    from lamost_classify.contract import model_id

    return model_id(read_card(Path(path)))


def test_worker_killed_mid_run(release, models, tmp_path):
    out = tmp_path / "cat"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        opts = RunArguments(output=out, inputs=[str(release)], model=ModelArguments(models[0], device="cpu"),
                            cluster=ClusterArguments(scheduler=cluster.scheduler_address), batch_size=3, progress=False)
        errors: list[BaseException] = []

        def target():
            try:
                run(opts)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        deadline = time.time() + 60
        while time.time() < deadline and len(list((out / "parquet").glob("*.parquet"))) < 2:
            time.sleep(0.05)
        victim = list(client.scheduler_info()["workers"])[0]
        client.run(os._exit, 1, workers=[victim], on_error="ignore")  # the worker process dies, mid-batch; its nanny restarts it
        thread.join(timeout=240)
        assert not thread.is_alive() and not errors, errors
    check_exactly_once(out, 49)


def test_command_killed_and_rerun(release, models, tmp_path):
    out = tmp_path / "cat"
    cmd = [sys.executable, "-m", "lamost_classify.cli", "run", "--input", str(release), "--output", str(out),
           "--model", models[0], "--batch-size", "2", "--workers", "1", "--no-progress", "--device", "cpu"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "parquet").glob("*.parquet"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run, cluster included, dies at once
    proc.wait()
    done_before = len(list((out / "parquet").glob("*.parquet")))
    assert 0 < done_before < 25
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{done_before} already done" in result.stdout
    check_exactly_once(out, 49)
