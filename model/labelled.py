"""Labelled spectra for training and evaluation: reading, preparing once, caching, splitting.

Two forms of labelled data:

- a table (``load_labelled``): a Parquet table with a ``class`` column STAR/GALAXY/QSO plus either
  pre-normalised ``flux_norm`` lists of 2600, or spectra the pipeline's Parquet reader reads
  (``flux``/``ivar``/``andmask`` lists with or without ``wavelength``); or a directory of FITS files
  with a truth table (CSV or Parquet, columns ``file`` or ``source``, and ``class``). Prepared arrays
  (the normalised flux, and its inverse variance and pedestal when the data have them: spectra the
  reader prepares, or a ``flux_norm`` table's ``ivar_norm`` and ``pedestal`` columns) are cached next to
  the input, keyed by the sha256 of the input, so a second run skips the preparation.
- a set directory (``load_set``): ``<name>_flux.npy`` (N, 2600) + ``<name>_truth.parquet`` (``label``,
  ``z``, ``snr_g``, ...), as ``training/make_training_set.py`` writes them.

Reading files is the pipeline's work, and model/ does not import the pipeline: whoever loads spectra
that are not yet on the grid passes a ``PrepareSpectra`` (``lamost_classify.commands.model`` passes
the pipeline's ``read_batch`` + ``prepare``). Bad data raise ``LabelledDataError`` with one line that
says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from lamost_classify.contract import CLASS_NAMES, N_PIXELS, UNUSABLE
from lamost_classify.host import cache_dir

PREPARE_CHUNK = 2048  # spectra read and prepared at a time: bounds the native arrays held at once
CACHE_VERSION = 3  # bump when the preparation changes, so old caches are not reused
HARD_CASE_COLUMNS = ("class", "subclass", "template", "z", "snr_g")


class LabelledDataError(ValueError):
    """Labelled data that cannot be used as given; the message says what is wrong and what to do."""


class Prepared(Protocol):
    """Spectra on the network's grid (``pipeline.grid.PreparedBatch`` is one)."""

    flux: np.ndarray  # (n, 2600) float32, normalised
    ivar: np.ndarray | None  # (n, 2600) float32 inverse variance of ``flux``, or None when not known
    pedestal: np.ndarray | None  # (n,) float32 what the normalisation subtracted, or None when not known
    snr: np.ndarray  # (n,) float32, NaN when unknown
    flags: np.ndarray  # (n,) uint32 quality flags


# Sources (file paths, or ``table.parquet#ROW`` for one row of a Parquet table) -> those spectra, read
# and prepared, in order, one per source; a source that cannot be read comes back flagged, never raises.
PrepareSpectra = Callable[[list[str]], Prepared]


@dataclass
class LabelledSet:
    """Prepared, usable, labelled spectra. The flux stays a read-only memory map of the cache until
    ``spectra`` copies the rows asked for into memory."""

    cached_flux: np.ndarray  # (N_all, 2600) float32 memory map, usable or not
    rows: np.ndarray  # (N,) the usable rows of cached_flux
    labels: np.ndarray  # (N,) int64 in 0..2
    snr: np.ndarray  # (N,) float32, NaN when unknown
    flags: np.ndarray  # (N,) uint32 quality flags
    sources: list[str]
    sha256: str  # of the input: identifies the training data in the model card
    dropped: dict[str, int]  # rows left out, by reason
    cached_ivar: np.ndarray | None = None  # (N_all, 2600) float32 memory map of the flux's inverse variance
    cached_pedestal: np.ndarray | None = None  # (N_all,) float32 what the normalisation subtracted

    def spectra(self, index: np.ndarray | None = None) -> np.ndarray:
        """Flux of the usable spectra (all, or ``index`` into them), (n, 2600) float32."""
        return self._usable(self.cached_flux, index)

    def inverse_variances(self, index: np.ndarray | None = None) -> np.ndarray | None:
        """Inverse variance of ``spectra(index)`` in its normalised units, or None when the data had none."""
        return None if self.cached_ivar is None else self._usable(self.cached_ivar, index)

    def pedestals(self, index: np.ndarray | None = None) -> np.ndarray | None:
        """What the normalisation subtracted from ``spectra(index)`` (``grid.PreparedBatch.pedestal``), or
        None when the data did not say (a ``flux_norm`` table without a ``pedestal`` column)."""
        return None if self.cached_pedestal is None else self._usable(self.cached_pedestal, index)

    def _usable(self, cached: np.ndarray, index: np.ndarray | None) -> np.ndarray:
        if index is None:
            if len(self.rows) == len(cached):
                return cached  # no copy
            index = np.arange(len(self.rows))
        return cached[self.rows[index]]


