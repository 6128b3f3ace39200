"""The main job, end to end: discover -> plan -> (resume check) -> Dask graph -> verify -> summary."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.dataset as ds

from .catalog import ZARR_STORE, create_arrays
from .flags import Flag
from .manifest import MANIFEST, PARQUET_DIR, Manifest, ResumeRefused, atomic_write_text, finished_batches
from .plan import Plan, discover_inputs, discover_release, make_plan
from .releases import get_release

PLAN_FILE = "plan.parquet"
SUMMARY = "summary.json"


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


def prepare_output(opts: RunOptions, plan: Plan, manifest: Manifest) -> set[int]:
    """Create, resume or (with --overwrite) clear the output directory; returns the finished batches."""
    out = opts.output
    previous = Manifest.load(out) if out.exists() else None
    if opts.overwrite and out.exists():
        for name in (PARQUET_DIR, ZARR_STORE):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (MANIFEST, SUMMARY, PLAN_FILE):
            (out / name).unlink(missing_ok=True)
        previous = None
    elif previous is None and out.exists() and any((out / PARQUET_DIR).glob("*.parquet")):
        raise ResumeRefused(f"{out} holds catalog files but no {MANIFEST}: use --overwrite or another --output")
    out.mkdir(parents=True, exist_ok=True)
    if previous is not None:
        previous.check_same_run(manifest)
        manifest.created = previous.created
    plan.save(out / PLAN_FILE)
    create_arrays(out, len(plan), plan.batch_size, opts.save_flux, opts.save_cam)
    done = {i for i in finished_batches(out) if i < plan.n_batches}
    manifest.finished = sorted(done)
    manifest.save(out)
    return done


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
    model_name = Classifier.load(opts.model, device="cpu").name
    check_runtime(torch.device("cpu" if opts.device == "auto" else opts.device), opts.precision, opts.backend)
    release = opts.release or "custom"
    manifest = Manifest(plan.fingerprint, model_name, len(plan), plan.batch_size, plan.n_batches, release)
    done = prepare_output(opts, plan, manifest)
    todo = [i for i in range(plan.n_batches) if i not in done]
    log(f"{len(plan)} spectra in {plan.n_batches} batches of {plan.batch_size}; "
        f"{len(done)} already done, {len(todo)} to run; model {model_name}")

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
        "failed_batches": graph_result.failed_batches if graph_result else [],
        "inference_workers": sorted(graph_result.inference_workers) if graph_result else [],
    })
    atomic_write_text(opts.output / SUMMARY, json.dumps(summary, indent=1))
    return summary


def summarise(catalog_dir: Path, plan: Plan, model: str, release: str) -> dict:
    """Counts per class and flag, and the exactly-once check: every plan row present once."""
    table = ds.dataset(catalog_dir / PARQUET_DIR, format="parquet").to_table(columns=["row", "class", "flags"])
    rows = table.column("row").to_numpy()
    n_unique = len(set(rows.tolist()))
    if len(rows) != len(plan) or n_unique != len(plan):
        raise RuntimeError(
            f"catalog incomplete or duplicated: {len(rows)} rows ({n_unique} distinct) for {len(plan)} inputs; "
            "rerun the same command to resume")
    classes = Counter(c if c is not None else "none" for c in table.column("class").to_pylist())
    flag_counts = Counter()
    for value in table.column("flags").to_numpy():
        for f in Flag:
            if value & f:
                flag_counts[f.name] += 1
    return {
        "catalog": str(catalog_dir),
        "model": model,
        "release": release,
        "spectra": len(plan),
        "classes": dict(sorted(classes.items())),
        "flags": dict(sorted(flag_counts.items())),
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
