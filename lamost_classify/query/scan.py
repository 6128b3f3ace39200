"""Run a selection: the SELECT statement, streamed out of DuckDB as Arrow batches with the catalog's
units and descriptions, or counted."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from ..pipeline.schema import SCHEMA
from .catalog import open_catalog
from .errors import QueryError
from .sandbox import connect, first_line
from .selection import Selection, cone_sql, ident, selection_sql

# Extra column added to cone-search results.
DIST_COLUMN = "dist_arcsec"
DIST_FIELD = pa.field(
    DIST_COLUMN, pa.float64(), metadata={"unit": "arcsec", "description": "great-circle distance from the cone centre"}
)
# Batches handed to writers; big enough to amortise per-batch overhead, small enough to bound memory.
BATCH_ROWS = 65_536


def _projection(selection: Selection, dataset: ds.Dataset) -> list[tuple[str, str]]:
    """(SQL expression, output name) for each output column."""
    names = dataset.schema.names
    if selection.columns is None:
        wanted = list(names) + ([DIST_COLUMN] if selection.cone is not None else [])
    else:
        wanted = list(selection.columns)
    by_lower = {n.lower(): n for n in names}
    out: list[tuple[str, str]] = []
    for col in wanted:
        if col.lower() == DIST_COLUMN:
            if selection.cone is None:
                raise QueryError(f"column {DIST_COLUMN} exists only with a cone search (--cone)")
            out.append((cone_sql(selection.cone)[1], DIST_COLUMN))
        elif col.lower() in by_lower:
            name = by_lower[col.lower()]
            out.append((ident(name), name))
        else:
            raise QueryError(f"unknown column {col!r}; columns are: {', '.join(names)}")
    if not out:
        raise QueryError("no columns selected")
    return out


def selection_query(selection: Selection, dataset: ds.Dataset) -> str:
    """The full SELECT statement DuckDB runs for a selection."""
    columns = ", ".join(f"{expr} AS {ident(name)}" for expr, name in _projection(selection, dataset))
    sql = f"SELECT {columns} FROM catalog WHERE {selection_sql(selection, dataset.schema.names)}"
    if selection.limit is not None:
        sql += f" LIMIT {int(selection.limit)}"
    return sql


def output_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with plain (not view, not dictionary) strings and the catalog's unit/description
    metadata put back on each field: DuckDB's Arrow output carries no field metadata."""
    known = {f.name: f for f in SCHEMA}
    fields = []
    for f in schema:
        typ = f.type
        if pa.types.is_dictionary(typ):
            typ = typ.value_type
        if pa.types.is_string_view(typ) or pa.types.is_large_string(typ):
            typ = pa.string()
        if f.name in known:
            meta = known[f.name].metadata
        else:
            meta = DIST_FIELD.metadata if f.name == DIST_COLUMN else f.metadata
        fields.append(pa.field(f.name, typ, nullable=f.nullable, metadata=meta))
    return pa.schema(fields)


def select(
    catalog: str | Path | ds.Dataset, selection: Selection | None = None, batch_rows: int = BATCH_ROWS
) -> pa.RecordBatchReader:
    """Stream the selected rows as Arrow record batches (schema with units and descriptions).

    DuckDB pushes the column list and the simple parts of the condition into the Parquet scan; rows
    arrive in batches of ``batch_rows``, so a caller that writes each batch keeps memory flat.
    """
    selection = selection or Selection()
    dataset = catalog if isinstance(catalog, ds.Dataset) else open_catalog(catalog)
    sql = selection_query(selection, dataset)
    con = connect(dataset, selection.obsids)
    try:
        reader = con.sql(sql).to_arrow_reader(batch_rows)
    except duckdb.Error as exc:
        con.close()
        raise QueryError(f"query failed: {first_line(exc)}") from None
    schema = output_schema(reader.schema)

    def batches() -> Iterator[pa.RecordBatch]:
        # The generator holds the connection open until the last batch is read.
        try:
            for batch in reader:
                yield pa.RecordBatch.from_arrays(
                    [col.cast(f.type) for col, f in zip(batch.columns, schema)], schema=schema
                )
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {first_line(exc)}") from None
        finally:
            con.close()

    return pa.RecordBatchReader.from_batches(schema, batches())


def count(catalog: str | Path | ds.Dataset, selection: Selection | None = None) -> int:
    """Number of rows a selection gives (``limit`` applied)."""
    selection = selection or Selection()
    dataset = catalog if isinstance(catalog, ds.Dataset) else open_catalog(catalog)
    inner = selection_query(dataclasses.replace(selection, columns=("obsid",)), dataset)
    with connect(dataset, selection.obsids) as con:
        try:
            return int(con.execute(f"SELECT count(*) FROM ({inner})").fetchone()[0])
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {first_line(exc)}") from None
