"""Training (section 4.3): Adam, cross-entropy, lr 0.01 divided by 10 at epochs 10, 30 and 50, 60
epochs, the epoch of lowest validation loss kept. Every choice is a ``TrainConfig`` field.

Per epoch: a fresh 1:1:1 balanced, augmented draw of the training set (``augment.BalancedSpectra``),
one pass over it, the validation loss, a row in ``log.csv`` and ``log.jsonl``, the loss curves in
``loss.png`` (the paper's fig. 9, redrawn at most once a minute and at the end) and ``checkpoint.pt`` (model, optimizer, scheduler, RNG, best
epoch so far). A run pointed at a directory holding a checkpoint carries on from it.

Redshift (``redshift_weight > 0``): the network gets a redshift head (``blocks.RedshiftHead``) trained
with the classifier on the same features: loss = cross-entropy + redshift_weight x the Gaussian negative
log-likelihood of the true log(1 + z) under the head's (mean, variance), beta-weighted (``redshift_nll``). ``fit`` then needs each
spectrum's true z (stars too: theirs is their radial velocity, ~0). The best epoch is still chosen on
the validation cross-entropy alone, so the head cannot trade the class for the redshift.

Weight averaging (``average_from`` N > 0): instead of the best epoch, the network returned is the mean of
the end-of-epoch weights of epochs N..``epochs`` (stochastic weight averaging, Izmailov et al. 2018), its
BatchNorm statistics re-estimated on training batches, since averaged weights need their own. Iterates
taken while the learning rate is still high differ from each other in what they do on spectra unlike the
training set; their mean does about what their ensemble does there, at one network's cost (docs/families.md).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .augment import BAD_PIXEL_MAX_LENGTH, NOISE_SIGMA, BalancedSpectra
from .densenet import LOG_VAR_RANGE, build_model, config_dict
from .ensemble import LogitMean
from .evaluate import confusion_matrix, scores_from_confusion
from .runtime import batched_logits, denormals_flushed, resolve_device, set_threads
from .weights import load_weights

CHECKPOINT = "checkpoint.pt"
PLOT_INTERVAL_S = 60.0  # loss.png is redrawn at most this often, and at the end
# Settings that must match for a checkpoint to be resumed: they define the model and how it was
# trained (the data themselves are compared by data_fingerprint).
_RESUME_KEYS = ("preset", "model_overrides", "init_from", "seed", "per_class", "augment", "noise_sigma",
                "bad_pixel_max_length", "artefact_fraction", "tilt_fraction", "arm_loss_fraction", "batch_size", "lr",
                "lr_milestones", "lr_gamma", "weight_decay", "label_smoothing", "precise_bn_batches",
                "redshift_weight", "average_from")
# Hidden width of the redshift head when redshift_weight turns it on and model_overrides do not say.
DEFAULT_REDSHIFT_HIDDEN = 64
FINGERPRINT_ROWS = 256  # spectra of each set hashed whole into the data fingerprint, evenly spaced
AVERAGE_BN_BATCHES = 50  # BatchNorm re-estimate of averaged weights when precise_bn_batches is 0
REDSHIFT_BETA = 1.0  # training loss of the head: beta-NLL (see redshift_nll); validation reports the plain NLL


@dataclass
class TrainConfig:
    preset: str = "fast"
    model_overrides: dict = field(default_factory=dict)  # build_model(preset, **model_overrides)
    epochs: int = 60
    lr: float = 0.01
    lr_milestones: tuple[int, ...] = (10, 30, 50)  # lr *= lr_gamma after these epochs
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    # Training targets (1 - eps) on the class and eps / 3 on each class; validation loss stays the plain one.
    label_smoothing: float = 0.0
    batch_size: int = 64
    eval_batch_size: int = 512
    seed: int = 0
    per_class: int | None = None  # spectra per class per epoch; None = the median class size
    augment: bool = True
    noise_sigma: float = NOISE_SIGMA
    bad_pixel_max_length: int = BAD_PIXEL_MAX_LENGTH
    artefact_fraction: float = 0.0  # share of every class given augment.survey_artefacts each epoch
    tilt_fraction: float = 0.0  # share of every class given augment.continuum_tilt each epoch
    arm_loss_fraction: float = 0.0  # share of every class given augment.arm_end_lost each epoch
    init_from: str | None = None  # start from these trained weights (a name or path, as load_weights takes)
    precise_bn_batches: int = 50  # re-estimate BatchNorm statistics on this many batches per epoch; 0 = off
    # 0: keep the epoch of lowest validation loss. N: keep the mean of the weights after epochs N..epochs.
    average_from: int = 0
    # Weight of the redshift head's (beta-)NLL in the loss; 0 = no redshift head (the class alone).
    redshift_weight: float = 0.0
    device: str = "auto"
    num_threads: int | None = None  # None = every CPU this process may use
    resume: bool = True
    progress: bool = True  # tqdm bar per epoch
    log_epochs: bool = True  # one line per epoch on stdout (for SLURM logs, where a bar is noise)


@dataclass
class TrainResult:
    model: nn.Module  # in eval mode, holding the best epoch's weights
    best_epoch: int
    best_val_loss: float
    history: list[dict]  # one dict per epoch, as in log.jsonl
    out_dir: Path
    device: str


def redshift_nll(head_output: torch.Tensor, z: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood (constant dropped) of log(1 + z) under the head's output.

    ``beta`` > 0 is the beta-NLL of Seitzer et al. (2022): each spectrum's NLL weighted by its predicted
    variance**beta (held constant). Plain NLL (beta 0) pulls the mean with gradient residual / variance,
    which explodes into the shared features once the head is confident; with beta 1 the mean's gradient
    is the residual, as in least squares, and the variance is still fitted by likelihood.
    """
    log_var = head_output[:, 1].clamp(*LOG_VAR_RANGE)
    residual = torch.log1p(z.to(head_output.dtype)) - head_output[:, 0]
    nll = 0.5 * (log_var + residual**2 * torch.exp(-log_var))
    if beta:
        nll = nll * torch.exp(beta * log_var).detach()
    return nll.mean()


