"""An ensemble of networks (their mean logits) saved, loaded, folded and run like one network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_fixtures import TINY, one_torch_thread, write_slope_sets  # noqa: F401

from lamost_classify.model.cam import class_activation_map
from lamost_classify.model.densenet import build_model, redshift_estimate
from lamost_classify.model.ensemble import LogitMean, mixed_redshift
from lamost_classify.model.folding import FastEnsemble, fold
from lamost_classify.model.inference import Classifier
from lamost_classify.model.weights import ModelCardMismatch, load_weights, save_weights

TINY_Z = {**TINY, "redshift_hidden": 16}


def members(n: int = 2) -> list[torch.nn.Module]:
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        net = build_model("fast", **TINY_Z).eval()
        with torch.no_grad():  # BatchNorm statistics unlike the defaults, so that folding has work to do
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        nets.append(net)
    return nets


def spectra(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).random((n, 2600), dtype=np.float32)


def test_mixed_redshift_is_the_mixture_of_the_members():
    heads = torch.tensor([[[np.log1p(0.1), np.log(0.01)]], [[np.log1p(0.3), np.log(0.04)]]], dtype=torch.float32)
    mixed = mixed_redshift(heads)
    mean = (np.log1p(0.1) + np.log1p(0.3)) / 2
    spread = ((np.log1p(0.1) - mean) ** 2 + (np.log1p(0.3) - mean) ** 2) / 2
    assert mixed[0, 0].item() == pytest.approx(mean, rel=1e-6)
    assert mixed[0, 1].exp().item() == pytest.approx(0.025 + spread, rel=1e-5)
    same = mixed_redshift(heads[:1].expand(3, 1, 2))  # members that agree: their own Gaussian
    torch.testing.assert_close(same, heads[0])


def test_folded_ensemble_gives_the_mean_logits_and_the_mixed_head():
    nets = members(3)
    ensemble = LogitMean(nets).eval()
    x = torch.from_numpy(spectra())
    folded = fold(ensemble)
    assert isinstance(folded, FastEnsemble)
    with torch.no_grad():
        out = folded(x)
        logits, head = ensemble.forward_with_redshift(x)
        torch.testing.assert_close(out[:, :3], torch.stack([n(x) for n in nets]).mean(0), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out[:, :3], logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out[:, 3:], head, atol=1e-4, rtol=1e-4)
        assert out.shape == (6, 5)


def test_ensemble_cam_is_the_mean_of_the_members_maps():
    nets = members(2)
    folded = fold(LogitMean(nets))
    x = spectra(3)
    classes = [0, 1, 2]
    cam = class_activation_map(folded, x, classes)
    with torch.no_grad():
        t = torch.from_numpy(x)
        raw = sum(torch.einsum("bc,bcl->bl", f.classifier.weight[classes], f.features(t))
                  for f in (fold(n) for n in nets))
    raw = torch.nn.functional.interpolate(raw.unsqueeze(1), size=2600, mode="linear", align_corners=False)[:, 0]
    low, high = raw.min(dim=1, keepdim=True).values, raw.max(dim=1, keepdim=True).values
    np.testing.assert_allclose(cam, ((raw - low) / (high - low)).numpy(), atol=1e-4)


def test_an_ensemble_saves_as_one_file_and_loads_as_an_ensemble(tmp_path):
    nets = members(2)
    path = save_weights(LogitMean(nets), tmp_path / "pair", temperature=0.9)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["members"] == 2 and card["overrides"]["redshift_hidden"] == 16
    loaded, _ = load_weights(path)
    assert isinstance(loaded, LogitMean) and len(loaded.members) == 2
    x = torch.from_numpy(spectra())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), torch.stack([n(x) for n in nets]).mean(0))

    classifier = Classifier.load(path, device="cpu", target_prior=None)
    z, z_err = redshift_estimate(classifier.fast.outputs(spectra())[:, 3:])
    assert classifier.predict_proba(spectra()).shape == (6, 3) and np.isfinite(z).all() and (z_err > 0).all()

    for bad in (0, "2", 1.5):
        card["members"] = bad
        path.with_suffix(".json").write_text(json.dumps(card))
        with pytest.raises(ModelCardMismatch, match="members"):
            load_weights(path)
    card["members"] = 3  # the card says three, the file holds two
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelCardMismatch, match="tensors.missing"):
        load_weights(path)


def test_members_of_two_recipes_save_load_and_fold_as_one_ensemble(tmp_path):
    """A trio without and a member with the wavelength channel: each member is rebuilt as it was trained."""
    torch.manual_seed(5)
    nets = members(2) + [build_model("fast", **TINY_Z, wavelength_channel=True).eval()]
    path = save_weights(LogitMean(nets), tmp_path / "mixed")
    card = json.loads(path.with_suffix(".json").read_text())
    assert [o.get("wavelength_channel", False) for o in card["member_overrides"]] == [False, False, True]
    loaded, _ = load_weights(path)
    assert [m.config.wavelength_channel for m in loaded.members] == [False, False, True]
    x = torch.from_numpy(spectra())
    with torch.no_grad():
        expected = torch.stack([n(x) for n in nets]).mean(0)
        torch.testing.assert_close(loaded(x), expected)
        torch.testing.assert_close(fold(loaded)(x)[:, :3], expected, atol=1e-4, rtol=1e-4)
    assert "member_overrides" not in json.loads(save_weights(LogitMean(nets[:2]), tmp_path / "alike")
                                                .with_suffix(".json").read_text())
    card["member_overrides"] = card["member_overrides"][:2]  # three members, two recipes named
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelCardMismatch, match="member_overrides"):
        load_weights(path)


def test_a_single_network_card_has_no_members_field(tmp_path):
    path = save_weights(members(1)[0], tmp_path / "one")
    assert "members" not in json.loads(path.with_suffix(".json").read_text())
    assert not isinstance(load_weights(path)[0], LogitMean)


def test_train_shipped_ensemble_calibrates_scores_and_ships_one_file(tmp_path, monkeypatch):
    from script_loader import load_script

    script = load_script("training/train_shipped.py")
    monkeypatch.setattr(script, "real_stars", lambda held_out_only=True: {})  # ../shared's files: not here
    write_slope_sets(tmp_path / "sets", ("val", "test", "test_survey"), "survey", seed=3, n=30)
    paths = []
    for i, net in enumerate(members(2)):
        paths.append(str(save_weights(net, tmp_path / f"seed{i}", name=f"fast-seed{i}",
                                      metrics={"best_epoch": 3 + i, "best_val_loss": 0.1},
                                      training={"families": ["survey", "eigen"][: i + 1]})))
    ship = tmp_path / "ship" / "default"
    monkeypatch.setattr("sys.argv", ["train_shipped.py", "--data", str(tmp_path / "sets"), "--out",
                                     str(tmp_path / "out"), "--ensemble", *paths, "--ship", str(ship)])
    script.main()
    card = json.loads(ship.with_suffix(".json").read_text())
    assert card["members"] == 2 and card["metrics"]["best_epoch"] == [3, 4]
    assert [m["name"] for m in card["training"]["members"]] == ["fast-seed0", "fast-seed1"]
    assert card["training"]["families"] == ["eigen", "survey"] and card["temperature"] > 0
    assert "test_survey" in card["metrics"] and "--ensemble" in card["training"]["recipe"]
    shipped, _ = load_weights(ship.with_suffix(".safetensors"))
    x = torch.from_numpy(spectra())
    with torch.no_grad():
        torch.testing.assert_close(shipped(x), torch.stack([load_weights(p)[0](x) for p in paths]).mean(0))

    other = save_weights(build_model("fast", **TINY), tmp_path / "headless", metrics={"best_epoch": 1})
    monkeypatch.setattr("sys.argv", ["train_shipped.py", "--data", str(tmp_path / "sets"), "--out",
                                     str(tmp_path / "out2"), "--ensemble", paths[0], str(other)])
    with pytest.raises(SystemExit, match="not the same network"):
        script.main()
    monkeypatch.setattr("sys.argv", ["train_shipped.py", "--data", str(tmp_path / "sets"), "--out",
                                     str(tmp_path / "out2"), "--ensemble", paths[0], paths[0]])
    with pytest.raises(SystemExit, match="given twice"):
        script.main()
    monkeypatch.setattr("sys.argv", ["train_shipped.py", "--data", str(tmp_path / "sets"), "--out",
                                     str(tmp_path / "out2"), "--ensemble", paths[0], str(ship.with_suffix(".safetensors"))])
    with pytest.raises(SystemExit, match="itself an ensemble"):
        script.main()


def test_train_shipped_split_writes_every_member_as_its_own_network(tmp_path, monkeypatch):
    from script_loader import load_script

    script = load_script("training/train_shipped.py")
    nets = members(2)
    pair = save_weights(LogitMean(nets), tmp_path / "pair", name="fast-pair",
                        training={"members": [{"name": f"fast-seed{i}", "weights_sha256": f"{i}" * 64,
                                               "training": {"recipe": f"--seed {i}"}} for i in range(2)]})
    monkeypatch.setattr("sys.argv", ["train_shipped.py", "--out", str(tmp_path / "split"), "--split", str(pair)])
    script.main()
    x = torch.from_numpy(spectra())
    for i, net in enumerate(nets):
        member, card = load_weights(tmp_path / "split" / f"member{i}.safetensors")
        assert not isinstance(member, LogitMean) and card["name"] == f"fast-seed{i}"
        assert card["training"]["recipe"] == f"--seed {i}"
        assert card["training"]["split_from"]["member"] == i
        assert card["training"]["split_from"]["member_weights_sha256"] == f"{i}" * 64
        with torch.no_grad():
            torch.testing.assert_close(member.forward_with_redshift(x), net.forward_with_redshift(x))

    monkeypatch.setattr("sys.argv", ["train_shipped.py", "--out", str(tmp_path / "again"), "--split",
                                     str(tmp_path / "split" / "member0.safetensors")])
    with pytest.raises(SystemExit, match="one network already"):
        script.main()


def test_train_shipped_joins_and_splits_members_with_and_without_the_wavelength_channel(tmp_path, monkeypatch):
    from script_loader import load_script

    script = load_script("training/train_shipped.py")
    monkeypatch.setattr(script, "real_stars", lambda held_out_only=True: {})  # ../shared's files: not here
    write_slope_sets(tmp_path / "sets", ("val", "test", "test_survey"), "survey", seed=3, n=30)
    torch.manual_seed(7)
    # the channel first: the card's own overrides are then the first member's, which the second lacks
    nets = [build_model("fast", **TINY_Z, wavelength_channel=True).eval(), members(1)[0]]
    paths = [str(save_weights(net, tmp_path / f"net{i}", metrics={"best_epoch": 1})) for i, net in enumerate(nets)]
    ship = tmp_path / "ship" / "default"
    monkeypatch.setattr("sys.argv", ["train_shipped.py", "--data", str(tmp_path / "sets"), "--out",
                                     str(tmp_path / "out"), "--ensemble", *paths, "--ship", str(ship)])
    script.main()
    monkeypatch.setattr("sys.argv", ["train_shipped.py", "--out", str(tmp_path / "split"), "--split",
                                     str(ship.with_suffix(".safetensors"))])
    script.main()
    x = torch.from_numpy(spectra())
    for i, net in enumerate(nets):
        member, _ = load_weights(tmp_path / "split" / f"member{i}.safetensors")
        assert member.config.wavelength_channel == net.config.wavelength_channel
        with torch.no_grad():
            torch.testing.assert_close(member.forward_with_redshift(x), net.forward_with_redshift(x))


def test_train_shipped_split_takes_a_fold_model_whose_card_lists_seeds_not_members(tmp_path, monkeypatch):
    """leave_one_family_out.py's fold-<F>-model card records the members' seeds and best epochs, not their
    cards: each member keeps its own seed and epoch and the fold's shared record."""
    from script_loader import load_script

    script = load_script("training/train_shipped.py")
    nets = members(3)
    fold = save_weights(LogitMean(nets), tmp_path / "fold-eigen-model", name="lofo-fold-eigen",
                        training={"left_out": "eigen", "seeds": [4, 1, 0], "best_epochs": [8, 7, 8]})
    monkeypatch.setattr("sys.argv", ["train_shipped.py", "--out", str(tmp_path / "split"), "--split", str(fold)])
    script.main()
    x = torch.from_numpy(spectra())
    for i, (net, seed, epoch) in enumerate(zip(nets, [4, 1, 0], [8, 7, 8])):
        member, card = load_weights(tmp_path / "split" / f"member{i}.safetensors")
        assert card["name"] == f"lofo-fold-eigen-member{i}" and card["training"]["left_out"] == "eigen"
        assert (card["training"]["seed"], card["training"]["best_epoch"]) == (seed, epoch)
        assert "seeds" not in card["training"] and card["training"]["split_from"]["member"] == i
        with torch.no_grad():
            torch.testing.assert_close(member.forward_with_redshift(x), net.forward_with_redshift(x))


