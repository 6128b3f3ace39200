"""``lamost-classify run`` refuses what it cannot do safely with one line, a non-zero exit and no
traceback: an output path it cannot use, a directory another run holds, a catalog made with other
settings or another model card, stray files, a broken manifest, tampered weights, an unknown release.
None of these tests starts a cluster: every refusal comes before one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lamost_classify.cli import main
from lamost_classify.mocks.release import write_release
from lamost_classify.mocks.simulate import simulate
from lamost_classify.model.densenet import build_model
from lamost_classify.model.weights import read_card, save_weights
from lamost_classify.pipeline.lock import LOCK_FILE, CatalogLocked, catalog_lock
from lamost_classify.contract import MANIFEST_FILE, model_id
from lamost_classify.pipeline.manifest import Manifest
from lamost_classify.pipeline.plan import make_plan
from lamost_classify.pipeline.arguments import ModelArguments, RunArguments
from lamost_classify.pipeline.run import discover, run_settings


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("release")
    write_release(simulate(6, seed=3, class_mix="balanced", chunk_size=6), root, seed=3)
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    widths = {"growth_rate": 4, "branch_channels": 2, "stem_channels": 4, "n_dense_blocks": 2}
    return save_weights(build_model("fast", **widths), tmp_path_factory.mktemp("model") / "tiny.safetensors",
                        name="tiny", overrides=widths)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", *args])
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, *phrases: str) -> str:
    assert code != 0, output
    assert "Traceback" not in output, output
    errors = [ln for ln in output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, output
    for phrase in phrases:
        assert phrase in errors[0], output
    return errors[0]


def base_args(release: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["--input", str(release), "--output", str(out), "--model", str(model), "--batch-size", "4",
            "--workers", "1", "--device", "cpu", "--no-progress", *extra]


def write_half_done_manifest(release: Path, model: Path, out: Path, prior: tuple[float, ...] | None = None) -> None:
    """The manifest a run of ``base_args`` would have left after its first batch."""
    args = RunArguments(output=out, inputs=[str(release)], batch_size=4,
                        model=ModelArguments(str(model), device="cpu", prior=prior))
    plan = make_plan(discover(args), 4)
    card = read_card(Path(model))
    settings = run_settings(args)
    out.mkdir(parents=True, exist_ok=True)
    Manifest(plan.fingerprint, model_id(card), len(plan), 4, plan.n_batches, "custom", finished=[0],
             settings=settings).save(out)


def test_output_is_a_file_or_under_a_file(release, model, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert_one_line_error(*invoke(*base_args(release, model, a_file)), "is a file, not a directory")
    assert_one_line_error(*invoke(*base_args(release, model, a_file / "cat")), "is a file", "another --output")
    assert a_file.read_text() == "mine"


def test_output_not_writable(release, model, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere on a normal filesystem: use one that refuses even root
        target = Path("/sys/lamost-classify-test-catalog")
        if not Path("/sys").is_dir():
            pytest.skip("no /sys to stand in for a read-only place")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / "cat"
    assert_one_line_error(*invoke(*base_args(release, model, target)), "cannot be written", "choose a directory")


def test_tampered_weights(release, model, tmp_path):
    bad = tmp_path / "tiny.safetensors"
    shutil.copy(model, bad)
    shutil.copy(Path(model).with_suffix(".json"), bad.with_suffix(".json"))
    data = bytearray(bad.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert_one_line_error(*invoke(*base_args(release, bad, tmp_path / "cat")), "does not match", "--model")
    assert not (tmp_path / "cat").exists()


def test_second_run_refused_while_the_first_holds_the_directory(release, model, tmp_path):
    out = tmp_path / "cat"
    write_half_done_manifest(release, model, out)
    before = sorted(p.name for p in out.iterdir())
    with catalog_lock(out, command="lamost-classify run (the first)"):
        for extra in ((), ("--overwrite",)):
            line = assert_one_line_error(*invoke(*base_args(release, model, out, *extra)), "in use by another run",
                                         f"pid {os.getpid()}", socket.gethostname(), "(the first)")
            assert "since" in line
        # --overwrite deleted nothing of the live run's directory.
        assert sorted(p.name for p in out.iterdir()) == sorted([*before, LOCK_FILE])
    assert not (out / LOCK_FILE).exists()


def test_lock_of_a_dead_run_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "user": "x",
                                                  "since": "earlier", "command": "killed run"}))
    with catalog_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_lock_of_a_run_on_another_host_names_the_file_to_delete(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "node-17", "pid": 4242, "user": "ana",
                                                  "since": "2026-11-30 20:00:00 UTC", "command": "run ..."}))
    with pytest.raises(CatalogLocked, match="node-17, pid 4242, user ana") as info:
        with catalog_lock(tmp_path):
            pass
    assert str(tmp_path / LOCK_FILE) in str(info.value)


def test_empty_lock_file_is_refused_while_fresh_and_taken_over_when_old(tmp_path):
    lock = tmp_path / LOCK_FILE
    lock.write_text("")
    with pytest.raises(CatalogLocked, match="try again"):
        with catalog_lock(tmp_path):
            pass
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with catalog_lock(tmp_path):
        pass


def test_resume_with_another_prior_is_refused(release, model, tmp_path):
    out = tmp_path / "cat"
    write_half_done_manifest(release, model, out)
    manifest_before = (out / MANIFEST_FILE).read_text()
    assert_one_line_error(*invoke(*base_args(release, model, out, "--prior", "1,1,1")), "--prior differs",
                          "0.333333,0.333333,0.333333 now", "--overwrite")
    assert_one_line_error(*invoke(*base_args(release, model, out, "--precision", "bf16")), "--precision differs",
                          "auto before, bf16 now")
    assert (out / MANIFEST_FILE).read_text() == manifest_before


def test_card_edited_by_hand_is_another_model(release, model, tmp_path):
    weights = tmp_path / "tiny.safetensors"
    shutil.copy(model, weights)
    shutil.copy(Path(model).with_suffix(".json"), weights.with_suffix(".json"))
    out = tmp_path / "cat"
    write_half_done_manifest(release, weights, out)
    card_file = weights.with_suffix(".json")
    card = json.loads(card_file.read_text())
    old_id = model_id(card)
    card["temperature"] = 1000.0  # the weights are untouched: their sha256 still matches the card
    card_file.write_text(json.dumps(card))
    assert model_id(card) != old_id
    assert_one_line_error(*invoke(*base_args(release, weights, out)), "model differs", old_id)


def test_stray_file_in_parquet_is_named(release, model, tmp_path):
    out = tmp_path / "cat"
    write_half_done_manifest(release, model, out)
    (out / "parquet").mkdir()
    (out / "parquet" / "batch-000000.parquet").write_bytes(b"not read: only listed")
    (out / "parquet" / "batch-000000 (copy).parquet").write_bytes(b"x")
    (out / "parquet" / "batch-000099.parquet").write_bytes(b"x")  # not a batch of this plan (2 batches)
    line = assert_one_line_error(*invoke(*base_args(release, model, out)), "'batch-000000 (copy).parquet'",
                                 "'batch-000099.parquet'", "move them out")
    assert "'batch-000000.parquet'" not in line


@pytest.mark.parametrize("text,phrase", [('{\n "fingerprint": "ab', "is corrupt (Unterminated string"),
                                         ('{"fingerprint": "ab"}', "is incomplete (no batch_size"),
                                         ("[]", "not a run manifest")])
def test_broken_manifest_is_named(release, model, tmp_path, text, phrase):
    out = tmp_path / "cat"
    out.mkdir()
    (out / MANIFEST_FILE).write_text(text)
    assert_one_line_error(*invoke(*base_args(release, model, out)), str(out / MANIFEST_FILE), phrase, "--overwrite")


@pytest.mark.parametrize("name", ["smaple", "DR55"])
def test_unknown_release_lists_the_valid_names(name, tmp_path):
    code, output = invoke("--release", name, "--data-root", str(tmp_path), "--output", str(tmp_path / "cat"))
    assert code == 2 and "Traceback" not in output, output
    assert f"unknown release '{name}'" in output and "DR13" in output and "sample" in output
    assert not (tmp_path / "cat").exists()
