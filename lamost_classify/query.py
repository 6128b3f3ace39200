"""Ask a finished catalog questions: which rows, which columns, how many.

Stages, in the order data flows:

1. ``open_catalog``: the catalog's Parquet files as one pyarrow dataset, typed by ``SCHEMA``.
2. ``Selection`` -> ``selection_sql``: the user's criteria (class, probabilities, flag bits, a cone, obsids,
   disagreement with LAMOST, a free SQL condition) as one DuckDB ``WHERE`` clause.
3. ``select``: DuckDB scans the dataset with projection and filter pushdown and hands back an Arrow
   ``RecordBatchReader``, so 9 million rows stream through in batches and are never all in memory.
4. ``read_table`` / ``stats``: an astropy Table with units, or counts and histograms.

The connection DuckDB runs in can read the catalog's Parquet files and no other file
(``allowed_paths``, ``enable_external_access=false``, configuration locked), and the user's
``--where`` text is parsed by DuckDB and checked node by node against an allow list before it is run, so a condition can read the catalog and nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from .pipeline.flags import UNUSABLE, Flag
from .pipeline.schema import SCHEMA

CLASSES = ("STAR", "GALAXY", "QSO")
PROB_COLUMN = {"STAR": "prob_star", "GALAXY": "prob_galaxy", "QSO": "prob_qso"}
# Every bit a flags value can hold (the column is a signed int64; bit 63 is never used).
ALL_BITS = (1 << 63) - 1
# Extra column added to cone-search results.
DIST_COLUMN = "dist_arcsec"
DIST_FIELD = pa.field(
    DIST_COLUMN, pa.float64(), metadata={"unit": "arcsec", "description": "great-circle distance from the cone centre"}
)
# Batches handed to writers; big enough to amortise per-batch overhead, small enough to bound memory.
BATCH_ROWS = 65_536


class QueryError(ValueError):
    """A query that cannot be run as asked: bad option values, unknown columns or flag names."""


class UnsafeWhereError(QueryError):
    """A ``--where`` condition that could reach beyond the catalog (statements, table functions, ...)."""


# --------------------------------------------------------------------------------------------------
# 1. open


# The pipeline's batch files; anything else in parquet/ (a copy, an export) is not the catalog's.
BATCH_FILE = re.compile(r"batch-\d{6,}\.parquet")


def catalog_root(path: str | Path) -> Path:
    """The catalog directory of ``path``: the folder holding ``parquet/`` (``path`` itself, or its parent
    when ``path`` is that ``parquet/`` folder), or the Parquet file itself. Outputs must not land inside it."""
    path = Path(path).resolve()
    if path.is_dir() and not (path / "parquet").is_dir() and path.name == "parquet":
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
    folder = path / "parquet" if (path / "parquet").is_dir() else path
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


# --------------------------------------------------------------------------------------------------
# 2. select: criteria -> SQL


@dataclass(frozen=True)
class Cone:
    """A circle on the sky: centre (deg) and radius (arcsec)."""

    ra: float
    dec: float
    radius_arcsec: float

    def __post_init__(self) -> None:
        for name in ("ra", "dec", "radius_arcsec"):
            if not math.isfinite(getattr(self, name)):
                raise QueryError(f"cone {name} must be a finite number, got {getattr(self, name)}")
        if not -90.0 <= self.dec <= 90.0:
            raise QueryError(f"cone dec must lie in [-90, 90] deg, got {self.dec}")
        if not 0.0 < self.radius_arcsec <= 180.0 * 3600.0:
            raise QueryError(f"cone radius must be in (0, 648000] arcsec, got {self.radius_arcsec}")


@dataclass(frozen=True)
class Selection:
    """What to select. Every criterion given must hold (AND); an empty Selection selects everything.

    ``min_prob`` applies to the probability of the class asked for with ``classes`` (for several classes,
    to the row's own class); ``min_confidence`` to the top class probability whatever the class.
    ``flags`` holds flag tests that must all hold, each a ``--flags`` text ('any', 'none',
    'LOW_SNR,MANY_MASKED', 'all:A,B', 'none:UNUSABLE', see ``parse_flag_test``) or a (mode, mask)
    pair with mode any/all/none: at least one / all / none of the mask's bits set. ``disagree``: our
    class and LAMOST's are both one of STAR/GALAXY/QSO and differ (LAMOST's 'Unknown' is no disagreement). ``where`` is an SQL condition on the catalog's
    columns, checked by ``validate_where``.
    """

    classes: tuple[str, ...] = ()
    min_prob: float | None = None
    min_confidence: float | None = None
    flags: tuple[tuple[str, int] | str, ...] = ()
    cone: Cone | None = None
    obsids: tuple[int, ...] | None = None
    disagree: bool = False
    where: str | None = None
    columns: tuple[str, ...] | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        classes = tuple(c.strip().upper() for c in self.classes)
        for c in classes:
            if c not in CLASSES:
                raise QueryError(f"unknown class {c!r}: choose from {', '.join(CLASSES)}")
        object.__setattr__(self, "classes", classes)
        for name in ("min_prob", "min_confidence"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise QueryError(f"{name} must lie in [0, 1], got {value}")
        if self.min_prob is not None and not classes:
            raise QueryError("min_prob needs a class (--class); use min_confidence for the top probability")
        if self.limit is not None and self.limit < 0:
            raise QueryError(f"limit must be >= 0, got {self.limit}")
        tests = []
        for test in self.flags:
            mode, mask = parse_flag_test(test) if isinstance(test, str) else test
            if mode not in ("any", "all", "none") or not 0 < int(mask) <= ALL_BITS:
                raise QueryError(f"bad flag test {test!r}: mode any/all/none and a positive 63-bit mask")
            tests.append((mode, int(mask)))
        object.__setattr__(self, "flags", tuple(tests))


def flag_mask(names: str | Iterable[str]) -> int:
    """The bit mask of comma-separated (or listed) flag names, case-insensitive. 'UNUSABLE' stands for
    the bits that leave a row without a class; 'ANY' for every bit."""
    if isinstance(names, str):
        names = names.split(",")
    mask = 0
    for raw in names:
        name = raw.strip().upper()
        if not name:
            continue
        if name == "ANY":
            mask |= ALL_BITS
        elif name == "UNUSABLE":
            mask |= int(UNUSABLE)
        elif name in Flag.__members__:
            mask |= int(Flag[name])
        else:
            known = ", ".join(list(Flag.__members__) + ["UNUSABLE", "ANY"])
            raise QueryError(f"unknown flag {raw.strip()!r}: known flags are {known}")
    return mask


def parse_flag_test(spec: str) -> tuple[str, int]:
    """A ``--flags`` value as (mode, mask), mode one of any/all/none.

    'any' or 'none' alone: some bit / no bit set; 'LOW_SNR,MANY_MASKED': either bit set (same as
    'any:LOW_SNR,MANY_MASKED'); 'all:A,B': both set; 'none:A,B': neither set.
    """
    text = spec.strip()
    mode, _, names = text.partition(":")
    mode = mode.strip().lower()
    if not names:
        if mode in ("any", "none"):
            return mode, ALL_BITS
        return "any", flag_mask(text)
    if mode not in ("any", "all", "none"):
        raise QueryError(f"bad --flags {spec!r}: write NAMES, any:NAMES, all:NAMES or none:NAMES")
    mask = flag_mask(names)
    if not mask:
        raise QueryError(f"bad --flags {spec!r}: no flag names after {mode}:")
    return mode, mask


def _sql_float(x: float) -> str:
    # repr of a float is an exact, SQL-parsable literal; the value was checked finite by the caller.
    return repr(float(x))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def cone_sql(cone: Cone) -> tuple[str, str]:
    """(WHERE condition, distance expression in arcsec) for a cone.

    A bounding box on dec (and on RA with wrap-around, unless the circle reaches a pole) lets the scan
    skip rows cheaply; the exact test is the haversine distance, stable at small radii.
    """
    r = cone.radius_arcsec / 3600.0
    ra0 = cone.ra % 360.0
    dec0 = cone.dec
    box = [f"dec BETWEEN {_sql_float(max(dec0 - r, -90.0))} AND {_sql_float(min(dec0 + r, 90.0))}"]
    if abs(dec0) + r < 89.999 and r < 90.0:
        # Half-width in RA of the circle's tangent points: asin(sin r / cos dec0), padded for rounding.
        half = math.degrees(math.asin(min(1.0, math.sin(math.radians(r)) / math.cos(math.radians(dec0)))))
        half = half * (1 + 1e-9) + 1e-9
        lo, hi = ra0 - half, ra0 + half
        if lo < 0.0:
            box.append(f"(ra >= {_sql_float(lo + 360.0)} OR ra <= {_sql_float(hi)})")
        elif hi > 360.0:
            box.append(f"(ra >= {_sql_float(lo)} OR ra <= {_sql_float(hi - 360.0)})")
        else:
            box.append(f"ra BETWEEN {_sql_float(lo)} AND {_sql_float(hi)}")
    hav = (
        f"(pow(sin(radians(dec - {_sql_float(dec0)}) / 2), 2) + cos(radians(dec)) * "
        f"{_sql_float(math.cos(math.radians(dec0)))} * pow(sin(radians(ra - {_sql_float(ra0)}) / 2), 2))"
    )
    # least(1, .) guards asin against rounding just above 1 for antipodal points.
    dist = f"(degrees(2 * asin(sqrt(least(1.0, {hav})))) * 3600.0)"
    limit = _sql_float(math.sin(math.radians(r) / 2) ** 2)
    condition = " AND ".join(box + [f"{hav} <= {limit}"])
    return condition, dist


def angular_distance_arcsec(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    """Great-circle distance in arcsec between points in deg (numpy, haversine): the cone test's twin."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    hav = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.minimum(1.0, hav)))) * 3600.0


