"""The training loop learns, logs, checkpoints and resumes (section 4.3)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from model_fixtures import TINY, one_torch_thread, synthetic_spectra, trained_tiny  # noqa: F401

from lamost_classify.model.runtime import batched_logits
from lamost_classify.model.train import CHECKPOINT, TrainConfig, ablation_configs, fit


def overfit_config(**changes) -> TrainConfig:
    # trained_tiny's 12 epochs (36 steps) stop while the loss still falls: on some CPUs one spectrum of 48
    # is still wrong. 30 epochs reach 100% for every training seed tried, with a clear logit margin.
    return TrainConfig(**{**dict(preset="fast", model_overrides=TINY, epochs=30, lr=0.01, lr_milestones=(26,),
                                 batch_size=16, per_class=16, augment=False, precise_bn_batches=10, seed=0,
                                 num_threads=1, progress=False), **changes})


def test_a_tiny_net_overfits_a_tiny_set_to_100_percent(tmp_path):
    x, y = synthetic_spectra(16, seed=1)
    vx, vy = synthetic_spectra(8, seed=2)
    result = fit(x, y, vx, vy, overfit_config(), tmp_path)
    logits = batched_logits(result.model, x)
    assert (logits.argmax(axis=1) == y).mean() == 1.0
    others = np.where(np.eye(3, dtype=bool)[y], -np.inf, logits).max(axis=1)
    assert (logits[np.arange(len(y)), y] - others).min() > 0.5  # not a borderline 100%
    assert not result.model.training
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert result.best_val_loss == min(row["val_loss"] for row in result.history)
    assert result.history[result.best_epoch - 1]["val_loss"] == result.best_val_loss
    # training flushed denormals to zero; the process that goes on to prepare spectra must see them again
    assert torch.tensor(1e-45, dtype=torch.float32) * 1.0 > 0


def test_label_smoothing_trains_towards_softened_targets_and_is_a_resume_setting(tmp_path):
    # Fitted to a separable set, a network trained on one-hot targets grows sure of every spectrum; with
    # targets (1 - eps) + eps / 3 its softmax settles near 1 - 2 eps / 3 = 0.8 for eps 0.3.
    x, y = synthetic_spectra(16, seed=1)
    vx, vy = synthetic_spectra(8, seed=2)
    sure = {}
    for eps in (0.0, 0.3):
        model = fit(x, y, vx, vy, overfit_config(label_smoothing=eps), tmp_path / str(eps)).model
        probabilities = torch.softmax(torch.from_numpy(batched_logits(model, x)), dim=1).numpy()
        assert (probabilities.argmax(axis=1) == y).mean() == 1.0
        sure[eps] = float(np.median(probabilities.max(axis=1)))
    assert sure[0.0] > 0.97 and 0.7 < sure[0.3] < 0.9, sure
    with pytest.raises(ValueError, match="label_smoothing"):
        fit(x, y, vx, vy, overfit_config(label_smoothing=0.1), tmp_path / "0.3")


def test_training_writes_logs_curves_and_a_checkpoint():
    result, *_ = trained_tiny()
    out = result.out_dir
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))
    assert {"lr", "train_loss", "val_loss", "val_accuracy", "val_f1_mean", "train_spectra_per_s"} <= set(rows[0])
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == list(range(1, 13))
    assert (out / "loss.png").stat().st_size > 1000
    state = torch.load(out / CHECKPOINT, weights_only=True)  # no pickled code needed
    assert state["epoch"] == 12 and {"model", "optimizer", "scheduler", "torch_rng", "best"} <= set(state)


def test_learning_rate_follows_the_milestones(tmp_path):
    x, y = synthetic_spectra(3, seed=0)
    config = TrainConfig(preset="fc4", epochs=5, lr=0.01, lr_milestones=(2, 4), batch_size=9, per_class=3,
                         augment=False, num_threads=1, progress=False)
    result = fit(x, y, x, y, config, tmp_path)
    assert [row["lr"] for row in result.history] == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.0001])


def test_resume_continues_from_the_saved_epoch_and_matches_an_uninterrupted_run(tmp_path):
    x, y = synthetic_spectra(6, seed=3)
    vx, vy = synthetic_spectra(2, seed=4)
    config = TrainConfig(preset="fast", model_overrides=TINY, epochs=3, lr=0.003, batch_size=6,
                         lr_milestones=(2,), precise_bn_batches=2, num_threads=1, progress=False)
    straight = fit(x, y, vx, vy, config, tmp_path / "straight")
    # The same run, stopped after epoch 2 (as a kill would leave it) and started again.
    interrupted = TrainConfig(**{**config.__dict__, "epochs": 2})
    fit(x, y, vx, vy, interrupted, tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["epoch"] == 2
    resumed = fit(x, y, vx, vy, config, tmp_path / "resumed")
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    # Other settings in the same directory are refused, with the differences named.
    with pytest.raises(ValueError, match="seed"):
        fit(x, y, vx, vy, TrainConfig(**{**config.__dict__, "seed": 9}), tmp_path / "resumed")


def test_weight_averaging_keeps_the_mean_of_the_epochs_weights_and_resumes(tmp_path):
    x, y = synthetic_spectra(6, seed=3)
    vx, vy = synthetic_spectra(2, seed=4)
    base = TrainConfig(preset="fast", model_overrides=TINY, epochs=3, lr=0.01, batch_size=6, lr_milestones=(),
                       precise_bn_batches=2, num_threads=1, progress=False, log_epochs=False)
    # The same run's own weights after epochs 2 and 3 (the trajectory does not depend on averaging).
    last_of = {n: torch.load(fit(x, y, vx, vy, TrainConfig(**{**base.__dict__, "epochs": n}), tmp_path / f"plain{n}")
                             .out_dir / CHECKPOINT, weights_only=True)["model"] for n in (2, 3)}
    averaging = TrainConfig(**{**base.__dict__, "average_from": 2})
    result = fit(x, y, vx, vy, averaging, tmp_path / "averaged")
    for name, value in result.model.named_parameters():
        assert torch.allclose(value, (last_of[2][name] + last_of[3][name]) / 2, atol=1e-6), name
    # BatchNorm statistics are re-estimated for the averaged weights, not averaged.
    name = next(k for k in last_of[3] if k.endswith("running_var"))
    assert not torch.allclose(result.model.state_dict()[name], (last_of[2][name] + last_of[3][name]) / 2)
    # The reported loss is the averaged network's, and the checkpoint keeps it beside the last epoch's own.
    logits = torch.from_numpy(batched_logits(result.model, vx))
    assert result.best_val_loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(vy))))
    state = torch.load(tmp_path / "averaged" / CHECKPOINT, weights_only=True)
    assert state["best"]["averaged"] == [2, 3] and torch.equal(state["model"][name], last_of[3][name])
    # Stopped after epoch 2 and resumed: the same average as the run straight through.
    fit(x, y, vx, vy, TrainConfig(**{**averaging.__dict__, "epochs": 2}), tmp_path / "resumed")
    resumed = fit(x, y, vx, vy, averaging, tmp_path / "resumed")
    for key, value in result.model.state_dict().items():
        assert torch.allclose(value.double(), resumed.model.state_dict()[key].double()), key
    with pytest.raises(ValueError, match="average_from 4"):
        fit(x, y, vx, vy, TrainConfig(**{**base.__dict__, "average_from": 4}), tmp_path / "refused")


def test_same_seed_same_model(tmp_path):
    x, y = synthetic_spectra(4, seed=5)
    config = TrainConfig(preset="fc4", epochs=2, batch_size=4, num_threads=1, progress=False)
    a = fit(x, y, x, y, config, tmp_path / "a").model
    b = fit(x, y, x, y, config, tmp_path / "b").model
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_empty_validation_set_is_refused(tmp_path):
    x, y = synthetic_spectra(2)
    with pytest.raises(ValueError, match="validation set is empty"):
        fit(x, y, x[:0], y[:0], TrainConfig(preset="fc4", epochs=1, progress=False), tmp_path)


def test_ablation_trains_the_three_methods_with_one_recipe():
    config = TrainConfig(preset="fast", model_overrides={"growth_rate": 8}, epochs=7, lr=0.002)
    configs = ablation_configs(config)
    assert list(configs) == ["fc4", "plain_densenet", "fast"]
    assert all(c.epochs == 7 and c.lr == 0.002 for c in configs.values())
    plain = configs["plain_densenet"].model_overrides
    assert plain["growth_rate"] == 8 and plain["stem_stride"] == 4 and plain["kernel_sizes"] == (3,)
    assert plain["se_reduction"] == 0 and plain["cross_scale"] is False
    assert plain["branch_channels"] == 8 * 4  # the single kernel is as wide as the four scales were


def test_a_diverged_run_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    x, y = synthetic_spectra(3, seed=0)
    config = TrainConfig(preset="fc4", epochs=1, batch_size=9, per_class=3, augment=False, progress=False)
    fit(x, y, x, y, config, tmp_path)
    x[0, 5] = np.nan  # e.g. a non-finite value that slipped into the training arrays
    # resumed as a checkpoint from before data fingerprints, so that epoch 2 runs on the changed arrays
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    del state["data_fingerprint"]
    torch.save(state, tmp_path / CHECKPOINT)
    with pytest.raises(FloatingPointError, match="diverged in epoch 2"):
        fit(x, y, x, y, TrainConfig(**{**config.__dict__, "epochs": 2}), tmp_path)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"] == 1


def test_fine_tuning_starts_from_the_given_weights_and_refuses_another_network(tmp_path):
    from lamost_classify.model.weights import save_weights

    x, y = synthetic_spectra(4, seed=7)
    config = TrainConfig(preset="fast", model_overrides=TINY, epochs=1, lr=1e-12, batch_size=6,
                         precise_bn_batches=0, num_threads=1, progress=False)
    base = fit(x, y, x, y, config, tmp_path / "base").model
    path = save_weights(base, tmp_path / "base-weights", name="tiny", overrides=TINY)
    tuned = fit(x, y, x, y, TrainConfig(**{**config.__dict__, "init_from": str(path), "seed": 3}),
                tmp_path / "tuned").model
    # lr 1e-12: one epoch leaves the weights where they started, not at a fresh seed-3 initialisation
    # (BatchNorm's running statistics do move: they are not learned).
    tuned_parameters = dict(tuned.named_parameters())
    for key, value in base.named_parameters():
        torch.testing.assert_close(tuned_parameters[key], value, rtol=0, atol=1e-6, msg=key)
    with pytest.raises(ValueError, match="not preset"):
        fit(x, y, x, y, TrainConfig(**{**config.__dict__, "init_from": str(path), "preset": "fc4",
                                       "model_overrides": {}}), tmp_path / "other")


def test_a_checkpoint_older_than_a_setting_resumes_when_that_setting_is_at_its_default(tmp_path):
    x, y = synthetic_spectra(3, seed=8)
    config = TrainConfig(preset="fc4", epochs=2, batch_size=9, num_threads=1, progress=False)
    fit(x, y, x, y, TrainConfig(**{**config.__dict__, "epochs": 1}), tmp_path)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    for newer in ("artefact_fraction", "init_from"):  # written before these settings existed
        del state["config"][newer]
    torch.save(state, tmp_path / CHECKPOINT)
    assert [row["epoch"] for row in fit(x, y, x, y, config, tmp_path).history] == [1, 2]
    with pytest.raises(ValueError, match="artefact_fraction"):
        fit(x, y, x, y, TrainConfig(**{**config.__dict__, "epochs": 3, "artefact_fraction": 0.3}), tmp_path)


def test_resume_refuses_other_training_data_and_says_when_it_cannot_check(tmp_path, capsys):
    x, y = synthetic_spectra(3, seed=8)
    config = TrainConfig(preset="fc4", epochs=2, batch_size=9, num_threads=1, progress=False)
    fit(x, y, x, y, TrainConfig(**{**config.__dict__, "epochs": 1}), tmp_path)
    other_flux = x.copy()
    other_flux[-1, 100] += 0.5  # one pixel of the last spectrum: a row the fingerprint samples
    other_labels = y.copy()
    other_labels[0] = (y[0] + 1) % 3
    for train_x, train_y, val_x in ((other_flux, y, x), (x, other_labels, x), (x, y, other_flux),
                                    (x[:-1], y[:-1], x)):
        with pytest.raises(ValueError, match="other data"):
            fit(train_x, train_y, val_x, y, config, tmp_path)
    # A checkpoint from before fingerprints resumes, and says that its data were not checked.
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    del state["data_fingerprint"]
    torch.save(state, tmp_path / CHECKPOINT)
    assert [row["epoch"] for row in fit(other_flux, y, x, y, config, tmp_path).history] == [1, 2]
    assert "resumed without checking them" in capsys.readouterr().out
