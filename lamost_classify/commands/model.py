"""``train``, ``evaluate``, ``explain`` and ``model-info``: the model's life on the command line.

Labelled spectra come as a Parquet table (a ``class`` column STAR/GALAXY/QSO plus either spectra
the pipeline's Parquet reader reads, ``flux``/``ivar``/``andmask`` lists with or without
``wavelength``, or pre-normalised ``flux_norm`` lists of 2600) or as a directory of FITS files with
a truth table (CSV or Parquet, columns ``file`` or ``source``, and ``class``). Prepared arrays are
cached next to the input, keyed by the sha256 of the input, so a second run skips the preparation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from lamost_classify import CLASS_NAMES, SURVEY_PRIOR

PREPARE_CHUNK = 2048  # spectra prepared at a time (~100 MB of native arrays)
CACHE_VERSION = 1  # bump when the preparation changes, so old caches are not reused


@dataclass
class LabelledSet:
    """Prepared, usable, labelled spectra. The flux stays a read-only memory map of the cache until
    ``spectra`` copies the rows asked for into memory."""

    cached_flux: np.ndarray  # (N_all, 2600) float32 memory map, usable or not
    rows: np.ndarray  # (N,) the usable rows of cached_flux
    labels: np.ndarray  # (N,) int64 in 0..2
    snr: np.ndarray  # (N,) float32, NaN when unknown
    flags: np.ndarray  # (N,) uint32 quality flags
    sources: list[str]
    sha256: str  # of the input: identifies the training data in the model card
    dropped: dict[str, int]  # rows left out, by reason

    def spectra(self, index: np.ndarray | None = None) -> np.ndarray:
        """Flux of the usable spectra (all, or ``index`` into them), (n, 2600) float32."""
        if index is None:
            if len(self.rows) == len(self.cached_flux):
                return self.cached_flux  # no copy
            index = np.arange(len(self.rows))
        return self.cached_flux[self.rows[index]]


# ---------------------------------------------------------------- labelled data -> prepared arrays

def _sha256_of(paths: list[Path], extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _class_index(values: list[object]) -> np.ndarray:
    """Class strings -> 0..2, -1 for anything else (UNKNOWN, null, typos)."""
    lookup = {name: i for i, name in enumerate(CLASS_NAMES)}
    return np.array([lookup.get(str(v).strip().upper(), -1) if v is not None else -1 for v in values], np.int64)


def _read_truth(path: Path) -> tuple[list[str], list[object]]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    names = {n.lower(): n for n in table.column_names}
    key = names.get("file") or names.get("source")
    if key is None or "class" not in names:
        raise click.ClickException(f"{path}: a truth table needs columns 'file' (or 'source') and 'class'; "
                                   f"it has {table.column_names}")
    return [str(v) for v in table.column(key).to_pylist()], table.column(names["class"]).to_pylist()


HARD_CASE_COLUMNS = ("class", "subclass", "template", "z", "snr_g")


def _hard_case_truth(data: Path, truth: Path | None, labelled: LabelledSet) -> dict[str, list] | None:
    """The mock truth columns ``evaluate.HARD_CASES`` needs, for the usable rows; None when the table
    (DATA, or --truth beside a FITS directory) lacks any of them."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(truth) if data.is_dir() else data
    names = pq.ParquetFile(path).schema_arrow.names if path.suffix == ".parquet" else None
    if names is None:
        table = pacsv.read_csv(path)
    elif not set(HARD_CASE_COLUMNS) <= {n.lower() for n in names}:
        return None
    else:
        table = pq.read_table(path, columns=[n for n in names if n.lower() in HARD_CASE_COLUMNS])
    columns = {n.lower(): n for n in table.column_names}
    if not set(HARD_CASE_COLUMNS) <= set(columns):
        return None
    return {k: table.column(columns[k]).take(labelled.rows).to_pylist() for k in HARD_CASE_COLUMNS}


