"""A Parquet table of spectra, one row per spectrum, for users who converted a release to Parquet.

Columns (names case-insensitive): an id (``obsid`` or ``id``); ``flux`` as a list per row, with
``ivar`` and ``andmask`` lists of the same length when present; ``wavelength`` as a list, or no wavelength
column when the flux is on the native LAMOST grid (10**(3.5682 + 1e-4 i)); and any metadata columns named
like META_KEYS or like the LAMOST catalog (``snrg``, ``class``, ``subclass``, ``z``). Without ``ivar`` every
pixel gets ivar = 1, so the S/N measured later means nothing for such a table.

A file holds many spectra, so the pipeline batches by row ranges: :func:`count_parquet_spectra` is read from
the footer alone, :func:`read_parquet_spectra` reads only the row groups that hold the rows asked for.
A bad row (null or mismatched arrays) becomes an UNREADABLE record; a bad file raises SpectrumReadError.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lamost_classify.contract import NATIVE_COEFF0, NATIVE_COEFF1

from ..spectrum import META_KEYS, Spectrum, SpectrumReadError
from .common import META_TYPES, as_float32, as_mask, empty_spectrum, log_linear_wavelength, validate

NAME = "parquet"
MAGIC = b"PAR1"
ARRAY_COLUMNS = ("wavelength", "flux", "ivar", "andmask")
# LAMOST catalog column names -> META_KEYS.
ALIASES = {
    "id": "obsid", "desig": "designation", "class": "lamost_class", "subclass": "lamost_subclass",
    "z": "lamost_z", **{f"snr{band}": f"snr_{band}" for band in "ugriz"},
}

PathOrBytes = str | os.PathLike | bytes


def identify(head: bytes) -> bool:
    """A Parquet file starts (and ends) with the magic bytes PAR1."""
    return head[:4] == MAGIC


def _open(path: PathOrBytes) -> tuple[pq.ParquetFile, str]:
    label = "<bytes>" if isinstance(path, (bytes, bytearray, memoryview)) else str(path)
    source = pa.BufferReader(path) if isinstance(path, (bytes, bytearray, memoryview)) else str(Path(path))
    try:
        return pq.ParquetFile(source), label
    except (OSError, pa.ArrowException) as exc:
        raise SpectrumReadError(f"{label}: not a readable Parquet file ({exc})") from exc


def count_parquet_spectra(path: PathOrBytes) -> int:
    """Number of spectra (rows) in a Parquet file, from its footer: no data is read."""
    parquet, _ = _open(path)
    return parquet.metadata.num_rows


def is_spectra_table(schema: pa.Schema) -> bool:
    """Whether a Parquet table means to hold spectra (a ``flux`` or ``flux_norm`` column, any case) rather
    than list files (a LAMOST general catalog). ``spectra_columns`` says whether it can be read."""
    return bool({name.lower() for name in schema.names} & {"flux", "flux_norm"})


def spectra_columns(schema: pa.Schema, label: str) -> tuple[dict[str, str], dict[str, str]]:
    """(array role -> column name, META_KEYS key -> column name), matching names case-insensitively.

    Raises SpectrumReadError when the table is not one this reader reads: no ``flux`` column, or an array
    column that is not one list of numbers per row. The plan asks the same question before a run.
    """
    by_lower = {name.lower(): name for name in schema.names}
    arrays = {role: by_lower[role] for role in ARRAY_COLUMNS if role in by_lower}
    if "flux" not in arrays:
        if "flux_norm" in by_lower:
            raise SpectrumReadError(
                f"{label}: a table of flux_norm (spectra already resampled and normalised for the network) has no "
                f"native 'flux' column for `run` to read; score it with `lamost-classify evaluate MODEL {label}`, "
                "or give `run` a table with a 'flux' list column"
            )
        raise SpectrumReadError(f"{label}: a Parquet table of spectra needs a 'flux' list column; it has {schema.names}")
    for name in arrays.values():
        kind = schema.field(name).type
        is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
        if not is_list or not (pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)):
            raise SpectrumReadError(
                f"{label}: column {name!r} is {kind}; it must hold one list of numbers per spectrum"
            )
    meta: dict[str, str] = {}
    for lower, name in by_lower.items():
        key = lower if lower in META_KEYS else ALIASES.get(lower)
        if key is not None and key not in meta and not (lower == "id" and "obsid" in by_lower):
            meta[key] = name
    return arrays, meta


def _row_numbers(rows: slice | list[int] | None, n: int, label: str) -> np.ndarray:
    if rows is None:
        return np.arange(n)
    if isinstance(rows, slice):
        return np.arange(*rows.indices(n))
    numbers = np.asarray(list(rows), dtype=np.int64)
    bad = numbers[(numbers < 0) | (numbers >= n)]
    if bad.size:
        raise SpectrumReadError(f"{label}: rows {bad[:5].tolist()} out of range; the table has {n} rows (0..{n - 1})")
    return numbers


def _read_rows(parquet: pq.ParquetFile, numbers: np.ndarray, columns: list[str]) -> pa.Table:
    """The requested rows, in the requested order, reading only the row groups that hold them."""
    meta = parquet.metadata
    starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
    groups = np.searchsorted(starts, numbers, side="right") - 1
    wanted = np.unique(groups)
    table = parquet.read_row_groups(wanted.tolist(), columns=columns)
    # Row r of group g sits at (rows of the wanted groups before g) + (r - start of g) in `table`.
    sizes = starts[wanted + 1] - starts[wanted]
    before = dict(zip(wanted.tolist(), np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()))
    local = np.array([before[g] for g in groups.tolist()], dtype=np.int64) + numbers - starts[groups]
    return table.take(pa.array(local))


def _list_cells(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list column (checked by ``spectra_columns``) as (flat values, start offsets, lengths, -1 for null rows)."""
    array = column.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(array), -1).to_numpy()
    # list_flatten skips null rows, so offsets come from the lengths of the non-null ones.
    values = pc.list_flatten(array).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.cumsum(np.maximum(lengths, 0))[:-1]])
    return values, starts, lengths


