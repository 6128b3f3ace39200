"""``train``, ``evaluate``, ``explain`` and ``model-info``: the model's life on the command line.

Parsing and printing only: labelled data are ``lamost_classify.model.labelled``'s (the forms they take
are described there), the recipe is ``lamost_classify.model.recipe``'s. This module hands them the
pipeline's reader and turns their errors into one line each.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from lamost_classify.contract import CLASS_NAMES, SURVEY_PRIOR

if TYPE_CHECKING:
    from lamost_classify.model.labelled import LabelledSet
    from lamost_classify.model.train import TrainConfig
    from lamost_classify.pipeline.grid import PreparedBatch


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Labelled data or settings the library refuses (``labelled.LabelledDataError`` is a ValueError; a
    checkpoint written with other settings, a diverged run) become one clear line, not a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        raise click.ClickException(str(exc)) from None


def prepare_spectra(sources: list[str]) -> PreparedBatch:
    """``labelled.PrepareSpectra`` by the pipeline: its readers (``table.parquet#ROW`` too), then its grid."""
    from lamost_classify.pipeline.grid import prepare
    from lamost_classify.pipeline.readers import read_batch

    return prepare(read_batch(sources))


def _load_labelled(data: Path, truth: Path | None, progress: bool = True) -> LabelledSet:
    from lamost_classify.model.labelled import load_labelled

    with _one_line_errors():
        return load_labelled(data, truth, prepare_spectra, progress)


def _load_classifier(model: str, **options):
    """``Classifier.load``, with a missing, tampered or mismatched weights file as one clear line."""
    from lamost_classify.model.inference import Classifier
    from lamost_classify.model.weights import ModelCardMismatch, WeightsIntegrityError

    try:
        return Classifier.load(model, **options)
    except FileNotFoundError as exc:
        raise click.ClickException(f"model {model!r}: {exc}") from None
    except (WeightsIntegrityError, ModelCardMismatch) as exc:
        raise click.ClickException(
            f"model {model!r} refused: {exc}; use the weights file and card exactly as `train` wrote them, "
            "or the shipped 'default'"
        ) from None


def _train_and_print(data: LabelledSet, train_idx: np.ndarray, val_idx: np.ndarray, config: TrainConfig, out_dir: Path,
                     name: str, source: str) -> dict:
    """``recipe.train_labelled``, its tables printed. Returns the validation report."""
    from lamost_classify.model.evaluate import format_report
    from lamost_classify.model.recipe import train_labelled

    with _one_line_errors():
        trained = train_labelled(data, train_idx, val_idx, config, out_dir, name, source)
    report, result, c = trained.report, trained.calibrated.result, trained.report["calibration"]
    click.echo(format_report(report))
    click.echo(f"\ntemperature {c['temperature']:.3f}: NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f}, "
               f"ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}")
    click.echo(f"best epoch {result.best_epoch} (val loss {result.best_val_loss:.4f}); weights: {trained.weights}")
    return report


@click.command()
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--truth", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Truth table (CSV/Parquet: file or source, class) when DATA is a directory of FITS.")
@click.option("--preset", default="fast", show_default=True,
              type=click.Choice(["fast", "paper", "plain_densenet", "fc4"]), help="Network preset.")
@click.option("--epochs", default=60, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=0.01, show_default=True, type=float, help="Initial Adam learning rate.")
@click.option("--lr-milestones", default="10,30,50", show_default=True,
              help="Epochs after which the learning rate is divided by 10, comma-separated.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--val-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of each class held out for validation (best epoch, temperature, metrics).")
@click.option("--max-train-per-class", type=click.IntRange(1), default=None,
              help="Use at most this many training spectra of each class.")
@click.option("--per-class", type=click.IntRange(1), default=None,
              help="Spectra per class per balanced epoch [default: the median class size].")
@click.option("--artefacts", "artefact_fraction", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of every class given the spikes and arm-scale errors of real files each epoch "
                   "(0 = the paper's recipe; the shipped model's card records what it used).")
@click.option("--tilts", "tilt_fraction", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of every class given a random smooth colour each epoch, so that no simulator's "
                   "continuum shape is learnt as a class (0 = the paper's recipe).")
@click.option("--arm-losses", "arm_loss_fraction", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of every class given one arm's outer end without data each epoch, as real files "
                   "have (0 = the paper's recipe).")
@click.option("--init-from", default=None,
              help="Start from these trained weights (name or path) instead of random ones: fine-tuning.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory: checkpoint, logs, loss curves, weights + model card.")
