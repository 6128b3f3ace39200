"""Write a selection of the catalog in the formats astronomers load: CSV, Parquet, FITS, VOTable, HATS.

CSV, Parquet and FITS stream: each Arrow batch from ``query.select`` is written and dropped, so a
9-million-row export runs in flat memory. FITS needs its row count and string widths in the header
before the first row, so it makes one cheap aggregate pass first. VOTable goes through astropy's
writer, which holds the selection in memory: meant for the TOPCAT-sized selections it is used for.
Units and descriptions go with every format that has a place for them: Parquet field metadata,
FITS TUNIT/TCOMM, VOTable unit/description. HATS (HEALPix-partitioned Parquet for LSDB) is written
by ``hats-import``, the optional extra ``lamost-classify[hats]``.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .query import (
    BATCH_ROWS,
    QueryError,
    Selection,
    arrow_to_astropy,
    catalog_root,
    connect,
    count,
    open_catalog,
    select,
    selection_query,
)
from .query.selection import ident


def _metadata(f: pa.Field) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}


# -- CSV ---------------------------------------------------------------------------------------------


def write_csv(reader: pa.RecordBatchReader, out: str | Path | IO[bytes] | None) -> int:
    """Stream ``reader`` as CSV (header line, nulls empty) to ``out`` (stdout when None). Returns rows."""
    sink = sys.stdout.buffer if out is None else out
    rows = 0
    with pacsv.CSVWriter(sink, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    if out is None:
        sys.stdout.buffer.flush()
    return rows


# -- Parquet -----------------------------------------------------------------------------------------


def write_parquet(reader: pa.RecordBatchReader, out: str | Path) -> int:
    """Stream ``reader`` to one Parquet file, field metadata kept, strings plain (astropy cannot read
    dictionary-encoded strings). Returns rows."""
    rows = 0
    with pq.ParquetWriter(str(out), reader.schema, use_dictionary=False, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


# -- VOTable -----------------------------------------------------------------------------------------


def write_votable(reader: pa.RecordBatchReader, out: str | Path) -> int:
    """Stream ``reader`` as a VOTable (TABLEDATA serialisation, nulls as empty cells) with units and
    descriptions; memory stays at one batch whatever the selection's size.

    astropy writes the header (FIELDs with datatype, unit, description) from the first row; the rows
    are formatted batch by batch with Arrow's vectorised string functions, as astropy only writes a
    table it holds whole.
    """
    from astropy.io.votable import from_table

    rows = 0
    footer = ""
    with open(out, "w", encoding="utf-8") as sink:
        for batch in reader:
            if batch.num_rows == 0:
                continue
            if not rows:
                header, footer = _votable_frame(from_table, pa.Table.from_batches([batch.slice(0, 1)]))
                sink.write(header)
            sink.write(_votable_rows(batch))
            rows += batch.num_rows
        if not rows:  # no rows: astropy's own empty table (no DATA element)
            header, footer = _votable_frame(from_table, reader.schema.empty_table())
            sink.write(header)
        sink.write(footer)
    return rows


def _votable_frame(from_table, first: pa.Table) -> tuple[str, str]:
    """The VOTable text before and after the rows, from astropy, with strings of any length allowed."""
    import io

    table = arrow_to_astropy(first)
    votable = from_table(table)
    for f in votable.get_first_table().fields:
        f.description = table[f.name].description  # astropy carries the unit but not the description
        if f.datatype in ("char", "unicodeChar"):
            f.arraysize = "*"
    text = io.BytesIO()
    votable.to_xml(text, tabledata_format="tabledata")
    xml = text.getvalue().decode("utf-8")
    if len(first) == 0:
        return xml, ""
    start, stop = xml.index("<TABLEDATA>") + len("<TABLEDATA>"), xml.index("</TABLEDATA>")
    return xml[:start] + "\n", xml[stop:]


def _votable_rows(batch: pa.RecordBatch) -> str:
    """``<TR><TD>..</TD>..</TR>`` lines for a batch: XML-escaped strings, NaN as VOTable spells it."""
    cells = []
    for column in batch.columns:
        if pa.types.is_floating(column.type):
            text = pc.if_else(pc.is_nan(column), "NaN", pc.cast(column, pa.string()))
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            text = pc.replace_substring_regex(column, "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]", "")  # not allowed in XML
            for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
                text = pc.replace_substring(text, char, entity)
        else:
            text = pc.cast(column, pa.string())
        cells.append(pc.binary_join_element_wise("<TD>", pc.fill_null(text, ""), "</TD>", ""))
    rows = pc.binary_join_element_wise("<TR>", *cells, "</TR>\n", "")
    return "".join(rows.to_pylist())


# -- FITS --------------------------------------------------------------------------------------------

# Arrow type -> (FITS TFORM letter, numpy big-endian dtype, TNULL for integers or None).
_FITS_TYPES: dict[pa.DataType, tuple[str, str, int | None]] = {
    pa.int64(): ("K", ">i8", -(2**63)),
    pa.int32(): ("J", ">i4", -(2**31)),
    pa.int16(): ("I", ">i2", -(2**15)),
    pa.float64(): ("D", ">f8", None),
    pa.float32(): ("E", ">f4", None),
}


def _fits_layout(catalog: ds.Dataset, selection: Selection) -> tuple[int, pa.Schema, dict[str, int]]:
    """Row count, output schema and string widths (bytes) of a selection, by aggregation.

    Widths are taken over the selection without its limit: a superset, so whichever rows a limited
    scan returns, none is cut short.
    """
    schema = select(catalog, dataclasses.replace(selection, limit=0)).schema
    strings = [f.name for f in schema if pa.types.is_string(f.type)]
    unlimited = selection_query(dataclasses.replace(selection, limit=None), catalog)
    widths_sql = ", ".join(f"max(strlen({ident(name)}))" for name in strings) or "0"
    with connect(catalog, selection.obsids) as con:
        rows, *widths = con.execute(f"SELECT count(*), {widths_sql} FROM ({unlimited})").fetchone()
    if selection.limit is not None:
        rows = min(rows, selection.limit)
    return int(rows), schema, {name: max(1, int(w or 0)) for name, w in zip(strings, widths)}


def _fits_header(schema: pa.Schema, widths: dict[str, int], rows: int):
    """The binary-table header for ``rows`` rows, and the numpy record dtype of one row."""
    from astropy.io import fits

    columns, dtype = [], []
    for f in schema:
        meta = _metadata(f)
        if pa.types.is_string(f.type):
            fmt, np_type, null = f"{widths[f.name]}A", f"S{widths[f.name]}", None
        elif f.type in _FITS_TYPES:
            fmt, np_type, null = _FITS_TYPES[f.type]
        else:
            raise QueryError(f"column {f.name} has type {f.type}, which FITS export does not handle")
        columns.append(fits.Column(name=f.name, format=fmt, unit=meta.get("unit") or None, null=null))
        dtype.append((f.name, np_type))
    # nrows=0: astropy would otherwise allocate the whole table; the row count goes into NAXIS2 below.
    header = fits.BinTableHDU.from_columns(columns, nrows=0).header
    header["NAXIS2"] = rows
    header["EXTNAME"] = "CATALOG"
    for i, f in enumerate(schema, 1):
        description = _metadata(f).get("description")
        if description:
            header.set(f"TCOMM{i}", description, after=f"TFORM{i}")
    return header, np.dtype(dtype)


def _fits_records(batch: pa.RecordBatch, dtype: np.dtype) -> np.ndarray:
    """One batch as FITS binary-table records: nulls as TNULL (integers), NaN (floats), '' (strings)."""
    records = np.zeros(batch.num_rows, dtype=dtype)
    for f, column in zip(batch.schema, batch.columns):
        if pa.types.is_string(f.type):
            # FITS strings are ASCII: anything else becomes '?'.
            ascii_only = pc.replace_substring_regex(pc.fill_null(column, ""), r"[^\x00-\x7f]", "?")
            as_bytes = ascii_only.cast(pa.binary()).to_numpy(zero_copy_only=False)
            records[f.name] = np.asarray(as_bytes, dtype=dtype[f.name])
        elif pa.types.is_floating(f.type):
            records[f.name] = pc.fill_null(column, float("nan")).to_numpy(zero_copy_only=False)
        else:
            records[f.name] = pc.fill_null(column, _FITS_TYPES[f.type][2]).to_numpy(zero_copy_only=False)
    return records


def write_fits(
    catalog: str | Path | ds.Dataset, selection: Selection | None, out: str | Path, batch_rows: int = BATCH_ROWS
) -> int:
    """Stream a selection to a FITS binary table (HDU 1, EXTNAME CATALOG) with TUNIT and TCOMM from
    the schema and TNULL for integer nulls. Returns rows written."""
    from astropy.io import fits

    selection = selection or Selection()
    dataset = catalog if isinstance(catalog, ds.Dataset) else open_catalog(catalog)
    rows, schema, widths = _fits_layout(dataset, selection)
    header, dtype = _fits_header(schema, widths, rows)
    out = Path(out)
    primary = fits.PrimaryHDU()
    primary.header["ORIGIN"] = "lamost-classify"
    primary.writeto(out, overwrite=True)
    written = 0
    stream = fits.StreamingHDU(str(out), header)
    try:
        for batch in select(dataset, selection, batch_rows):
            batch = batch.cast(schema) if batch.schema != schema else batch
            take = min(batch.num_rows, rows - written)
            if take <= 0:
                break
            stream.write(_fits_records(batch.slice(0, take), dtype).view(np.uint8))
            written += take
    finally:
        stream.close()
    if written != rows:
        raise QueryError(f"FITS export: the header promised {rows} rows but the scan gave {written}")
    return written


# -- HATS --------------------------------------------------------------------------------------------


# Finest HEALPix order a partition may take. Order 7 pixels (0.21 deg2) hold far fewer than a
# million LAMOST spectra anywhere on the sky, and hats-import's alignment step costs more at each
# finer order whatever the catalog's size.
HATS_MAX_ORDER = 7


def hats_available() -> bool:
    """Whether the optional extra ``hats`` (hats-import) is installed."""
    try:
        import hats_import  # noqa: F401
    except ImportError:
        return False
    return True


# A HATS catalog name is one plain folder name under --out: never a path, never '.' or '..'.
HATS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def check_output_path(catalog: str | Path, out: str | Path) -> None:
    """Refuse an output inside the catalog (a reader would take it for part of the catalog, or it would
    replace catalog files) or one that holds the catalog (replacing it would delete the catalog)."""
    root = catalog_root(catalog)
    target = Path(out).resolve()
    if target == root or root in target.parents:
        raise QueryError(f"output {out} is inside the catalog {root}: write it outside the catalog directory")
    if target in root.parents:
        raise QueryError(f"output {out} holds the catalog {root}: choose an output outside it")


def export_hats(
    catalog: str | Path,
    out: str | Path,
    name: str = "lamost_classify",
    workers: int = 1,
    pixel_threshold: int = 1_000_000,
    highest_order: int = HATS_MAX_ORDER,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write the whole catalog as a HATS catalog ``out/name`` with hats-import (its own local Dask
    cluster of ``workers`` processes). Rows without ra/dec cannot be placed and are left out.
    ``overwrite`` replaces an existing HATS catalog ``out/name``, and only after every check has passed.
    Returns {'rows': written, 'dropped': rows without a position}."""
    if not HATS_NAME.fullmatch(name or ""):
        raise QueryError(
            f"--name {name!r}: a HATS catalog name is one folder name (letters, digits, '.', '_', '-'; "
            "not starting with '.'), not a path: put the folder in --out"
        )
    if not hats_available():
        raise QueryError("HATS export needs the optional extra: pip install 'lamost-classify[hats]'")
    out = Path(out)
    target = out / name
    check_output_path(catalog, target)
    if out.exists() and not out.is_dir():
        raise QueryError(f"--out {out} is a file: HATS export needs a folder")
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise QueryError(f"{target} exists; pass --overwrite to replace it")
        if target.is_symlink() or not target.is_dir():
            raise QueryError(f"{target} is not a folder: remove it yourself or choose another --name")
        is_hats = (target / "hats.properties").exists() or (target / "properties").exists()
        if not is_hats and any(target.iterdir()):
            raise QueryError(
                f"{target} is not a HATS catalog: --overwrite replaces only a HATS catalog; "
                "remove it yourself or choose another --name"
            )
    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    from ._hats import PositionedRowsReader

    dataset = open_catalog(catalog)
    files = list(dataset.files)
    if not files:
        raise QueryError(f"catalog {catalog} has no Parquet files to export")
    total = count(dataset)
    placed = count(dataset, Selection(where="ra IS NOT NULL AND dec IS NOT NULL"))
    if target.exists():  # every check above has passed
        shutil.rmtree(target)
    with tempfile.TemporaryDirectory(prefix="hats-", dir=out.parent if out.parent.exists() else None) as tmp:
        # An empty file with the catalog schema: hats-import copies its field metadata (unit,
        # description) into the HATS Parquet files.
        schema_file = Path(tmp) / "schema.parquet"
        pq.write_table(dataset.schema.empty_table(), schema_file)
        args = ImportArguments(
            output_artifact_name=name,
            output_path=str(out),
            input_file_list=files,
            file_reader=PositionedRowsReader(),
            ra_column="ra",
            dec_column="dec",
            sort_columns="obsid",
            use_schema_file=str(schema_file),
            tmp_dir=str(Path(tmp) / "work"),
            pixel_threshold=pixel_threshold,
            highest_healpix_order=highest_order,
            expected_total_rows=placed,
            resume=False,
            progress_bar=False,
        )
        processes = workers > 1
        with Client(
            processes=processes, n_workers=workers, threads_per_worker=1, dashboard_address=":0",
            local_directory=tmp,
        ) as client:
            pipeline_with_client(args, client)
    return {"rows": placed, "dropped": total - placed}