def selection_sql(selection: Selection, columns: Sequence[str]) -> str:
    """The WHERE condition for a selection ('TRUE' for none). ``columns``: the catalog's column names,
    to check the ``where`` text against."""
    parts: list[str] = []
    if selection.classes:
        names = ", ".join(f"'{c}'" for c in selection.classes)
        parts.append(f'"class" IN ({names})')
    # Probabilities are float32: compare in float32 so that '>= 0.9' keeps a stored 0.9 (0.89999998).
    if selection.min_prob is not None:
        p = f"CAST({_sql_float(selection.min_prob)} AS FLOAT)"
        tests = [f"(\"class\" = '{c}' AND {PROB_COLUMN[c]} >= {p})" for c in selection.classes]
        parts.append(" OR ".join(tests))
    if selection.min_confidence is not None:
        parts.append(f"confidence >= CAST({_sql_float(selection.min_confidence)} AS FLOAT)")
    for mode, mask in selection.flags:
        test = {"any": "<> 0", "all": f"= {mask}", "none": "= 0"}[mode]
        parts.append(f"(coalesce(flags, 0) & {mask}) {test}")
    if selection.cone is not None:
        parts.append(cone_sql(selection.cone)[0])
    if selection.obsids is not None:
        # A registered Arrow table, not a literal list: a file of 100 000 obsids stays cheap to plan.
        parts.append("obsid IN (SELECT obsid FROM _obsids)")
    if selection.disagree:
        parts.append(
            "\"class\" IS NOT NULL AND upper(trim(lamost_class)) IN ('STAR', 'GALAXY', 'QSO') "
            'AND upper(trim(lamost_class)) <> "class"'
        )
    if selection.where is not None:
        validate_where(selection.where, columns)
        # The newline ends the condition's text even if the tokenizer and parser ever disagreed on a comment.
        parts.append(f"({selection.where}\n)")
    return " AND ".join(f"({p})" for p in parts) if parts else "TRUE"


