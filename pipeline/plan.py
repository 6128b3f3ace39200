"""Discover the inputs of a run and cut them into batches: the plan.

A plan is the ordered list of input sources (file paths, or ``path#row`` for rows of a Parquet table of
spectra) and a batch size. Its fingerprint (sha256 of both) identifies the input set, so a resumed run
can refuse to continue over a different one. Sources are kept in a pyarrow array: 9 million paths as
Python strings would cost gigabytes on the client.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import hashlib
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .readers import parquet
from .releases import ReleaseProfile
from .spectrum import SpectrumReadError

SPECTRUM_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".fz")
# The columns by which a LAMOST general catalog names a spectrum file (without a 'file' column).
CATALOG_KEYS = ("obsdate", "lmjd", "planid", "spid", "fiberid")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """A contiguous slice [start, stop) of the plan's sources."""

    index: int
    start: int
    stop: int
    sources: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"batch-{self.index:06d}"


@dataclass
class Plan:
    sources: pa.Array | pa.ChunkedArray  # strings, in processing order
    batch_size: int

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def n_batches(self) -> int:
        return -(-len(self.sources) // self.batch_size)

    def batch(self, index: int) -> Batch:
        start = index * self.batch_size
        stop = min(start + self.batch_size, len(self.sources))
        return Batch(index, start, stop, tuple(self.sources[start:stop].to_pylist()))

    def batches(self) -> list[Batch]:
        return [self.batch(i) for i in range(self.n_batches)]

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(f"batch_size={self.batch_size}\n".encode())
        for chunk in (self.sources.slice(i, 100_000) for i in range(0, len(self.sources), 100_000)):
            h.update("\n".join(chunk.to_pylist()).encode())
            h.update(b"\n")
        return h.hexdigest()

    def save(self, path: Path) -> None:
        pq.write_table(pa.table({"source": self.sources}), path)

    @classmethod
    def load(cls, path: Path, batch_size: int) -> Plan:
        return cls(pq.read_table(path).column("source").combine_chunks(), batch_size)


def walk_files(root: str | os.PathLike) -> Iterator[str]:
    """Every file below ``root``, in the order ``sorted()`` would give their paths, streamed (a release's
    millions of paths are never held at once). Directory symlinks are followed (a release may be assembled
    from links to several disks), but each real directory is entered once, the first reached in that
    order, so a link back up the tree (a loop) or a second link to the same directory adds nothing."""
    seen: set[tuple[int, int]] = set()

    def visit(directory: str) -> Iterator[str]:
        try:
            stat = os.stat(directory)
        except OSError:
            return
        if (stat.st_dev, stat.st_ino) in seen:
            return
        seen.add((stat.st_dev, stat.st_ino))
        try:
            with os.scandir(directory) as it:
                entries = [(entry.name, _is_dir(entry)) for entry in it]
        except OSError:
            return
        # A directory's name sorts with the '/' its paths continue with ('b/' after 'b.c/'), so visiting
        # entries in this order yields full paths in sorted order.
        for name, is_dir in sorted(entries, key=lambda e: e[0] + "/" if e[1] else e[0]):
            path = os.path.join(directory, name)
            if is_dir:
                yield from visit(path)
            else:
                yield path

    yield from visit(os.fspath(root))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks, as os.walk(followlinks=True) does
    except OSError:
        return False


def _match_parts(names: list[str], parts: list[str]) -> bool:
    """Whether path components ``names`` match glob components ``parts`` ('**' = any number of directories).
    As in glob, a wildcard does not match a name starting with '.' unless the pattern does."""
    if not parts:
        return not names
    head, rest = parts[0], parts[1:]
    if head == "**":
        return any(_match_parts(names[i:], rest) for i in range(len(names) + 1)
                   if not any(name.startswith(".") for name in names[:i]))
    return (bool(names) and (head.startswith(".") or not names[0].startswith("."))
            and fnmatch.fnmatchcase(names[0], head) and _match_parts(names[1:], rest))


def _has_magic(part: str) -> bool:
    return any(c in part for c in "*?[")


def glob_files(pattern: str) -> Iterator[str]:
    """The paths a glob names, in sorted order, streamed. '**' walks with :func:`walk_files` (Python's glob
    follows a symlink loop until the path is too long, listing one file dozens of times)."""
    parts = pattern.split(os.sep)
    fixed = next((i for i, part in enumerate(parts) if _has_magic(part)), len(parts))
    if fixed == len(parts):
        if os.path.lexists(pattern):
            yield pattern
        return
    if "**" not in parts[fixed:]:
        yield from _glob_level(os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else ""),
                               parts[fixed:])
        return
    root = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else "")
    for path in walk_files(root or os.curdir):
        relative = os.path.relpath(path, root or os.curdir)
        if _match_parts(relative.split(os.sep), parts[fixed:]):
            yield os.path.join(root, relative) if root else relative


