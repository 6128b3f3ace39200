"""Run the plan on a Dask cluster: per batch, read+prepare (any worker) -> classify (a GPU worker when the
cluster has one) -> write (any worker), with a bounded number of batches in flight.

Stages are submitted per call with client.submit, because resources given through graph annotations
are not honoured reliably (seen with distributed 2026.8). The model is loaded once per worker by a
WorkerPlugin, lazily, so reader-only workers never load it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from distributed import Client, WorkerPlugin, as_completed, get_worker

from . import stages
from .manifest import Manifest
from .plan import Batch, Plan

PLUGIN_NAME = "lamost-classify-model"


class ModelPlugin(WorkerPlugin):
    """Holds one loaded model per worker process; loads it on first use."""

    name = PLUGIN_NAME

    def __init__(self, model: str | None, device: str, target_prior: tuple[float, ...] | None,
                 precision: str = "auto", backend: str = "torch"):
        self.model = model
        self.device = device
        self.target_prior = target_prior
        self.precision, self.backend = precision, backend
        self._classifier = None
        self._lock = threading.Lock()

    def setup(self, worker) -> None:  # noqa: D401 - distributed's hook
        self._lock = threading.Lock()
        self._classifier = None

    def classifier(self):
        with self._lock:
            if self._classifier is None:
                from lamost_classify.model.inference import Classifier

                kwargs = {} if self.target_prior is None else {"target_prior": self.target_prior}
                self._classifier = Classifier.load(self.model, device=self.device, precision=self.precision,
                                                   backend=self.backend, **kwargs)
            return self._classifier

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_classifier"] = None
        state["_lock"] = None
        return state


def infer_task(records: stages.PreparedRecords, with_cam: bool) -> stages.Classified:
    worker = get_worker()
    model = worker.plugins[PLUGIN_NAME].classifier()
    result = stages.classify(records, model, with_cam=with_cam)
    result.worker = worker.address
    return result


def write_task(records: stages.PreparedRecords, result: stages.Classified, catalog_dir: str, release: str,
               save_flux: bool) -> tuple[int, int, str]:
    n = stages.write(records, result, Path(catalog_dir), release, save_flux=save_flux)
    return records.batch.index, n, result.worker


def write_failed_task(batch: Batch, error: str, model: str, catalog_dir: str, release: str) -> tuple[int, int, str]:
    records = stages.failed_batch_records(batch, error)
    result = stages.Classified(prob=np.full((len(batch.sources), 3), np.nan, np.float32), cam=None, model=model,
                               error=error)
    n = stages.write(records, result, Path(catalog_dir), release)
    return batch.index, n, ""


def gpu_workers(client: Client) -> list[str]:
    info = client.scheduler_info(n_workers=-1)["workers"]
    return [addr for addr, w in info.items() if w.get("resources", {}).get("GPU", 0) >= 1]


@dataclass
class GraphResult:
    rows: int = 0
    batches: int = 0
    failed_batches: list[int] = field(default_factory=list)
    inference_workers: set[str] = field(default_factory=set)


def run_graph(
    client: Client,
    plan: Plan,
    todo: list[int],
    manifest: Manifest,
    catalog_dir: Path,
    release: str,
    model: str | None,
    device: str = "auto",
    target_prior: tuple[float, ...] | None = None,
    save_flux: bool = False,
    save_cam: bool = False,
    retries: int = 2,
    on_batch_done: Callable[[int, int], None] | None = None,
    precision: str = "auto",
    backend: str = "torch",
) -> GraphResult:
    """Process the batches ``todo`` of ``plan``; returns when every one of them is written."""
    client.register_plugin(ModelPlugin(model, device, target_prior, precision, backend), name=PLUGIN_NAME)
    infer_resources = {"GPU": 1} if gpu_workers(client) else None
    n_threads = sum(client.nthreads().values()) or 1
    window = max(4, 2 * n_threads)
    result = GraphResult()
    pending = list(reversed(todo))
    outstanding: dict = {}  # write future -> batch
    seq = as_completed()
    last_save = 0.0

    def submit_next() -> None:
        batch = plan.batch(pending.pop())
        key = f"{manifest.fingerprint[:8]}-{batch.name}"
        prepared = client.submit(stages.read_and_prepare, batch, key=f"read-{key}", retries=retries, pure=False)
        classified = client.submit(infer_task, prepared, save_cam, key=f"infer-{key}", retries=retries,
                                   resources=infer_resources, pure=False)
        written = client.submit(write_task, prepared, classified, str(catalog_dir), release, save_flux,
                                key=f"write-{key}", retries=retries, pure=False)
        outstanding[written] = batch
        seq.add(written)

    while pending and len(outstanding) < window:
        submit_next()
    for fut in seq:
        batch = outstanding.pop(fut)
        if fut.status == "finished":
            index, n, worker = fut.result()
            if worker:
                result.inference_workers.add(worker)
        else:
            # Every retry failed: the batch's sources still get their rows, flagged, so none is lost.
            error = f"batch failed after {retries} retries: {fut.exception()!r}"
            index, n, _ = client.submit(write_failed_task, batch, error, manifest.model, str(catalog_dir), release,
                                        key=f"fail-{manifest.fingerprint[:8]}-{batch.name}", pure=False).result()
            result.failed_batches.append(index)
        fut.release()
        result.rows += n
        result.batches += 1
        manifest.finished.append(index)
        if time.monotonic() - last_save > 2.0 or not outstanding:
            manifest.save(catalog_dir)
            last_save = time.monotonic()
        if on_batch_done:
            on_batch_done(index, n)
        if pending:
            submit_next()
    manifest.save(catalog_dir)
    return result
