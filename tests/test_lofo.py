"""training/leave_one_family_out.py: the left-out family never reaches training, calibration or prior tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from model_fixtures import write_slope_sets
from script_loader import load_script

from lamost_classify import CLASS_NAMES

LOFO_SETS = ("lofo_train", "lofo_val", "lofo_test", "lofo_test_snr")


def _script():
    return load_script("training/leave_one_family_out.py")


@pytest.fixture
def data(tmp_path):
    for seed, family in enumerate(("a", "b", "c")):
        write_slope_sets(tmp_path / "families" / family, LOFO_SETS, family, seed)
    return tmp_path / "families"


def test_left_out_family_is_never_loaded_before_it_is_tested(data, tmp_path, monkeypatch):
    lofo = _script()
    loaded: list[str] = []
    real_load = np.load

    def spy(path, *args, **kwargs):  # every array file of the sets the run opens, in order
        if Path(path).is_relative_to(data):  # (not the package's redshift templates)
            loaded.append(str(Path(path).relative_to(data)))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    result = lofo.main(["--data", str(data), "--out", str(tmp_path / "out"), "--leave-out", "a", "--epochs", "1",
                        "--milestones", "", "--threads", "1", "--batch-size", "16"])
    first_of_a = next(i for i, p in enumerate(loaded) if p.startswith("a/"))
    before = loaded[:first_of_a]
    # b and c trained and calibrated the model before anything of a was opened, and a only ever for testing
    assert {"b/lofo_train_flux.npy", "c/lofo_train_flux.npy", "b/lofo_val_flux.npy", "c/lofo_val_flux.npy"} <= set(before)
    tested = {f"a/{name}_{kind}.npy" for name in ("lofo_test", "lofo_test_snr") for kind in ("flux", "ivar", "pedestal")}
    assert {p for p in loaded if p.startswith("a/")} == tested
    roles = {(role, family) for fold, role, family, _ in result["opened"] if fold == "a"}
    assert ("train", "a") not in roles and ("calibrate", "a") not in roles and ("test", "a") in roles
    assert {f for role, f in roles if role == "train"} == {"b", "c"}

    fold = result["folds"]["a"]
    assert fold["trained_on"] == ["b", "c"] and fold["train_n"] == 48 and fold["val_n"] == 48
    assert set(fold["seen"]) == {"b", "c"}
    unseen = fold["unseen"]
    assert unseen["lofo_test"]["balanced"]["n"] == 24
    assert set(unseen["goals"]) == {"STAR recall", "GALAXY recall at S/N >= 5", "QSO recall at S/N >= 5",
                                    "GALAXY F1 at the survey mix", "QSO F1 at the survey mix"}
    assert "QSO" in unseen["lofo_test_snr"]["survey_prior"]["by_redshift"]
    written = json.loads((tmp_path / "out" / "lofo.json").read_text())
    assert list(written["rows"]) == ["a"]
    md = (tmp_path / "out" / "lofo.md").read_text()
    assert "| a |" in md and "By S/N" in md and "By redshift" in md and "0.9987" in md  # paper's Table 1 beside
    assert "By kind" in md and "by_kind" in unseen["lofo_test_snr"]["survey_prior_snr_ge_5"]


def test_more_training_sets_are_the_training_families_only(data, tmp_path):
    lofo = _script()
    for family in ("a", "b", "c"):  # a second training set per family, as the full `train` sets are
        for suffix in ("_flux.npy", "_truth.parquet"):
            (data / family / f"train{suffix}").write_bytes((data / family / f"lofo_train{suffix}").read_bytes())
    result = lofo.main(["--data", str(data), "--out", str(tmp_path / "out"), "--leave-out", "a", "--epochs", "1",
                        "--milestones", "", "--threads", "1", "--batch-size", "16",
                        "--train-sets", "lofo_train", "train", "--artefacts", "0.3"])
    trained = {(family, name) for fold, role, family, name in result["opened"] if role == "train"}
    assert trained == {(f, n) for f in ("b", "c") for n in ("lofo_train", "train")}
    assert result["folds"]["a"]["train_n"] == 96 and result["config"]["artefact_fraction"] == 0.3


def training_directory(directory: Path, flux: np.ndarray, classes: list[str]) -> Path:
    """A train set of real spectra (or composites of them) as make_real_star_set.py writes one."""
    from lamost_classify.model.labelled import save_set

    labels = [CLASS_NAMES.index(c) for c in classes]
    save_set(directory, "train", flux, {"class": classes, "label": labels, "z": [0.05 * min(lab, 1) for lab in labels],
                                        "family": ["real"] * len(classes)})
    return directory


def fold_also_trained_on(lofo, monkeypatch, data: Path, out: Path, left_out: str, option: str,
                         directory: Path) -> tuple[dict, list[bool]]:
    """One fold of one epoch also trained on ``directory`` (given as ``option``): its result, and whether the
    real stars were asked for held out only."""
    asked: list[bool] = []
    monkeypatch.setattr(lofo, "_real_stars", lambda held_out_only: asked.append(held_out_only) or {})
    result = lofo.main(["--data", str(data), "--out", str(out), "--leave-out", left_out, "--epochs", "1",
                        "--milestones", "", "--threads", "1", "--batch-size", "16", option, str(directory)])
    return result, asked


def test_real_stars_train_every_fold_and_are_then_scored_held_out_only(data, tmp_path, monkeypatch):
    """The shipped model trains on real stars; a fold can too. They are no family: never left out."""
    lofo = _script()
    real = training_directory(tmp_path / "realstars", np.load(data / "b" / "lofo_train_flux.npy")[:8], ["STAR"] * 8)
    result, asked = fold_also_trained_on(lofo, monkeypatch, data, tmp_path / "out", "a", "--real-stars", real)
    assert result["folds"]["a"]["train_n"] == 48 + 8
    assert ("a", "train", "real", str(real)) in [tuple(o) for o in result["opened"]]
    assert asked == [True] and "real stars of" in result["what"]
    # The same fold rerun into the same --out without them: its checkpoint is refused, in one line.
    with pytest.raises(SystemExit, match="other data"):
        lofo.main(["--data", str(data), "--out", str(tmp_path / "out"), "--leave-out", "a", "--epochs", "1",
                   "--milestones", "", "--threads", "1", "--batch-size", "16"])
    with pytest.raises(SystemExit, match="make_real_star_set"):  # one clear line, not a traceback
        lofo.main(["--data", str(data), "--out", str(tmp_path / "out2"), "--leave-out", "a",
                   "--real-stars", str(tmp_path / "nowhere")])
    mixed = tmp_path / "mixed"  # a mock set of all three classes, given by mistake
    mixed.mkdir()
    for suffix in ("_flux.npy", "_truth.parquet"):
        (mixed / f"train{suffix}").write_bytes((data / "b" / f"lofo_train{suffix}").read_bytes())
    with pytest.raises(SystemExit, match="other classes than STAR"):
        lofo.main(["--data", str(data), "--out", str(tmp_path / "out3"), "--leave-out", "a", "--real-stars", str(mixed)])


def test_composite_galaxies_train_every_fold_and_real_stars_are_then_scored_held_out_only(data, tmp_path, monkeypatch):
    """Galaxies composed of the real stars (and those stars) are no family either: every fold trains on them."""
    lofo = _script()
    composites = training_directory(tmp_path / "composites", np.load(data / "c" / "lofo_train_flux.npy")[:6],
                                    ["GALAXY", "STAR"] * 3)
    result, asked = fold_also_trained_on(lofo, monkeypatch, data, tmp_path / "out", "b", "--composites", composites)
    assert result["folds"]["b"]["train_n"] == 48 + 6
    assert ("b", "train", "real-composite", str(composites)) in [tuple(o) for o in result["opened"]]
    assert asked == [True] and "composite galaxies of" in result["what"]
    with pytest.raises(SystemExit, match="make_composite_galaxy_set"):  # one clear line, not a traceback
        lofo.main(["--data", str(data), "--out", str(tmp_path / "out2"), "--leave-out", "b",
                   "--composites", str(tmp_path / "nowhere")])


def test_redshift_weight_trains_the_fold_with_a_redshift_head(data, tmp_path):
    """The shipped recipe trains a redshift head with the class: a fold can too, from the training
    families' true z, so the head's effect on an unseen family is measured, not guessed."""
    import torch

    lofo = _script()
    result = lofo.main(["--data", str(data), "--out", str(tmp_path / "out"), "--leave-out", "a", "--epochs", "1",
                        "--milestones", "", "--threads", "1", "--batch-size", "16", "--redshift-weight", "1",
                        "--seed", "3"])
    assert result["config"]["redshift_weight"] == 1.0 and result["config"]["seed"] == 3  # a second seed, measured
    state = torch.load(tmp_path / "out" / "fold-a" / "checkpoint.pt", weights_only=False)
    assert any(k.startswith("redshift.") for k in state["model"])
    assert "redshift head weight 1.0" in result["what"]


def test_sets_in_the_wrong_family_directory_are_refused(data, tmp_path):
    lofo = _script()
    table = pq.read_table(data / "b" / "lofo_train_truth.parquet").to_pydict()
    table["family"] = ["a"] * len(table["family"])
    pq.write_table(pa.table(table), data / "b" / "lofo_train_truth.parquet")
    with pytest.raises(SystemExit, match="not 'b'"):
        lofo.main(["--data", str(data), "--out", str(tmp_path / "out"), "--leave-out", "a", "--epochs", "1"])


def test_init_from_is_refused_unless_one_family_is_left_out(data, tmp_path):
    with pytest.raises(SystemExit, match="one --leave-out"):
        _script().main(["--data", str(data), "--out", str(tmp_path / "out"), "--init-from", "default",
                        "--epochs", "1"])


def test_prior_strength_is_chosen_for_f1_at_the_survey_mix():
    lofo = _script()
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 300)
    # Galaxies and QSOs are called confidently; stars sit near the star/galaxy boundary, so a flat prior
    # calls some of them galaxies, which the survey mix turns into a poor galaxy purity. The survey prior
    # fixes that without costing galaxies or QSOs anything.
    probs = np.full((900, 3), 1e-4)
    probs[labels == 1, 1] = probs[labels == 2, 2] = 1.0
    p_galaxy = rng.uniform(0.3, 0.98, 300)  # up to 0.98: only the full survey prior (x82) calls all STAR
    probs[:300, 0], probs[:300, 1] = 1 - p_galaxy, p_galaxy
    strength, tried = lofo.choose_prior_strength(probs / probs.sum(1, keepdims=True), labels)
    assert tried[str(strength)] == max(tried.values())
    assert strength == 1.0 and tried["0.0"] < tried["0.75"] < tried["1.0"]


def test_several_seeds_train_one_model_each_and_are_scored_as_their_mean_logits(data, tmp_path):
    """An ensemble fold: a model per seed, each in its own directory, scored as one (their mean logits)."""
    import torch

    from lamost_classify.model.calibration import fit_temperature
    from lamost_classify.model.runtime import batched_logits

    lofo = _script()
    result = lofo.main(["--data", str(data), "--out", str(tmp_path / "out"), "--leave-out", "a", "--epochs", "1",
                        "--milestones", "", "--threads", "1", "--batch-size", "16", "--seed", "1", "2"])
    fold = result["folds"]["a"]
    assert fold["seeds"] == [1, 2] and len(fold["best_epochs"]) == 2 and "ensemble of 2" in result["what"]
    assert not (tmp_path / "out" / "fold-a").exists()
    for seed in (1, 2):
        state = torch.load(tmp_path / "out" / f"fold-a-seed{seed}" / "checkpoint.pt", weights_only=False)
        assert state["config"]["seed"] == seed
    members = list(lofo.fold_model(tmp_path / "out", "a", fold["seeds"]).members)
    # Calibrated as one: the temperature is fitted to the mean logits on the training families' val sets.
    val = np.concatenate([np.load(data / f / "lofo_val_flux.npy") for f in ("b", "c")])
    val_labels = np.concatenate([pq.read_table(data / f / "lofo_val_truth.parquet").column("label").to_numpy()
                                 for f in ("b", "c")])
    mean_val = np.mean([batched_logits(m, val) for m in members], axis=0)
    assert fold["temperature"] == pytest.approx(fit_temperature(mean_val, val_labels), rel=1e-6)
    assert fold["temperature"] != pytest.approx(fit_temperature(batched_logits(members[0], val), val_labels), rel=1e-3)
    flux = np.load(data / "a" / "lofo_test_flux.npy")
    labels = pq.read_table(data / "a" / "lofo_test_truth.parquet").column("label").to_numpy()
    called = np.mean([batched_logits(m, flux) for m in members], axis=0).argmax(1)
    scored = fold["unseen"]["lofo_test"]["balanced"]["scores"]
    for c, name in enumerate(("STAR", "GALAXY", "QSO")):
        assert scored[name]["recall"] == pytest.approx(float((called[labels == c] == c).mean()))


def test_a_folds_model_is_written_as_weights_that_read_as_the_fold_scored_them(data, tmp_path):
    """fold-<F>-model.safetensors: the members as one network, with the fold's temperature and prior on its
    card, so that validate_real.py and the pipeline take the fold's model as the fold scored it."""
    from lamost_classify.model.calibration import adjust_to_prior
    from lamost_classify.model.inference import card_target_prior
    from lamost_classify.model.runtime import batched_logits
    from lamost_classify.model.weights import load_weights

    lofo = _script()
    result = lofo.main(["--data", str(data), "--out", str(tmp_path / "out"), "--leave-out", "a", "--epochs", "1",
                        "--milestones", "", "--threads", "1", "--batch-size", "16", "--seed", "1", "2"])
    fold = result["folds"]["a"]
    assert fold["weights"] == "fold-a-model.safetensors"
    model, card = load_weights(tmp_path / "out" / fold["weights"])
    assert card["members"] == 2 and card["temperature"] == pytest.approx(fold["temperature"])
    assert card["training"]["left_out"] == "a" and card["training"]["trained_on"] == ["b", "c"]
    assert list(card_target_prior(card)) == pytest.approx(fold["prior"])
    flux = np.load(data / "a" / "lofo_test_flux.npy")
    labels = pq.read_table(data / "a" / "lofo_test_truth.parquet").column("label").to_numpy()
    probs = lofo.probabilities(model.eval(), flux, card["temperature"])
    called = adjust_to_prior(probs, list(card_target_prior(card))).argmax(1)
    scored = fold["unseen"]["lofo_test"]["survey_prior"]["scores"]
    for c, name in enumerate(("STAR", "GALAXY", "QSO")):
        assert scored[name]["recall"] == pytest.approx(float((called[labels == c] == c).mean()))
    assert np.allclose(batched_logits(model, flux), batched_logits(lofo.fold_model(tmp_path / "out", "a", [1, 2]), flux),
                       atol=1e-5)


