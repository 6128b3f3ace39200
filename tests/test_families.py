"""mocks/families.py: the registry, the interface check, and every family that has landed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lamost_classify.mocks import families
from lamost_classify.mocks.families import COMMON_TRUTH, FamilyError, check_chunk, generate
from lamost_classify.mocks.instrument import N_NATIVE
from lamost_classify.mocks.simulate import MockChunk, simulate
from script_loader import load_script

REPO = Path(__file__).resolve().parents[1]


def _landed(family: str) -> bool:
    module = families.FAMILIES[family].partition(":")[0].lstrip(".")
    return (REPO / "mocks" / f"{module}.py").exists()


def test_registry_names_the_three_families_and_refuses_others():
    assert set(families.FAMILIES) == {"survey", "eigen", "physical"}
    with pytest.raises(FamilyError, match="unknown mock family 'nope'.*survey"):
        list(generate("nope", 2, 0))


def test_a_family_that_cannot_be_imported_leaves_the_others_working(monkeypatch):
    monkeypatch.setitem(families.FAMILIES, "broken", ".no_such_family_module:simulate")
    with pytest.raises(FamilyError, match="'broken' could not be loaded"):
        list(generate("broken", 2, 0))
    chunk = next(generate("survey", 2, 0))
    assert len(chunk) == 2


def test_survey_family_is_mocks_simulate_unchanged_plus_the_family_column():
    kwargs = dict(class_mix=(1 / 3, 1 / 3, 1 / 3), snr_distribution="loguniform", snr_range=(2.0, 100.0))
    ours = MockChunk.concat(list(generate("survey", 12, 5, start=3, chunk_size=5, **kwargs)))
    theirs = MockChunk.concat(list(simulate(12, 5, start=3, **kwargs)))
    np.testing.assert_array_equal(ours.flux, theirs.flux)
    np.testing.assert_array_equal(ours.truth["id"], theirs.truth["id"])
    assert (ours.truth["family"] == "survey").all()
    assert set(theirs.truth) | {"family"} == set(ours.truth)


def _chunk(n: int = 3) -> MockChunk:
    truth = {"id": np.arange(n, dtype=np.int64), "class": np.array(["STAR"] * n), "subclass": np.array(["G5"] * n),
             "template": np.array(["t"] * n), "z": np.zeros(n), "snr_g": np.ones(n, np.float32),
             "snr_r": np.ones(n, np.float32), "resolution": np.full(n, 1800, np.float32), "family": np.array(["x"] * n)}
    return MockChunk(np.ones((n, N_NATIVE), np.float32), np.ones((n, N_NATIVE), np.float32),
                     np.zeros((n, N_NATIVE), np.int32), truth)


def test_check_chunk_names_what_breaks_the_interface():
    check_chunk("x", _chunk())
    bad = _chunk()
    del bad.truth["snr_r"]
    with pytest.raises(FamilyError, match="lacks the columns \\['snr_r'\\]"):
        check_chunk("x", bad)
    bad = _chunk()
    bad.flux = bad.flux.astype(np.float64)
    with pytest.raises(FamilyError, match="flux is float64"):
        check_chunk("x", bad)
    bad = _chunk()
    bad.truth["class"] = np.array(["STAR", "UNKNOWN", "QSO"])
    with pytest.raises(FamilyError, match="UNKNOWN"):
        check_chunk("x", bad)
    bad = _chunk()
    bad.truth["z"] = np.zeros(2)
    with pytest.raises(FamilyError, match="'z'"):
        check_chunk("x", bad)
    with pytest.raises(FamilyError, match="names another family"):
        check_chunk("y", _chunk())


@pytest.mark.parametrize("family", sorted(families.FAMILIES))
def test_every_landed_family_keeps_the_interface(family):
    """Checked chunks, all three classes, ids start+i, and the same mocks however the run is chunked."""
    if not _landed(family):
        pytest.skip(f"mocks/{families.FAMILIES[family].split(':')[0].lstrip('.')}.py has not landed")
    kwargs = dict(class_mix=(1 / 3, 1 / 3, 1 / 3), snr_distribution="real", snr_range=(2.0, 100.0))
    try:
        whole = MockChunk.concat(list(generate(family, 24, 7, start=250, chunk_size=24, **kwargs)))
    except FileNotFoundError as exc:
        pytest.skip(f"family {family} needs ../shared: {exc}")
    pieces = MockChunk.concat(list(generate(family, 24, 7, start=250, chunk_size=5, **kwargs)))
    np.testing.assert_array_equal(whole.truth["id"], np.arange(250, 274))
    np.testing.assert_array_equal(whole.flux, pieces.flux)
    np.testing.assert_array_equal(whole.ivar, pieces.ivar)
    assert set(whole.truth["class"]) == {"STAR", "GALAXY", "QSO"}
    tail = MockChunk.concat(list(generate(family, 10, 7, start=264, **kwargs)))
    np.testing.assert_array_equal(tail.flux, whole.flux[14:])
    assert np.isfinite(whole.flux).all() and (whole.ivar >= 0).all()
    assert set(COMMON_TRUTH) <= set(whole.truth)


def _make_training_set():
    return load_script("training/make_training_set.py")


def test_lofo_sets_are_made_by_the_family_and_say_so(tmp_path):
    mts = _make_training_set()
    assert {"lofo_train", "lofo_val", "lofo_test", "lofo_test_snr"} <= set(mts.SETS)
    part = mts.shard(("survey", "lofo_test_snr", 0, 9, mts.SETS["lofo_test_snr"][1], "real", "balanced", "loguniform"))
    assert part["flux"].shape == (9, 2600)
    assert part["truth"]["family"] == ["survey"] * 9
    with pytest.raises(SystemExit, match="no 'eigen' version"):
        mts.make_set("train_analytic", tmp_path, 1, family="eigen")


def test_test_sets_keep_the_noise_the_published_class_is_fitted_with(tmp_path):
    """A test set is scored as the catalog publishes (the class takes a redshift fit), so it keeps each
    spectrum's ivar and pedestal as the pipeline prepares them; a training set keeps only the flux."""
    from lamost_classify.mocks.families import generate
    from lamost_classify.mocks.instrument import WAVELENGTH
    from lamost_classify.pipeline.grid import prepare_arrays

    mts = _make_training_set()
    mts.make_set("lofo_test", tmp_path, 1, family="survey", n=4)
    mts.make_set("lofo_train", tmp_path, 1, family="survey", n=4)
    size, seed, _, _, snr = mts.SETS["lofo_test"]
    chunk = next(iter(generate("survey", 4, seed, class_mix=(1 / 3, 1 / 3, 1 / 3), snr_distribution=snr,
                               snr_range=mts.REAL_SNR_RANGE)))
    prepared = prepare_arrays(WAVELENGTH, chunk.flux, chunk.ivar, chunk.andmask)
    np.testing.assert_array_equal(np.load(tmp_path / "lofo_test_flux.npy"), prepared.flux)
    np.testing.assert_array_equal(np.load(tmp_path / "lofo_test_ivar.npy"), prepared.ivar)
    np.testing.assert_array_equal(np.load(tmp_path / "lofo_test_pedestal.npy"), prepared.pedestal)
    assert (tmp_path / "lofo_train_flux.npy").exists() and not (tmp_path / "lofo_train_ivar.npy").exists()
