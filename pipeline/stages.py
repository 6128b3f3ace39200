"""The per-batch work, free of Dask so it tests alone: read -> prepare -> classify -> build rows -> write.

``graph.py`` runs these functions as Dask tasks; a test (or a debugger) can call them in order on one batch.
Each stage works through a batch ``CHUNK`` spectra at a time, so a worker's memory depends on the chunk,
not on --batch-size; ``process`` runs all of them on one worker, chunk by chunk, keeping only catalog rows.
Each stage adds its seconds to the ``seconds`` of what it returns (``STAGES``), for the run's summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from lamost_classify import CLASS_NAMES

from . import catalog, grid
from .flags import LOW_CONFIDENCE, UNUSABLE, UNUSABLE_FLUX_ERRORS, Flag
from .plan import Batch
from .readers import read_batch
from .spectrum import Spectrum

# Spectra a stage handles at a time. Reading and preparing take ~0.4 MB per spectrum in flight; the
# network and the redshift fit work in their own smaller batches within it.
CHUNK = 256
STAGES = ("read", "prepare", "infer", "write")


class ProbabilityModel(Protocol):
    """What the pipeline needs of a model (lamost_classify.model.inference.Classifier provides it)."""

    name: str

    def predict_proba_and_balanced(self, flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def cam(self, flux: np.ndarray) -> np.ndarray: ...


@dataclass
class PreparedRecords:
    """Stage 1's output: compact arrays for the network plus what the catalog keeps of each spectrum."""

    batch: Batch
    flux: np.ndarray  # (B, 2600) float32 normalised
    flags: np.ndarray  # (B,) uint32
    snr: np.ndarray  # (B,) float32
    meta: list[dict[str, Any]]
    errors: list[str | None]
    ivar: np.ndarray | None = None  # (B, 2600) float32 inverse variance of ``flux``, for the redshift fit
    pedestal: np.ndarray | None = None  # (B,) float32 what the normalisation subtracted (grid.PreparedBatch)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage (``STAGES``), for the summary

    @property
    def usable(self) -> np.ndarray:
        return (self.flags & np.uint32(int(UNUSABLE))) == 0


@dataclass
class Classified:
    """Stage 2's output: probabilities for the usable rows (NaN elsewhere), optional CAM, who ran it."""

    prob: np.ndarray  # (B, 3) float32, under the target prior
    cam: np.ndarray | None
    model: str
    worker: str = ""
    error: str | None = None
    prob_balanced: np.ndarray | None = None  # (B, 3) float32 under the 1:1:1 prior; None: no probabilities
    # Redshift fit of the usable rows (model/redshift.py; NaN / None elsewhere); None: the model fits none.
    z: np.ndarray | None = None  # (B,) float32
    z_err: np.ndarray | None = None
    delta_chi2: np.ndarray | None = None
    subclass: list[str | None] | None = None
    z_balanced: np.ndarray | None = None  # (B,) float32: fitted as the balanced prior's class (z where the same)
    z_err_balanced: np.ndarray | None = None
    z_flags: np.ndarray | None = None  # (B,) int64, Flag.Z_* and NO_QSO_REDSHIFT bits
    classes: np.ndarray | None = None  # (B,) published class index (-1: none); None: the most probable
    seconds: dict[str, float] = field(default_factory=dict)  # per stage (``STAGES``), for the summary


def read_sources(sources: tuple[str, ...]) -> list[Spectrum]:
    """Read every source in order, one Spectrum each (``readers.read_batch``: ``path#row`` sources are rows
    of a Parquet table of spectra)."""
    return read_batch(list(sources))