def test_join_scores_two_runs_networks_as_one_fold_model_and_refuses_other_training_families(data, tmp_path):
    """--join: the networks an earlier run trained for a fold join this run's (mean logits of all), and a
    run whose fold trained on other families (one that could have seen the family left out) is refused."""
    from lamost_classify.model.runtime import batched_logits
    from lamost_classify.model.weights import load_weights

    lofo = _script()
    common = ["--data", str(data), "--leave-out", "a", "--epochs", "1", "--milestones", "", "--threads", "1",
              "--batch-size", "16"]
    lofo.main(common + ["--out", str(tmp_path / "first"), "--seed", "1"])
    result = lofo.main(common + ["--out", str(tmp_path / "both"), "--seed", "2", "--join", str(tmp_path / "first")])
    fold = result["folds"]["a"]
    assert fold["joined"] == [str(tmp_path / "first")] and "joined by" in result["what"]
    model, card = load_weights(tmp_path / "both" / fold["weights"])
    assert card["members"] == 2 and card["training"]["joined"] == fold["joined"]
    flux = np.load(data / "a" / "lofo_test_flux.npy")
    own, joined = lofo.fold_model(tmp_path / "both", "a", [2]), lofo.fold_model(tmp_path / "first", "a", [1])
    assert np.allclose(batched_logits(model, flux), (batched_logits(own, flux) + batched_logits(joined, flux)) / 2,
                       atol=1e-5)

    lofo.main(common + ["--out", str(tmp_path / "two-families"), "--families", "a", "b"])
    with pytest.raises(SystemExit, match="trained on"):
        lofo.main(common + ["--out", str(tmp_path / "refused"), "--join", str(tmp_path / "two-families")])
    with pytest.raises(SystemExit, match="joined"):
        lofo.main(common + ["--out", str(tmp_path / "nested"), "--join", str(tmp_path / "both")])