# ---------------------------------------------------------------- labelled data -> prepared arrays

def _sha256_of(paths: list[Path], extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def class_index(values: list[object]) -> np.ndarray:
    """Class strings -> 0..2, -1 for anything else (UNKNOWN, null, typos)."""
    lookup = {name: i for i, name in enumerate(CLASS_NAMES)}
    return np.array([lookup.get(str(v).strip().upper(), -1) if v is not None else -1 for v in values], np.int64)


def _read_truth(path: Path) -> tuple[list[str], list[object]]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    names = {n.lower(): n for n in table.column_names}
    key = names.get("file") or names.get("source")
    if key is None or "class" not in names:
        raise LabelledDataError(f"{path}: a truth table needs columns 'file' (or 'source') and 'class'; "
                                f"it has {table.column_names}")
    return [str(v) for v in table.column(key).to_pylist()], table.column(names["class"]).to_pylist()


def truth_columns(data: str | Path, truth: str | Path | None, labelled: LabelledSet,
                  wanted: tuple[str, ...]) -> dict[str, list]:
    """Those of the ``wanted`` columns (lower-case names) that the truth has, for the usable rows: the
    table ``data``, or ``truth`` beside a FITS directory. Only those columns are read."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    data = Path(data)
    path = Path(truth) if data.is_dir() else data
    if path.suffix == ".parquet":
        names = pq.ParquetFile(path).schema_arrow.names
        table = pq.read_table(path, columns=[n for n in names if n.lower() in wanted])
    else:
        table = pacsv.read_csv(path)
    columns = {n.lower(): n for n in table.column_names}
    return {k: table.column(columns[k]).take(labelled.rows).to_pylist() for k in wanted if k in columns}


def hard_case_truth(data: str | Path, truth: str | Path | None, labelled: LabelledSet) -> dict[str, list] | None:
    """The mock truth columns ``evaluate.HARD_CASES`` needs, for the usable rows; None when the table
    (``data``, or ``truth`` beside a FITS directory) lacks any of them."""
    columns = truth_columns(data, truth, labelled, HARD_CASE_COLUMNS)
    return columns if len(columns) == len(HARD_CASE_COLUMNS) else None


def _prepare_in_chunks(sources: list[str], prepare_spectra: PrepareSpectra, progress: bool) -> dict[str, np.ndarray]:
    n = len(sources)
    flux = np.zeros((n, N_PIXELS), np.float32)
    # what the data may lack: kept only when every chunk has it (half an inverse variance would score a
    # redshift on part of the set)
    optional = {"ivar": np.zeros((n, N_PIXELS), np.float32), "pedestal": np.zeros(n, np.float32)}
    snr = np.full(n, np.nan, np.float32)
    flags = np.zeros(n, np.uint32)
    for start in tqdm(range(0, n, PREPARE_CHUNK), desc=f"preparing {n} spectra", unit="chunk", disable=not progress):
        stop = min(start + PREPARE_CHUNK, n)
        batch = prepare_spectra(sources[start:stop])
        flux[start:stop], snr[start:stop], flags[start:stop] = batch.flux, batch.snr, batch.flags
        for name in list(optional):
            value = getattr(batch, name, None)
            if value is None:
                del optional[name]
            else:
                optional[name][start:stop] = value
    return {"flux": flux, "snr": snr, "flags": flags, **optional}


def _prepare_parquet(path: Path, prepare_spectra: PrepareSpectra | None, progress: bool) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = {n.lower(): n for n in parquet.schema_arrow.names}
    if "class" not in names:
        raise LabelledDataError(f"{path}: a labelled table needs a 'class' column; it has {parquet.schema_arrow.names}")
    labels = class_index(pq.read_table(path, columns=[names["class"]]).column(0).to_pylist())
    n = len(labels)
    if "flux_norm" not in names:
        if prepare_spectra is None:
            raise LabelledDataError(f"{path}: its spectra are not on the grid (no 'flux_norm' column) and no "
                                    "reader was given to prepare them")
        return {**_prepare_in_chunks([f"{path}#{i}" for i in range(n)], prepare_spectra, progress), "labels": labels}
    # Already on the grid and normalised; an ``ivar_norm`` column is the flux_norm's inverse variance, a
    # ``pedestal`` column what its normalisation subtracted.
    flux = np.zeros((n, N_PIXELS), np.float32)
    ivar_col = names.get("ivar_norm")
    ivar = np.zeros((n, N_PIXELS), np.float32) if ivar_col else None
    pedestal_col = names.get("pedestal")
    pedestal = np.zeros(n, np.float32) if pedestal_col else None
    snr = np.full(n, np.nan, np.float32)
    snr_col = names.get("snr_pixel") or names.get("snr")
    columns = [names["flux_norm"]] + [c for c in (ivar_col, snr_col, pedestal_col) if c]
    start = 0
    for batch in parquet.iter_batches(PREPARE_CHUNK, columns=columns):
        rows, good = _grid_rows(batch.column(names["flux_norm"]))
        flux[start + np.flatnonzero(good)] = rows[good]
        if ivar_col:
            # A row whose ivar_norm is unusable keeps its class, with no pixel to fit a redshift on.
            ivar_rows, ivar_good = _grid_rows(batch.column(ivar_col))
            ivar_good &= (ivar_rows >= 0).all(axis=1)
            ivar[start + np.flatnonzero(ivar_good)] = ivar_rows[ivar_good]
        labels[start + np.flatnonzero(~good)] = -2  # null, wrong length or NaN: dropped below with its reason
        if snr_col:
            snr[start:start + len(good)] = batch.column(snr_col).to_numpy(zero_copy_only=False)
        if pedestal_col:
            values = batch.column(pedestal_col).to_numpy(zero_copy_only=False).astype(np.float32)
            pedestal[start:start + len(good)] = np.where(np.isfinite(values), values, 0.0)
        start += len(good)
    arrays = {"flux": flux, "labels": labels, "snr": snr, "flags": np.zeros(n, np.uint32)}
    return {**arrays, **{k: v for k, v in (("ivar", ivar), ("pedestal", pedestal)) if v is not None}}


def _grid_rows(column: object) -> tuple[np.ndarray, np.ndarray]:
    """(values (n, 2600), good (n,)) of a list column: good where a row holds 2600 finite values."""
    import pyarrow.compute as pc

    lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy()
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False)  # null rows skipped
    starts = np.concatenate([[0], np.cumsum(np.maximum(lengths, 0))[:-1]])
    good = lengths == N_PIXELS
    rows = np.zeros((len(lengths), N_PIXELS), np.float32)
    rows[good] = values[starts[good][:, None] + np.arange(N_PIXELS)]
    good &= np.isfinite(rows).all(axis=1)
    return rows, good


def _truth_sources(directory: Path, truth: Path) -> tuple[list[str], list[object]]:
    """(paths of the files the truth table names, resolved against ``directory``; their classes)."""
    files, classes = _read_truth(truth)
    return [f if os.path.isabs(f) else str(directory / f) for f in files], classes


def _file_stamp(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return f"{path} missing"
    return f"{path} {stat.st_size} {stat.st_mtime_ns}"


def _cache_dir(data: Path, key: str) -> Path:
    """``<data>.prepared-<key>/`` beside the input when writable, else in the package's cache directory."""
    beside = data.parent / f"{data.name}.prepared-{key[:16]}"
    if os.access(data.parent, os.W_OK):
        return beside
    return cache_dir() / beside.name


def load_labelled(data: str | Path, truth: str | Path | None = None, prepare_spectra: PrepareSpectra | None = None,
                  progress: bool = True) -> LabelledSet:
    """Prepared, labelled spectra from a Parquet table or a FITS directory + truth table, cached.

    ``prepare_spectra`` reads and prepares what is not yet on the grid (FITS files, raw Parquet
    spectra); a ``flux_norm`` table needs none. ``progress``: a bar while preparing.
    """
    data = Path(data)
    if data.is_dir():
        if truth is None:
            raise LabelledDataError(f"{data} is a directory: give the truth table with --truth")
        if prepare_spectra is None:
            raise LabelledDataError(f"{data}: FITS files need a reader to prepare them; none was given")
        # The truth table's content and the size and time of every file it names (re-hashing
        # gigabytes of FITS on every run would cost more than the preparation saves).
        listing = "\n".join(_file_stamp(source) for source in _truth_sources(data, Path(truth))[0])
        key = _sha256_of([Path(truth)], f"v{CACHE_VERSION}\n{listing}")
    else:
        key = _sha256_of([data], f"v{CACHE_VERSION}\n")
    # Beside the Parquet table, or beside the truth table (not inside the FITS tree, often others' data).
    cache = _cache_dir(Path(truth) if data.is_dir() else data, key)
    if not (cache / "flux.npy").exists():
        if data.is_dir():
            sources, classes = _truth_sources(data, Path(truth))
            arrays = {**_prepare_in_chunks(sources, prepare_spectra, progress), "labels": class_index(classes)}
        else:
            arrays = _prepare_parquet(data, prepare_spectra, progress)
            sources = [f"{data}#{i}" for i in range(len(arrays["labels"]))]
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".prepared-", dir=cache.parent))
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        (tmp / "sources.json").write_text(json.dumps(sources))
        try:
            os.replace(tmp, cache)
        except OSError:  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    flux = np.load(cache / "flux.npy", mmap_mode="r")
    ivar = np.load(cache / "ivar.npy", mmap_mode="r") if (cache / "ivar.npy").exists() else None
    pedestal = np.load(cache / "pedestal.npy") if (cache / "pedestal.npy").exists() else None
    labels = np.load(cache / "labels.npy")
    snr = np.load(cache / "snr.npy")
    flags = np.load(cache / "flags.npy")
    sources = json.loads((cache / "sources.json").read_text())

    usable = (labels >= 0) & ((flags & np.uint32(int(UNUSABLE))) == 0)
    dropped = {
        "class not STAR/GALAXY/QSO": int((labels == -1).sum()),
        "flux_norm not 2600 finite values": int((labels == -2).sum()),
        "unusable spectrum (flags)": int(((labels >= 0) & ~usable).sum()),
    }
    keep = np.flatnonzero(usable)
    if len(keep) == 0:
        raise LabelledDataError(f"{data}: no usable labelled spectrum (left out: {dropped})")
    return LabelledSet(cached_flux=flux, rows=keep, labels=labels[keep], snr=snr[keep], flags=flags[keep],
                       sources=[sources[i] for i in keep], sha256=key, dropped={k: v for k, v in dropped.items() if v},
                       cached_ivar=ivar, cached_pedestal=pedestal)