def read_parquet_spectra(path: PathOrBytes, rows: slice | list[int] | None = None) -> list[Spectrum]:
    """Spectra from rows of a Parquet table (all rows when ``rows`` is None); source = f"{path}#{row}"."""
    parquet, label = _open(path)
    arrays, meta_columns = spectra_columns(parquet.schema_arrow, label)
    numbers = _row_numbers(rows, parquet.metadata.num_rows, label)
    if numbers.size == 0:
        return []
    try:
        table = _read_rows(parquet, numbers, sorted(set(arrays.values()) | set(meta_columns.values())))
    except (OSError, pa.ArrowException) as exc:
        raise SpectrumReadError(f"{label}: could not read rows of the Parquet table ({exc})") from exc

    cells = {role: _list_cells(table.column(name)) for role, name in arrays.items()}
    meta_values = {key: table.column(name).to_pylist() for key, name in meta_columns.items()}

    spectra = []
    for i, row in enumerate(numbers.tolist()):
        source = f"{label}#{row}"
        meta = {key: META_TYPES[key](values[i]) for key, values in meta_values.items()}
        if "obsid" in meta_columns and meta["obsid"] is None and meta_values["obsid"][i] is not None:
            meta["id"] = meta_values["obsid"][i]  # a non-integer id: kept, but the catalog's obsid stays null
        spectra.append(_row_spectrum(cells, i, meta, source))
    return spectra


def _row_spectrum(cells: dict[str, tuple], i: int, meta: dict[str, Any], source: str) -> Spectrum:
    def cell(role: str) -> np.ndarray | None:
        if role not in cells:
            return None
        values, starts, lengths = cells[role]
        if lengths[i] < 0:
            return None
        return values[starts[i] : starts[i] + lengths[i]]

    flux = cell("flux")
    if flux is None or flux.size == 0:
        spectrum = empty_spectrum(source, f"{source}: the flux cell is null or empty")
        spectrum.meta.update(meta)
        return spectrum
    n = flux.size
    parts = {"flux": flux}
    for role in ("wavelength", "ivar", "andmask"):
        values = cell(role)
        if role in cells and (values is None or values.size != n):
            got = "null" if values is None else f"{values.size} values"
            spectrum = empty_spectrum(source, f"{source}: {role} has {got}, flux has {n}; they must match")
            spectrum.meta.update(meta)
            return spectrum
        parts[role] = values
    andmask = np.zeros(n, np.int32) if parts["andmask"] is None else as_mask(parts["andmask"])
    wavelength = parts["wavelength"]
    spectrum = Spectrum(
        wavelength=log_linear_wavelength(NATIVE_COEFF0, NATIVE_COEFF1, n) if wavelength is None else wavelength.astype(np.float64),
        flux=as_float32(flux),
        ivar=np.ones(n, np.float32) if parts["ivar"] is None else as_float32(parts["ivar"]),
        andmask=andmask,
        meta=meta,
        source=source,
        layout=NAME,
    )
    try:
        return validate(spectrum)
    except SpectrumReadError as exc:
        failed = empty_spectrum(source, str(exc))
        failed.meta.update(meta)
        return failed