# -- the --where guard ------------------------------------------------------------------------------

# Expression node classes a condition may contain (DuckDB's parsed-expression classes).
_ALLOWED_NODES = {
    "COLUMN_REF", "CONSTANT", "COMPARISON", "CONJUNCTION", "OPERATOR", "BETWEEN", "CASE", "CAST", "TYPE",
    "COLLATE",
}
# Operator node types: the rest (ARRAY_EXTRACT, STRUCT_EXTRACT, ...) are not needed on flat columns.
_ALLOWED_OPERATORS = {
    "COMPARE_IN", "COMPARE_NOT_IN", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "OPERATOR_NOT",
    "OPERATOR_COALESCE", "OPERATOR_NULLIF",
}
# Scalar functions a condition may call: arithmetic, maths and string tests. Nothing that reads
# settings, files, the environment or other tables.
_ALLOWED_FUNCTIONS = {
    # operators parse as functions
    "+", "-", "*", "/", "//", "%", "**", "^", "&", "|", "<<", ">>", "~", "xor", "||",
    "~~", "!~~", "~~*", "!~~*", "~~~", "!~~~", "like", "ilike", "not_like", "not_ilike", "glob",
    # maths
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "sqrt", "cbrt", "pow", "power", "exp", "ln", "log",
    "log10", "log2", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "radians", "degrees", "pi",
    "greatest", "least", "sign", "mod", "isnan", "isinf", "isfinite", "bit_count", "hypot",
    # strings
    "lower", "upper", "lcase", "ucase", "length", "strlen", "substr", "substring", "starts_with",
    "ends_with", "prefix", "suffix", "contains", "trim", "ltrim", "rtrim", "replace", "concat", "instr",
    "position", "strpos", "left", "right", "regexp_matches", "regexp_full_match", "regexp_extract",
    "ifnull", "nullif", "coalesce",
}
# Types a condition may cast to. An unknown word before a string ("ATTACH 'x'") parses as a cast to a
# type of that name: refusing it here gives a clear message instead of a binder error.
_ALLOWED_TYPES = {
    "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
    "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL", "VARCHAR", "DATE", "TIMESTAMP", "INTERVAL",
}