def model_overrides(config: TrainConfig) -> dict:
    """``build_model`` overrides of the run: ``config.model_overrides``, plus a redshift head when asked for."""
    overrides = dict(config.model_overrides)
    if config.redshift_weight > 0 and not overrides.get("redshift_hidden"):
        overrides["redshift_hidden"] = DEFAULT_REDSHIFT_HIDDEN
    return overrides


def _head_outputs(model: nn.Module, x: np.ndarray, device, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits, redshift head output) of a network with a redshift head, in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    logits, heads = [], []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32))
            out = model.forward_with_redshift(chunk.to(device))
            logits.append(out[0].float().cpu().numpy())
            heads.append(out[1].float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(logits), np.concatenate(heads)


def data_fingerprint(*arrays: np.ndarray | None) -> str:
    """A hash of the training data: every array's shape and dtype, 1-D arrays (labels, redshifts) whole,
    and ``FINGERPRINT_ROWS`` evenly spaced rows of each 2-D one (the spectra), so that a checkpoint is
    never resumed on other data while a memory-mapped set of millions of spectra is not read whole."""
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        digest.update(f"{array.shape}{array.dtype}".encode())
        if array.ndim > 1 and len(array):
            array = array[np.unique(np.linspace(0, len(array) - 1, FINGERPRINT_ROWS).astype(np.int64))]
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _comparable(config: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items() if k in _RESUME_KEYS}


def _validate(model: nn.Module, val_x: np.ndarray, val_y: np.ndarray, config: TrainConfig, device,
              val_z: np.ndarray | None = None) -> dict:
    if val_z is None:
        logits = batched_logits(model, val_x, device, config.eval_batch_size)
    else:
        logits, head = _head_outputs(model, val_x, device, config.eval_batch_size)
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(np.asarray(val_y, np.int64)))
    scores = scores_from_confusion(confusion_matrix(val_y, logits.argmax(axis=1)))
    row = {"val_loss": float(loss), "val_accuracy": float((logits.argmax(axis=1) == val_y).mean()),
           "val_f1_mean": scores["mean"]["f1"]}
    if val_z is not None:
        z_true = np.asarray(val_z, np.float64)
        row["val_redshift_nll"] = float(redshift_nll(torch.from_numpy(head).double(), torch.from_numpy(z_true)))
        dz = np.abs(np.expm1(head[:, 0].astype(np.float64)) - z_true) / (1.0 + z_true)
        # The goals: |dz|/(1+z) < 0.003 for galaxies, < 0.01 for QSOs (the head alone, unrefined).
        for label, name, tolerance in ((1, "galaxy", 0.003), (2, "qso", 0.01)):
            members = np.asarray(val_y) == label
            row[f"val_z_{name}_within"] = float((dz[members] < tolerance).mean()) if members.any() else float("nan")
    return row


