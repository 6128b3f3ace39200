"""bench/infer.py's untrained network: the linear probe fits features and labels of the same mocks."""

from __future__ import annotations

import numpy as np
import torch
from script_loader import load_script


def load_bench():
    return load_script("bench/infer.py")


def test_probe_on_more_mocks_than_it_uses_separates_the_classes():
    """More mocks than the probe takes, and a probe size that is no multiple of its step of 64: the
    defaults' case (3,000 mocks, probe of 600) at a size a test can afford."""
    bench = load_bench()
    rng = np.random.default_rng(0)
    labels = np.arange(150) % 3
    # Each class a different slope, so that even random features separate them.
    ramp = np.linspace(0.0, 1.0, 2600, dtype=np.float32)
    flux = np.stack([np.abs(0.5 + (label - 1) * 0.4 * (ramp - 0.5)) for label in labels]).astype(np.float32)
    flux += rng.normal(0, 0.01, flux.shape).astype(np.float32)
    net, temperature, origin = bench.network("fast", None, flux, labels.astype(np.int64), n_probe=100)
    assert "100 mocks" in origin and temperature == 1.0
    with torch.no_grad():
        predicted = net(torch.from_numpy(flux[:100])).argmax(dim=1).numpy()
    assert (predicted == labels[:100]).mean() > 0.9
