"""The main job, end to end: discover -> plan -> (resume check) -> Dask graph -> verify -> summary."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from lamost_classify.contract import MANIFEST_FILE, PARQUET_DIR, PLAN_FILE, SUMMARY_FILE, ZARR_STORE

from .catalog import create_arrays
from .flags import Flag
from .lock import catalog_lock
from .manifest import (Manifest, ResumeRefused, atomic_write_text, batch_files,
                       finished_batches, model_id, remove_unfinished, stray_files)
from .plan import Plan, discover_inputs, discover_release, make_plan
from .releases import get_release

# summary.json lists at most this many lost rows one by one (all are counted).
MAX_LOST_LISTED = 1000


class OutputError(Exception):
    """--output cannot be used as a catalog directory (a file, under a file, not writable)."""


class CatalogIncomplete(Exception):
    """The exactly-once check failed: a plan row is missing from the catalog or present twice."""


@dataclass
class RunOptions:
    output: Path
    release: str | None = None
    data_root: Path | None = None
    inputs: list[str] = field(default_factory=list)
    model: str | None = None
    scheduler: str | None = None
    cluster: str = "local"
    n_workers: int | None = None
    batch_size: int = 1000
    device: str = "auto"
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto (fp16 on a GPU, fp32 on the CPU): model/fastpath.py
    backend: str = "torch"  # torch | compile | onnx
    overwrite: bool = False
    save_flux: bool = False
    save_cam: bool = False
    target_prior: tuple[float, ...] | None = None
    cpu_jobs: int = 1
    gpu_jobs: int = 0
    adapt: tuple[int, int] | None = None
    jobqueue_config: Path | None = None
    wait_timeout: float = 120.0
    progress: bool = True


def discover(opts: RunOptions) -> list[str]:
    """Stage 0: the input sources, from a release profile under --data-root and/or --input items."""
    sources: list[str] = []
    if opts.release and (opts.data_root or not opts.inputs):
        if opts.data_root is None:
            raise ValueError(f"--release {opts.release} needs --data-root (where the release's files are)")
        sources.extend(discover_release(get_release(opts.release), opts.data_root))
    sources.extend(discover_inputs(opts.inputs, opts.data_root))
    if not sources:
        raise ValueError("no input spectra found: check --data-root / --input")
    return sources


def open_output(out: Path) -> None:
    """Create the catalog directory, or say in one line why it cannot be one."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--output {out} is a file, not a directory: give a directory path (new or a catalog)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        parent = next((p for p in out.parents if p.exists() and not p.is_dir()), out.parent)
        raise OutputError(f"--output {out}: {parent} is a file, so no directory can be made under it; "
                          "choose another --output") from None
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise _not_writable(out, exc) from None


def _not_writable(out: Path, exc: OSError) -> OutputError:
    return OutputError(f"--output {out} cannot be written ({exc.strerror}: {exc.filename or out}): "
                       "choose a directory you can write to")


def prepare_output(opts: RunOptions, plan: Plan, manifest: Manifest) -> set[int]:
    """Resume or (with --overwrite) clear the locked output directory; returns the batches to skip: those
    written and holding no row lost to a failed task (a rerun retries those)."""
    out = opts.output
    if opts.overwrite:
        for name in (PARQUET_DIR, ZARR_STORE):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (MANIFEST_FILE, SUMMARY_FILE, PLAN_FILE):
            (out / name).unlink(missing_ok=True)
        previous = None
    else:
        previous = Manifest.load(out)
        if previous is None and finished_batches(out):
            raise ResumeRefused(f"{out} holds catalog files but no {MANIFEST_FILE}: use --overwrite or another --output")
        strays = stray_files(out, plan.n_batches)
        if strays:
            shown = ", ".join(repr(n) for n in strays[:5]) + (f" and {len(strays) - 5} more" if len(strays) > 5 else "")
            raise ResumeRefused(
                f"{out / PARQUET_DIR} holds {len(strays)} file(s) that are not this run's batch files: {shown}; "
                "move them out of that folder (tools that read the whole folder, pyarrow or DuckDB globs, would count them as rows), then rerun")
    if previous is not None:
        previous.check_same_run(manifest)
        manifest.created = previous.created
    remove_unfinished(out)
    plan.save(out / PLAN_FILE)
    create_arrays(out, len(plan), plan.batch_size, opts.save_flux, opts.save_cam)
    written = {i for i in finished_batches(out) if i < plan.n_batches}
    done = written - batches_with_lost_rows(out, plan)
    manifest.finished = sorted(done)
    manifest.save(out)
    return done


def lost_rows(catalog_dir: Path, plan: Plan) -> pa.Table:
    """Rows flagged INFERENCE_FAILED (a task failed on them for good): row, source, error."""
    files = batch_files(catalog_dir, plan.n_batches)
    if not files:
        return pa.table({"row": pa.array([], pa.int64()), "source": pa.array([], pa.string()),
                         "error": pa.array([], pa.string())})
    lost = pc.bit_wise_and(ds.field("flags"), pa.scalar(int(Flag.INFERENCE_FAILED), pa.int64())) != 0
    return ds.dataset([str(f) for f in files], format="parquet").to_table(
        columns=["row", "source", "error"], filter=lost).sort_by("row")