# ---------------------------------------------------------------- set directories

def load_set(directory: Path, name: str) -> tuple[np.ndarray, dict]:
    """(flux (N, 2600) memory map, truth columns as lists) of set ``name`` in a set directory."""
    import pyarrow.parquet as pq

    truth = pq.read_table(directory / f"{name}_truth.parquet").to_pydict()
    truth.setdefault("family", ["survey"] * len(truth["label"]))  # sets made before families existed
    return np.load(directory / f"{name}_flux.npy", mmap_mode="r"), truth


def save_set(directory: Path, name: str, flux: np.ndarray, truth: dict[str, list], ivar: np.ndarray | None = None,
             pedestal: np.ndarray | None = None) -> None:
    """Write set ``name`` into a set directory as ``load_set`` reads it: float32 flux and its truth columns;
    with ``ivar`` and ``pedestal`` (``grid.PreparedBatch``'s), also ``<name>_ivar.npy`` and
    ``<name>_pedestal.npy``, what the redshift fit needs to publish a class as the catalog does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / f"{name}_flux.npy", np.asarray(flux, dtype=np.float32))
    for suffix, values in (("ivar", ivar), ("pedestal", pedestal)):
        if values is not None:
            np.save(directory / f"{name}_{suffix}.npy", np.asarray(values, dtype=np.float32))
    pq.write_table(pa.table(truth), directory / f"{name}_truth.parquet")


# ---------------------------------------------------------------- splits

def split_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), stratified: each class gives ``fraction`` of its members."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must lie strictly between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in range(len(CLASS_NAMES)):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(fraction * len(members))) if len(members) > 1 else 0
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def cap_per_class(indices: np.ndarray, labels: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """At most ``cap`` of ``indices`` per class (a seeded random choice); all of them when ``cap`` is None."""
    if cap is None:
        return indices
    rng = np.random.default_rng(seed + 1)
    kept = [rng.permutation(indices[labels[indices] == c])[:cap] for c in range(len(CLASS_NAMES))]
    return np.sort(np.concatenate(kept))


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Spectra per class name."""
    return {name: int((labels == c).sum()) for c, name in enumerate(CLASS_NAMES)}
