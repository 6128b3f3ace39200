"""Discover the inputs of a run and cut them into batches: the plan.

A plan is the ordered list of input sources (file paths, or ``path#row`` for rows of a Parquet table of
spectra) and a batch size. Its fingerprint (sha256 of both) identifies the input set, so a resumed run
can refuse to continue over a different one. Sources are kept in a pyarrow array: 9 million paths as
Python strings would cost gigabytes on the client.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .releases import ReleaseProfile

SPECTRUM_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".fz")


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


def discover_release(profile: ReleaseProfile, data_root: Path) -> list[str]:
    """All spectrum files of a release below ``data_root``, in a stable (sorted) order."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FileNotFoundError(f"data root {data_root} does not exist or is not a directory")
    files = sorted(glob.glob(str(data_root / profile.pattern)))
    if not files:  # some mirrors flatten the tree
        files = sorted(str(p) for p in data_root.rglob("spec-*.fit*"))
    return files


def discover_inputs(inputs: list[str], data_root: Path | None = None) -> list[str]:
    """Expand ``--input`` items: files, directories, globs, text lists (.txt/.lst), LAMOST general catalogs
    (.csv, or a FITS/Parquet table with obsid/planid columns: one spectrum file per row) and Parquet tables
    of spectra (one ``path#row`` source per row). Order is kept as given; within an item, sorted."""
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if any(c in item for c in "*?["):
            out.extend(sorted(glob.glob(item, recursive=True)))
        elif path.is_dir():
            out.extend(sorted(str(p) for p in path.rglob("*") if p.name.endswith(SPECTRUM_SUFFIXES)))
        elif not path.exists():
            raise FileNotFoundError(f"input {item} does not exist")
        elif path.suffix in (".txt", ".lst"):
            lines = [ln.strip() for ln in path.read_text().splitlines()]
            out.extend(ln for ln in lines if ln and not ln.startswith("#"))
        elif path.suffix == ".csv":
            out.extend(catalog_files(_read_csv(path), data_root or path.parent))
        elif path.suffix == ".parquet":
            names = pq.read_schema(path).names
            if "flux" in names or "flux_norm" in names:
                n = pq.read_metadata(path).num_rows
                out.extend(f"{item}#{i}" for i in range(n))
            else:
                out.extend(catalog_files(pq.read_table(path).to_pylist(), data_root or path.parent))
        elif path.name.endswith(SPECTRUM_SUFFIXES) and not _is_catalog_fits(path):
            out.append(item)
        elif path.name.endswith(SPECTRUM_SUFFIXES):
            from astropy.table import Table

            table = Table.read(path)
            rows = [dict(zip(table.colnames, r)) for r in table.iterrows()]
            out.extend(catalog_files(rows, data_root or path.parent))
        else:
            out.append(item)  # unknown kind: the reader will say what is wrong with it, in its catalog row
    return out


def catalog_files(rows: list[dict], root: Path) -> list[str]:
    """Spectrum paths for the rows of a LAMOST general catalog, laid out as a release lays them out."""
    out = []
    for row in rows:
        row = {k.lower(): v for k, v in row.items()}
        name = row.get("file") or row.get("filename")
        if name:
            out.append(str(Path(root) / str(name)))
            continue
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


def make_plan(sources: list[str], batch_size: int) -> Plan:
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    return Plan(pa.array([os.fspath(s) for s in sources], type=pa.string()), batch_size)