def test_an_ensemble_is_not_fine_tuned_as_one_network(tmp_path):
    from lamost_classify.model.train import TrainConfig, fit

    path = save_weights(LogitMean(members(2)), tmp_path / "pair")
    x = spectra(6)
    config = TrainConfig(preset="fast", model_overrides=TINY_Z, epochs=1, init_from=str(path), num_threads=1,
                         progress=False, log_epochs=False, augment=False, redshift_weight=1.0)
    with pytest.raises(ValueError, match="an ensemble of 2 networks"):
        fit(x, np.arange(6) % 3, x, np.arange(6) % 3, config, tmp_path / "out", train_z=np.zeros(6),
            val_z=np.zeros(6))


@pytest.mark.parametrize("precision, backend", [("bf16", "torch"), ("fp16", "torch"), ("fp32", "onnx")])
def test_an_ensemble_runs_on_every_back_end(precision, backend):
    from lamost_classify.model.fastpath import FastPath

    if backend == "onnx":
        pytest.importorskip("onnxruntime")
    ensemble = LogitMean(members(2)).eval()
    x = spectra()
    reference = FastPath(ensemble, "cpu", "fp32", "torch").outputs(x)
    out = FastPath(ensemble, "cpu", precision, backend).outputs(x)
    assert out.shape == reference.shape == (6, 5)
    np.testing.assert_allclose(out, reference, atol=1e-5 if backend == "onnx" else 0.01)