def _glob_level(directory: str, parts: list[str]) -> Iterator[str]:
    """glob's matches of ``parts`` (no '**') below ``directory``, in sorted order: each level's names sorted,
    a directory's with the '/' its paths continue with."""
    head, rest = parts[0], parts[1:]
    if not _has_magic(head):
        path = os.path.join(directory, head)
        if not rest:
            if os.path.lexists(path):
                yield path
        elif os.path.isdir(path):
            yield from _glob_level(path, rest)
        return
    try:
        with os.scandir(directory or os.curdir) as it:
            names = [entry.name for entry in it if (head.startswith(".") or not entry.name.startswith("."))
                     and fnmatch.fnmatchcase(entry.name, head) and (not rest or _is_dir(entry))]
    except OSError:
        return
    for name in sorted(names, key=lambda n: n + "/" if rest else n):
        path = os.path.join(directory, name)
        if rest:
            yield from _glob_level(path, rest)
        else:
            yield path


def expand_glob(pattern: str) -> list[str]:
    """The paths a glob names, sorted (:func:`glob_files` as a list)."""
    return list(glob_files(pattern))


def discover_release(profile: ReleaseProfile, data_root: Path) -> list[str]:
    """:func:`iter_release` as a list (for a small release; a run streams it into :func:`make_plan`)."""
    return list(iter_release(profile, data_root))