def validate_where(where: str, columns: Sequence[str]) -> None:
    """Refuse a ``--where`` condition unless it is one plain expression over the catalog's columns.

    DuckDB parses ``SELECT * FROM catalog WHERE (<where>)``; the result must be a single plain SELECT of
    the catalog whose condition holds only allowed node kinds, allowed functions and known columns.
    Raises ``UnsafeWhereError`` (a ``QueryError``) with the reason.
    """
    if not where or not where.strip():
        raise UnsafeWhereError("--where is empty")
    # A comment or ';' could cut the condition loose from the query it is pasted into. Looked for in
    # DuckDB's own tokens, so text inside string literals ('%--%', '*/*') is just text.
    tokens = duckdb.tokenize(where)
    for i, (start, kind) in enumerate(tokens):
        text = where[start : tokens[i + 1][0] if i + 1 < len(tokens) else len(where)]
        if kind == duckdb.token_type.comment:
            raise UnsafeWhereError(f"--where refused: an SQL comment ({text.strip()!r}) is not allowed in a condition")
        if kind == duckdb.token_type.operator and ";" in text:
            raise UnsafeWhereError("--where refused: ';' (more than one statement) is not allowed in a condition")
    sql = f"SELECT * FROM catalog WHERE ({where})"
    try:
        with duckdb.connect(config={"enable_external_access": False}) as con:
            tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    except RecursionError:
        tree = {"error": True, "error_message": "expression depth"}
    if tree.get("error") and "expression depth" in str(tree.get("error_message")):
        raise UnsafeWhereError("--where is nested too deeply to check: write it with fewer nested levels")
    if tree.get("error"):
        raise UnsafeWhereError(f"--where is not a valid SQL condition: {tree.get('error_message', tree)}")
    statements = tree["statements"]
    if len(statements) != 1:
        raise UnsafeWhereError("--where refused: it must be one condition, not several statements")
    node = statements[0]["node"]
    plain_select = (
        node.get("type") == "SELECT_NODE"
        and not node.get("modifiers")
        and not node.get("cte_map", {}).get("map")
        and not node.get("group_expressions")
        and node.get("having") is None
        and node.get("qualify") is None
        and [e.get("class") for e in node.get("select_list", [])] == ["STAR"]
        and node.get("from_table", {}).get("type") == "BASE_TABLE"
        and node["from_table"].get("table_name") == "catalog"
    )
    if not plain_select:
        raise UnsafeWhereError("--where refused: it must be a condition, not a query (UNION, ORDER, LIMIT ...)")
    known = {c.lower() for c in columns}
    _check_node(node["where_clause"], known)


