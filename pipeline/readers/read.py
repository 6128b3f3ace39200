"""read_spectrum and read_batch: the one way into the pipeline for any spectrum file.

Stages, in the order the bytes flow: load (path or bytes) -> decompress (gzip, once) -> open (Parquet,
or FITS HDU headers) -> identify the layout -> read arrays and metadata -> check.
"""

from __future__ import annotations

import os
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence

from ..spectrum import Spectrum, SpectrumReadError
from . import parquet
from .common import empty_spectrum, validate
from .fitsfile import FitsFile
from .instrument import KNOWN, LAMOST, SDSS, describe_instrument, instrument
from .registry import find_reader

GZIP_MAGIC = b"\x1f\x8b"
# A LAMOST or SDSS spectrum is under ~1 MB. Past this size (on disk, or once gunzipped) a file is not a
# spectrum, and reading it whole could exhaust a worker's memory: a gzip bomb expands ~1000-fold.
MAX_FILE_BYTES = 64 * 2**20
# "table.parquet#12": one row of a Parquet table, as read_parquet_spectra names its sources.
_PARQUET_ROW = re.compile(r"^(?P<path>.+)#(?P<row>\d+)$")

PathOrBytes = str | os.PathLike | bytes | bytearray | memoryview


def load(path_or_bytes: PathOrBytes, source: str) -> bytes:
    """The file's bytes. A Parquet file is left to pyarrow: only its 4-byte magic is returned, so a
    multi-gigabyte table passed here by mistake is never read into memory."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    try:
        with open(path_or_bytes, "rb") as file:
            head = file.read(4)
            if parquet.identify(head):
                return head
            data = head + file.read(MAX_FILE_BYTES - 3)
    except FileNotFoundError as exc:
        raise SpectrumReadError(f"{source}: no such file") from exc
    except IsADirectoryError as exc:
        raise SpectrumReadError(f"{source}: is a directory, not a spectrum file") from exc
    except OSError as exc:
        raise SpectrumReadError(f"{source}: cannot read the file ({exc.strerror or exc})") from exc
    if len(data) > MAX_FILE_BYTES:
        raise SpectrumReadError(f"{source}: {too_large('file size')}")
    return data


def too_large(what: str) -> str:
    return f"{what} exceeds {MAX_FILE_BYTES // 2**20} MB: not a spectrum file? (a LAMOST or SDSS spectrum is under ~1 MB)"


class DecompressedTooLarge(Exception):
    pass


def gunzip(data: bytes, limit: int = MAX_FILE_BYTES) -> bytes:
    """All members of a gzip stream, never more than ``limit`` bytes of output (DecompressedTooLarge past
    it). zlib checks each member's CRC in C, which makes this faster than gzip.decompress (a Python loop
    plus a second CRC pass); EOFError when the stream is cut short."""
    parts, total = [], 0
    while data:
        inflater = zlib.decompressobj(wbits=31)
        pending = data
        while pending and not inflater.eof:
            # max_length stops the inflater one byte past the limit; the rest waits in unconsumed_tail.
            part = inflater.decompress(pending, limit - total + 1)
            total += len(part)
            if total > limit:
                raise DecompressedTooLarge
            parts.append(part)
            pending = inflater.unconsumed_tail
        if not inflater.eof:
            raise EOFError("the compressed stream ends before its end-of-stream marker")
        data = inflater.unused_data.lstrip(b"\0")  # members may be separated by zero padding
        if data and not data.startswith(GZIP_MAGIC):
            raise EOFError(f"{len(data)} bytes of garbage after the gzip stream")
    return b"".join(parts)


def decompress(data: bytes, source: str) -> bytes:
    """Gunzip once when the bytes are gzip (by their magic number, not the file name)."""
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gunzip(data)
    except DecompressedTooLarge:
        raise SpectrumReadError(f"{source}: {too_large('decompressed size')}") from None
    except (EOFError, zlib.error) as exc:
        raise SpectrumReadError(
            f"{source}: the gzip stream is truncated or corrupt ({exc}); the file was probably cut short "
            "while copying: fetch it again"
        ) from exc


def read_fits(data: bytes, source: str) -> Spectrum:
    hdul = FitsFile(data, source)
    reader = find_reader(hdul)
    if reader is None:
        raise SpectrumReadError(f"{source}: {why_no_reader(hdul)}")
    return reader.read(hdul, source)


def why_no_reader(hdul: FitsFile) -> str:
    """Why no reader took the file: an instrument none knows, none named, or a layout of a known one."""
    header = hdul.primary.header
    layout = f"({hdul.describe()})" + (f"; {hdul.truncated}" if hdul.truncated else "")
    named = instrument(header)
    if named in (LAMOST, SDSS):
        return f"no reader knows this {named} FITS layout {layout}"
    if named is None:
        return (f"the header names no instrument (no TELESCOP or ORIGIN keyword), and a file is not read by its "
                f"shape alone; readers know {KNOWN} {layout}")
    return f"no reader for this instrument ({describe_instrument(header)}); readers know {KNOWN} {layout}"


def parquet_row(source: str | os.PathLike) -> tuple[str, int] | None:
    """(table path, row) when ``source`` names one row of a Parquet table as ``"table.parquet#ROW"``, else None.

    The rule: no file has the name itself, it ends in ``#`` and digits, and what comes before is a file.
    A file whose real name ends in ``#12`` is read as that file, whatever its suffix.
    """
    text = os.fspath(source)
    match = _PARQUET_ROW.match(text)
    if match is None or os.path.exists(text) or not os.path.isfile(match["path"]):
        return None
    return match["path"], int(match["row"])


def read_spectrum(path_or_bytes: PathOrBytes, source: str | None = None) -> Spectrum:
    """Read one spectrum from a file path or the file's bytes, gzipped or not, in any known layout.

    Raises SpectrumReadError, with the file and the problem in the message, when it cannot. A Parquet
    table is accepted when it holds exactly one spectrum, or as ``"table.parquet#ROW"``.
    """
    if source is None:
        source = "<bytes>" if isinstance(path_or_bytes, (bytes, bytearray, memoryview)) else str(path_or_bytes)
    if isinstance(path_or_bytes, (str, os.PathLike)) and (table_row := parquet_row(path_or_bytes)) is not None:
        table, row = table_row
        return parquet.read_parquet_spectra(table, [row])[0]
    raw = load(path_or_bytes, source)
    if parquet.identify(raw):  # pyarrow reads it from the path (or the bytes)
        return _single_parquet_row(path_or_bytes, source)
    data = decompress(raw, source)
    if parquet.identify(data):  # a gzipped Parquet file
        return _single_parquet_row(data, source)
    return validate(read_fits(data, source))


def _single_parquet_row(path_or_bytes: PathOrBytes, source: str) -> Spectrum:
    n = parquet.count_parquet_spectra(path_or_bytes)
    if n != 1:
        raise SpectrumReadError(
            f"{source}: a Parquet table of {n} spectra; read it with read_parquet_spectra(path, rows) "
            "(or name one row as 'path#ROW')"
        )
    spectrum = parquet.read_parquet_spectra(path_or_bytes, [0])[0]
    spectrum.source = source
    return spectrum


def read_batch(sources: Sequence[PathOrBytes]) -> list[Spectrum]:
    """Read many files without ever raising: one Spectrum per source, in order.

    A source that fails becomes an empty Spectrum flagged UNREADABLE with the reason in meta['error'],
    so nothing is silently dropped and one bad file never stops a batch. Rows of one Parquet table
    (``parquet_row``) are read together, in one pass over the row groups that hold them.
    """
    spectra: list[Spectrum | None] = [None] * len(sources)
    tables: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for i, item in enumerate(sources):
        if isinstance(item, (str, os.PathLike)) and (table_row := parquet_row(item)) is not None:
            tables[table_row[0]].append((i, table_row[1]))
            continue
        source = f"<bytes #{i}>" if isinstance(item, (bytes, bytearray, memoryview)) else str(item)
        try:
            spectra[i] = read_spectrum(item, source)
        except Exception as exc:
            spectra[i] = _unreadable(source, exc)
    for path, rows in tables.items():
        for (i, _), spectrum in zip(rows, _table_rows(path, [row for _, row in rows])):
            spectra[i] = spectrum
    return spectra


def _table_rows(path: str, rows: list[int]) -> list[Spectrum]:
    """Rows of one Parquet table, never raising. A row past the table's end (the table changed after the
    run was planned) is flagged alone, so the table's other rows are still read."""
    labels = [f"{path}#{row}" for row in rows]
    try:
        n_rows = parquet.count_parquet_spectra(path)
        read = iter(parquet.read_parquet_spectra(path, [row for row in rows if row < n_rows]))
    except Exception as exc:
        return [_unreadable(label, exc) for label in labels]
    return [
        next(read) if row < n_rows else empty_spectrum(
            label, f"{label}: row {row} is out of range: the table has {n_rows} rows; did it change after the "
                   "run was planned? Rerun with --overwrite")
        for row, label in zip(rows, labels)
    ]


def _unreadable(source: str, exc: Exception) -> Spectrum:
    if isinstance(exc, SpectrumReadError):
        return empty_spectrum(source, str(exc))
    # a bug or an unforeseen file: still a record, with the exception's type
    return empty_spectrum(source, f"{source}: unexpected {type(exc).__name__}: {exc}")
