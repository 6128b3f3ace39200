"""The hats-import reader for HATS export. A module of its own so that importing ``export`` never needs
the optional extra, and so Dask worker processes can unpickle the reader by its module path."""

from __future__ import annotations

import pyarrow.compute as pc
from hats_import.catalog.file_readers.parquet import ParquetPyarrowReader


class PositionedRowsReader(ParquetPyarrowReader):
    """Reads the catalog's own Parquet files, leaving out rows without ra/dec (unreadable files):
    HEALPix partitioning needs a position."""

    def read(self, input_file, read_columns=None):
        for table in super().read(input_file, read_columns):
            yield table.filter(pc.and_(pc.is_valid(table["ra"]), pc.is_valid(table["dec"])))
