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
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

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
    sources: pa.Array  # string array, in processing order
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
    """Every file below ``root``. Directory symlinks are followed (a release may be assembled from links to
    several disks), but each real directory is entered once, so a link back up the tree (a loop) or a
    second link to the same directory adds nothing."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            stat = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        for name in filenames:
            yield os.path.join(dirpath, name)


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


def expand_glob(pattern: str) -> list[str]:
    """The files a glob names, sorted. '**' walks with :func:`walk_files` (Python's glob follows a symlink
    loop until the path is too long, listing one file dozens of times)."""
    if "**" not in pattern:
        return sorted(glob.glob(pattern))
    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))
    root = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else "")
    found = []
    for path in walk_files(root or os.curdir):
        relative = os.path.relpath(path, root or os.curdir)
        if _match_parts(relative.split(os.sep), parts[fixed:]):
            found.append(os.path.join(root, relative) if root else relative)
    return sorted(found)


def discover_release(profile: ReleaseProfile, data_root: Path) -> list[str]:
    """All spectrum files of a release below ``data_root``, in a stable (sorted) order."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FileNotFoundError(f"data root {data_root} does not exist or is not a directory")
    files = sorted(glob.glob(str(data_root / profile.pattern)))
    if not files:  # some mirrors flatten the tree
        files = sorted(p for p in walk_files(data_root) if fnmatch.fnmatchcase(os.path.basename(p), "spec-*.fit*"))
    return files


def discover_inputs(inputs: list[str], data_root: Path | None = None) -> list[str]:
    """Expand ``--input`` items: files, directories, globs, text lists (.txt/.lst), LAMOST general catalogs
    (.csv, or a FITS/Parquet table with obsid/planid columns: one spectrum file per row) and Parquet tables
    of spectra (one ``path#row`` source per row). Order is kept as given; within an item, sorted. Relative
    paths in a text list are relative to the list's folder. Duplicates are left to :func:`make_plan`."""
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if any(c in item for c in "*?["):
            found = expand_glob(item)
            if not found:
                log.warning(f"input {item} matches no file")
            out.extend(found)
        elif path.is_dir():
            found = sorted(p for p in walk_files(path) if p.endswith(SPECTRUM_SUFFIXES))
            if not found:
                log.warning(f"input {item} holds no spectrum file ({', '.join(SPECTRUM_SUFFIXES)})")
            out.extend(found)
        elif not path.exists():
            raise FileNotFoundError(f"input {item} does not exist")
        elif path.suffix in (".txt", ".lst"):
            lines = [ln.strip() for ln in path.read_text().splitlines()]
            # os.path.join keeps an absolute entry as it is
            out.extend(os.path.join(path.parent, os.path.expanduser(ln)) for ln in lines if ln and not ln.startswith("#"))
        elif path.suffix == ".csv":
            out.extend(catalog_files(_read_csv(path), data_root or path.parent, item))
        elif path.suffix == ".parquet":
            out.extend(parquet_sources(path, item, data_root))
        elif path.name.endswith(SPECTRUM_SUFFIXES) and not _is_catalog_fits(path):
            out.append(item)
        elif path.name.endswith(SPECTRUM_SUFFIXES):
            from astropy.table import Table

            table = Table.read(path)
            rows = [dict(zip(table.colnames, r)) for r in table.iterrows()]
            out.extend(catalog_files(rows, data_root or path.parent, item))
        else:
            out.append(item)  # unknown kind: the reader will say what is wrong with it, in its catalog row
    return out


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
        return catalog_files(pq.read_table(path).to_pylist(), data_root or path.parent, item)
    try:
        parquet.spectra_columns(schema, item)
    except SpectrumReadError as exc:
        raise ValueError(str(exc)) from None
    return [f"{item}#{i}" for i in range(pq.read_metadata(path).num_rows)]


def catalog_files(rows: list[dict], root: Path, catalog: str = "the catalog") -> list[str]:
    """Spectrum paths for the rows of a LAMOST general catalog, laid out as a release lays them out."""
    out = []
    for number, row in enumerate(rows, start=1):
        row = {k.lower(): v for k, v in row.items()}
        name = row.get("file") or row.get("filename")
        if name:
            out.append(str(Path(root) / str(name)))
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
        out.append(str(Path(root) / obsdate / planid / fname))
    return out


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        dialect = csv.Sniffer().sniff(sample, delimiters=",|\t") if sample else csv.excel
        return list(csv.DictReader(fh, dialect=dialect))


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


def unique_sources(sources: list[str]) -> list[str]:
    """The sources without repeats, first occurrence kept: the same name, or the same file reached through
    another path to its directory (a symlink, '..', a relative path). Only directories are resolved
    (one realpath per directory, not per file: a release has millions of files in thousands of them)."""
    real_dirs: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    unique = []
    for source in sources:
        directory, name = os.path.split(source)
        if directory not in real_dirs:
            real_dirs[directory] = os.path.realpath(directory or os.curdir)
        key = (real_dirs[directory], name)
        if key not in seen:
            seen.add(key)
            unique.append(source)
    return unique


def make_plan(sources: list[str], batch_size: int, warn: Callable[[str], None] = log.warning) -> Plan:
    """The plan of a run: every input spectrum once. Repeats are dropped, with one warning that counts them."""
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    given = [os.fspath(s) for s in sources]
    unique = unique_sources(given)
    if len(unique) < len(given):
        repeats = len(given) - len(unique)
        inputs, verb = ("inputs", "were") if repeats > 1 else ("input", "was")
        warn(f"{repeats} duplicate {inputs} {verb} ignored (a file named twice, or reached again through a "
             "symlink): each spectrum is classified once")
    return Plan(pa.array(unique, type=pa.string()), batch_size)
