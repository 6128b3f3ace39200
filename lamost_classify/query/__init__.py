"""Ask a finished catalog questions: which rows, which columns, how many.

Modules, in the order data flows:

1. ``catalog``: ``open_catalog``, the catalog's Parquet files as one pyarrow dataset, typed by ``SCHEMA``.
2. ``selection``: ``Selection`` -> ``selection_sql``, the user's criteria (class, probabilities, flag bits,
   a cone, obsids, disagreement with LAMOST, a free SQL condition) as one DuckDB ``WHERE`` clause;
   ``where_guard`` checks the free condition before it is used.
3. ``sandbox`` and ``scan``: ``select`` runs the statement in a DuckDB connection that can read the
   catalog's Parquet files and no other file, with projection and filter pushdown, and hands back an
   Arrow ``RecordBatchReader``, so 9 million rows stream through in batches and are never all in memory.
4. ``astropy_table`` / ``statistics``: ``read_table``, an astropy Table with units; ``stats``, counts and
   histograms.

Everything a caller needs is imported here: ``from lamost_classify.query import Selection, select``.
"""

from .astropy_table import arrow_to_astropy, read_table
from .catalog import catalog_files, catalog_root, open_catalog
from .errors import QueryError, UnsafeWhereError
from .sandbox import connect
from .scan import BATCH_ROWS, DIST_COLUMN, count, output_schema, select, selection_query
from .selection import (
    Cone, Selection, angular_distance_arcsec, cone_sql, flag_mask, parse_flag_test, read_obsids,
    selection_sql,
)
from .statistics import HIST_BINS, format_stats, plot_stats, stats
from .where_guard import validate_where

__all__ = [
    "BATCH_ROWS", "DIST_COLUMN", "HIST_BINS", "Cone", "QueryError", "Selection", "UnsafeWhereError",
    "angular_distance_arcsec", "arrow_to_astropy", "catalog_files", "catalog_root", "connect", "cone_sql",
    "count", "flag_mask", "format_stats", "open_catalog", "output_schema", "parse_flag_test", "plot_stats",
    "read_obsids", "read_table", "select", "selection_query", "selection_sql", "stats", "validate_where",
]
