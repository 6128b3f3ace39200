"""Tiny networks and synthetic labelled spectra for the model tests (fast on 2 CPU cores)."""

from __future__ import annotations

import functools
import tempfile

import numpy as np
import pytest
import torch

N_PIXELS = 2600
# A fast-preset twin small enough to train in seconds: stride-8 stem, 2 dense blocks, 4-8 channels.
TINY = dict(n_dense_blocks=2, stem_stride=8, stem_channels=8, growth_rate=8, branch_channels=4, cross_channels=4)
# The pixel of the one narrow line that decides the class: emission = GALAXY (1), absorption = QSO (2),
# none = STAR (0). Global pooling forgets positions, so the classes differ in the line's sign.
LINE_PIXEL = 1300
LINE_SIGN = {1: +1.0, 2: -1.0}


def synthetic_spectra(n_per_class: int, seed: int = 0, line_height: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Noisy random continua in [0, 1]; the class is decided only by a 3-pixel line at LINE_PIXEL."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    x = np.linspace(0.0, 1.0, N_PIXELS)
    slope = rng.uniform(-0.2, 0.2, size=(len(labels), 1))
    flux = 0.45 + slope * (x - 0.5) + rng.normal(0.0, 0.03, size=(len(labels), N_PIXELS))
    for c, sign in LINE_SIGN.items():
        flux[labels == c, LINE_PIXEL - 1:LINE_PIXEL + 2] += sign * line_height
    order = rng.permutation(len(labels))
    return np.clip(flux[order], 0.0, 1.0).astype(np.float32), labels[order]


def write_slope_sets(directory, names, family: str, seed: int, n: int = 24) -> None:
    """Tiny normalised sets in training/make_training_set.py's layout (``<name>_flux.npy`` and
    ``_truth.parquet``, test sets also ``_ivar.npy`` and ``_pedestal.npy``), whose classes differ in
    continuum slope (learnable in one epoch)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, N_PIXELS, dtype=np.float32)
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        labels = np.arange(n) % 3
        shape = np.stack([x, 0.5 + 0.3 * np.sin(6 * x), 1 - x])[labels]
        flux = np.clip(shape + rng.normal(0, 0.05, shape.shape), 0, 1).astype(np.float32)
        np.save(directory / f"{name}_flux.npy", flux)
        if name.startswith(("test", "lofo_test")):  # as make_training_set.py keeps a test set's noise
            np.save(directory / f"{name}_ivar.npy", np.full(flux.shape, 1 / 0.05**2, np.float32))
            np.save(directory / f"{name}_pedestal.npy", np.zeros(n, np.float32))
        classes = np.array(["STAR", "GALAXY", "QSO"])[labels]
        pq.write_table(pa.table({
            "class": classes, "label": labels, "family": [family] * n, "snr_g": rng.uniform(2, 60, n),
            "z": np.where(labels == 0, 0.0, rng.uniform(0.01, 3.5, n)), "template": [f"{family}-t"] * n,
            "subclass": np.where(labels == 1, "PASSIVE", np.where(labels == 2, "BROADLINE", "K5")),
        }), directory / f"{name}_truth.parquet")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: the CI machine has 2 cores shared by parallel jobs, and OpenMP threads
    that spin-wait on an oversubscribed core make small nets 10x slower, not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.lru_cache(maxsize=1)
def trained_tiny():
    """A TINY net trained on the line-decides-the-class set (once per test process, ~3-10 s).

    Returns (TrainResult, train_x, train_y, val_x, val_y).
    """
    from lamost_classify.model.train import TrainConfig, fit

    x, y = synthetic_spectra(16, seed=1)
    vx, vy = synthetic_spectra(8, seed=2)
    config = TrainConfig(preset="fast", model_overrides=TINY, epochs=12, lr=0.01, lr_milestones=(12,),
                         batch_size=16, per_class=16, augment=False, precise_bn_batches=10,
                         num_threads=1, progress=False)
    result = fit(x, y, vx, vy, config, tempfile.mkdtemp(prefix="lamost-tiny-"))
    return result, x, y, vx, vy