def _prepare_parquet(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from lamost_classify.pipeline.grid import N_PIXELS, prepare

    parquet = pq.ParquetFile(path)
    names = {n.lower(): n for n in parquet.schema_arrow.names}
    if "class" not in names:
        raise click.ClickException(f"{path}: a labelled table needs a 'class' column; it has {parquet.schema_arrow.names}")
    labels = _class_index(pq.read_table(path, columns=[names["class"]]).column(0).to_pylist())
    n = len(labels)
    flux = np.zeros((n, N_PIXELS), np.float32)
    snr = np.full(n, np.nan, np.float32)
    flags = np.zeros(n, np.uint32)
    if "flux_norm" in names:  # already on the grid and normalised
        snr_col = names.get("snr_pixel") or names.get("snr")
        start = 0
        for batch in parquet.iter_batches(PREPARE_CHUNK, columns=[names["flux_norm"]] + ([snr_col] if snr_col else [])):
            column = batch.column(0)
            lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy()
            values = pc.list_flatten(column).to_numpy(zero_copy_only=False)  # null rows skipped
            starts = np.concatenate([[0], np.cumsum(np.maximum(lengths, 0))[:-1]])
            good = lengths == N_PIXELS
            block = values[starts[good][:, None] + np.arange(N_PIXELS)]
            finite = np.isfinite(block).all(axis=1)
            flux[start + np.flatnonzero(good)[finite]] = block[finite]
            good[np.flatnonzero(good)[~finite]] = False
            labels[start + np.flatnonzero(~good)] = -2  # null, wrong length or NaN: dropped below with its reason
            if snr_col:
                snr[start:start + len(lengths)] = batch.column(1).to_numpy(zero_copy_only=False)
            start += len(lengths)
        return {"flux": flux, "labels": labels, "snr": snr, "flags": flags}
    from lamost_classify.pipeline.readers import read_parquet_spectra

    with click.progressbar(range(0, n, PREPARE_CHUNK), label=f"preparing {n} spectra", file=sys.stderr) as bar:
        for start in bar:
            stop = min(start + PREPARE_CHUNK, n)
            batch = prepare(read_parquet_spectra(path, slice(start, stop)))
            flux[start:stop], snr[start:stop], flags[start:stop] = batch.flux, batch.snr, batch.flags
    return {"flux": flux, "labels": labels, "snr": snr, "flags": flags}


def _truth_sources(directory: Path, truth: Path) -> tuple[list[str], list[object]]:
    """(paths of the files the truth table names, resolved against ``directory``; their classes)."""
    files, classes = _read_truth(truth)
    return [f if os.path.isabs(f) else str(directory / f) for f in files], classes


def _file_stamp(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return f"{path} missing"
    return f"{path} {stat.st_size} {stat.st_mtime_ns}"


def _prepare_fits_dir(directory: Path, truth: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    from lamost_classify.pipeline.grid import prepare
    from lamost_classify.pipeline.readers import read_batch

    sources, classes = _truth_sources(directory, truth)
    labels = _class_index(classes)
    parts = []
    with click.progressbar(range(0, len(sources), PREPARE_CHUNK), label=f"preparing {len(sources)} spectra",
                           file=sys.stderr) as bar:
        for start in bar:
            parts.append(prepare(read_batch(sources[start:start + PREPARE_CHUNK])))
    return {
        "flux": np.concatenate([p.flux for p in parts]), "labels": labels,
        "snr": np.concatenate([p.snr for p in parts]), "flags": np.concatenate([p.flags for p in parts]),
    }, sources


def _cache_dir(data: Path, key: str) -> Path:
    """``<data>.prepared-<key>/`` beside the input when writable, else under the user's cache."""
    beside = data.parent / f"{data.name}.prepared-{key[:16]}"
    if os.access(data.parent, os.W_OK):
        return beside
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lamost-classify" / beside.name


def load_labelled(data: str | Path, truth: str | Path | None = None) -> LabelledSet:
    """Prepared, labelled spectra from a Parquet table or a FITS directory + truth table, cached."""
    from lamost_classify.pipeline.flags import UNUSABLE

    data = Path(data)
    if data.is_dir():
        if truth is None:
            raise click.ClickException(f"{data} is a directory: give the truth table with --truth")
        # The truth table's content and the size and time of every file it names (re-hashing
        # gigabytes of FITS on every run would cost more than the preparation saves).
        listing = "\n".join(_file_stamp(source) for source in _truth_sources(data, Path(truth))[0])
        key = _sha256_of([Path(truth)], f"v{CACHE_VERSION}\n{listing}")
    else:
        key = _sha256_of([data], f"v{CACHE_VERSION}\n")
    # Beside the Parquet table, or beside the truth table (not inside the FITS tree, often others' data).
    cache = _cache_dir(Path(truth) if data.is_dir() else data, key)
    if not (cache / "flux.npy").exists():
        if data.is_dir():
            arrays, sources = _prepare_fits_dir(data, Path(truth))
        else:
            arrays = _prepare_parquet(data)
            sources = [f"{data}#{i}" for i in range(len(arrays["labels"]))]
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".prepared-", dir=cache.parent))
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        (tmp / "sources.json").write_text(json.dumps(sources))
        try:
            os.replace(tmp, cache)
        except OSError:  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    flux = np.load(cache / "flux.npy", mmap_mode="r")
    labels = np.load(cache / "labels.npy")
    snr = np.load(cache / "snr.npy")
    flags = np.load(cache / "flags.npy")
    sources = json.loads((cache / "sources.json").read_text())

    usable = (labels >= 0) & ((flags & np.uint32(int(UNUSABLE))) == 0)
    dropped = {
        "class not STAR/GALAXY/QSO": int((labels == -1).sum()),
        "flux_norm not 2600 finite values": int((labels == -2).sum()),
        "unusable spectrum (flags)": int(((labels >= 0) & ~usable).sum()),
    }
    keep = np.flatnonzero(usable)
    if len(keep) == 0:
        raise click.ClickException(f"{data}: no usable labelled spectrum (left out: {dropped})")
    return LabelledSet(cached_flux=flux, rows=keep, labels=labels[keep], snr=snr[keep], flags=flags[keep],
                       sources=[sources[i] for i in keep], sha256=key, dropped={k: v for k, v in dropped.items() if v})


def split_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), stratified: each class gives ``fraction`` of its members."""
    if not 0.0 < fraction < 1.0:
        raise click.BadParameter(f"--val-fraction must lie strictly between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in range(len(CLASS_NAMES)):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(fraction * len(members))) if len(members) > 1 else 0
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _cap_per_class(indices: np.ndarray, labels: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    if cap is None:
        return indices
    rng = np.random.default_rng(seed + 1)
    kept = [rng.permutation(indices[labels[indices] == c])[:cap] for c in range(len(CLASS_NAMES))]
    return np.sort(np.concatenate(kept))


def _counts(labels: np.ndarray) -> dict[str, int]:
    return {name: int((labels == c).sum()) for c, name in enumerate(CLASS_NAMES)}


# ---------------------------------------------------------------- commands

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


def _train_one(data: LabelledSet, train_idx: np.ndarray, val_idx: np.ndarray, config, out_dir: Path,
               name: str, source: str) -> dict:
    """fit -> temperature on validation -> metrics -> weights + card. Returns the validation report."""
    from lamost_classify.model.calibration import expected_calibration_error, fit_temperature, nll, softmax
    from lamost_classify.model.evaluate import evaluate, format_report, save_report
    from lamost_classify.model.runtime import batched_logits
    from lamost_classify.model.train import fit
    from lamost_classify.model.weights import FLAT_PRIOR, save_weights

    train_x = data.spectra(train_idx)
    val_x = data.spectra(val_idx)
    train_y, val_y = data.labels[train_idx], data.labels[val_idx]
    result = fit(train_x, train_y, val_x, val_y, config, out_dir)
    logits = batched_logits(result.model, val_x, result.device, config.eval_batch_size)
    temperature = fit_temperature(logits, val_y)
    probs = softmax(logits, temperature)
    report = evaluate(val_y, probs, data.snr[val_idx], SURVEY_PRIOR)
    report["calibration"] = {
        "temperature": temperature,
        "nll_before": nll(logits, val_y), "nll_after": nll(logits, val_y, temperature),
        "ece_before": expected_calibration_error(softmax(logits), val_y),
        "ece_after": expected_calibration_error(probs, val_y),
    }
    save_report(report, out_dir, "validation")
    path = save_weights(
        result.model, out_dir / f"{name}.safetensors",
        name=f"{config.preset}-{name}",
        overrides=config.model_overrides,
        training={
            "data": source, "data_sha256": data.sha256, "train_counts": _counts(train_y),
            "val_counts": _counts(val_y), "dropped": data.dropped,
            "settings": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("progress", "log_epochs", "resume")},
            "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        },
        metrics={"validation": {k: report[k] for k in ("n", "scores", "confusion_matrix", "reweighted_precision")},
                 "best_val_loss": result.best_val_loss, "calibration": report["calibration"]},
        temperature=temperature,
        train_prior=FLAT_PRIOR,  # every epoch is balanced 1:1:1
    )
    click.echo(format_report(report))
    c = report["calibration"]
    click.echo(f"\ntemperature {temperature:.3f}: NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f}, "
               f"ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}")
    click.echo(f"best epoch {result.best_epoch} (val loss {result.best_val_loss:.4f}); weights: {path}")
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
@click.option("--val-fraction", default=0.2, show_default=True, type=float,
              help="Share of each class held out for validation (best epoch, temperature, metrics).")
@click.option("--max-train-per-class", type=click.IntRange(1), default=None,
              help="Use at most this many training spectra of each class.")
@click.option("--per-class", type=click.IntRange(1), default=None,
              help="Spectra per class per balanced epoch [default: the median class size].")
@click.option("--artefacts", "artefact_fraction", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of every class given the spikes and arm-scale errors of real files each epoch "
                   "(0 = the paper's recipe; the shipped model used 0.3).")
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
          per_class, artefact_fraction, init_from, out_dir, name, resume, device, threads, ablation, progress) -> None:
    """Train the DenseNet on labelled spectra in DATA (Parquet table, or FITS directory + --truth)."""
    from lamost_classify.model.train import TrainConfig

    try:
        milestones = tuple(int(m) for m in lr_milestones.split(",") if m.strip())
    except ValueError as exc:
        raise click.BadParameter(f"--lr-milestones must be integers separated by commas, got {lr_milestones!r}") from exc
    if init_from:
        _load_classifier(init_from, device="cpu")  # refused weights fail now, not after the data is prepared
    labelled = load_labelled(data, truth)
    train_idx, val_idx = split_validation(labelled.labels, val_fraction, seed)
    train_idx = _cap_per_class(train_idx, labelled.labels, max_train_per_class, seed)
    click.echo(f"{data}: training {_counts(labelled.labels[train_idx])}, validation "
               f"{_counts(labelled.labels[val_idx])}" + (f"; left out {labelled.dropped}" if labelled.dropped else ""))
    config = TrainConfig(preset=preset, epochs=epochs, lr=lr, lr_milestones=milestones, batch_size=batch_size,
                         seed=seed, per_class=per_class, artefact_fraction=artefact_fraction, init_from=init_from,
                         device=device, num_threads=threads, resume=resume, progress=progress)
    if not ablation:
        _train_one(labelled, train_idx, val_idx, config, out_dir, name, str(data))
        return
    from lamost_classify.model.evaluate import format_table3
    from lamost_classify.model.train import ablation_configs

    rows = {}
    for label, cfg in ablation_configs(config).items():
        click.echo(f"\n=== ablation: {label} ===")
        report = _train_one(labelled, train_idx, val_idx, cfg, out_dir / label, name, str(data))
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
              help="Class prior of the predictions: as trained (flat, the paper's setting) or the survey's.")
@click.option("--device", default="auto", show_default=True)
def evaluate(model, data, truth, out_dir, prior, device) -> None:
    """Precision/recall/F1, confusion matrix and per-S/N scores of MODEL on labelled DATA."""
    from lamost_classify.model.calibration import expected_calibration_error
    from lamost_classify.model.evaluate import evaluate as evaluate_predictions
    from lamost_classify.model.evaluate import format_report, save_report

    classifier = _load_classifier(model, device=device, target_prior=SURVEY_PRIOR if prior == "survey" else None)
    labelled = load_labelled(data, truth)
    probs = classifier.predict_proba(labelled.spectra())
    report = evaluate_predictions(labelled.labels, probs, labelled.snr, SURVEY_PRIOR,
                                  truth=_hard_case_truth(Path(data), truth, labelled))
    report["model"] = classifier.name
    report["prior"] = prior
    report["ece"] = expected_calibration_error(probs, labelled.labels)
    json_path, png_path = save_report(report, out_dir)
    click.echo(f"{classifier.name} on {data}" + (f" (left out {labelled.dropped})" if labelled.dropped else ""))
    click.echo(format_report(report))
    click.echo(f"\nECE (15 bins) {report['ece']:.4f}\nwrote {json_path} and {png_path}")


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