@click.option("--name", default="model", show_default=True, help="Weights file name (<name>.safetensors).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Carry on from OUT/checkpoint.pt when it exists.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads [default: all allotted].")
@click.option("--ablation", is_flag=True,
              help="Train fc4, plain_densenet and PRESET on the same data and recipe; print Table 3.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def train(data, truth, preset, epochs, lr, lr_milestones, batch_size, seed, val_fraction, max_train_per_class,
          per_class, artefact_fraction, tilt_fraction, arm_loss_fraction, init_from, out_dir, name, resume, device, threads,
          ablation, progress) -> None:
    """Train the DenseNet on labelled spectra in DATA (Parquet table, or FITS directory + --truth)."""
    from lamost_classify.model.labelled import cap_per_class, class_counts, split_validation
    from lamost_classify.model.train import TrainConfig

    try:
        milestones = tuple(int(m) for m in lr_milestones.split(",") if m.strip())
    except ValueError as exc:
        raise click.BadParameter(f"--lr-milestones must be integers separated by commas, got {lr_milestones!r}") from exc
    if init_from:
        _load_classifier(init_from, device="cpu")  # refused weights fail now, not after the data is prepared
    labelled = _load_labelled(data, truth, progress)
    train_idx, val_idx = split_validation(labelled.labels, val_fraction, seed)
    train_idx = cap_per_class(train_idx, labelled.labels, max_train_per_class, seed)
    click.echo(f"{data}: training {class_counts(labelled.labels[train_idx])}, validation "
               f"{class_counts(labelled.labels[val_idx])}" + (f"; left out {labelled.dropped}" if labelled.dropped else ""))
    config = TrainConfig(preset=preset, epochs=epochs, lr=lr, lr_milestones=milestones, batch_size=batch_size,
                         seed=seed, per_class=per_class, artefact_fraction=artefact_fraction, tilt_fraction=tilt_fraction,
                         arm_loss_fraction=arm_loss_fraction, init_from=init_from, device=device, num_threads=threads,
                         resume=resume, progress=progress)
    if not ablation:
        _train_and_print(labelled, train_idx, val_idx, config, out_dir, name, str(data))
        return
    from lamost_classify.model.evaluate import format_table3
    from lamost_classify.model.train import ablation_configs

    rows = {}
    for label, cfg in ablation_configs(config).items():
        click.echo(f"\n=== ablation: {label} ===")
        report = _train_and_print(labelled, train_idx, val_idx, cfg, out_dir / label, name, str(data))
        rows[label] = report["scores"]["mean"]
    click.echo("\n" + format_table3(rows))
    (out_dir / "ablation.json").write_text(json.dumps(rows, indent=2, default=float))


@click.command()
@click.argument("model")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--truth", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Truth table when DATA is a directory of FITS.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("evaluation"),
              show_default=True, help="Directory for evaluation.json and evaluation.png.")
@click.option("--prior", type=click.Choice(["train", "survey"]), default="train", show_default=True,
              help="Class prior of the predictions: as trained (flat, the paper's setting) or the survey's as "
                   "the catalog publishes it (the model card's default_target_prior).")
@click.option("--device", default="auto", show_default=True)
def evaluate(model, data, truth, out_dir, prior, device) -> None:
    """Precision/recall/F1, confusion matrix and per-S/N scores of MODEL on labelled DATA; when the truth
    has a z column (and the spectra an inverse variance), the redshift accuracy and star types too. With an
    inverse variance the classes are the catalog's (no QSO whose fit lies below z 0.05)."""
    from lamost_classify.model.calibration import expected_calibration_error
    from lamost_classify.model.evaluate import evaluate as evaluate_predictions
    from lamost_classify.model.evaluate import format_redshift, format_report, save_report
    from lamost_classify.model.inference import published_class
    from lamost_classify.model.labelled import hard_case_truth, truth_columns
    from lamost_classify.model.redshift_metrics import evaluate_redshift, redshift_skip_reason

    classifier = _load_classifier(model, device=device, target_prior="card" if prior == "survey" else None)
    labelled = _load_labelled(data, truth)
    flux = labelled.spectra()
    probs, balanced = classifier.predict_proba_and_balanced(flux)
    # The class as the catalog publishes it, where the spectra carry the ivar its QSO fits need
    published = probs if labelled.cached_ivar is None else published_class(probs, *classifier.class_rule_inputs(
        balanced, flux, labelled.inverse_variances(), labelled.pedestals()))
    report = evaluate_predictions(labelled.labels, published, labelled.snr, SURVEY_PRIOR,
                                  truth=hard_case_truth(data, truth, labelled))
    report["model"] = classifier.name
    report["prior"] = prior
    report["probability_prior"] = None if classifier.target_prior is None else list(classifier.target_prior)
    report["ece"] = expected_calibration_error(probs, labelled.labels)
    redshift_truth = truth_columns(data, truth, labelled, ("z", "subclass"))
    skipped = redshift_skip_reason(redshift_truth, labelled.cached_ivar is not None)
    if skipped:
        report["redshift_skipped"] = skipped
    else:
        with _one_line_errors():
            report["redshift"] = evaluate_redshift(classifier, labelled, redshift_truth)
    json_path, png_path = save_report(report, out_dir)
    click.echo(f"{classifier.name} on {data}" + (f" (left out {labelled.dropped})" if labelled.dropped else ""))
    click.echo(format_report(report))
    click.echo(f"\nECE (15 bins) {report['ece']:.4f}\n")
    click.echo(f"Redshift part skipped: {skipped}." if skipped else format_redshift(report["redshift"]))
    click.echo(f"\nwrote {json_path} and {png_path}")


