"""A run's arguments are checked once, when built: each bad value is one InvalidArgument naming the option,
before any cluster or output directory; ``auto`` prior is resolved once, from the card, and travels to the
workers resolved."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import pytest
from click.testing import CliRunner

from lamost_classify.cli import main
from lamost_classify.model.weights import read_card
from lamost_classify.pipeline.arguments import ClusterArguments, InvalidArgument, ModelArguments, RunArguments
from lamost_classify.contract import model_id


@pytest.fixture(scope="module")
def shipped() -> ModelArguments:
    return ModelArguments(device="cpu")


@pytest.mark.parametrize("options,phrase", [
    ({"device": "gpu"}, "--device 'gpu'"),
    ({"device": "meta"}, "--device 'meta'"),
    ({"precision": "int8"}, "unknown precision 'int8'"),
    ({"backend": "tensorrt"}, "unknown back-end 'tensorrt'"),
    ({"backend": "onnx", "precision": "bf16"}, "onnx back-end runs fp32 only"),
    ({"backend": "onnx", "device": "cuda"}, "onnx back-end runs on the CPU only"),
    ({"prior": (1.0, 2.0)}, "--prior: give three positive numbers"),
    ({"prior": (1.0, 0.0, 1.0)}, "--prior: give three positive numbers"),
    ({"prior": (1.0, float("nan"), 1.0)}, "--prior: give three positive numbers"),
])
def test_bad_model_options_are_one_clear_error(options, phrase):
    with pytest.raises(InvalidArgument) as info:
        ModelArguments(**options)
    assert phrase in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("options,phrase", [
    ({"kind": "kubernetes"}, "--cluster 'kubernetes'"),
    ({"workers": 0}, "--workers 0"),
    ({"cpu_jobs": -1}, "cannot be negative"),
    ({"gpu_jobs": -2}, "cannot be negative"),
    ({"adapt": (5, 2)}, "--adapt 5:2"),
    ({"adapt": (-1, 2)}, "--adapt -1:2"),
    ({"wait_timeout": 0}, "--wait-timeout 0"),
    ({"kind": "slurm", "cpu_jobs": 0, "gpu_jobs": 0}, "no worker jobs asked for"),
])
def test_bad_cluster_options_are_one_clear_error(options, phrase):
    with pytest.raises(InvalidArgument) as info:
        ClusterArguments(**options)
    assert phrase in str(info.value) and "\n" not in str(info.value)


def test_a_running_scheduler_needs_no_slurm_checks():
    assert ClusterArguments(scheduler="tcp://head:8786", kind="slurm", cpu_jobs=0).scheduler == "tcp://head:8786"


@pytest.mark.parametrize("options,phrase", [
    ({}, "give --release (with --data-root) or --input"),
    ({"release": "smaple"}, "did you mean 'sample'"),
    ({"release": "DR5"}, "--release DR5 needs --data-root"),
    ({"inputs": ["x"], "batch_size": 0}, "--batch-size 0"),
])
def test_bad_run_options_are_one_clear_error(shipped, tmp_path, options, phrase):
    with pytest.raises(InvalidArgument) as info:
        RunArguments(output=tmp_path / "cat", model=shipped, **options)
    assert phrase in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "cat").exists()


def test_release_as_a_label_for_inputs_needs_no_data_root(shipped, tmp_path):
    args = RunArguments(output=tmp_path, model=shipped, release="DR5", inputs=["spectra/"])
    assert args.release_name == "DR5" and not args.is_sample
    assert RunArguments(output=tmp_path, model=shipped, release="Sample").is_sample
    assert RunArguments(output=tmp_path, model=shipped, inputs=["x"]).release_name == "custom"


def test_prior_is_normalised_and_auto_is_the_cards_choice(shipped, weights):
    card = read_card(weights)
    assert shipped.target_prior == tuple(card["metrics"]["default_target_prior"])
    assert shipped.name == model_id(card)
    given = ModelArguments(str(weights), device="cpu", prior=(2, 1, 1))
    assert given.target_prior == given.prior == (0.5, 0.25, 0.25)


def test_auto_prior_is_resolved_once_and_travels_resolved(weights, monkeypatch):
    args = ModelArguments(str(weights), device="cpu")
    resolved = args.target_prior
    # The card changes after the run was set up: workers still use the prior the run recorded.
    card = json.loads(weights.with_suffix(".json").read_text())
    card["metrics"]["default_target_prior"] = [0.2, 0.3, 0.5]
    weights.with_suffix(".json").write_text(json.dumps(card))
    # What a worker receives is the resolved arguments, not a recipe to resolve them again.
    calls = []
    monkeypatch.setattr("lamost_classify.model.weights.load_weights",
                        lambda *a, **k: calls.append(a) or pytest.fail("weights reloaded while unpickling"))
    on_worker = pickle.loads(pickle.dumps(args))
    assert on_worker.target_prior == resolved and not calls
    monkeypatch.undo()
    classifier = on_worker.load()
    assert classifier.target_prior == resolved != (0.2, 0.3, 0.5)
    assert classifier.name == model_id(card)  # the id names the card as loaded


def test_load_runs_the_chosen_precision_and_backend(weights):
    classifier = ModelArguments(str(weights), device="cpu", precision="bf16").load()
    assert (classifier.precision, classifier.backend, classifier.device.type) == ("bf16", "torch", "cpu")
    assert ModelArguments(str(weights), device="auto", backend="onnx").load().device.type == "cpu"


def test_tampered_weights_stop_the_build(weights):
    from lamost_classify.model.weights import WeightsIntegrityError

    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="does not match"):
        ModelArguments(str(weights))


def test_replace_validates_again(shipped):
    with pytest.raises(InvalidArgument, match="unknown precision"):
        replace(shipped, precision="fp64")


@pytest.mark.parametrize("args,phrase", [
    (["--prior", "1,2"], "--prior: give three positive numbers"),
    (["--workers", "0"], "--workers 0"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--backend", "onnx", "--precision", "fp16"], "onnx back-end runs fp32 only"),
])
def test_the_command_turns_them_into_one_line(tmp_path, args, phrase):
    result = CliRunner().invoke(main, ["run", "--input", str(tmp_path), "--output", str(tmp_path / "cat"), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and phrase in errors[0], result.output
    assert not (tmp_path / "cat").exists()