def batches_with_lost_rows(catalog_dir: Path, plan: Plan) -> set[int]:
    return {r // plan.batch_size for r in lost_rows(catalog_dir, plan).column("row").to_pylist()}


def run_settings(opts: RunOptions, prior: tuple[float, ...] | None) -> dict:
    """The settings that change a catalog row, as the manifest records them (resume must match them)."""
    return {"prior": None if prior is None else [round(float(p), 6) for p in prior], "precision": opts.precision,
            "backend": opts.backend, "device": opts.device, "save_flux": opts.save_flux, "save_cam": opts.save_cam}


def run(opts: RunOptions, log=print) -> dict:
    """Classify every input into ``opts.output``; returns the summary (also written as summary.json)."""
    import torch

    from lamost_classify.model.fastpath import check_runtime
    from lamost_classify.model.inference import Classifier

    t0 = time.time()
    sources = discover(opts)
    plan = make_plan(sources, opts.batch_size)
    # Fail early on bad weights or runtime options, before a cluster (the workers may be elsewhere:
    # 'auto' is checked as the CPU, which can run every option).
    classifier = Classifier.load(opts.model, device="cpu")
    model_name = model_id(classifier.card)
    check_runtime(torch.device("cpu" if opts.device == "auto" else opts.device), opts.precision, opts.backend)
    prior = opts.target_prior if opts.target_prior is not None else classifier.target_prior
    release = opts.release or "custom"
    manifest = Manifest(plan.fingerprint, model_name, len(plan), plan.batch_size, plan.n_batches, release,
                        settings=run_settings(opts, prior))
    open_output(opts.output)
    # One run at a time in a catalog directory: held from before --overwrite clears it to the summary.
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(catalog_lock(opts.output))
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            raise _not_writable(opts.output, exc) from None
        return _run_locked(opts, plan, manifest, model_name, release, log, t0)


def _run_locked(opts: RunOptions, plan: Plan, manifest: Manifest, model_name: str, release: str, log,
                t0: float) -> dict:
    done = prepare_output(opts, plan, manifest)
    todo = [i for i in range(plan.n_batches) if i not in done]
    retried = {i for i in finished_batches(opts.output) if i < plan.n_batches} - done
    log(f"{len(plan)} spectra in {plan.n_batches} batches of {plan.batch_size}; "
        f"{len(done)} already done, {len(todo)} to run"
        + (f" ({len(retried)} of them to retry: rows a task failed on)" if retried else "")
        + f"; model {model_name}")

    from .cluster import open_client
    from .graph import run_graph

    t_graph = time.time()
    graph_result = None
    if todo:
        with open_client(opts.scheduler, opts.cluster, opts.n_workers, opts.cpu_jobs, opts.gpu_jobs, opts.adapt,
                         opts.jobqueue_config, opts.wait_timeout, log=log) as client:
            if client.dashboard_link:
                log(f"Dask dashboard: {client.dashboard_link}")
            bar = _progress(len(todo), opts.progress)
            graph_result = run_graph(
                client, plan, todo, manifest, opts.output, release, opts.model, device=opts.device,
                precision=opts.precision, backend=opts.backend,
                target_prior=opts.target_prior, save_flux=opts.save_flux, save_cam=opts.save_cam,
                on_batch_done=lambda i, n: bar.update(1),
            )
            bar.close()
    elapsed = time.time() - t_graph
    summary = summarise(opts.output, plan, model_name, release)
    summary.update({
        "wall_time_s": round(time.time() - t0, 2),
        "graph_time_s": round(elapsed, 2),
        "spectra_per_s": round(_rows_in(todo, plan) / elapsed, 1) if todo and elapsed else 0.0,
        "batches_run": len(todo),
        "batches_resumed": len(done),
        "batches_split": sorted(graph_result.failed_batches) if graph_result else [],
        "inference_workers": sorted(graph_result.inference_workers) if graph_result else [],
    })
    atomic_write_text(opts.output / SUMMARY_FILE, json.dumps(summary, indent=1))
    return summary


def summarise(catalog_dir: Path, plan: Plan, model: str, release: str) -> dict:
    """Counts per class and flag, the rows lost to failed tasks (and why), and the exactly-once check:
    every plan row present once."""
    files = batch_files(catalog_dir, plan.n_batches)
    table = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=["row", "class", "flags"])
    rows = table.column("row").to_numpy()
    n_unique = len(set(rows.tolist()))
    if len(rows) != len(plan) or n_unique != len(plan):
        raise CatalogIncomplete(
            f"catalog incomplete or duplicated: {len(rows)} rows ({n_unique} distinct) for {len(plan)} inputs; "
            "rerun the same command to resume")
    classes = Counter(c if c is not None else "none" for c in table.column("class").to_pylist())
    flag_counts = Counter()
    for value in table.column("flags").to_numpy():
        for f in Flag:
            if value & f:
                flag_counts[f.name] += 1
    lost = lost_rows(catalog_dir, plan)
    return {
        "catalog": str(catalog_dir),
        "model": model,
        "release": release,
        "spectra": len(plan),
        "classes": dict(sorted(classes.items())),
        "flags": dict(sorted(flag_counts.items())),
        # Rows a task failed on for good (INFERENCE_FAILED): in the catalog, flagged; a rerun retries them.
        "rows_lost": lost.num_rows,
        "failed_batches": sorted({r // plan.batch_size for r in lost.column("row").to_pylist()}),
        "lost": lost.slice(0, MAX_LOST_LISTED).to_pylist(),
    }


def _rows_in(batches: list[int], plan: Plan) -> int:
    return sum(min(plan.batch_size, len(plan) - i * plan.batch_size) for i in batches)


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="batch", desc="classifying")
