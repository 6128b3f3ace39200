"""Readers for every spectrum file layout the pipeline takes, chosen by the instrument the header names
and then the file's structure.

``read_spectrum(path_or_bytes)`` reads one file (LAMOST DR1, DR2-DR8 image, DR9+ COADD table, SDSS/BOSS
spec, SDSS DR7 spSpec, gzipped or not); ``read_batch(sources)`` reads many and never raises, a source
``table.parquet#ROW`` being one row of a Parquet table (``parquet_row``: the one rule); ``read_parquet_spectra``
and ``count_parquet_spectra`` serve Parquet tables of many spectra by row range.
"""

from .parquet import count_parquet_spectra, read_parquet_spectra
from .read import parquet_row, read_batch, read_spectrum
from .registry import READERS, Reader, find_reader, register_reader

__all__ = [
    "READERS", "Reader", "count_parquet_spectra", "find_reader", "parquet_row", "read_batch", "read_parquet_spectra",
    "read_spectrum", "register_reader",
]
