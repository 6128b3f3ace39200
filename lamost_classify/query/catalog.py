"""A finished catalog's batch files, opened as one pyarrow dataset typed by the catalog ``SCHEMA``."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from ..contract import PARQUET_DIR
from ..pipeline.schema import SCHEMA
from .errors import QueryError


# The pipeline's batch files; anything else in parquet/ (a copy, an export) is not the catalog's.
BATCH_FILE = re.compile(r"batch-\d{6,}\.parquet")


def catalog_root(path: str | Path) -> Path:
    """The catalog directory of ``path``: the folder holding ``parquet/`` (``path`` itself, or its parent
    when ``path`` is that ``parquet/`` folder), or the Parquet file itself. Outputs must not land inside it."""
    path = Path(path).resolve()
    if path.is_dir() and not (path / PARQUET_DIR).is_dir() and path.name == PARQUET_DIR:
        return path.parent
    return path


def catalog_files(path: str | Path) -> list[Path]:
    """The batch files of a catalog, in batch order.

    ``path`` may be the catalog directory (its ``parquet/`` folder is read), that ``parquet/`` folder, or
    one Parquet file. Only ``batch-NNNNNN.parquet`` files are the catalog: hidden temporaries of a running
    pipeline are skipped silently, any other file is skipped with one note on stderr naming it (a stray
    copy would otherwise count its rows twice). A directory that is neither is a ``QueryError``.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise QueryError(f"catalog not found: {path}")
    folder = path / PARQUET_DIR if (path / PARQUET_DIR).is_dir() else path
    visible = sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))
    batches = [p for p in visible if p.is_file() and BATCH_FILE.fullmatch(p.name)]
    if folder is path and not batches:
        raise QueryError(
            f"{path} is not a lamost-classify catalog: it has no parquet/ folder and no batch-NNNNNN.parquet "
            "files; give the directory that `lamost-classify run --output` wrote"
        )
    ignored = [p.name for p in visible if p not in batches]
    if ignored:
        print(f"note: ignored {len(ignored)} file(s) in {folder} that are not catalog batches "
              f"(batch-NNNNNN.parquet): {', '.join(ignored)}", file=sys.stderr)
    return batches


def open_catalog(path: str | Path) -> ds.Dataset:
    """The catalog at ``path`` as a pyarrow dataset with the catalog ``SCHEMA`` (units and descriptions
    in each field's metadata). Filters and column selections on it read only what they need."""
    files = catalog_files(path)
    try:
        schema = _dataset_schema(files)
        return ds.dataset([str(f) for f in files], schema=schema, format="parquet")
    except (pa.ArrowException, OSError) as exc:
        raise QueryError(f"cannot read the catalog at {path}: {exc}") from None


def _dataset_schema(files: Sequence[Path]) -> pa.Schema:
    """SCHEMA, plus any extra columns a newer pipeline wrote, so old and new batch files read alike."""
    if not files:
        return SCHEMA
    import pyarrow.parquet as pq

    try:
        first = pq.read_schema(files[0])
    except (pa.ArrowException, OSError) as exc:
        raise QueryError(f"cannot read catalog file {files[0]}: {exc}") from None
    extra = [f for f in first if f.name not in SCHEMA.names]
    return pa.schema(list(SCHEMA) + extra)
