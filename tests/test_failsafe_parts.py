"""The fail-safe's per-batch work without Dask: splitting, putting a batch back together from parts with
one spectrum lost at reading and one at classifying, and the last-resort write when assembling fails."""

from __future__ import annotations

import errno

import pyarrow.parquet as pq
import pytest
from test_pipeline_stages import FakeModel, small_inputs  # noqa: F401 - small_inputs is a fixture

from lamost_classify.pipeline import failsafe, stages
from lamost_classify.pipeline.catalog import create_arrays
from lamost_classify.pipeline.flags import Flag
from lamost_classify.pipeline.plan import make_plan


def test_split_covers_the_batch_in_order():
    plan = make_plan([f"f{i}" for i in range(23)], batch_size=10)
    batch = plan.batch(2)
    for parts in (None, 8, 2, 100):
        pieces = failsafe.split(batch, parts)
        assert all(p.index == 2 for p in pieces)
        assert [s for p in pieces for s in p.sources] == list(batch.sources)
        assert [(p.start, p.stop) for p in pieces][0][0] == batch.start and pieces[-1].stop == batch.stop
    assert len(failsafe.split(batch)) == 3 and len(failsafe.split(plan.batch(0), 4)) == 4


def test_assembled_batch_loses_only_the_failed_spectra(small_inputs, tmp_path):  # noqa: F811
    plan = make_plan(small_inputs[:7], batch_size=7)
    out = tmp_path / "cat"
    out.mkdir()
    create_arrays(out, len(plan), plan.batch_size, save_flux=False, save_cam=False)
    batch = plan.batch(0)
    outcomes = []
    for part in failsafe.split(batch):
        records = stages.read_and_prepare(part)
        if part.start == 2:  # its worker died reading it
            outcomes.append(failsafe.PartOutcome(part, None, None, "read failed: the worker process died"))
        elif part.start == 5:  # read, then the network failed on it
            outcomes.append(failsafe.PartOutcome(part, records, None, "classify failed: RuntimeError: boom"))
        else:
            outcomes.append(failsafe.PartOutcome(part, records, stages.classify(records, FakeModel())))
    outcomes.reverse()  # parts arrive in any order
    assert failsafe.write_assembled(batch, outcomes, "fake@000000000000", out, "test") == 7
    rows = pq.read_table(out / "parquet").sort_by("row").to_pylist()
    assert [r["source"] for r in rows] == small_inputs[:7]
    lost = {r["row"]: r for r in rows if r["flags"] & Flag.INFERENCE_FAILED}
    assert set(lost) == {2, 5}
    assert lost[2]["flags"] & Flag.UNREADABLE and lost[2]["error"] == "read failed: the worker process died"
    assert not lost[5]["flags"] & Flag.UNREADABLE and lost[5]["obsid"] == 1005  # what was read is kept
    assert lost[5]["error"] == "classify failed: RuntimeError: boom" and lost[5]["class"] is None
    assert all(r["class"] is not None for r in rows if r["row"] not in lost)


def test_assembly_that_fails_still_writes_every_row_and_a_full_disk_is_raised(small_inputs, tmp_path,  # noqa: F811
                                                                             monkeypatch):
    plan = make_plan(small_inputs[:3], batch_size=3)
    out = tmp_path / "cat"
    out.mkdir()
    create_arrays(out, len(plan), plan.batch_size, save_flux=False, save_cam=False)
    batch = plan.batch(0)
    missing_a_part = [failsafe.PartOutcome(failsafe.split(batch)[0], None, None, "x")]
    assert failsafe.write_assembled(batch, missing_a_part, "m", out, "test") == 3
    rows = pq.read_table(out / "parquet").to_pylist()
    assert all(r["flags"] & Flag.INFERENCE_FAILED and r["error"].startswith("write failed: ValueError") for r in rows)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stages, "write", full)
    with pytest.raises(OSError, match="No space"):
        failsafe.write_assembled(batch, missing_a_part, "m", out, "test")
