"""What happens to a batch whose task fails for good, free of Dask so it tests alone.

The batch is split into parts (single spectra, by default) and each part is read and classified again; a
part that fails is split again, down to single spectra: only a spectrum that fails on its own (a file that
kills the worker reading it, say) is lost. Its row is still written, flagged INFERENCE_FAILED (and
UNREADABLE when reading was what failed), with the reason in ``error``; a rerun of the same command
retries such batches.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lamost_classify import CLASS_NAMES

from . import grid, stages
from .flags import Flag
from .plan import Batch

# Parts per split: straight to single spectra. Each round of splitting costs the bad file another
# allowed-failures + 1 worker deaths (restarts of a worker process, each counted against whatever else
# was queued on it), and the single-spectrum tasks of a batch run side by side, so one round is cheapest.
SPLIT_INTO: int | None = None

# Errors from writing the catalog that say the disk, not the batch, is at fault: splitting cannot help.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def split(batch: Batch, parts: int | None = SPLIT_INTO) -> list[Batch]:
    """Contiguous parts of ``batch`` (same index: they are written back as that batch's file); ``parts``
    None: one per spectrum."""
    n = len(batch.sources)
    size = -(-n // min(parts or n, n))
    return [Batch(batch.index, batch.start + lo, batch.start + min(lo + size, n), batch.sources[lo:lo + size])
            for lo in range(0, n, size)]


def is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def failed_stage(exc: BaseException, read_failed: bool) -> str:
    """'read' or 'classify': which task of a part failed. A worker's death names its task (a ``read-`` or
    ``infer-`` key); the read future's own status can lag behind the error of the task that needed it."""
    task = getattr(exc, "task", None) if type(exc).__name__ == "KilledWorker" else None
    if isinstance(task, str):
        return "read" if task.startswith("read-") else "classify"
    return "read" if read_failed else "classify"


def failure_reason(stage: str, exc: BaseException) -> str:
    """The ``error`` text of a spectrum lost at ``stage`` ('read' or 'classify')."""
    if type(exc).__name__ == "KilledWorker":
        return (f"{stage} failed: the worker process died on this spectrum every time it was tried "
                "(out of memory or crashed; e.g. a file that decompresses to gigabytes)")
    return f"{stage} failed: {type(exc).__name__}: {exc}"


@dataclass
class PartOutcome:
    """One part of a split batch: records and result when it went through; the reason when it did not."""

    part: Batch
    records: stages.PreparedRecords | None  # None when reading failed
    result: stages.Classified | None  # None when reading or classifying failed
    reason: str | None = None


def assemble(batch: Batch, outcomes: list[PartOutcome], model: str) -> tuple[stages.PreparedRecords,
                                                                            stages.Classified]:
    """One batch's records and result from its parts, in row order; lost spectra flagged, none dropped."""
    outcomes = sorted(outcomes, key=lambda o: o.part.start)
    covered = [i for o in outcomes for i in range(o.part.start, o.part.stop)]
    if covered != list(range(batch.start, batch.stop)):
        raise ValueError(f"{batch.name}: its parts cover rows {covered[:3]}..., not {batch.start}..{batch.stop - 1}")
    records, results = [], []
    for o in outcomes:
        n = o.part.stop - o.part.start
        if o.result is not None and o.records is not None:
            records.append(o.records)
            results.append(o.result)
            continue
        if o.records is None:
            rec = stages.failed_batch_records(o.part, o.reason or "failed", stage="read")
        else:
            rec = o.records
            rec.flags = rec.flags | np.uint32(int(Flag.INFERENCE_FAILED))
            rec.errors = [e or o.reason for e in rec.errors]
        records.append(rec)
        results.append(stages.Classified(prob=np.full((n, len(CLASS_NAMES)), np.nan, np.float32), cam=None,
                                         model=model))
    with_cam = any(r.cam is not None for r in results)
    merged = stages.PreparedRecords(
        batch=batch,
        flux=np.concatenate([r.flux for r in records]),
        flags=np.concatenate([r.flags for r in records]).astype(np.uint32),
        snr=np.concatenate([r.snr for r in records]),
        meta=[m for r in records for m in r.meta],
        errors=[e for r in records for e in r.errors],
    )
    cam = None
    if with_cam:
        cam = np.concatenate([r.cam if r.cam is not None else np.full((len(r.prob), grid.N_PIXELS), np.nan,
                                                                      np.float32) for r in results])
    result = stages.Classified(prob=np.concatenate([r.prob for r in results]), cam=cam, model=model,
                               worker=next((r.worker for r in results if r.worker), ""))
    if any(getattr(r, "prob_balanced", None) is not None for r in results):
        result.prob_balanced = np.concatenate([
            r.prob_balanced if getattr(r, "prob_balanced", None) is not None else np.full_like(r.prob, np.nan)
            for r in results])
    return merged, result


def write_assembled(batch: Batch, outcomes: list[PartOutcome], model: str, catalog_dir: Path, release: str,
                    save_flux: bool = False) -> int:
    """Write a split batch's file from its parts; returns its rows. If even that fails (not for lack of
    space or permission: that is raised), every source of the batch still gets its row, flagged."""
    try:
        records, result = assemble(batch, outcomes, model)
        return stages.write(records, result, catalog_dir, release, save_flux=save_flux)
    except Exception as exc:
        if is_storage_error(exc):
            raise
        error = f"write failed: {type(exc).__name__}: {exc}"
        records = stages.failed_batch_records(batch, error, stage="write")
        result = stages.Classified(prob=np.full((len(batch.sources), len(CLASS_NAMES)), np.nan, np.float32),
                                   cam=None, model=model, error=error)
        return stages.write(records, result, catalog_dir, release)
