"""A batch is processed in chunks: the same catalog rows as the staged path, memory that does not grow
with the batch size, per-stage timings in the summary, and workers that keep freed memory for reuse."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from lamost_classify.mocks.release import write_release
from lamost_classify.mocks.simulate import simulate
from lamost_classify.pipeline import stages
from lamost_classify.pipeline.catalog import create_arrays
from lamost_classify.pipeline.graph import GraphResult
from lamost_classify.pipeline.plan import iter_inputs, make_plan
from lamost_classify.pipeline.readers import read_batch
from lamost_classify.pipeline.run import describe_stages, stage_timings


class RowModel:
    """A model whose output for a spectrum depends on that spectrum only; it records its call sizes."""

    name = "row-model"
    max_batch = 8

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_proba_and_balanced(self, flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(flux))
        z = np.stack([flux[:, :800].mean(1), flux[:, 800:1600].mean(1), flux[:, 1600:].mean(1)], axis=1) * 5
        p = np.exp(z - z.max(1, keepdims=True))
        p = (p / p.sum(1, keepdims=True)).astype(np.float32)
        return p, p[:, ::-1].copy()

    def cam(self, flux: np.ndarray) -> np.ndarray:
        return flux.astype(np.float32)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    write_release(simulate(40, seed=3, class_mix="balanced", chunk_size=40), root, seed=3)
    (root / "20111024" / "MOCK0001" / "spec-55858-MOCK0001_sp16-250.fits.gz").write_bytes(b"\x1f\x8bbroken")
    return root


def test_chunks_write_the_rows_the_staged_path_writes(release, tmp_path, monkeypatch):
    plan = make_plan(iter_inputs([str(release)]), 41)
    staged, chunked = tmp_path / "staged", tmp_path / "chunked"
    for out in (staged, chunked):
        create_arrays(out, len(plan), plan.batch_size, save_flux=True, save_cam=True)
    batch = plan.batch(0)
    records = stages.read_and_prepare(batch, chunk=len(batch.sources))
    stages.write(records, stages.classify(records, RowModel(), with_cam=True), staged, "r", save_flux=True)
    monkeypatch.setattr(stages, "CHUNK", 16)
    model = RowModel()
    n, seconds = stages.process(batch, model, chunked, "r", save_flux=True, with_cam=True)
    assert n == 41 and max(model.calls) <= 16  # 16 = two of the model's batches of 8
    assert set(seconds) == set(stages.STAGES) and all(s > 0 for s in seconds.values())
    assert pq.read_table(chunked / "parquet").equals(pq.read_table(staged / "parquet"))
    for name in ("prob", "flux", "cam"):
        assert np.array_equal(zarr.open_group(str(chunked / "arrays.zarr"))[name][:],
                              zarr.open_group(str(staged / "arrays.zarr"))[name][:], equal_nan=True)


def traced_peak(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_of_a_batch_does_not_grow_with_its_size(release, tmp_path, monkeypatch):
    """Traced Python and numpy memory (the reader's gunzip reserves a large buffer it hardly touches, so
    the files themselves are read once, and copies handed out)."""
    spectrum = next(s for s in read_batch(sorted(map(str, release.rglob("spec-*.fits.gz")))) if s.flux.size)
    monkeypatch.setattr(stages, "read_sources", lambda sources: [
        replace(spectrum, flux=spectrum.flux.copy(), ivar=spectrum.ivar.copy(), andmask=spectrum.andmask.copy(),
                wavelength=spectrum.wavelength.copy(), meta=dict(spectrum.meta)) for _ in sources])
    monkeypatch.setattr(stages, "CHUNK", 8)
    small, large = make_plan(iter_inputs([str(release)]), 8), make_plan(iter_inputs([str(release)]), 40)
    for plan, out in ((small, tmp_path / "small"), (large, tmp_path / "large")):
        create_arrays(out, len(plan), plan.batch_size, save_flux=False, save_cam=False)
    stages.process(small.batch(0), RowModel(), tmp_path / "small", "r")  # imports and caches out of the count
    peak_small = traced_peak(lambda: stages.process(small.batch(0), RowModel(), tmp_path / "small", "r"))
    peak_large = traced_peak(lambda: stages.process(large.batch(0), RowModel(), tmp_path / "large", "r"))
    staged_large = traced_peak(lambda: stages.read_and_prepare(large.batch(0), chunk=40))
    assert peak_large < 1.5 * peak_small, (peak_small, peak_large)
    assert staged_large > 2 * peak_small  # what a batch read whole costs: the test can tell the difference


def test_stage_timings_are_per_core_rates_over_the_timed_spectra():
    result = GraphResult(timed_spectra=1000)
    result.stage_seconds.update({"read": 2.0, "prepare": 1.0, "infer": 1.5, "write": 0.5})
    times = stage_timings(result)
    assert times["stage_seconds"] == {"read": 2.0, "prepare": 1.0, "infer": 1.5, "write": 0.5}
    assert times["stage_spectra_per_s"] == {"read": 500.0, "prepare": 1000.0, "infer": 666.7, "write": 2000.0,
                                            "all": 200.0}
    assert describe_stages(times).endswith("all stages 200/s per core")
    assert stage_timings(GraphResult()) == {}


FAULTS = """
import resource, sys
import numpy as np
from lamost_classify.model.runtime import keep_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        np.ones(2**20)  # 8 MB, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
before = faults()
assert keep_freed_memory()
faults()
print(before, faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_workers_keep_freed_memory_under_dasks_allocator_settings():
    """Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536: each freed block goes back to the OS and
    the next one is faulted in again, page by page. keep_freed_memory stops that."""
    env = {"MALLOC_TRIM_THRESHOLD_": "65536", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert before > 50 * 100 and after < before / 20, (before, after)
