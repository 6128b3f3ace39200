"""The per-batch work, free of Dask so it tests alone: read -> prepare -> classify -> build rows -> write.

``graph.py`` runs these functions as Dask tasks; a test (or a debugger) can call them in order on one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    z_flags: np.ndarray | None = None  # (B,) int64, Flag.Z_* bits


def read_sources(sources: tuple[str, ...]) -> list[Spectrum]:
    """Read every source in order, one Spectrum each (``readers.read_batch``: ``path#row`` sources are rows
    of a Parquet table of spectra)."""
    return read_batch(list(sources))


def read_and_prepare(batch: Batch) -> PreparedRecords:
    """Stage 1: read every file of the batch and put it on the network's grid. Never raises on bad input."""
    spectra = read_sources(batch.sources)
    prepared = grid.prepare(spectra)
    meta = []
    errors = []
    for s in spectra:
        m = dict(s.meta)
        errors.append(m.pop("error", None))
        meta.append(m)
    return PreparedRecords(batch, prepared.flux, prepared.flags, prepared.snr, meta, errors, prepared.ivar)


def classify(records: PreparedRecords, model: ProbabilityModel, with_cam: bool = False) -> Classified:
    """Stage 2: probabilities for the usable spectra of the batch (unusable rows stay NaN)."""
    prob = np.full((len(records.flags), len(CLASS_NAMES)), np.nan, np.float32)
    prob_balanced = prob.copy()
    cam = np.full((len(records.flags), grid.N_PIXELS), np.nan, np.float32) if with_cam else None
    usable = records.usable
    out = Classified(prob=prob, cam=cam, model=model.name, prob_balanced=prob_balanced)
    # A model that fits redshifts (Classifier.predict_with_redshift) does, when the batch carries its ivar.
    fits_redshift = hasattr(model, "predict_with_redshift") and records.ivar is not None
    if fits_redshift:
        n = len(records.flags)
        out.z, out.z_err, out.delta_chi2 = (np.full(n, np.nan, np.float32) for _ in range(3))
        out.subclass, out.z_flags = [None] * n, np.zeros(n, np.int64)
    if usable.any():
        if fits_redshift:
            prob[usable], prob_balanced[usable], fit = model.predict_with_redshift(records.flux[usable],
                                                                                   records.ivar[usable])
            rows = np.flatnonzero(usable)
            out.z[rows], out.z_err[rows], out.delta_chi2[rows] = fit.z, fit.z_err, fit.delta_chi2
            out.z_flags[rows] = fit.flags
            for row, label in zip(rows, fit.subclass):
                out.subclass[row] = label
        else:
            prob[usable], prob_balanced[usable] = model.predict_proba_and_balanced(records.flux[usable])
        if with_cam:
            cam[usable] = model.cam(records.flux[usable])
    return out


def build_table(records: PreparedRecords, result: Classified, release: str) -> pa.Table:
    """Stage 3a: the batch's catalog rows, one per source, in the batch's order."""
    n = len(records.flags)
    flags = records.flags.astype(np.int64)
    if result.error is not None:
        flags |= int(Flag.INFERENCE_FAILED)
    prob = result.prob
    has_prob = np.isfinite(prob).all(axis=1) & ((flags & int(UNUSABLE)) == 0)
    order = np.sort(np.where(has_prob[:, None], prob, -1.0), axis=1)
    confidence = np.where(has_prob, order[:, -1], np.nan)
    margin = np.where(has_prob, order[:, -1] - order[:, -2], np.nan)
    flags |= np.where(has_prob & (confidence < LOW_CONFIDENCE), int(Flag.LOW_CONFIDENCE), 0)
    best = np.argmax(np.where(has_prob[:, None], prob, -1.0), axis=1)
    balanced = np.full_like(prob, np.nan) if result.prob_balanced is None else result.prob_balanced
    has_balanced = has_prob & np.isfinite(balanced).all(axis=1)
    best_balanced = np.argmax(np.where(has_balanced[:, None], balanced, -1.0), axis=1)
    flags |= np.where(has_balanced & (best_balanced != best), int(Flag.PRIOR_DOMINATED), 0)
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
                "prob_qso_balanced", "confidence", "margin", "z", "z_err", "delta_chi2"):
        values = np.asarray(columns[key], dtype=np.float32)
        columns[key] = pa.array(values, mask=~np.isfinite(values))
    return catalog.to_table(columns)


def write(records: PreparedRecords, result: Classified, catalog_dir: Path, release: str,
          save_flux: bool = False) -> int:
    """Stage 3b: Zarr region first, then the Parquet file whose rename marks the batch done. Returns rows."""
    table = build_table(records, result, release)
    arrays = {"prob": result.prob}
    if save_flux:
        arrays["flux"] = np.where(records.usable[:, None], records.flux, np.nan)
    if result.cam is not None:
        arrays["cam"] = result.cam
    catalog.write_arrays(catalog_dir, records.batch.start, arrays)
    catalog.write_batch_table(catalog_dir, records.batch.name, table)
    return table.num_rows


def _redshift_columns(result: Classified, has_class: np.ndarray, n: int) -> dict[str, Any]:
    """z, z_err, delta_chi2, subclass of the rows with a class (null elsewhere, and when none was fitted)."""
    if result.z is None:
        return {"z": np.full(n, np.nan), "z_err": np.full(n, np.nan), "delta_chi2": np.full(n, np.nan),
                "subclass": [None] * n}
    return {"z": np.where(has_class, result.z, np.nan), "z_err": np.where(has_class, result.z_err, np.nan),
            "delta_chi2": np.where(has_class, result.delta_chi2, np.nan),
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