def read_and_prepare(batch: Batch, chunk: int = CHUNK) -> PreparedRecords:
    """Stage 1: read every file of the batch and put it on the network's grid, ``chunk`` files at a time
    (what is read is dropped once on the grid). Never raises on bad input."""
    n = len(batch.sources)
    flux = np.empty((n, grid.N_PIXELS), np.float32)
    ivar = np.empty((n, grid.N_PIXELS), np.float32)
    flags, snr, pedestal = np.empty(n, np.uint32), np.empty(n, np.float32), np.empty(n, np.float32)
    meta: list[dict[str, Any]] = []
    errors: list[str | None] = []
    seconds = {"read": 0.0, "prepare": 0.0}
    for start in range(0, n, chunk):
        t = time.perf_counter()
        spectra = read_sources(batch.sources[start:start + chunk])
        seconds["read"] += time.perf_counter() - t
        t = time.perf_counter()
        prepared = grid.prepare(spectra)
        rows = slice(start, start + len(spectra))
        flux[rows], ivar[rows], flags[rows], snr[rows] = prepared.flux, prepared.ivar, prepared.flags, prepared.snr
        pedestal[rows] = prepared.pedestal
        for s in spectra:
            m = dict(s.meta)
            errors.append(m.pop("error", None))
            meta.append(m)
        seconds["prepare"] += time.perf_counter() - t
    return PreparedRecords(batch, flux, flags, snr, meta, errors, ivar, pedestal, seconds=seconds)


