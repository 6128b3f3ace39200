"""The main job, end to end: discover -> plan -> (resume check) -> Dask graph -> verify -> summary."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from .arguments import RunArguments
from lamost_classify.contract import MANIFEST_FILE, PARQUET_DIR, PLAN_FILE, SUMMARY_FILE, ZARR_STORE

from .catalog import create_arrays
from .flags import Flag
from .lock import catalog_lock
from .manifest import (Manifest, ResumeRefused, atomic_write_text, batch_files,
                       finished_batches, remove_unfinished, stray_files)
from .plan import Plan, iter_inputs, iter_release, make_plan
from .releases import get_release
from .stages import STAGES

# summary.json lists at most this many lost rows one by one (all are counted).
MAX_LOST_LISTED = 1000


class OutputError(Exception):
    """--output cannot be used as a catalog directory (a file, under a file, not writable)."""


class CatalogIncomplete(Exception):
    """The exactly-once check failed: a plan row is missing from the catalog or present twice."""


def discover(args: RunArguments, log=print) -> Iterator[str]:
    """Stage 0: the input sources, from a release profile under --data-root and/or --input items, streamed
    (a release's millions of paths go straight into the plan's Arrow array)."""
    data_root = args.data_root
    if args.is_sample:
        from lamost_classify.mocks.sample import sample_release

        data_root = sample_release(log=log)
    release = iter(())
    if args.release and (data_root or not args.inputs):
        release = iter_release(get_release(args.release), data_root)
    return _some(itertools.chain(release, iter_inputs(list(args.inputs), data_root)))


def _some(sources: Iterator[str]) -> Iterator[str]:
    found = False
    for source in sources:
        found = True
        yield source
    if not found:
        raise ValueError("no input spectra found: check --data-root / --input")


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


def prepare_output(args: RunArguments, plan: Plan, manifest: Manifest) -> set[int]:
    """Resume or (with --overwrite) clear the locked output directory; returns the batches to skip: those
    written and holding no row lost to a failed task (a rerun retries those)."""
    out = args.output
    if args.overwrite:
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
    create_arrays(out, len(plan), plan.batch_size, args.save_flux, args.save_cam)
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


def run_settings(args: RunArguments) -> dict:
    """The settings that change a catalog row, as the manifest records them (resume must match them)."""
    model = args.model
    return {"prior": [round(float(p), 6) for p in model.target_prior], "precision": model.precision,
            "backend": model.backend, "device": model.device, "save_flux": args.save_flux, "save_cam": args.save_cam}


def run(args: RunArguments, log=print) -> dict:
    """Classify every input into ``args.output``; returns the summary (also written as summary.json)."""
    t0 = time.time()
    plan = make_plan(discover(args, log), args.batch_size)
    manifest = Manifest(plan.fingerprint, args.model.name, len(plan), plan.batch_size, plan.n_batches,
                        args.release_name, settings=run_settings(args))
    open_output(args.output)
    # One run at a time in a catalog directory: held from before --overwrite clears it to the summary.
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(catalog_lock(args.output))
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            raise _not_writable(args.output, exc) from None
        return _run_locked(args, plan, manifest, log, t0)


def _run_locked(args: RunArguments, plan: Plan, manifest: Manifest, log, t0: float) -> dict:
    done = prepare_output(args, plan, manifest)
    todo = [i for i in range(plan.n_batches) if i not in done]
    retried = {i for i in finished_batches(args.output) if i < plan.n_batches} - done
    log(f"{len(plan)} spectra in {plan.n_batches} batches of {plan.batch_size}; "
        f"{len(done)} already done, {len(todo)} to run"
        + (f" ({len(retried)} of them to retry: rows a task failed on)" if retried else "")
        + f"; model {args.model.name}")

    from tqdm import tqdm

    from .cluster import open_client
    from .graph import run_graph

    t_graph = time.time()
    graph_result = None
    if todo:
        with open_client(args.cluster, log=log) as client:
            if client.dashboard_link:
                log(f"Dask dashboard: {client.dashboard_link}")
            with tqdm(total=len(todo), unit="batch", desc="classifying", disable=not args.progress) as bar:
                graph_result = run_graph(client, args, plan, todo, manifest,
                                         on_batch_done=lambda i, n: bar.update(1))
    elapsed = time.time() - t_graph
    stage_times = stage_timings(graph_result) if graph_result else {}
    if stage_times:
        log(describe_stages(stage_times))
    summary = summarise(args.output, plan, args.model.name, args.release_name)
    summary.update({
        "wall_time_s": round(time.time() - t0, 2),
        "graph_time_s": round(elapsed, 2),
        "spectra_per_s": round(_rows_in(todo, plan) / elapsed, 1) if todo and elapsed else 0.0,
        "batches_run": len(todo),
        "batches_resumed": len(done),
        "batches_split": sorted(graph_result.failed_batches) if graph_result else [],
        "inference_workers": sorted(graph_result.inference_workers) if graph_result else [],
        **stage_times,
    })
    atomic_write_text(args.output / SUMMARY_FILE, json.dumps(summary, indent=1))
    return summary


def stage_timings(graph_result) -> dict:
    """Where the run's time went: worker-seconds per stage (summed over workers) and, per stage and for all
    of them, spectra per worker-second (per core: workers are single-threaded), over the batches written
    whole. Empty when no batch was."""
    n = graph_result.timed_spectra
    seconds = {stage: round(graph_result.stage_seconds.get(stage, 0.0), 2) for stage in STAGES}
    if not n:
        return {}
    total = sum(graph_result.stage_seconds.get(stage, 0.0) for stage in STAGES)
    rates = {stage: round(n / graph_result.stage_seconds[stage], 1) for stage in STAGES
             if graph_result.stage_seconds.get(stage, 0.0) > 0}
    return {"stage_seconds": seconds, "stage_spectra_per_s": {**rates, "all": round(n / total, 1) if total else 0.0}}


def describe_stages(stage_times: dict) -> str:
    """One line: each stage's worker-seconds and spectra/s per core, and all stages together."""
    rates = stage_times["stage_spectra_per_s"]
    parts = [f"{stage} {seconds:.1f} s ({rates[stage]:,.0f}/s)" for stage, seconds in stage_times["stage_seconds"].items()
             if stage in rates]
    return f"stages, worker-seconds (spectra/s per core): {', '.join(parts)}; all stages {rates['all']:,.0f}/s per core"


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
