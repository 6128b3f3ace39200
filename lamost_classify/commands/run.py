"""``lamost-classify run``: the main job."""

from __future__ import annotations

from pathlib import Path

import click

from lamost_classify import SURVEY_PRIOR


def _parse_prior(ctx, param, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give three numbers, e.g. 0.985,0.012,0.003") from None


def _parse_adapt(ctx, param, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        lo, hi = (int(v) for v in value.split(":"))
    except ValueError:
        raise click.BadParameter("give MIN:MAX, e.g. 2:20") from None
    return lo, hi


@click.command()
@click.option("--release", help="Release profile: DR1 .. DR13 (and later), or 'sample' (a built-in simulated release).")
@click.option("--data-root", type=click.Path(path_type=Path), help="Where the release's <obsdate>/<planid>/spec-*.fits.gz tree is.")
@click.option("--input", "inputs", multiple=True,
              help="Spectrum files, directories, globs, a text list, a LAMOST general catalog (CSV/FITS) or a Parquet table of spectra. Repeatable.")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Catalog directory to write.")
@click.option("--model", default=None, help="Shipped model name (default: the packaged one) or a path to a .safetensors file.")
@click.option("--scheduler", default=None, help="Address of a running Dask scheduler (tcp://host:8786).")
@click.option("--cluster", type=click.Choice(["local", "slurm"]), default="local", show_default=True)
@click.option("--workers", type=int, default=None, help="Local workers (default: one per core).")
@click.option("--batch-size", type=int, default=1000, show_default=True, help="Spectra per task.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="Network arithmetic: auto = fp16 on a GPU, fp32 on the CPU (bench/RESULTS.md).")
@click.option("--backend", type=click.Choice(["torch", "compile", "onnx"]), default="torch", show_default=True,
              help="torch (eager), compile (torch.compile: minutes to start, faster after), "
                   "onnx (onnxruntime, CPU, fp32).")
@click.option("--resume/--overwrite", default=True, show_default=True,
              help="Resume a run into the same directory (default), or start it over.")
@click.option("--save-flux", is_flag=True, help="Also store the normalised 2600-pixel spectra the network read in arrays.zarr (masked pixels interpolated).")
@click.option("--save-cam", is_flag=True, help="Also store class activation maps in arrays.zarr.")
@click.option("--prior", callback=_parse_prior, default=None,
              help=f"Class prior STAR,GALAXY,QSO of the data (default: the model card's default_target_prior, the "
                   f"survey's {','.join(map(str, SURVEY_PRIOR))} at the strength chosen for the model).")
@click.option("--cpu-jobs", type=int, default=1, show_default=True, help="SLURM: reader worker jobs.")
@click.option("--gpu-jobs", type=int, default=0, show_default=True, help="SLURM: GPU worker jobs.")
@click.option("--adapt", callback=_parse_adapt, default=None, help="SLURM: adaptive MIN:MAX jobs instead of fixed counts.")
@click.option("--jobqueue-config", type=click.Path(path_type=Path, exists=True), default=None,
              help="SLURM: jobqueue.yaml (default: deploy/jobqueue.yaml shipped with the package).")
@click.option("--wait-timeout", type=float, default=120.0, show_default=True,
              help="SLURM: seconds to wait for the first workers before giving up (queues can be slow).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def run(release, data_root, inputs, output, model, scheduler, cluster, workers, batch_size, device, precision,
        backend, resume, save_flux, save_cam, prior, cpu_jobs, gpu_jobs, adapt, jobqueue_config, wait_timeout,
        progress) -> None:
    """Classify a data release (or any spectra) into a Parquet catalog, exactly once per input.

    \b
    Examples:
      lamost-classify run --release sample --output catalog/
      lamost-classify run --release DR5 --data-root /data/lamost/dr5 --output dr5-classes/
      lamost-classify run --input 'spectra/*.fits.gz' --output mine/ --scheduler tcp://head:8786

    Rerunning the same command resumes: finished batches are skipped, batches with rows a task failed
    on are retried. A directory holding another run (other inputs, model or settings) is refused unless
    --overwrite; so is one another run is using right now, even with --overwrite.
    """
    from lamost_classify.pipeline.arguments import ClusterArguments, InvalidArgument, ModelArguments, RunArguments
    from lamost_classify.pipeline.run import run as run_pipeline

    try:
        args = RunArguments(
            output=output, release=release, data_root=data_root, inputs=inputs, batch_size=batch_size,
            overwrite=not resume, save_flux=save_flux, save_cam=save_cam, progress=progress,
            model=ModelArguments(weights=model, device=device, precision=precision, backend=backend, prior=prior),
            cluster=ClusterArguments(scheduler=scheduler, kind=cluster, workers=workers, cpu_jobs=cpu_jobs,
                                     gpu_jobs=gpu_jobs, adapt=adapt, jobqueue_config=jobqueue_config,
                                     wait_timeout=wait_timeout),
        )
        summary = run_pipeline(args, log=click.echo)
    except InvalidArgument as exc:
        raise click.UsageError(str(exc)) from None
    except Exception as exc:
        message = run_error_message(exc, output)
        if message is None:
            raise
        raise click.ClickException(message) from None
    click.echo(
        f"{summary['spectra']} spectra -> {output} in {summary['wall_time_s']} s "
        f"({summary['spectra_per_s']} spectra/s)\n"
        f"classes: {summary['classes']}\nflags:   {summary['flags']}"
    )
    if summary["rows_lost"]:
        click.echo(f"{summary['rows_lost']} spectra lost to failed tasks (flagged INFERENCE_FAILED, reason in "
                   f"'error'; listed in summary.json): rerun the same command to retry them", err=True)


def run_error_message(exc: BaseException, output: Path) -> str | None:
    """The one line that tells the user what went wrong and what to do; None for a bug (kept a traceback)."""
    import errno

    from lamost_classify.model.weights import ModelCardMismatch, WeightsIntegrityError
    from lamost_classify.pipeline.failsafe import is_storage_error
    from lamost_classify.pipeline.graph import WorkersLost
    from lamost_classify.pipeline.lock import CatalogLocked
    from lamost_classify.pipeline.manifest import ManifestError, ResumeRefused
    from lamost_classify.pipeline.run import CatalogIncomplete, OutputError
    from lamost_classify.pipeline.slurm import SlurmClusterError

    if isinstance(exc, (WeightsIntegrityError, ModelCardMismatch)):
        return (f"{exc} -- the model cannot be trusted: reinstall lamost-classify for the shipped weights, "
                "or pass --model with a .safetensors file and the card it was saved with")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left writing {exc.filename or output} ({exc.strerror}): the batches already written "
                "are kept and nothing is lost; free space, then rerun the same command to resume")
    if is_storage_error(exc):
        return (f"cannot write {exc.filename or output} ({exc.strerror}): the batches already written are kept; "
                "fix the permissions or use another --output, then rerun the same command")
    if isinstance(exc, KeyError):
        return str(exc.args[0]) if exc.args else str(exc)
    if isinstance(exc, (OutputError, CatalogLocked, ManifestError, ResumeRefused, CatalogIncomplete, WorkersLost,
                        SlurmClusterError, ValueError, FileNotFoundError, ImportError)):
        return str(exc)
    return None


@click.command()
def flags() -> None:
    """List the quality flag bits of the catalog's ``flags`` column."""
    from lamost_classify.pipeline.flags import describe

    click.echo("bit name                 meaning")
    click.echo(describe())