def chunk_step(model: ProbabilityModel) -> int:
    """Spectra classified at a time: ``CHUNK`` rounded up to a whole number of the model's own batches
    (``max_batch``), so that the network sees the same batches whatever --batch-size is."""
    model_batch = int(getattr(model, "max_batch", None) or CHUNK)
    return -(-CHUNK // model_batch) * model_batch


def classify(records: PreparedRecords, model: ProbabilityModel, with_cam: bool = False) -> Classified:
    """Stage 2: probabilities for the usable spectra of the batch (unusable rows stay NaN), a chunk
    (``chunk_step``) at a time."""
    t = time.perf_counter()
    n = len(records.flags)
    prob = np.full((n, len(CLASS_NAMES)), np.nan, np.float32)
    out = Classified(prob=prob, cam=None, model=model.name, prob_balanced=prob.copy())
    if with_cam:
        out.cam = np.full((n, grid.N_PIXELS), np.nan, np.float32)
    # A model that fits redshifts (Classifier.predict_with_redshift) does, when the batch carries its ivar.
    if hasattr(model, "predict_with_redshift") and records.ivar is not None:
        out.z, out.z_err, out.delta_chi2, out.z_balanced, out.z_err_balanced = (
            np.full(n, np.nan, np.float32) for _ in range(5))
        out.subclass, out.z_flags, out.classes = [None] * n, np.zeros(n, np.int64), np.full(n, -1, np.int64)
    step = chunk_step(model)
    usable = records.usable
    for start in range(0, n, step):
        rows = start + np.flatnonzero(usable[start:start + step])
        if len(rows):
            _classify_rows(records, rows, model, out)
    out.seconds = {"infer": time.perf_counter() - t}
    return out


def _classify_rows(records: PreparedRecords, rows: np.ndarray, model: ProbabilityModel, out: Classified) -> None:
    flux = records.flux[rows]
    if out.z is not None:
        pedestal = None if records.pedestal is None else records.pedestal[rows]
        out.prob[rows], out.prob_balanced[rows], fit = model.predict_with_redshift(flux, records.ivar[rows], pedestal)
        out.z[rows], out.z_err[rows], out.delta_chi2[rows] = fit.z, fit.z_err, fit.delta_chi2
        out.z_balanced[rows] = fit.z if fit.z_balanced is None else fit.z_balanced
        out.z_err_balanced[rows] = fit.z_err if fit.z_err_balanced is None else fit.z_err_balanced
        out.z_flags[rows] = fit.flags
        if fit.classes is not None:  # else the most probable (build_table)
            out.classes[rows] = fit.classes
        for row, label in zip(rows, fit.subclass):
            out.subclass[row] = label
    else:
        out.prob[rows], out.prob_balanced[rows] = model.predict_proba_and_balanced(flux)
    if out.cam is not None:
        out.cam[rows] = model.cam(flux)


def process(batch: Batch, model: ProbabilityModel, catalog_dir: Path, release: str, save_flux: bool = False,
            with_cam: bool = False) -> tuple[int, dict[str, float]]:
    """Stages 1-3 on one worker, a chunk at a time: only the catalog rows of the batch are kept, so memory
    is that of one chunk whatever the batch size, and no batch of spectra moves between workers. Writes
    as ``write`` does (arrays by region, then the Parquet file whose rename marks the batch done).
    Returns (rows written, seconds per stage)."""
    step = chunk_step(model)  # as classify's, so the rows match a staged run's
    seconds = dict.fromkeys(STAGES, 0.0)
    tables = []
    for start in range(0, len(batch.sources), step):
        part = Batch(batch.index, batch.start + start, min(batch.start + start + step, batch.stop),
                     batch.sources[start:start + step])
        records = read_and_prepare(part, chunk=step)
        result = classify(records, model, with_cam=with_cam)
        t = time.perf_counter()
        tables.append(build_table(records, result, release))
        catalog.write_arrays(catalog_dir, part.start, _arrays(records, result, save_flux))
        seconds["write"] += time.perf_counter() - t
        for stage, value in (*records.seconds.items(), *result.seconds.items()):
            seconds[stage] += value
    t = time.perf_counter()
    catalog.write_batch_table(catalog_dir, batch.name, pa.concat_tables(tables))
    seconds["write"] += time.perf_counter() - t
    return sum(table.num_rows for table in tables), seconds


def build_table(records: PreparedRecords, result: Classified, release: str) -> pa.Table:
    """Stage 3a: the batch's catalog rows, one per source, in the batch's order."""
    n = len(records.flags)
    flags = records.flags.astype(np.int64)
    if result.error is not None:
        flags |= int(Flag.INFERENCE_FAILED)
    prob = result.prob
    has_prob = np.isfinite(prob).all(axis=1) & ((flags & int(UNUSABLE)) == 0)
    usable_prob = np.where(has_prob[:, None], prob, -1.0)
    most_probable = np.argmax(usable_prob, axis=1)
    # the published class: the most probable, or what the class rules made of it (NO_QSO_REDSHIFT, NO_BROAD_LINE,
    # GALAXY_LINES, CARBON_BANDS, BROAD_H_ALPHA)
    best = most_probable if result.classes is None else np.where(result.classes >= 0, result.classes, most_probable)
    chosen = np.take_along_axis(usable_prob, best[:, None], axis=1)[:, 0]
    others = np.where(np.arange(prob.shape[1]) == best[:, None], -1.0, usable_prob)
    confidence = np.where(has_prob, chosen, np.nan)
    margin = np.where(has_prob, chosen - others.max(axis=1), np.nan)
    flags |= np.where(has_prob & (confidence < LOW_CONFIDENCE), int(Flag.LOW_CONFIDENCE), 0)
    balanced = np.full_like(prob, np.nan) if result.prob_balanced is None else result.prob_balanced
    has_balanced = has_prob & np.isfinite(balanced).all(axis=1)
    best_balanced = np.argmax(np.where(has_balanced[:, None], balanced, -1.0), axis=1)
    # the prior decided where the spectrum alone would not give the network's most probable class
    flags |= np.where(has_balanced & (best_balanced != most_probable), int(Flag.PRIOR_DOMINATED), 0)
    if result.z_flags is not None:
        flags |= np.where(has_prob, result.z_flags, 0)
    meta = records.meta

    def col(key: str) -> list:
        return [m.get(key) for m in meta]

    errors = [e or _flux_error(int(f)) for e, f in zip(records.errors, flags)]
    if result.error is not None:
        errors = [e or result.error for e in errors]
    columns: dict[str, Any] = {
        "obsid": col("obsid"),
        "source": list(records.batch.sources),
        "row": np.arange(records.batch.start, records.batch.stop),
        "designation": col("designation"),
        "ra": col("ra"),
        "dec": col("dec"),
        "lmjd": col("lmjd"),
        "planid": col("planid"),
        "spid": col("spid"),
        "fiberid": col("fiberid"),
        "snr_g": col("snr_g"),
        "snr_r": col("snr_r"),
        "snr_pixel": records.snr,
        "class": [CLASS_NAMES[b] if ok else None for b, ok in zip(best, has_prob)],
        "prob_star": np.where(has_prob, prob[:, 0], np.nan),
        "prob_galaxy": np.where(has_prob, prob[:, 1], np.nan),
        "prob_qso": np.where(has_prob, prob[:, 2], np.nan),
        "prob_star_balanced": np.where(has_balanced, balanced[:, 0], np.nan),
        "prob_galaxy_balanced": np.where(has_balanced, balanced[:, 1], np.nan),
        "prob_qso_balanced": np.where(has_balanced, balanced[:, 2], np.nan),
        "confidence": confidence,
        "margin": margin,
        **_redshift_columns(result, has_prob, n),
        "flags": flags,
        "lamost_class": col("lamost_class"),
        "lamost_subclass": col("lamost_subclass"),
        "lamost_z": col("lamost_z"),
        "model": [result.model] * n,
        "release": [m.get("release") or release for m in meta],
        "error": errors,
    }
    # NaN is "not measured" in the arrays; the catalog says so with a null.
    for key in ("snr_pixel", "prob_star", "prob_galaxy", "prob_qso", "prob_star_balanced", "prob_galaxy_balanced",
                "prob_qso_balanced", "confidence", "margin", "z", "z_err", "delta_chi2", "z_balanced",
                "z_err_balanced"):
        values = np.asarray(columns[key], dtype=np.float32)
        columns[key] = pa.array(values, mask=~np.isfinite(values))
    return catalog.to_table(columns)


def write(records: PreparedRecords, result: Classified, catalog_dir: Path, release: str,
          save_flux: bool = False) -> int:
    """Stage 3b: Zarr region first, then the Parquet file whose rename marks the batch done. Returns rows."""
    table = build_table(records, result, release)
    catalog.write_arrays(catalog_dir, records.batch.start, _arrays(records, result, save_flux))
    catalog.write_batch_table(catalog_dir, records.batch.name, table)
    return table.num_rows


def _arrays(records: PreparedRecords, result: Classified, save_flux: bool) -> dict[str, np.ndarray]:
    """The batch's rows of the catalog's Zarr arrays."""
    arrays = {"prob": result.prob}
    if save_flux:
        arrays["flux"] = np.where(records.usable[:, None], records.flux, np.nan)
    if result.cam is not None:
        arrays["cam"] = result.cam
    return arrays


def _redshift_columns(result: Classified, has_class: np.ndarray, n: int) -> dict[str, Any]:
    """z, z_err, delta_chi2, subclass, z_balanced, z_err_balanced of the rows with a class (null elsewhere,
    and when none was fitted)."""
    numbers = ("z", "z_err", "delta_chi2", "z_balanced", "z_err_balanced")
    if result.z is None:
        return {**{key: np.full(n, np.nan) for key in numbers}, "subclass": [None] * n}
    return {**{key: np.where(has_class, getattr(result, key), np.nan) for key in numbers},
            "subclass": [s if ok else None for s, ok in zip(result.subclass, has_class)]}


def failed_batch_records(batch: Batch, error: str, stage: str = "read") -> PreparedRecords:
    """Rows for sources lost to a task that failed for good: each flagged, none lost. INFERENCE_FAILED marks
    them for a rerun to retry; UNREADABLE too when reading (``stage == "read"``) was what failed."""
    n = len(batch.sources)
    flags = Flag.INFERENCE_FAILED | (Flag.UNREADABLE if stage == "read" else Flag(0))
    return PreparedRecords(
        batch=batch,
        flux=np.zeros((n, grid.N_PIXELS), np.float32),
        flags=np.full(n, int(flags), np.uint32),
        snr=np.full(n, np.nan, np.float32),
        meta=[{} for _ in range(n)],
        errors=[error] * n,
    )


def _flux_error(flags: int) -> str | None:
    """Why a readable spectrum has no class, from its flux flags (None when it has one)."""
    return "; ".join(text for flag, text in UNUSABLE_FLUX_ERRORS.items() if flags & flag) or None
