"""The DuckDB connection a query runs in: it sees the catalog as view ``catalog`` and can read the
catalog's own Parquet files and nothing else (``allowed_paths``, ``enable_external_access=false``,
configuration locked)."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from .errors import QueryError
from .selection import ident

_DUCKDB_TYPES = {
    pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.int16(): "SMALLINT", pa.float64(): "DOUBLE",
    pa.float32(): "FLOAT", pa.string(): "VARCHAR", pa.bool_(): "BOOLEAN",
}


def first_line(exc: Exception) -> str:
    """DuckDB's message without the SQL excerpt it appends on later lines."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def connect(dataset: ds.Dataset, obsids: Sequence[int] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that sees the dataset as view ``catalog`` and can read the
    catalog's own Parquet files and nothing else: no other file, no extension, no setting change.

    A Parquet-file dataset is read by DuckDB's own Parquet reader (faster than scanning the pyarrow
    dataset, and lighter on memory), with ``allowed_paths`` set to exactly its files; any other dataset
    (in memory, other formats) is scanned through Arrow.
    """
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    on_disk = isinstance(dataset, ds.FileSystemDataset) and isinstance(dataset.format, ds.ParquetFileFormat)
    files = list(dataset.files) if on_disk else None
    if files:
        con.execute("SET allowed_paths = $paths", {"paths": files})
    con.execute("SET enable_external_access = false")
    if files:
        listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        # union_by_name: batch files from an older pipeline may lack a newer column; one that no file
        # has is added as typed nulls, as the pyarrow dataset does.
        try:
            con.execute(f"CREATE VIEW _files AS SELECT * FROM read_parquet([{listing}], union_by_name = true)")
        except duckdb.Error as exc:  # a damaged batch file: DuckDB names it
            con.close()
            raise QueryError(f"cannot read the catalog: {first_line(exc)}") from None
        present = {row[0] for row in con.execute("DESCRIBE _files").fetchall()}
        missing = [
            f"CAST(NULL AS {_DUCKDB_TYPES.get(f.type, 'VARCHAR')}) AS {ident(f.name)}"
            for f in dataset.schema
            if f.name not in present
        ]
        con.execute(f"CREATE VIEW catalog AS SELECT {', '.join(['*'] + missing)} FROM _files")
    else:
        con.register("catalog", dataset)
    con.register("_obsids", pa.table({"obsid": pa.array(list(obsids or []), pa.int64())}))
    con.execute("SET lock_configuration = true")
    return con
