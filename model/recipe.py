"""The training recipe, once: fit -> temperature on the validation set -> evaluate -> weights + card.

Used by ``lamost-classify train`` (``train_labelled``, on a ``labelled.LabelledSet``) and by
``training/train_shipped.py`` and ``training/ablation.py`` (``fit_calibrated``, then their own
test sets and cards). Printing is the caller's: nothing here writes to the terminal but ``fit``'s
per-epoch lines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from lamost_classify.contract import CLASS_NAMES, SURVEY_PRIOR

from .calibration import adjust_to_prior, expected_calibration_error, fit_temperature, nll, softmax
from .evaluate import evaluate, save_report
from .labelled import LabelledSet, class_counts
from .runtime import batched_logits
from .train import TrainConfig, TrainResult, fit
from .weights import FLAT_PRIOR, save_weights

# Strengths of the survey prior tried by ``choose_prior_strength``: 0 (none) .. 1 (full Bayes).
PRIOR_STRENGTHS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
# TrainConfig fields that say how a run was watched, not what it trained: left off the card.
_NOT_RECIPE = ("progress", "log_epochs", "resume")


@dataclass
class Calibrated:
    """A trained network (best epoch, eval mode) and its temperature, fitted on the validation set."""

    result: TrainResult
    temperature: float
    calibration: dict[str, float]  # temperature, nll_before/after, ece_before/after on the validation set
    val_logits: np.ndarray  # (N_val, 3) uncalibrated

    @property
    def model(self) -> nn.Module:
        return self.result.model


def logits_of(model: nn.Module, flux: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Logits of ``model`` on (N, 2600) spectra (memory maps fine), on the device the model is on."""
    return batched_logits(model, np.asarray(flux), next(model.parameters()).device, batch_size)


def probabilities(model: nn.Module, flux: np.ndarray, temperature: float = 1.0,
                  prior: Sequence[float] | None = None) -> np.ndarray:
    """Calibrated class probabilities (N, 3), adjusted from the flat training prior to ``prior`` if given."""
    probs = softmax(logits_of(model, flux), temperature)
    return probs if prior is None else adjust_to_prior(probs, prior)


def fit_calibrated(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                   config: TrainConfig, out_dir: str | Path, train_z: np.ndarray | None = None,
                   val_z: np.ndarray | None = None) -> Calibrated:
    """``train.fit`` (resuming from ``out_dir``'s checkpoint: a finished run only reloads its best epoch),
    then the temperature that minimises the validation NLL."""
    val_y = np.asarray(val_y)
    result = fit(train_x, train_y, np.asarray(val_x), val_y, config, out_dir, train_z=train_z, val_z=val_z)
    logits = logits_of(result.model, val_x, config.eval_batch_size)
    temperature = fit_temperature(logits, val_y)
    calibration = {
        "temperature": temperature,
        "nll_before": nll(logits, val_y), "nll_after": nll(logits, val_y, temperature),
        "ece_before": expected_calibration_error(softmax(logits), val_y),
        "ece_after": expected_calibration_error(softmax(logits, temperature), val_y),
    }
    return Calibrated(result, temperature, calibration, logits)


def strength_prior(strength: float, prior: Sequence[float] = SURVEY_PRIOR) -> list[float]:
    """``prior`` raised to ``strength`` and renormalised: flat at 0, ``prior`` itself at 1."""
    tempered = np.asarray(prior) ** strength
    return (tempered / tempered.sum()).tolist()


def choose_prior_strength(probs: np.ndarray, labels: np.ndarray, snr: np.ndarray, truth: dict | None = None,
                          strengths: Sequence[float] = PRIOR_STRENGTHS) -> tuple[float, dict[str, dict]]:
    """(the strength of the survey prior with the highest mean F1 per class on these spectra, the
    ``evaluate`` report at every strength keyed by str(strength)). ``probs`` are calibrated, flat prior;
    the spectra should be at the survey's class mix."""
    reports, best = {}, (-1.0, 1.0)
    for strength in strengths:
        report = evaluate(labels, adjust_to_prior(probs, strength_prior(strength)), snr, truth=truth)
        reports[str(strength)] = report
        mean_f1 = float(np.mean([report["scores"][c]["f1"] for c in CLASS_NAMES]))
        if mean_f1 > best[0]:
            best = (mean_f1, strength)
    return best[1], reports


@dataclass
class TrainedOnLabelled:
    calibrated: Calibrated
    report: dict  # the validation report (``evaluate``) with its "calibration" part
    weights: Path  # the .safetensors written; its card beside it


def train_labelled(data: LabelledSet, train_idx: np.ndarray, val_idx: np.ndarray, config: TrainConfig,
                   out_dir: Path, name: str, source: str) -> TrainedOnLabelled:
    """The whole recipe on a labelled set: fit -> temperature -> validation report (validation.json/.png in
    ``out_dir``) -> ``out_dir/<name>.safetensors`` + card (data, counts, settings, metrics, temperature)."""
    train_y, val_y = data.labels[train_idx], data.labels[val_idx]
    calibrated = fit_calibrated(data.spectra(train_idx), train_y, data.spectra(val_idx), val_y, config, out_dir)
    result = calibrated.result
    probs = softmax(calibrated.val_logits, calibrated.temperature)
    report = evaluate(val_y, probs, data.snr[val_idx], SURVEY_PRIOR)
    report["calibration"] = calibrated.calibration
    save_report(report, out_dir, "validation")
    path = save_weights(
        result.model, out_dir / f"{name}.safetensors",
        name=f"{config.preset}-{name}",
        overrides=config.model_overrides,
        training={
            "data": source, "data_sha256": data.sha256, "train_counts": class_counts(train_y),
            "val_counts": class_counts(val_y), "dropped": data.dropped,
            "settings": {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_RECIPE},
            "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        },
        metrics={"validation": {k: report[k] for k in ("n", "scores", "confusion_matrix", "reweighted_precision")},
                 "best_val_loss": result.best_val_loss, "calibration": report["calibration"]},
        temperature=calibrated.temperature,
        train_prior=FLAT_PRIOR,  # every epoch is balanced 1:1:1
    )
    return TrainedOnLabelled(calibrated, report, path)