def _check_node(tree: Any, known: set[str]) -> None:
    """Check every node of a parsed condition; a stack, not recursion, so any depth DuckDB parses is fine."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            _check_one_node(node, known)
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))


def _check_one_node(node: dict, known: set[str]) -> None:
    kind = node.get("class")
    if kind is not None and "type" in node:
        if kind not in _ALLOWED_NODES and kind != "FUNCTION":
            what = {"SUBQUERY": "a subquery", "PARAMETER": "a parameter", "LAMBDA": "a lambda",
                    "WINDOW": "a window function", "STAR": "*"}.get(kind, kind.lower())
            raise UnsafeWhereError(f"--where refused: {what} is not allowed in a condition")
        if kind == "OPERATOR" and node["type"] not in _ALLOWED_OPERATORS:
            raise UnsafeWhereError(f"--where refused: operator {node['type'].lower()} is not allowed")
        if kind == "FUNCTION":
            name = node.get("function_name", "").lower()
            if node.get("schema") or node.get("catalog") or name not in _ALLOWED_FUNCTIONS:
                raise UnsafeWhereError(f"--where refused: function {name!r} is not allowed in a condition")
        if kind == "TYPE":
            name = str(node.get("type_name", "")).upper()
            if node.get("schema") or node.get("catalog") or name not in _ALLOWED_TYPES:
                raise UnsafeWhereError(
                    f"--where refused: {name!r} is not a type a condition may cast to (a statement keyword?)"
                )
        if kind == "COLUMN_REF":
            names = [n.lower() for n in node.get("column_names", [])]
            if not (len(names) == 1 or (len(names) == 2 and names[0] == "catalog")) or names[-1] not in known:
                raise UnsafeWhereError(
                    f"--where refers to unknown column {'.'.join(node.get('column_names', []))!r}; "
                    f"columns are: {', '.join(sorted(known))}"
                )


# --------------------------------------------------------------------------------------------------
# 3. run


_DUCKDB_TYPES = {
    pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.int16(): "SMALLINT", pa.float64(): "DOUBLE",
    pa.float32(): "FLOAT", pa.string(): "VARCHAR", pa.bool_(): "BOOLEAN",
}


def _first_line(exc: Exception) -> str:
    """DuckDB's message without the SQL excerpt it appends on later lines."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def connect(dataset: ds.Dataset, obsids: Sequence[int] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that sees the dataset as view ``catalog`` and can read the
    catalog's own Parquet files and nothing else: no other file, no extension, no setting change.

    A Parquet-file dataset is read by DuckDB's own Parquet reader (4-5x faster than scanning the
    pyarrow dataset and lighter on memory), with ``allowed_paths`` set to exactly its files;
    any other dataset (in memory, other formats) is scanned through Arrow.
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
            raise QueryError(f"cannot read the catalog: {_first_line(exc)}") from None
        present = {row[0] for row in con.execute("DESCRIBE _files").fetchall()}
        missing = [
            f"CAST(NULL AS {_DUCKDB_TYPES.get(f.type, 'VARCHAR')}) AS {_ident(f.name)}"
            for f in dataset.schema
            if f.name not in present
        ]
        con.execute(f"CREATE VIEW catalog AS SELECT {', '.join(['*'] + missing)} FROM _files")
    else:
        con.register("catalog", dataset)
    con.register("_obsids", pa.table({"obsid": pa.array(list(obsids or []), pa.int64())}))
    con.execute("SET lock_configuration = true")
    return con


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
            out.append((_ident(name), name))
        else:
            raise QueryError(f"unknown column {col!r}; columns are: {', '.join(names)}")
    if not out:
        raise QueryError("no columns selected")
    return out