def iter_release(profile: ReleaseProfile, data_root: Path) -> Iterator[str]:
    """All spectrum files of a release below ``data_root``, in a stable (sorted) order, streamed. A missing
    data root raises at once (FileNotFoundError), before any path is produced."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FileNotFoundError(f"data root {data_root} does not exist or is not a directory")
    return _release_files(profile, data_root)


def _release_files(profile: ReleaseProfile, data_root: Path) -> Iterator[str]:
    found = False
    for path in glob_files(str(data_root / profile.pattern)):
        found = True
        yield path
    if not found:  # some mirrors flatten the tree
        yield from (p for p in walk_files(data_root) if fnmatch.fnmatchcase(os.path.basename(p), "spec-*.fit*"))


def discover_inputs(inputs: list[str], data_root: Path | None = None) -> list[str]:
    """:func:`iter_inputs` as a list (for a few inputs; a run streams them into :func:`make_plan`)."""
    return list(iter_inputs(inputs, data_root))


def iter_inputs(inputs: list[str], data_root: Path | None = None) -> Iterator[str]:
    """Expand ``--input`` items: files, directories, globs, text lists (.txt/.lst), LAMOST general catalogs
    (.csv, or a FITS/Parquet table with obsid/planid columns: one spectrum file per row) and Parquet tables
    of spectra (one ``path#row`` source per row). Order is kept as given; within an item, sorted. Relative
    paths in a text list are relative to the list's folder. Duplicates are left to :func:`make_plan`.

    Streamed, so that a release or a list of millions of paths is never held as Python strings; an item
    that does not exist raises FileNotFoundError here, before any path is produced."""
    for item in inputs:
        if not _has_magic(item) and not os.path.exists(item):
            raise FileNotFoundError(f"input {item} does not exist")
    return _input_sources(inputs, data_root)


def _input_sources(inputs: list[str], data_root: Path | None) -> Iterator[str]:
    for item in inputs:
        found = 0
        for source in _item_sources(item, data_root):
            found += 1
            yield source
        if found:
            continue
        if _has_magic(item):
            log.warning(f"input {item} matches no file")
        elif os.path.isdir(item):
            log.warning(f"input {item} holds no spectrum file ({', '.join(SPECTRUM_SUFFIXES)})")


def _item_sources(item: str, data_root: Path | None) -> Iterator[str]:
    path = Path(item)
    if _has_magic(item):
        return glob_files(item)
    if path.is_dir():
        return (p for p in walk_files(path) if p.endswith(SPECTRUM_SUFFIXES))
    if path.suffix in (".txt", ".lst"):
        return _list_file(path)
    if path.suffix == ".csv":
        return catalog_files(_read_csv(path), data_root or path.parent, item)
    if path.suffix == ".parquet":
        return iter(parquet_sources(path, item, data_root))
    if path.name.endswith(SPECTRUM_SUFFIXES) and _is_catalog_fits(path):
        from astropy.table import Table

        table = Table.read(path)
        return catalog_files((dict(zip(table.colnames, r)) for r in table.iterrows()), data_root or path.parent, item)
    # A spectrum file, or an unknown kind: the reader will say what is wrong with it, in its catalog row.
    return iter([item])


def _list_file(path: Path) -> Iterator[str]:
    """The paths a text list names, line by line; relative ones relative to the list's folder."""
    with open(path) as lines:
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                # os.path.join keeps an absolute entry as it is
                yield os.path.join(path.parent, os.path.expanduser(line))


def parquet_sources(path: Path, item: str, data_root: Path | None = None) -> list[str]:
    """The sources of a Parquet ``--input``: one ``item#row`` per row of a table of spectra, or the files a
    LAMOST general catalog lists. A table of spectra the reader would refuse (``spectra_columns``: no
    'flux' list column, a flux_norm table) is refused here, as a ValueError with the reader's reason,
    rather than planned and then flagged row by row."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{item}: not a readable Parquet file ({exc})") from None
    if not parquet.is_spectra_table(schema):
        return list(catalog_files(pq.read_table(path).to_pylist(), data_root or path.parent, item))
    try:
        parquet.spectra_columns(schema, item)
    except SpectrumReadError as exc:
        raise ValueError(str(exc)) from None
    return [f"{item}#{i}" for i in range(pq.read_metadata(path).num_rows)]


def catalog_files(rows: Iterable[dict], root: Path, catalog: str = "the catalog") -> Iterator[str]:
    """Spectrum paths for the rows of a LAMOST general catalog, laid out as a release lays them out."""
    for number, row in enumerate(rows, start=1):
        row = {k.lower(): v for k, v in row.items()}
        name = row.get("file") or row.get("filename")
        if name:
            yield str(Path(root) / str(name))
            continue
        missing = [key for key in CATALOG_KEYS if row.get(key) in (None, "")]
        if missing:
            raise ValueError(
                f"{catalog}: row {number} has no {', '.join(missing)}; a LAMOST general catalog names each "
                f"spectrum by {', '.join(CATALOG_KEYS)} (or a 'file' column with the path)"
            )
        obsdate = str(row["obsdate"]).replace("-", "")[:8]
        planid = str(row["planid"]).strip()
        fname = f"spec-{int(row['lmjd'])}-{planid}_sp{int(row['spid']):02d}-{int(row['fiberid']):03d}.fits.gz"
        yield str(Path(root) / obsdate / planid / fname)


def _read_csv(path: Path) -> Iterator[dict]:
    with open(path, newline="") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        dialect = csv.Sniffer().sniff(sample, delimiters=",|\t") if sample else csv.excel
        yield from csv.DictReader(fh, dialect=dialect)


def _is_catalog_fits(path: Path) -> bool:
    if Path(path).name.startswith("spec-"):
        return False
    try:
        from astropy.io import fits

        with fits.open(path) as hdul:
            return len(hdul) > 1 and hasattr(hdul[1], "columns") and {
                "obsid", "planid"} <= {c.lower() for c in hdul[1].columns.names}
    except Exception:
        return False


# Sources taken in at a time while a plan is made: a bounded list, whatever the size of the input.
PLAN_CHUNK = 100_000


def make_plan(sources: Iterable[str], batch_size: int, warn: Callable[[str], None] = log.warning) -> Plan:
    """The plan of a run: every input spectrum once. Repeats are dropped, with one warning that counts them.

    A repeat is the same name, or the same file reached through another path to its directory (a symlink,
    '..', a relative path); the first occurrence is kept. ``sources`` is consumed in chunks into an Arrow
    array, and repeats are found through one 64-bit hash per source, checked against the full identity
    where hashes meet, so the client never holds millions of paths as Python strings. Only directories
    are resolved (one realpath per directory: a release has millions of files in thousands of them).
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    real_dirs: dict[str, str] = {}
    chunks: list[pa.Array] = []
    hashes: list[np.ndarray] = []
    stream = iter(sources)
    while chunk := [os.fspath(s) for s in itertools.islice(stream, PLAN_CHUNK)]:
        chunks.append(_string_array(chunk))
        hashes.append(np.fromiter((hash(_identity(s, real_dirs)) for s in chunk), np.int64, len(chunk)))
    given = pa.chunked_array(chunks, type=pa.string())
    keep = _first_occurrences(np.concatenate(hashes) if hashes else np.zeros(0, np.int64), given, real_dirs)
    repeats = len(given) - int(keep.sum())
    if repeats:
        inputs, verb = ("inputs", "were") if repeats > 1 else ("input", "was")
        warn(f"{repeats} duplicate {inputs} {verb} ignored (a file named twice, or reached again through a "
             "symlink): each spectrum is classified once")
        given = given.filter(pa.array(keep))
    return Plan(given, batch_size)


def _string_array(strings: list[str]) -> pa.Array:
    """``pa.array(strings)`` built from exactly sized buffers (pyarrow's builder grows its buffers by
    doubling, and the freed ones stay in the process: ~1.5x the array's size in resident memory)."""
    encoded = [s.encode() for s in strings]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(encoded), [None, pa.py_buffer(offsets),
                                                             pa.py_buffer(b"".join(encoded))])