def _read_one_spectrum(path: Path) -> tuple[np.ndarray, float | None, str]:
    """(normalised flux (2600,), the file's redshift or None, a label) from a .npy or any readable file."""
    from lamost_classify.pipeline.grid import N_PIXELS, prepare

    if path.suffix == ".npy":
        flux = np.load(path).astype(np.float32).reshape(-1)
        if flux.size != N_PIXELS:
            raise click.ClickException(f"{path}: a .npy spectrum must hold {N_PIXELS} normalised values, has {flux.size}")
        return flux, None, path.name
    from lamost_classify.pipeline.readers import read_batch

    spectrum = read_batch([path])[0]
    prepared = prepare([spectrum])
    from lamost_classify.pipeline.flags import UNUSABLE, flag_names

    if prepared.flags[0] & int(UNUSABLE):
        reason = spectrum.meta.get("error") or ", ".join(flag_names(int(prepared.flags[0])))
        raise click.ClickException(f"{path}: cannot explain an unusable spectrum ({reason})")
    return prepared.flux[0], spectrum.meta.get("lamost_z"), spectrum.meta.get("designation") or path.name


@click.command()
@click.argument("model")
@click.argument("spectrum_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--z", "redshift", type=float, default=None,
              help="Redshift for the line marks [default: the file's own Z when it has one].")
@click.option("--out", "out_png", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--device", default="auto", show_default=True)
def explain(model, spectrum_file, redshift, out_png, device) -> None:
    """Draw SPECTRUM_FILE coloured by MODEL's class activation map (like the paper's fig. 11)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lamost_classify.model.cam import plot_cam

    classifier = _load_classifier(model, device=device)
    flux, file_z, label = _read_one_spectrum(spectrum_file)
    z = redshift if redshift is not None else file_z
    probs = classifier.predict_proba(flux[None])[0]
    cam = classifier.cam(flux[None])[0]
    best = int(probs.argmax())
    title = (f"{label}: {CLASS_NAMES[best]} " + " ".join(f"{n}={p:.3f}" for n, p in zip(CLASS_NAMES, probs))
             + (f"   z={z:.4f}" if z is not None else "") + f"   [{classifier.name}]")
    ax = plot_cam(flux, cam, z=z, title=title)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    ax.figure.tight_layout()
    ax.figure.savefig(out_png, dpi=120)
    plt.close(ax.figure)
    click.echo(f"{CLASS_NAMES[best]} ({probs[best]:.3f}); wrote {out_png}")


@click.command("model-info")
@click.option("--preset", "presets", multiple=True, help="Only these presets [default: all].")
def model_info(presets) -> None:
    """Layers (the paper's count), parameters and forward FLOPs per spectrum of each preset."""
    from lamost_classify.model.densenet import PRESETS, build_model, count_flops, count_layers, count_parameters

    click.echo(f"{'preset':16s}{'layers':>8s}{'parameters':>14s}{'MFLOPs/spectrum':>18s}")
    for preset in presets or PRESETS:
        if preset not in PRESETS:
            raise click.BadParameter(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        net = build_model(preset)
        click.echo(f"{preset:16s}{count_layers(net):>8d}{count_parameters(net):>14,d}{count_flops(net) / 1e6:>18.1f}")
    click.echo("FLOPs: forward pass, convolutions and fully connected layers (a multiply-add = 2), "
               "from torch.utils.flop_counter; training costs ~3x.")
