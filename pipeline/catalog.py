"""Write the catalog: one Parquet file per batch (temporary name, then an atomic rename) and the batch's
rows of the Zarr arrays, written by region so a retried or resumed batch rewrites the same cells."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from lamost_classify.contract import PARQUET_DIR, ZARR_STORE

from .schema import SCHEMA


def create_arrays(catalog_dir: Path, n_rows: int, batch_size: int, save_flux: bool, save_cam: bool) -> None:
    """Create (or reopen) the Zarr store; one chunk per batch so concurrent batches never share a chunk."""
    root = zarr.open_group(str(Path(catalog_dir) / ZARR_STORE), mode="a")
    specs = {"prob": 3}
    if save_flux:
        specs["flux"] = 2600
    if save_cam:
        specs["cam"] = 2600
    for name, width in specs.items():
        if name not in root:
            root.create_array(name, shape=(n_rows, width), chunks=(batch_size, width), dtype="float32",
                              fill_value=np.nan)
    if "wavelength" not in root and (save_flux or save_cam):
        from .grid import WAVELENGTH

        root.create_array("wavelength", data=WAVELENGTH.astype("float64"))
    root.attrs.update({"rows": "row i is the catalog row with row == i (the plan's order)",
                       "prob_columns": ["STAR", "GALAXY", "QSO"]})


def write_arrays(catalog_dir: Path, start: int, arrays: dict[str, np.ndarray]) -> None:
    root = zarr.open_group(str(Path(catalog_dir) / ZARR_STORE), mode="r+")
    for name, values in arrays.items():
        if name in root:
            root[name][start:start + len(values)] = values


def write_batch_table(catalog_dir: Path, batch_name: str, table: pa.Table) -> Path:
    """Write ``table`` as ``parquet/<batch_name>.parquet`` atomically; the rename marks the batch done."""
    pdir = Path(catalog_dir) / PARQUET_DIR
    pdir.mkdir(parents=True, exist_ok=True)
    final = pdir / f"{batch_name}.parquet"
    tmp = pdir / f".{batch_name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    pq.write_table(table.cast(SCHEMA), tmp, compression="zstd", use_dictionary=False)
    os.replace(tmp, final)
    return final


def to_table(columns: dict[str, list | np.ndarray]) -> pa.Table:
    """Build a table in the catalog's schema from column values (missing columns become null)."""
    n = len(next(iter(columns.values())))
    arrays = []
    for f in SCHEMA:
        values = columns.get(f.name, [None] * n)
        arrays.append(pa.array(values, type=f.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)
