"""``lamost-classify slurm-script``: show the SLURM job scripts a ``run --cluster slurm`` would submit."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--jobqueue-config", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="jobqueue.yaml with lamost-cpu and lamost-gpu sections (default: as `run` picks it: "
                   "~/.config/dask/, else deploy/jobqueue.yaml shipped with the package).")
@click.option("--section", "sections", multiple=True, type=click.Choice(["lamost-cpu", "lamost-gpu"]),
              help="Only this section's script (repeatable; default: both).")
def slurm_script(jobqueue_config: Path | None, sections: tuple[str, ...]) -> None:
    """Print the job script of each kind of worker job: lamost-cpu (readers) and lamost-gpu.

    The scheduler address is a placeholder: `run` fills in its own. Check partition (-p), account (-A),
    memory (--mem), walltime (-t), --gres and the worker's --lifetime here before a long run.
    """
    try:
        import dask_jobqueue  # noqa: F401 - the scripts are dask-jobqueue's own
    except ImportError:
        raise click.ClickException("slurm-script needs dask-jobqueue: pip install 'lamost-classify[slurm]'") from None
    from lamost_classify.pipeline.slurm import SlurmClusterError, job_scripts, load_jobqueue_config

    try:
        source = load_jobqueue_config(jobqueue_config).source
        scripts = job_scripts(jobqueue_config)
    except SlurmClusterError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"# from {source}")
    for name, script in scripts.items():
        if not sections or name in sections:
            click.echo(f"# --- {name} ---\n{script}")