def selection_query(selection: Selection, dataset: ds.Dataset) -> str:
    """The full SELECT statement DuckDB runs for a selection."""
    columns = ", ".join(f"{expr} AS {_ident(name)}" for expr, name in _projection(selection, dataset))
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
        raise QueryError(f"query failed: {_first_line(exc)}") from None
    schema = output_schema(reader.schema)

    def batches() -> Iterator[pa.RecordBatch]:
        # The generator holds the connection open until the last batch is read.
        try:
            for batch in reader:
                yield pa.RecordBatch.from_arrays(
                    [col.cast(f.type) for col, f in zip(batch.columns, schema)], schema=schema
                )
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {_first_line(exc)}") from None
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
            raise QueryError(f"query failed: {_first_line(exc)}") from None


def read_obsids(values: Iterable[str]) -> tuple[int, ...]:
    """Obsids from ``--obsid`` values: each an integer, or the path of a text file with one per line
    (blank lines and '#' comments skipped, commas or spaces also separate)."""
    out: list[int] = []
    for value in values:
        value = str(value).strip()
        if not value:
            continue
        if value.lstrip("+-").isdigit():
            out.append(int(value))
            continue
        path = Path(value)
        if not path.is_file():
            raise QueryError(f"--obsid {value!r} is neither an integer nor a readable file")
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for token in line.split("#", 1)[0].replace(",", " ").split():
                try:
                    out.append(int(token))
                except ValueError:
                    raise QueryError(f"{path}:{lineno}: {token!r} is not an integer obsid") from None
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# 4. results


def read_table(catalog: str | Path | ds.Dataset, selection: Selection | None = None, **criteria: Any):
    """The selected rows as an astropy Table with units and descriptions from the schema.

    Pass a ``Selection`` or its fields as keywords, e.g.
    ``read_table("catalog/", classes=["QSO"], min_prob=0.9, cone=Cone(150, 2, 3600))``.
    Nulls become masked values. Everything selected is loaded: add ``limit`` or criteria on big catalogs.
    """
    if selection is None:
        if "cone" in criteria and isinstance(criteria["cone"], (tuple, list)):
            criteria["cone"] = Cone(*criteria["cone"])
        for name in ("classes", "columns", "obsids"):
            if isinstance(criteria.get(name), str):
                criteria[name] = (criteria[name],)
            elif criteria.get(name) is not None:
                criteria[name] = tuple(criteria[name])
        selection = Selection(**criteria)
    elif criteria:
        raise QueryError("give either a Selection or keyword criteria, not both")
    return arrow_to_astropy(select(catalog, selection).read_all())


def arrow_to_astropy(table: pa.Table):
    """An Arrow table as an astropy Table, units and descriptions from field metadata, nulls masked."""
    import pyarrow.compute as pc
    from astropy.table import Column, MaskedColumn, Table

    out = Table()
    for f, column in zip(table.schema, table.columns):
        meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        mask = column.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_string(f.type):
            values = pc.fill_null(column, "").to_numpy(zero_copy_only=False).astype(str)
        elif pa.types.is_floating(f.type):
            values = pc.fill_null(column, float("nan")).to_numpy(zero_copy_only=False)
        else:
            values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
        info = {"unit": meta.get("unit") or None, "description": meta.get("description") or None}
        out[f.name] = MaskedColumn(values, mask=mask, **info) if mask.any() else Column(values, **info)
    return out


HIST_BINS = 20


