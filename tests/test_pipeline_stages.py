"""The per-batch stages and the plan/manifest, without Dask."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from model_fixtures import TINY

from lamost_classify import SURVEY_PRIOR
from lamost_classify.contract import MANIFEST_FILE
from lamost_classify.mocks.writers import write_lamost_fits
from lamost_classify.model.calibration import adjust_to_prior, softmax
from lamost_classify.model.densenet import build_model
from lamost_classify.model.inference import Classifier
from lamost_classify.pipeline import stages
from lamost_classify.pipeline.catalog import create_arrays
from lamost_classify.pipeline.flags import UNUSABLE_FLUX_ERRORS, Flag
from lamost_classify.pipeline.manifest import Manifest, ResumeRefused, finished_batches
from lamost_classify.pipeline.plan import Batch, discover_inputs, make_plan
from lamost_classify.pipeline.schema import SCHEMA

NATIVE = 10 ** (3.5682 + 1e-4 * np.arange(3909))


class FakeModel:
    """Calls a spectrum QSO when its blue half is brighter than its red half: enough to check plumbing.
    Its balanced probabilities differ from the published ones but pick the same class."""

    name = "fake@000000000000"

    def predict_proba_and_balanced(self, flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blue = flux[:, :1300].mean(axis=1) > flux[:, 1300:].mean(axis=1)
        p = np.where(blue[:, None], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05])
        balanced = np.where(blue[:, None], [0.2, 0.2, 0.6], [0.8, 0.1, 0.1])
        return p.astype(np.float32), balanced.astype(np.float32)

    def cam(self, flux: np.ndarray) -> np.ndarray:
        return np.clip(flux, 0, 1)


def write_spectrum(path, slope: float, obsid: int, **header):
    rng = np.random.default_rng(obsid)
    flux = (100 + slope * (NATIVE - 6000) / 1000 + rng.normal(0, 1, NATIVE.size)).astype(np.float32)
    ivar = np.ones_like(flux)
    hdr = {"OBSID": obsid, "RA": 10.0 + obsid * 0.01, "DEC": -5.0, "DESIG": f"LAMOST J{obsid:06d}",
           "LMJD": 55859, "PLANID": "TEST01", "SPID": 1, "FIBERID": obsid % 250, "CLASS": "STAR", "Z": 0.0,
           "SNRG": 20.0, "SNRR": 30.0, "TELESCOP": "LAMOST", **header}
    write_lamost_fits(str(path), "v2", NATIVE, flux, ivar, np.zeros(flux.size, np.int32), header=hdr)


@pytest.fixture
def small_inputs(tmp_path):
    files = []
    for i in range(7):
        p = tmp_path / f"spec-55859-TEST01_sp01-{i:03d}.fits.gz"
        write_spectrum(p, slope=-20 if i % 3 == 0 else 20, obsid=1000 + i)
        files.append(str(p))
    bad = tmp_path / "spec-55859-TEST01_sp01-998.fits.gz"
    bad.write_bytes(b"this is not a FITS file")
    empty = tmp_path / "spec-55859-TEST01_sp01-999.fits"
    empty.write_bytes(b"")
    return files + [str(bad), str(empty)]


def test_one_batch_through_every_stage(small_inputs, tmp_path):
    plan = make_plan(small_inputs, batch_size=4)
    assert plan.n_batches == 3
    out = tmp_path / "cat"
    out.mkdir()
    create_arrays(out, len(plan), plan.batch_size, save_flux=True, save_cam=True)
    total = 0
    for batch in plan.batches():
        records = stages.read_and_prepare(batch)
        result = stages.classify(records, FakeModel(), with_cam=True)
        total += stages.write(records, result, out, "test", save_flux=True)
    assert total == len(small_inputs)
    assert finished_batches(out) == {0, 1, 2}
    table = pq.read_table(out / "parquet").sort_by("row")
    assert table.schema.equals(SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    assert [r["source"] for r in rows] == small_inputs
    assert [r["row"] for r in rows] == list(range(len(small_inputs)))
    good, bad = rows[:7], rows[7:]
    assert [r["class"] for r in good] == ["QSO" if i % 3 == 0 else "STAR" for i in range(7)]
    assert all(r["obsid"] == 1000 + i for i, r in enumerate(good))
    for r in bad:
        assert r["class"] is None and r["prob_star"] is None
        assert r["flags"] & Flag.UNREADABLE
        assert r["error"]
    for r in good:
        assert abs(r["prob_star"] + r["prob_galaxy"] + r["prob_qso"] - 1) < 1e-5
        assert r["confidence"] == max(r["prob_star"], r["prob_galaxy"], r["prob_qso"])
        balanced = [r["prob_star_balanced"], r["prob_galaxy_balanced"], r["prob_qso_balanced"]]
        assert balanced == pytest.approx([0.2, 0.2, 0.6] if r["class"] == "QSO" else [0.8, 0.1, 0.1])
        assert not r["flags"] & Flag.PRIOR_DOMINATED
    for r in bad:
        assert r["prob_star_balanced"] is None and not r["flags"] & Flag.PRIOR_DOMINATED

    import zarr

    root = zarr.open_group(str(out / "arrays.zarr"), mode="r")
    prob = root["prob"][:]
    assert np.isnan(prob[7:]).all() and np.isfinite(prob[:7]).all()
    assert np.allclose(prob[:7, 2], [r["prob_qso"] for r in good])
    assert root["flux"].shape == (9, 2600) and root["cam"].shape == (9, 2600)


def test_rewriting_a_batch_is_idempotent(small_inputs, tmp_path):
    plan = make_plan(small_inputs, batch_size=5)
    out = tmp_path / "cat"
    out.mkdir()
    create_arrays(out, len(plan), plan.batch_size, save_flux=False, save_cam=False)
    batch = plan.batch(1)
    for _ in range(2):  # a retried task writes the same batch twice
        records = stages.read_and_prepare(batch)
        stages.write(records, stages.classify(records, FakeModel()), out, "test")
    assert len(list((out / "parquet").iterdir())) == 1
    assert pq.read_table(out / "parquet").num_rows == batch.stop - batch.start


def test_failed_batch_still_gives_every_row(small_inputs, tmp_path):
    plan = make_plan(small_inputs, batch_size=9)
    out = tmp_path / "cat"
    out.mkdir()
    create_arrays(out, len(plan), plan.batch_size, save_flux=False, save_cam=False)
    batch = plan.batch(0)
    records = stages.failed_batch_records(batch, "worker died")
    result = stages.Classified(prob=np.full((9, 3), np.nan, np.float32), cam=None, model="m", error="worker died")
    stages.write(records, result, out, "test")
    rows = pq.read_table(out / "parquet").to_pylist()
    assert len(rows) == 9 and all(r["error"] == "worker died" and r["class"] is None for r in rows)
    assert all(r["flags"] & Flag.INFERENCE_FAILED for r in rows)


def test_plan_fingerprint_and_resume_refusal(small_inputs):
    a = make_plan(small_inputs, 4)
    assert a.fingerprint == make_plan(list(small_inputs), 4).fingerprint
    assert a.fingerprint != make_plan(small_inputs[:-1], 4).fingerprint
    assert a.fingerprint != make_plan(small_inputs, 5).fingerprint
    m1 = Manifest(a.fingerprint, "model-a", len(a), 4, a.n_batches, "test")
    m1.check_same_run(Manifest(a.fingerprint, "model-a", len(a), 4, a.n_batches, "test"))
    with pytest.raises(ResumeRefused, match="model differs"):
        m1.check_same_run(Manifest(a.fingerprint, "model-b", len(a), 4, a.n_batches, "test"))
    b = make_plan(small_inputs[:-1], 4)
    with pytest.raises(ResumeRefused, match="input set differs"):
        m1.check_same_run(Manifest(b.fingerprint, "model-a", len(b), 4, b.n_batches, "test"))


def test_resume_refuses_a_catalog_written_with_other_columns(small_inputs, tmp_path):
    """Batches of another version's schema would not stack into one catalog: that run is not resumed."""
    a = make_plan(small_inputs, 4)
    now = Manifest(a.fingerprint, "model-a", len(a), 4, a.n_batches, "test")
    older = Manifest(a.fingerprint, "model-a", len(a), 4, a.n_batches, "test",
                     columns=[c for c in now.columns if c not in ("z_balanced", "z_err_balanced")])
    with pytest.raises(ResumeRefused, match="now added: z_balanced, z_err_balanced"):
        older.check_same_run(now)
    # a manifest from before the columns were recorded
    now.save(tmp_path)
    data = json.loads((tmp_path / MANIFEST_FILE).read_text())
    del data["columns"]
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ResumeRefused, match="other columns \\(not recorded\\)"):
        Manifest.load(tmp_path).check_same_run(now)
    now.check_same_run(Manifest(a.fingerprint, "model-a", len(a), 4, a.n_batches, "test"))