# -- dispatch ----------------------------------------------------------------------------------------

STREAM_WRITERS: dict[str, Callable[[pa.RecordBatchReader, Any], int]] = {
    "csv": write_csv,
    "parquet": write_parquet,
    "votable": write_votable,
}


def write(catalog: str | Path | ds.Dataset, selection: Selection | None, fmt: str, out: str | Path | None) -> int:
    """Write a selection as ``fmt`` (csv, parquet, fits, votable) to ``out``; CSV may go to stdout
    (``out`` None). Returns rows written."""
    fmt = fmt.lower()
    if fmt not in STREAM_WRITERS and fmt != "fits":
        raise QueryError(f"unknown format {fmt!r}: choose from csv, parquet, fits, votable")
    if out is None and fmt != "csv":
        raise QueryError(f"--format {fmt} needs --out FILE")
    if out is None:
        return write_csv(select(catalog, selection), None)
    out = Path(out)
    if not isinstance(catalog, ds.Dataset):
        check_output_path(catalog, out)
    if out.is_dir():
        raise QueryError(f"--out {out} is a folder: give a file name")
    if not out.parent.is_dir():
        raise QueryError(f"--out {out}: folder {out.parent} does not exist; create it first")
    # Written under a hidden name and renamed when complete: a failed export leaves no half file.
    partial = out.with_name(f".{out.name}.partial")
    try:
        if fmt == "fits":
            rows = write_fits(catalog, selection, partial)
        else:
            rows = STREAM_WRITERS[fmt](select(catalog, selection), partial)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return rows