def stats(catalog: str | Path | ds.Dataset, selection: Selection | None = None) -> dict[str, Any]:
    """Counts and histograms of a selection: rows, per class (None = no class), per flag bit, our class
    against LAMOST's, and ``HIST_BINS``-bin histograms over [0, 1] of each class probability and of
    confidence. Computed by aggregation in DuckDB: nothing row-sized is kept."""
    selection = selection or Selection()
    dataset = catalog if isinstance(catalog, ds.Dataset) else open_catalog(catalog)
    where = selection_sql(selection, dataset.schema.names)
    limit = f" LIMIT {int(selection.limit)}" if selection.limit is not None else ""
    source = f"(SELECT * FROM catalog WHERE {where}{limit})"
    bits = ", ".join(
        f"sum(CASE WHEN (coalesce(flags, 0) & {int(f)}) <> 0 THEN 1 ELSE 0 END) AS {_ident(f.name)}" for f in Flag
    )
    hist_cols = ["prob_star", "prob_galaxy", "prob_qso", "confidence"]
    with connect(dataset, selection.obsids) as con:
        try:
            total, flagged = con.execute(
                f"SELECT count(*), sum(CASE WHEN coalesce(flags, 0) <> 0 THEN 1 ELSE 0 END) FROM {source}"
            ).fetchone()
            by_class = con.execute(f'SELECT "class", count(*) FROM {source} GROUP BY ALL ORDER BY ALL').fetchall()
            flag_row = con.execute(f"SELECT {bits} FROM {source}").fetchone()
            versus = con.execute(
                f'SELECT "class", lamost_class, count(*) FROM {source} GROUP BY ALL ORDER BY ALL'
            ).fetchall()
            histograms: dict[str, list[int]] = {}
            for col in hist_cols:
                rows = con.execute(
                    f"SELECT least(floor({col} * {HIST_BINS}), {HIST_BINS - 1})::INTEGER AS b, count(*) "
                    f"FROM {source} WHERE {col} IS NOT NULL AND isfinite({col}) GROUP BY b"
                ).fetchall()
                counts = [0] * HIST_BINS
                for b, n in rows:
                    counts[min(max(int(b), 0), HIST_BINS - 1)] += n
                histograms[col] = counts
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {_first_line(exc)}") from None
    return {
        "rows": int(total),
        "flagged": int(flagged or 0),
        "classes": {str(c) if c is not None else "None": int(n) for c, n in by_class},
        "flags": {f.name: int(n or 0) for f, n in zip(Flag, flag_row)},
        "class_vs_lamost": [
            {"class": c, "lamost_class": lc, "rows": int(n)} for c, lc, n in versus
        ],
        "histogram_edges": [i / HIST_BINS for i in range(HIST_BINS + 1)],
        "histograms": histograms,
    }


def format_stats(result: dict[str, Any]) -> str:
    """``stats`` as plain text for a terminal."""
    lines = [f"rows      {result['rows']:>12,d}", f"flagged   {result['flagged']:>12,d}", "", "class"]
    for name, n in result["classes"].items():
        lines.append(f"  {name:<20s} {n:>12,d}")
    lines += ["", "flag bit"]
    for name, n in result["flags"].items():
        lines.append(f"  {name:<20s} {n:>12,d}")
    lines += ["", "class vs lamost_class"]
    for row in result["class_vs_lamost"]:
        lines.append(f"  {str(row['class']):<8s} {str(row['lamost_class']):<10s} {row['rows']:>12,d}")
    edges = result["histogram_edges"]
    lines += ["", "histograms (bin lower edge: rows)"]
    for col, counts in result["histograms"].items():
        cells = "  ".join(f"{edges[i]:.2f}:{n}" for i, n in enumerate(counts) if n)
        lines.append(f"  {col:<12s} {cells or '(no values)'}")
    return "\n".join(lines)


def plot_stats(result: dict[str, Any], path: str | Path) -> Path:
    """Write the probability histograms of ``stats`` as a PNG (log counts) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.asarray(result["histogram_edges"])
    fig, axes = plt.subplots(1, len(result["histograms"]), figsize=(4 * len(result["histograms"]), 3.2), sharey=True)
    for ax, (col, counts) in zip(np.atleast_1d(axes), result["histograms"].items()):
        ax.stairs(np.asarray(counts), edges, fill=True)
        ax.set_xlabel(col)
        if any(counts):
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.5)
    np.atleast_1d(axes)[0].set_ylabel("rows")
    fig.suptitle(f"{result['rows']:,d} rows")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
