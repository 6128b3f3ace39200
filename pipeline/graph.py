"""Run the plan on a Dask cluster, with a bounded number of batches in flight. Without a GPU, each batch is
one task (``stages.process``: read, prepare, classify and write a chunk at a time on one worker, so no batch
of spectra moves between workers); with GPU workers, read+prepare (any worker) -> classify (a GPU worker)
-> write (any worker). A batch whose task fails for good is redone in ever smaller parts (``failsafe``) so
only the spectrum at fault is lost.

Stages are submitted per call with client.submit, because resources given through graph annotations
are not honoured reliably. The model is loaded once per worker by a WorkerPlugin, lazily, so
reader-only workers never load it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client, WorkerPlugin, as_completed, get_worker, wait

from . import failsafe, stages
from .arguments import ModelArguments, RunArguments
from .manifest import Manifest
from .plan import Batch, Plan

PLUGIN_NAME = "lamost-classify-model"


class ModelPlugin(WorkerPlugin):
    """Holds one loaded model per worker process; loads it on first use."""

    name = PLUGIN_NAME

    def __init__(self, model: ModelArguments):
        self.model = model
        self._classifier = None
        self._lock = threading.Lock()

    def setup(self, worker) -> None:  # noqa: D401 - distributed's hook
        from lamost_classify.model.runtime import keep_freed_memory

        keep_freed_memory()  # on every worker, readers too: Dask's allocator settings cost 2-3x
        self._lock = threading.Lock()
        self._classifier = None

    def classifier(self):
        with self._lock:
            if self._classifier is None:
                self._classifier = self.model.load()
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
               save_flux: bool) -> tuple[int, int, str, dict[str, float]]:
    """(batch index, rows, inference worker, seconds per stage)."""
    t = time.perf_counter()
    n = stages.write(records, result, Path(catalog_dir), release, save_flux=save_flux)
    seconds = {**records.seconds, **result.seconds, "write": time.perf_counter() - t}
    return records.batch.index, n, result.worker, seconds


def process_task(batch: Batch, with_cam: bool, catalog_dir: str, release: str,
                 save_flux: bool) -> tuple[int, int, str, dict[str, float]]:
    """A whole batch on this worker (``stages.process``): (batch index, rows, worker, seconds per stage)."""
    worker = get_worker()
    model = worker.plugins[PLUGIN_NAME].classifier()
    n, seconds = stages.process(batch, model, Path(catalog_dir), release, save_flux=save_flux, with_cam=with_cam)
    return batch.index, n, worker.address, seconds


def gpu_workers(client: Client) -> list[str]:
    info = client.scheduler_info(n_workers=-1)["workers"]
    return [addr for addr, w in info.items() if w.get("resources", {}).get("GPU", 0) >= 1]


# How long a run waits with no worker at all before it gives up (workers that died and did not come back).
NO_WORKERS_TIMEOUT_S = 300.0


class WorkersLost(Exception):
    """The cluster has had no worker for NO_WORKERS_TIMEOUT_S: nothing can finish."""

    def __init__(self) -> None:
        super().__init__(
            f"the Dask cluster has had no worker for {NO_WORKERS_TIMEOUT_S:.0f} s (they died and did not come "
            "back, e.g. killed for memory): the batches written so far are kept; rerun the same command to resume")


def _watch_workers(client: Client) -> Callable[[], None]:
    """A check to call while waiting: raises WorkersLost once the cluster has been empty too long."""
    last_seen = time.monotonic()
    last_check = 0.0

    def check() -> None:
        nonlocal last_seen, last_check
        now = time.monotonic()
        if now - last_check < 2.0:
            return
        last_check = now
        if client.scheduler_info(n_workers=-1)["workers"]:
            last_seen = now
        elif now - last_seen > NO_WORKERS_TIMEOUT_S:
            raise WorkersLost()

    return check


def completed_while_workers(client: Client, seq: as_completed) -> Iterator:
    """``seq``'s futures as they complete (futures added meanwhile included), raising WorkersLost instead of
    waiting forever on a cluster whose workers are gone."""
    check = _watch_workers(client)
    while not seq.is_empty():
        if seq.has_ready():
            yield from seq.next_batch(block=False)
            continue
        check()
        time.sleep(0.05)


def gather_while_workers(client: Client, futures: list) -> list:
    """``client.gather(futures)``, raising WorkersLost instead of waiting forever on an empty cluster."""
    check = _watch_workers(client)
    while True:
        try:
            wait(futures, timeout=2.0)
        except TimeoutError:
            check()
            continue
        return client.gather(futures)


@dataclass
class GraphResult:
    rows: int = 0
    batches: int = 0
    failed_batches: list[int] = field(default_factory=list)  # batches a task failed on for good (then split)
    inference_workers: set[str] = field(default_factory=set)
    # Worker-seconds per stage (stages.STAGES) and the spectra they were spent on (batches written whole).
    stage_seconds: Counter = field(default_factory=Counter)
    timed_spectra: int = 0


@dataclass
class _SplitBatch:
    """A batch being redone in parts after its task failed for good."""

    batch: Batch
    in_flight: int = 0
    outcomes: list[failsafe.PartOutcome] = field(default_factory=list)
    # Single spectra whose worker died, tried again one at a time once the rest of the batch is done:
    # side by side, the one that kills its worker would take the others down with it a second time.
    second_tries: list[Batch] = field(default_factory=list)


def run_graph(
    client: Client,
    args: RunArguments,
    plan: Plan,
    todo: list[int],
    manifest: Manifest,
    retries: int = 2,
    on_batch_done: Callable[[int, int], None] | None = None,
) -> GraphResult:
    """Process the batches ``todo`` of ``plan`` into ``args.output``; returns when all are written.

    A batch whose task fails for good is redone in parts (``failsafe``), so one bad spectrum costs only
    its own row. A write that fails for lack of space or permission stops the run (raised): the batches
    written so far stay, and rerunning the command resumes from them.
    """
    client.register_plugin(ModelPlugin(args.model), name=PLUGIN_NAME)
    catalog_dir, release, save_flux, save_cam = args.output, args.release_name, args.save_flux, args.save_cam
    infer_resources = {"GPU": 1} if gpu_workers(client) else None
    n_threads = sum(client.nthreads().values()) or 1
    window = max(4, 2 * n_threads)
    result = GraphResult()
    pending = list(reversed(todo))
    in_flight = 0
    tracked: dict = {}  # future -> what it finishes: ("batch", batch) or ("part", split, part, prepared, attempt)
    seq = as_completed()
    last_save = 0.0
    tag = manifest.fingerprint[:8]

    def submit_read_infer(batch: Batch, key: str, n_retries: int):
        prepared = client.submit(stages.read_and_prepare, batch, key=f"read-{key}", retries=n_retries, pure=False)
        classified = client.submit(infer_task, prepared, save_cam, key=f"infer-{key}", retries=n_retries,
                                   resources=infer_resources, pure=False)
        return prepared, classified

    def track(fut, what: tuple) -> None:
        tracked[fut] = what
        seq.add(fut)

    def submit_next() -> None:
        nonlocal in_flight
        batch = plan.batch(pending.pop())
        key = f"{tag}-{batch.name}"
        if infer_resources is None:
            written = client.submit(process_task, batch, save_cam, str(catalog_dir), release, save_flux,
                                    key=f"process-{key}", retries=retries, pure=False)
        else:
            prepared, classified = submit_read_infer(batch, key, retries)
            written = client.submit(write_task, prepared, classified, str(catalog_dir), release, save_flux,
                                    key=f"write-{key}", retries=retries, pure=False)
        track(written, ("batch", batch))
        in_flight += 1

    def submit_part(split: _SplitBatch, part: Batch, attempt: int = 1) -> None:
        key = f"{tag}-{part.name}-{part.start}-{part.stop}-{attempt}"
        prepared, classified = submit_read_infer(part, key, 0)
        track(classified, ("part", split, part, prepared, attempt))
        split.in_flight += 1

    def part_done(split: _SplitBatch, part: Batch, prepared, attempt: int, fut) -> tuple[int, int] | None:
        """Take in one part's outcome; when it was the batch's last, write the batch and return (index, n)."""
        split.in_flight -= 1
        # Results come to this process at once: left in a worker's memory, they would die with the next
        # worker the bad spectrum kills, and their recomputation could fail the same way.
        try:
            records, classified = gather_while_workers(client, [prepared, fut])
        except WorkersLost:
            raise
        except Exception as exc:  # noqa: BLE001 - any task failure is handled the same way below
            part_failed(split, part, prepared, attempt, exc)
        else:
            split.outcomes.append(failsafe.PartOutcome(part, records, classified))
        if split.in_flight:
            return None
        if split.second_tries:
            submit_part(split, split.second_tries.pop(0), attempt=2)
            return None
        n = failsafe.write_assembled(split.batch, split.outcomes, manifest.model, catalog_dir, release, save_flux)
        return split.batch.index, n

    def part_failed(split: _SplitBatch, part: Batch, prepared, attempt: int, exc: BaseException) -> None:
        if len(part.sources) > 1:
            for sub in failsafe.split(part):
                submit_part(split, sub)
        elif attempt == 1 and type(exc).__name__ == "KilledWorker":
            # A worker's death counts against every task queued on it, not only the one that killed it:
            # an innocent spectrum gets a second try, alone (``second_tries``), before it is given up.
            split.second_tries.append(part)
        else:
            stage = failsafe.failed_stage(exc, read_failed=prepared.status == "error")
            records = None
            if stage == "classify":
                try:
                    records = gather_while_workers(client, [prepared])[0]
                except WorkersLost:
                    raise
                except Exception:  # noqa: BLE001 - lost with its worker: the row is flagged without it
                    stage = "read"
            split.outcomes.append(failsafe.PartOutcome(part, records, None, failsafe.failure_reason(stage, exc)))

    def batch_done(index: int, n: int) -> None:
        nonlocal in_flight, last_save
        in_flight -= 1
        result.rows += n
        result.batches += 1
        manifest.finished.append(index)
        if time.monotonic() - last_save > 2.0 or not tracked:
            manifest.save(catalog_dir)
            last_save = time.monotonic()
        if on_batch_done:
            on_batch_done(index, n)
        if pending:
            submit_next()

    while pending and in_flight < window:
        submit_next()
    try:
        for fut in completed_while_workers(client, seq):
            what = tracked.pop(fut)
            if what[0] == "part":
                if (done := part_done(*what[1:], fut)) is not None:
                    batch_done(*done)
                continue
            batch = what[1]
            try:
                # Gathered, not read off a "finished" future: a result lost with the worker that held it is
                # computed again, and that can fail (a worker's death counts against every task queued on it).
                [(index, n, worker, seconds)] = gather_while_workers(client, [fut])
            except WorkersLost:
                raise
            except Exception as exc:  # noqa: BLE001 - any task failure is handled the same way below
                if failsafe.is_storage_error(exc):
                    raise
                result.failed_batches.append(batch.index)
                split = _SplitBatch(batch)
                for part in failsafe.split(batch):
                    submit_part(split, part)
                continue
            if worker:
                result.inference_workers.add(worker)
            result.stage_seconds.update(seconds)
            result.timed_spectra += n
            batch_done(index, n)
    finally:
        manifest.save(catalog_dir)
    return result
