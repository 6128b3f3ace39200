"""The redshift head: an optional second output trained with the class, and old weights without it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_fixtures import LINE_PIXEL, TINY, one_torch_thread, synthetic_spectra  # noqa: F401

from lamost_classify.model.densenet import build_model, config_dict, count_layers, redshift_estimate
from lamost_classify.model.train import TrainConfig, fit
from lamost_classify.model.weights import load_weights, save_weights

TINY_Z = {**TINY, "redshift_hidden": 16}


def break_spectra(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The synthetic three-class spectra (a line at a fixed pixel decides the class) with a flux step,
    a "4000 A break", at the pixel a known redshift puts it (log grid: a redshift is a shift)."""
    flux, labels = synthetic_spectra(n, seed=seed)
    rng = np.random.default_rng(seed)
    step = np.log10(9100.0 / 3690.0) / 2599  # dex per grid pixel
    z = rng.uniform(0.0, 0.5, len(labels))
    shift = np.round(np.log10(1 + z) / step).astype(int)
    pixel = np.arange(flux.shape[1])
    flux = flux + 0.25 * (pixel[None, :] >= 200 + shift[:, None])
    return (flux / flux.max(axis=1, keepdims=True)).astype(np.float32), labels, \
        (10.0 ** (shift * step) - 1).astype(np.float32)


def test_no_head_by_default_and_the_head_adds_no_depth():
    assert build_model("fast").redshift is None
    with_head = build_model("fast", redshift_hidden=32)
    assert count_layers(with_head) == count_layers(build_model("fast")) == 36
    logits, head = with_head.eval().forward_with_redshift(torch.rand(4, 2600))
    assert logits.shape == (4, 3) and head.shape == (4, 2)
    torch.testing.assert_close(logits, with_head(torch.rand(4, 2600)) * 0 + logits)  # same pass, same logits
    with pytest.raises(ValueError, match="no redshift head"):
        build_model("fast").forward_with_redshift(torch.rand(1, 2600))


def test_redshift_estimate_inverts_log1p_and_propagates_sigma():
    out = torch.tensor([[np.log1p(0.5), np.log(0.01**2)], [0.0, 50.0]])  # second: variance clamped
    z, z_err = redshift_estimate(out)
    np.testing.assert_allclose(z, [0.5, 0.0], atol=1e-6)
    assert z_err[0] == pytest.approx(1.5 * 0.01, rel=1e-4)
    assert np.isfinite(z_err[1]) and z_err[1] < 10


def test_joint_training_learns_the_redshift_and_keeps_the_class(tmp_path):
    x, y, z = break_spectra(24, seed=1)
    vx, vy, vz = break_spectra(8, seed=2)
    config = TrainConfig(preset="fast", model_overrides=TINY, epochs=20, lr=0.01, lr_milestones=(20,),
                         batch_size=16, augment=False, precise_bn_batches=5, num_threads=1, progress=False,
                         log_epochs=False, redshift_weight=10.0)
    result = fit(x, y, vx, vy, config, tmp_path, train_z=z, val_z=vz)
    assert result.model.redshift is not None
    last = result.history[-1]
    assert "val_redshift_nll" in last and "train_redshift_nll" in last
    assert last["val_redshift_nll"] < result.history[0]["val_redshift_nll"]
    with torch.no_grad():
        _, head = result.model.forward_with_redshift(torch.from_numpy(vx))
    z_pred, _ = redshift_estimate(head)
    # A constant guess (the mean) misses by ~0.12 on average: the head must read where the break is.
    assert np.median(np.abs(z_pred - vz)) < 0.04
    assert last["val_accuracy"] > 0.6


def test_head_needs_true_redshifts(tmp_path):
    x, y = synthetic_spectra(3)
    config = TrainConfig(preset="fast", model_overrides=TINY, epochs=1, num_threads=1, progress=False,
                         redshift_weight=0.1)
    with pytest.raises(ValueError, match="train_z and val_z"):
        fit(x, y, x, y, config, tmp_path)
    with pytest.raises(ValueError, match="one finite redshift"):
        fit(x, y, x, y, config, tmp_path, train_z=np.full(len(y), np.nan), val_z=np.zeros(len(y)))


def test_weights_without_a_head_still_load_and_fine_tune_into_one(tmp_path):
    torch.manual_seed(0)
    old = build_model("fast", **TINY).eval()
    path = save_weights(old, tmp_path / "old", overrides=TINY)
    card = json.loads(path.with_suffix(".json").read_text())
    del card["config"]["redshift_hidden"]  # a card written before the head existed
    path.with_suffix(".json").write_text(json.dumps(card))
    loaded, _ = load_weights(path)
    assert loaded.redshift is None

    x, y, z = break_spectra(3, seed=3)
    config = TrainConfig(preset="fast", model_overrides=TINY, epochs=1, lr=1e-12, batch_size=9,
                         precise_bn_batches=0, num_threads=1, progress=False, log_epochs=False,
                         init_from=str(path), redshift_weight=0.1)
    tuned = fit(x, y, x, y, config, tmp_path / "tuned", train_z=z, val_z=z).model
    assert tuned.redshift is not None
    old_params = dict(old.named_parameters())
    for key, value in tuned.named_parameters():
        if not key.startswith("redshift."):
            torch.testing.assert_close(value, old_params[key], rtol=0, atol=1e-6, msg=key)

    # Saved with no overrides named, the card still rebuilds the head.
    new_path = save_weights(tuned, tmp_path / "new")
    reloaded, new_card = load_weights(new_path)
    assert new_card["overrides"]["redshift_hidden"] == config_dict(tuned)["redshift_hidden"] > 0
    with torch.no_grad():
        torch.testing.assert_close(reloaded.forward_with_redshift(torch.from_numpy(x))[1],
                                   tuned.eval().forward_with_redshift(torch.from_numpy(x))[1])