def _identity(source: str, real_dirs: dict[str, str]) -> tuple[str, str]:
    """(real directory, name): what makes two sources the same file."""
    directory, name = os.path.split(source)
    if directory not in real_dirs:
        real_dirs[directory] = os.path.realpath(directory or os.curdir)
    return real_dirs[directory], name


def _first_occurrences(hashes: np.ndarray, sources: pa.ChunkedArray, real_dirs: dict[str, str]) -> np.ndarray:
    """Which sources to keep (bool per source): all but the second and later of each identity. Sources
    whose hash is shared are compared by their identity itself, so a hash collision loses nothing."""
    keep = np.ones(len(hashes), bool)
    order = np.argsort(hashes)
    sorted_hashes = hashes[order]
    same = sorted_hashes[1:] == sorted_hashes[:-1]
    del sorted_hashes
    shared = np.zeros(len(hashes), bool)
    shared[1:] |= same
    shared[:-1] |= same
    candidates = np.sort(order[shared])  # input order: the first of each identity is met first
    seen: set[tuple[str, str]] = set()
    start = 0
    for chunk in sources.chunks:  # chunk by chunk: a take on the whole ChunkedArray would copy it
        stop = start + len(chunk)
        here = candidates[(candidates >= start) & (candidates < stop)]
        for position, source in zip(here, chunk.take(pa.array(here - start)).to_pylist()):
            identity = _identity(source, real_dirs)
            if identity in seen:
                keep[position] = False
            else:
                seen.add(identity)
        start = stop
    return keep