def test_train_shipped_rescore_sets_the_prior_strength_and_leaves_the_weights(tmp_path, monkeypatch):
    from script_loader import load_script

    from lamost_classify.model.recipe import strength_prior
    from lamost_classify.contract import model_id

    script = load_script("training/train_shipped.py")
    monkeypatch.setattr(script, "real_stars", lambda held_out_only=True: {})  # ../shared's files: not here
    write_slope_sets(tmp_path / "sets", ("test", "test_survey"), "survey", seed=3, n=30)
    kept = {"best_epoch": 3, "best_val_loss": 0.1, "val_ece_before": 0.02, "val_ece_after": 0.01}
    path = save_weights(members(1)[0], tmp_path / "model", name="fast-one", temperature=0.9,
                        metrics={**kept, "chosen_prior_strength": 1.0, "default_target_prior": strength_prior(1.0)})
    before = json.loads(path.with_suffix(".json").read_text())
    monkeypatch.setattr("sys.argv", ["train_shipped.py", "--data", str(tmp_path / "sets"), "--out",
                                     str(tmp_path / "out"), "--rescore", str(path), "--prior-strength", "0.75"])
    script.main()
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["metrics"]["chosen_prior_strength"] == 0.75
    assert card["metrics"]["default_target_prior"] == pytest.approx(strength_prior(0.75))
    assert card["metrics"]["default_target_prior"][0] < 0.985  # weaker than the survey mix itself
    assert {k: card["metrics"][k] for k in kept} == kept and card["temperature"] == before["temperature"]
    assert card["rescored"][-1]["prior_strength_before"] == 1.0 and card["rescored"][-1]["prior_strength"] == 0.75
    assert card["weights_sha256"] == before["weights_sha256"] and model_id(card) != model_id(before)

    monkeypatch.setattr("sys.argv", ["train_shipped.py", "--data", str(tmp_path / "sets"), "--out",
                                     str(tmp_path / "out2"), "--rescore", str(path)])
    script.main()  # without --prior-strength the card's own strength stays
    assert json.loads(path.with_suffix(".json").read_text())["metrics"]["chosen_prior_strength"] == 0.75