def recompute_batchnorm(model: nn.Module, batches, device) -> None:
    """Replace BatchNorm running statistics by their plain average over ``batches`` of training data.

    The running averages (momentum 0.1) trail the weights by ~10 steps; while the weights still move
    fast (lr 0.01, or a small data set), eval-mode outputs then differ from training-mode ones and the
    validation loss that picks the best epoch jumps about. Re-estimating them with the epoch's final
    weights ("precise BN", Wu & Johnson 2021) makes eval mode match the network that was trained.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None = cumulative average over the batches seen
    was_training = model.training
    model.train()
    with torch.no_grad():
        for x, _ in batches:
            model(x.to(device, non_blocking=True))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def _write_logs(history: list[dict], out_dir: Path) -> None:
    """Rewrite the logs from the whole history, so that a resumed run leaves no duplicate rows."""
    with open(out_dir / "log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    (out_dir / "log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))


def plot_loss_curves(history: list[dict], path: Path, best_epoch: int | None = None) -> None:
    """Training and validation loss per epoch (the paper's fig. 9), the kept epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [row["train_loss"] for row in history], "o-", ms=3, label="training (balanced, augmented)")
    ax.plot(epochs, [row["val_loss"] for row in history], "o-", ms=3, label="validation")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", ls=":", label=f"kept: epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a run killed mid-write leaves the previous checkpoint whole


@denormals_flushed()
def fit(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    config: TrainConfig,
    out_dir: str | Path,
    train_z: np.ndarray | None = None,
    val_z: np.ndarray | None = None,
) -> TrainResult:
    """Train ``config.preset`` on normalised spectra (N, n_pixels) float32 and labels (N,) in 0..2.

    The arrays are read batch by batch (memory maps are fine) and never copied whole. With
    ``config.redshift_weight > 0``, ``train_z`` and ``val_z`` are the true redshifts (N,) of the spectra.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    set_threads(config.num_threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True  # same seed, same result, at some speed cost
    train_y = np.asarray(train_y, dtype=np.int64)
    val_y = np.asarray(val_y, dtype=np.int64)
    if len(val_y) == 0:
        raise ValueError("the validation set is empty: the best epoch is chosen on it")
    if not 0 <= config.average_from <= config.epochs:
        raise ValueError(f"average_from {config.average_from}: give 0 (keep the best epoch) or an epoch of "
                         f"1..{config.epochs} (average the weights from it to the last)")
    with_redshift = config.redshift_weight > 0
    if with_redshift:
        if train_z is None or val_z is None:
            raise ValueError("redshift_weight > 0 trains a redshift head: pass train_z and val_z, the true "
                             "redshift of every training and validation spectrum (a truth table's 'z' column)")
        train_z = np.asarray(train_z, dtype=np.float32)
        val_z = np.asarray(val_z, dtype=np.float32)
        for name, z, n in (("train_z", train_z, len(train_y)), ("val_z", val_z, len(val_y))):
            if z.shape != (n,) or not np.isfinite(z).all() or (z <= -1).any():
                raise ValueError(f"{name} must hold one finite redshift > -1 per spectrum ({n}); got shape "
                                 f"{z.shape} with {int((~np.isfinite(z)).sum())} non-finite")
    else:
        train_z = val_z = None

    torch.manual_seed(config.seed)
    model = build_model(config.preset, **model_overrides(config))
    if config.init_from:
        trained, _ = load_weights(config.init_from)
        if isinstance(trained, LogitMean):
            raise ValueError(f"--init-from {config.init_from}: an ensemble of {len(trained.members)} networks; "
                             "fine-tune one network (train_shipped.py --split writes them one by one, "
                             "--ensemble joins them again)")
        # A network trained without the redshift head fine-tunes into one with it: the head starts fresh.
        if _without_head(config_dict(trained)) != _without_head(config_dict(model)):
            raise ValueError(f"--init-from {config.init_from}: its network is not preset {config.preset!r} "
                             f"with overrides {config.model_overrides}")
        has_head = getattr(model, "redshift", None) is not None
        state = {k: v for k, v in trained.state_dict().items() if has_head or not k.startswith("redshift.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("redshift.") for k in missing):
            raise ValueError(f"--init-from {config.init_from}: its tensors do not fit this network "
                             f"(missing {missing}, unexpected {unexpected})")
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.lr_milestones), config.lr_gamma)
    data = BalancedSpectra(train_x, train_y, config.seed, config.per_class, config.augment,
                           config.noise_sigma, config.bad_pixel_max_length, config.artefact_fraction,
                           config.tilt_fraction, config.arm_loss_fraction)
    history: list[dict] = []
    best = {"epoch": 0, "val_loss": float("inf"), "model": None}
    average = None  # {"count": epochs summed, "sum": float64 state} while averaging
    start_epoch = 1

    ckpt_path = out_dir / CHECKPOINT
    saved_config = dataclasses.asdict(config)
    fingerprint = data_fingerprint(train_x, train_y, val_x, val_y, train_z, val_z)
    if config.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        # A field the checkpoint predates had its default value then.
        before = _comparable({**dataclasses.asdict(TrainConfig()), **state["config"]})
        differs = {k: (before.get(k), v) for k, v in _comparable(saved_config).items() if before.get(k) != v}
        if differs:
            raise ValueError(
                f"{ckpt_path} was written with other settings; resume it with the same ones, or train "
                f"into another directory (or without resuming). Differences (checkpoint, now): {differs}"
            )
        saved_fingerprint = state.get("data_fingerprint")
        if saved_fingerprint is None:  # written before checkpoints recorded their data
            print(f"{ckpt_path} does not record its training data: resumed without checking them")
        elif saved_fingerprint != fingerprint:
            raise ValueError(f"{ckpt_path} was trained on other data (training or validation spectra, labels or "
                             "redshifts); train into another directory (or without resuming)")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        average = state.get("average")
        if start_epoch <= config.epochs:
            print(f"resuming from {ckpt_path}: epoch {state['epoch']} done, best epoch {best['epoch']}")

    last_plot = time.monotonic()
    for epoch in range(start_epoch, config.epochs + 1):
        data.set_epoch(epoch)
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        total, count, started = torch.zeros((), device=device), 0, time.perf_counter()
        total_z = torch.zeros((), device=device)
        n_batches = -(-len(data) // config.batch_size)
        with tqdm(total=n_batches, desc=f"epoch {epoch}/{config.epochs}", disable=not config.progress,
                  leave=False, unit="batch") as bar:
            for step, (x, y, rows) in enumerate(_batches_with_rows(data, config.batch_size)):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits, head = model.forward_with_redshift(x) if with_redshift else (model(x), None)
                class_loss = loss = nn.functional.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                if with_redshift:
                    z_loss = redshift_nll(head, torch.from_numpy(train_z[rows]).to(device), REDSHIFT_BETA)
                    loss = class_loss + config.redshift_weight * z_loss
                    total_z += z_loss.detach() * len(y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += class_loss.detach() * len(y)  # summed on the device: no GPU sync per step
                count += len(y)
                bar.update()
                if config.progress and step % 20 == 0:
                    bar.set_postfix(loss=f"{float(total) / count:.4f}")
        train_seconds = time.perf_counter() - started
        train_loss = float(total) / max(count, 1)
        train_z_loss = float(total_z) / max(count, 1)
        if not (np.isfinite(train_loss) and np.isfinite(train_z_loss)):
            raise FloatingPointError(
                f"training diverged in epoch {epoch} (loss {train_loss}); the checkpoint of epoch {epoch - 1} "
                f"is kept: lower the learning rate (--lr) and train into a new directory"
            )
        if config.precise_bn_batches:
            recompute_batchnorm(model, itertools.islice(data.batches(config.batch_size), config.precise_bn_batches),
                                device)
        scheduler.step()
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss,
               **({"train_redshift_nll": train_z_loss} if with_redshift else {}),
               **_validate(model, val_x, val_y, config, device, val_z),
               "train_spectra_per_s": count / train_seconds, "seconds": time.perf_counter() - started}
        history.append(row)
        if row["val_loss"] < best["val_loss"] and not config.average_from:
            best = {"epoch": epoch, "val_loss": row["val_loss"],
                    "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        if config.average_from and epoch >= config.average_from:
            average = _add_to_average(average, model.state_dict())
        _save_checkpoint(ckpt_path, {
            "epoch": epoch, "config": saved_config, "model_config": config_dict(model),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(), "history": history, "best": best, "average": average,
            "data_fingerprint": fingerprint,
        })
        _write_logs(history, out_dir)
        if time.monotonic() - last_plot > PLOT_INTERVAL_S:  # a redraw is slow beside a short epoch
            plot_loss_curves(history, out_dir / "loss.png", best["epoch"])
            last_plot = time.monotonic()
        if config.log_epochs:
            redshift = (f"  z NLL {row['val_redshift_nll']:.2f}, galaxies within 0.003(1+z) "
                        f"{row['val_z_galaxy_within']:.3f}, QSOs within 0.01(1+z) {row['val_z_qso_within']:.3f}"
                        if with_redshift else "")
            print(f"epoch {epoch:3d}  lr {lr:.0e}  train {row['train_loss']:.4f}  val {row['val_loss']:.4f}  "
                  f"val F1 {row['val_f1_mean']:.4f}  {row['train_spectra_per_s']:.0f} spectra/s{redshift}")

    averaged = [config.average_from, config.epochs]
    if config.average_from and best.get("averaged") != averaged:
        # Once, after the last epoch (a resumed run that already did it skips this).
        dtypes = {k: v.dtype for k, v in model.state_dict().items()}
        model.load_state_dict({k: (v / average["count"]).to(dtypes[k]) if v.is_floating_point() else v
                               for k, v in average["sum"].items()})
        data.set_epoch(config.epochs)
        recompute_batchnorm(model, itertools.islice(data.batches(config.batch_size),
                                                    config.precise_bn_batches or AVERAGE_BN_BATCHES), device)
        row = _validate(model, val_x, val_y, config, device, val_z)
        best = {"epoch": config.epochs, "val_loss": row["val_loss"], "averaged": averaged,
                "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        # The checkpoint keeps the last epoch's own weights, so that a longer run can resume from it.
        _save_checkpoint(ckpt_path, {**torch.load(ckpt_path, map_location="cpu", weights_only=True), "best": best})
        if config.log_epochs:
            print(f"weights of epochs {config.average_from}-{config.epochs} averaged: val {row['val_loss']:.4f}  "
                  f"val F1 {row['val_f1_mean']:.4f}")
    if history:
        plot_loss_curves(history, out_dir / "loss.png", best["epoch"])
    if best["model"] is not None:
        model.load_state_dict(best["model"])
    model.eval()
    return TrainResult(model=model, best_epoch=best["epoch"], best_val_loss=best["val_loss"],
                       history=history, out_dir=out_dir, device=str(device))


def _add_to_average(average: dict | None, weights: dict[str, torch.Tensor]) -> dict:
    """``average`` with one more epoch's weights summed in (float64; integer buffers: the latest)."""
    summed = average["sum"] if average else {}
    return {"count": (average["count"] if average else 0) + 1,
            "sum": {k: summed.get(k, 0) + v.detach().cpu().double() if v.is_floating_point() else v.detach().cpu().clone()
                    for k, v in weights.items()}}


def _without_head(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "redshift_hidden"}


def _batches_with_rows(data: BalancedSpectra, batch_size: int):
    """``data.batches`` plus each item's row in the training arrays (to look up its true redshift)."""
    for start in range(0, len(data), batch_size):
        items = np.arange(start, min(start + batch_size, len(data)))
        x, y = data.__getitems__(items)
        yield x, y, data.indices[items]


def ablation_configs(config: TrainConfig) -> dict[str, TrainConfig]:
    """The paper's Table 3 comparison at the size of ``config.preset``, all with ``config``'s recipe:
    ``fc4``, the plain DenseNet with the preset's widths and depth, and the preset itself."""
    from .baselines import plain_densenet_widths
    from .densenet import PRESETS, DenseNetConfig

    base = PRESETS[config.preset]
    if not isinstance(base, DenseNetConfig):
        raise ValueError(f"the ablation compares DenseNets: {config.preset!r} is not one")
    widths = plain_densenet_widths({**dataclasses.asdict(base), **config.model_overrides})
    return {
        "fc4": dataclasses.replace(config, preset="fc4", model_overrides={}),
        "plain_densenet": dataclasses.replace(config, preset="plain_densenet", model_overrides=widths),
        config.preset: config,
    }
