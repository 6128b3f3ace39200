"""Weights on disk: safetensors + model card, integrity and compatibility checks, the Classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_fixtures import TINY, one_torch_thread, synthetic_spectra  # noqa: F401

from lamost_classify import CLASS_NAMES, SURVEY_PRIOR
from lamost_classify.contract import model_id
from lamost_classify.model.densenet import build_model
from lamost_classify.model.inference import Classifier
from lamost_classify.model.runtime import batched_logits
from lamost_classify.model.weights import (
    ModelCardMismatch, WeightsIntegrityError, file_sha256, load_weights, read_card, resolve_weights, save_weights,
)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("fast", **TINY).eval()
    # Non-trivial BatchNorm statistics, so that the test sees them survive the round trip.
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 2600))
    model.eval()
    path = save_weights(model, tmp_path / "tiny", overrides=TINY, temperature=1.7,
                        training={"data_sha256": "ab" * 32, "train_counts": {"STAR": 3}}, metrics={"f1": 0.5})
    return model, path


def test_save_then_load_gives_identical_outputs_and_a_complete_card(saved):
    model, path = saved
    assert path.suffix == ".safetensors" and path.with_suffix(".json").exists()
    loaded, card = load_weights(path)
    x = synthetic_spectra(2)[0]
    np.testing.assert_array_equal(batched_logits(model, x), batched_logits(loaded, x))
    assert card["preset"] == "fast" and card["config"]["growth_rate"] == TINY["growth_rate"]
    assert card["class_names"] == list(CLASS_NAMES)
    assert card["grid"] == {"n_pixels": 2600, "wave_min": 3690.0, "wave_max": 9100.0, "spacing": "log10",
                            "wavelengths": "vacuum"}
    assert card["weights_sha256"] == file_sha256(path) and card["temperature"] == 1.7
    assert card["train_prior"] == pytest.approx([1 / 3] * 3) and card["training"]["data_sha256"] == "ab" * 32
    assert load_weights(path.with_suffix(".json"))[1] == card  # the card's path works too


def test_the_same_network_saved_again_is_the_same_file(saved, tmp_path):
    # The model's identity in catalogs and cards is its file's sha256: a network saved twice must
    # hash alike (safetensors writes metadata in hash-map order, which varies between saves).
    model, path = saved
    again = {file_sha256(save_weights(model, tmp_path / f"again{i}", overrides=TINY)) for i in range(12)}
    assert again == {file_sha256(path)}


def test_a_changed_weights_file_is_refused(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        load_weights(path)


def test_a_missing_card_is_refused(saved):
    _, path = saved
    path.with_suffix(".json").unlink()
    with pytest.raises(WeightsIntegrityError, match="card .* is missing"):
        load_weights(path)


@pytest.mark.parametrize("field, value, named", [
    ("class_names", ["STAR", "QSO", "GALAXY"], "class_names"),
    ("grid", {"n_pixels": 3000, "wave_min": 3690.0, "wave_max": 9100.0, "spacing": "log10",
              "wavelengths": "vacuum"}, "grid.n_pixels"),
    ("preset", "resnet50", "preset"),
    ("config", "growth_rate", "config.growth_rate"),
])
def test_a_card_that_does_not_match_the_code_is_refused_naming_the_field(saved, field, value, named):
    _, path = saved
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    if field == "config":
        card["config"]["growth_rate"] = 99  # e.g. a preset whose defaults changed since training
    else:
        card[field] = value
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelCardMismatch) as err:
        load_weights(path)
    assert named in err.value.mismatches and named in str(err.value)


def test_tensors_that_do_not_fit_the_card_are_named(saved, tmp_path):
    model, path = saved
    other = build_model("fast", **{**TINY, "growth_rate": 6})
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, path)
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["weights_sha256"] = file_sha256(path)
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelCardMismatch, match="shape"):
        load_weights(path)


def test_unknown_shipped_name_says_what_to_do():
    with pytest.raises(FileNotFoundError, match="no shipped weights named 'no-such-model'"):
        resolve_weights("no-such-model")


def test_classifier_probabilities_temperature_prior_and_cam(saved):
    model, path = saved
    x = synthetic_spectra(3)[0]
    flat = Classifier.load(path, device="cpu", target_prior=None)
    survey = Classifier.load(path, device="cpu")
    assert flat.name == model_id(read_card(path))  # as the catalog names it: weights, temperature, prior
    p_flat, p_survey = flat.predict_proba(x), survey.predict_proba(x)
    assert p_flat.shape == (9, 3) and p_flat.dtype == np.float32
    np.testing.assert_allclose(p_flat.sum(axis=1), 1.0, atol=1e-6)
    logits = batched_logits(model, x).astype(np.float64)
    expected = np.exp(logits / 1.7) / np.exp(logits / 1.7).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p_flat, expected, atol=1e-6)
    reweighted = expected * np.array(SURVEY_PRIOR) * 3
    np.testing.assert_allclose(p_survey, reweighted / reweighted.sum(axis=1, keepdims=True), atol=1e-6)
    small_batches = Classifier(model, flat.card, device="cpu", target_prior=None, max_batch=2)
    np.testing.assert_allclose(small_batches.predict_proba(x), p_flat, atol=1e-6)
    cam = flat.cam(x[:2])
    assert cam.shape == (2, 2600) and cam.dtype == np.float32 and cam.min() >= 0 and cam.max() <= 1
    with pytest.raises(ValueError, match="2600"):
        flat.predict_proba(np.zeros((2, 100), np.float32))