def test_resume_refuses_a_catalog_whose_classes_another_rule_published(small_inputs, tmp_path):
    """A version that publishes classes otherwise (before the QSO redshift rule, say) wrote batches whose
    class column means something else: that run is not resumed."""
    a = make_plan(small_inputs, 4)
    now = Manifest(a.fingerprint, "model-a", len(a), 4, a.n_batches, "test")
    assert "0.05" in now.class_rule
    now.save(tmp_path)
    data = json.loads((tmp_path / MANIFEST_FILE).read_text())
    del data["class_rule"]  # as written before the rule was recorded
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ResumeRefused, match="another version's rule \\(the most probable, not recorded"):
        Manifest.load(tmp_path).check_same_run(now)
    Manifest.load(tmp_path).check_same_run(Manifest.load(tmp_path))


def test_discover_inputs_kinds(small_inputs, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# my files\n" + "\n".join(small_inputs[:3]) + "\n")
    assert discover_inputs([str(listing)]) == small_inputs[:3]
    assert discover_inputs([str(tmp_path / "spec-*-00[12].fits.gz")]) == small_inputs[1:3]
    assert len(discover_inputs([str(tmp_path)])) == len(small_inputs)
    cat = tmp_path / "general.csv"
    cat.write_text("obsid,obsdate,lmjd,planid,spid,fiberid\n1,2011-10-24,55859,F5902,1,1\n")
    assert discover_inputs([str(cat)], tmp_path / "root") == [
        str(tmp_path / "root" / "20111024" / "F5902" / "spec-55859-F5902_sp01-001.fits.gz")]
    with pytest.raises(FileNotFoundError):
        discover_inputs([str(tmp_path / "nope.fits")])


class FixedLogits(Classifier):
    """The real Classifier (temperature, priors) on logits chosen by the test: pixel 0 of each
    spectrum is the index of its row in ``table``."""

    def __init__(self, table: np.ndarray, temperature: float, target_prior=SURVEY_PRIOR) -> None:
        super().__init__(build_model("fast", **TINY), {"name": "fixed", "temperature": temperature}, device="cpu",
                         target_prior=target_prior)
        self.table = np.asarray(table, np.float32)

    def logits(self, flux: np.ndarray) -> np.ndarray:
        return self.table[np.asarray(flux)[:, 0].astype(int)]


def records_for(n: int, flags: list[int] | None = None) -> stages.PreparedRecords:
    flux = np.zeros((n, 2600), np.float32)
    flux[:, 0] = np.arange(n)
    return stages.PreparedRecords(
        batch=Batch(index=0, start=0, stop=n, sources=tuple(f"s{i}" for i in range(n))),
        flux=flux, flags=np.asarray(flags or [0] * n, np.uint32), snr=np.full(n, 2.0, np.float32),
        meta=[{} for _ in range(n)], errors=[None] * n)


def test_prior_dominated_is_set_exactly_when_the_balanced_class_differs():
    temperature = 0.93
    logits = np.array([
        [0.0, 2.0, -1.0],   # the spectrum says GALAXY, the survey prior says STAR: flagged
        [0.0, 8.0, -1.0],   # GALAXY strong enough to survive the prior: not flagged
        [3.0, 0.0, 0.0],    # STAR either way: not flagged
        [0.0, -1.0, 4.0],   # the spectrum says QSO, the prior says STAR: flagged
        [0.0, 2.0, -1.0],   # as row 0, but no usable flux: no class, no flag
        [0.0, 2.0, -1.0],   # as row 0, constant flux: no class, no flag
    ])
    records = records_for(6, [0, 0, 0, 0, int(Flag.NO_FLUX), int(Flag.CONSTANT_FLUX)])
    model = FixedLogits(logits, temperature)
    rows = stages.build_table(records, stages.classify(records, model), "test").to_pylist()
    assert [r["class"] for r in rows] == ["STAR", "GALAXY", "STAR", "STAR", None, None]
    assert [bool(r["flags"] & Flag.PRIOR_DOMINATED) for r in rows] == [True, False, False, True, False, False]
    # The balanced columns are the calibrated softmax; the published ones are that adjusted to the prior.
    calibrated = softmax(logits[:4], temperature)
    balanced = [[r["prob_star_balanced"], r["prob_galaxy_balanced"], r["prob_qso_balanced"]] for r in rows[:4]]
    published = [[r["prob_star"], r["prob_galaxy"], r["prob_qso"]] for r in rows[:4]]
    np.testing.assert_allclose(balanced, calibrated, rtol=1e-6)
    np.testing.assert_allclose(published, adjust_to_prior(calibrated, SURVEY_PRIOR), rtol=1e-6)
    assert rows[0]["prob_galaxy_balanced"] > 0.5 and rows[3]["prob_qso_balanced"] > 0.5
    for r in rows[4:]:
        assert r["prob_star_balanced"] is None and r["prob_star"] is None

    # Random logits: the flag is the disagreement of the two argmaxes, row by row, both ways.
    rng = np.random.default_rng(3)
    many = rng.normal(0, 3, size=(400, 3))
    records = records_for(len(many))
    table = stages.build_table(records, stages.classify(records, FixedLogits(many, temperature)), "test")
    flagged = (table["flags"].to_numpy() & int(Flag.PRIOR_DOMINATED)) != 0
    calibrated = softmax(many, temperature)
    expected = calibrated.argmax(1) != adjust_to_prior(calibrated, SURVEY_PRIOR).argmax(1)
    assert 0 < expected.sum() < len(many)
    np.testing.assert_array_equal(flagged, expected)

    # With no target prior the published probabilities are the balanced ones: never flagged.
    flat = FixedLogits(many, temperature, target_prior=None)
    table = stages.build_table(records, stages.classify(records, flat), "test")
    assert not (table["flags"].to_numpy() & int(Flag.PRIOR_DOMINATED)).any()


def test_rows_without_a_class_say_why(tmp_path):
    n = NATIVE.size
    cases = {"masked": (np.ones(n), np.zeros(n)), "nonfinite": (np.full(n, np.nan), np.ones(n)),
             "constant": (np.full(n, 100.0), np.ones(n))}
    sources = []
    for i, (flux, ivar) in enumerate(cases.values()):
        path = tmp_path / f"spec-55859-TEST01_sp01-{i:03d}.fits.gz"
        write_lamost_fits(str(path), "v2", NATIVE, flux.astype(np.float32), ivar.astype(np.float32),
                          np.zeros(n, np.int32), header={"OBSID": i, "RA": 1.0, "DEC": 1.0, "TELESCOP": "LAMOST"})
        sources.append(str(path))
    records = stages.read_and_prepare(make_plan(sources, 10).batch(0))
    rows = stages.build_table(records, stages.classify(records, FakeModel()), "test").to_pylist()
    assert all(r["class"] is None for r in rows)
    masked, nonfinite, constant = rows
    for r in (masked, nonfinite):
        assert r["flags"] & Flag.NO_FLUX and r["error"] == UNUSABLE_FLUX_ERRORS[Flag.NO_FLUX]
    assert constant["flags"] & Flag.CONSTANT_FLUX
    assert constant["error"] == UNUSABLE_FLUX_ERRORS[Flag.CONSTANT_FLUX]
