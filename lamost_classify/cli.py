"""The ``lamost-classify`` command. Each sub-command lives in ``lamost_classify.commands`` and is
imported only when it runs, so ``--help`` stays fast and torch/dask load only where needed."""

from __future__ import annotations

import importlib

import click

from . import __version__

# command name -> (module in lamost_classify.commands, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("run", "run", "Classify a data release (or files) into a Parquet catalog, resumably."),
    "simulate": ("simulate", "simulate", "Write labelled mock LAMOST spectra from templates."),
    "train": ("model", "train", "Train the DenseNet on labelled spectra."),
    "evaluate": ("model", "evaluate", "Precision/recall/F1 and confusion matrix on a labelled set."),
    "explain": ("model", "explain", "Draw a spectrum coloured by its class activation map (CAM)."),
    "model-info": ("model", "model_info", "Parameters and FLOPs per spectrum of each preset."),
    "query": ("query", "query", "Select rows from a catalog (class, probability, flags, cone ...)."),
    "export": ("query", "export", "Export a catalog to FITS, CSV, VOTable or HATS."),
    "slurm-script": ("slurm", "slurm_script", "Print the SLURM job scripts a --cluster slurm run would submit."),
    "flags": ("run", "flags", "List the quality flag bits."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        try:
            mod = importlib.import_module(f"lamost_classify.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"lamost_classify.commands.{module}":
                return None  # not built yet
            raise
        return getattr(mod, attr, None)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table, without importing every command module.
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lamost-classify")
def main() -> None:
    """Sort LAMOST low-resolution spectra into STAR, GALAXY and QSO with a 1-D DenseNet.

    \b
    Quick start (built-in sample, shipped weights):
      lamost-classify run --release sample --output catalog/
      lamost-classify query catalog/ --class QSO --min-prob 0.9
    """


if __name__ == "__main__":
    main()