def test_logit_mean_is_the_mean_of_its_members_logits():
    import torch

    from lamost_classify.model.ensemble import LogitMean

    torch.manual_seed(0)
    members = [torch.nn.Linear(5, 3) for _ in range(3)]
    x = torch.randn(4, 5)
    assert torch.allclose(LogitMean(members)(x), sum(m(x) for m in members) / 3)
    with pytest.raises(ValueError, match="at least one"):
        LogitMean([])


def test_real_stars_are_scored_as_the_catalog_publishes_them(monkeypatch, tmp_path):
    """A real star the fold network calls QSO but that fits no QSO above QSO_MIN_Z is published as its next
    class, as the catalog would: the yardstick's real-star recall counts it kept, where the network's most
    probable class alone would lose it."""
    import torch
    from model_fixtures import TINY
    from test_redshift_fit import from_template

    from lamost_classify.model.densenet import build_model
    from lamost_classify.model.redshift import load_templates

    lofo = _script()
    torch.manual_seed(0)
    model = build_model("fast", **TINY).eval()
    with torch.no_grad():  # every spectrum QSO first, STAR second
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([1.0, -1.0, 3.0]))
    rng = np.random.default_rng(4)
    flux, ivar, _, pedestal = from_template("STAR", 0.0, rng, snr=30, index=load_templates()["STAR"].subclass.index("CV"))
    star = {"flux": np.clip(flux, 0, 1)[None].astype(np.float32), "ivar": ivar[None],
            "pedestal": np.array([pedestal], np.float32), "n": 1}
    monkeypatch.setattr(lofo, "_real_stars", lambda held_out_only: {"dr1": star})
    assert lofo.probabilities(model, star["flux"], 1.0).argmax() == 2
    assert lofo.real_star_recall(model, 1.0, [1 / 3] * 3) == {"dr1": {"n": 1, "star_recall": 1.0}}
