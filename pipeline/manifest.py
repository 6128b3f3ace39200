"""The run's manifest: which input set (plan fingerprint), which model, which batches are finished.

A batch is finished when its Parquet file exists under ``parquet/``: the file is renamed into place only
after it (and its Zarr region) is completely written, so its presence is the commit. manifest.json keeps
the list too, for people and tools, and is rewritten atomically as batches finish.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST = "manifest.json"
PARQUET_DIR = "parquet"


class ResumeRefused(Exception):
    """The output directory holds another run (other inputs or model): resuming would mix catalogs."""


@dataclass
class Manifest:
    fingerprint: str
    model: str
    n_sources: int
    batch_size: int
    n_batches: int
    release: str
    created: float = field(default_factory=time.time)
    finished: list[int] = field(default_factory=list)
    version: int = 1

    def save(self, catalog_dir: Path) -> None:
        atomic_write_text(Path(catalog_dir) / MANIFEST, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, catalog_dir: Path) -> Manifest | None:
        path = Path(catalog_dir) / MANIFEST
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def check_same_run(self, other: Manifest) -> None:
        """Refuse to resume over a different input set or model, saying which differs."""
        problems = []
        if self.fingerprint != other.fingerprint:
            problems.append(
                f"the input set differs ({self.n_sources} sources, batch size {self.batch_size} before; "
                f"{other.n_sources} sources, batch size {other.batch_size} now)"
            )
        if self.model != other.model:
            problems.append(f"the model differs ({self.model} before, {other.model} now)")
        if problems:
            raise ResumeRefused(
                "the output directory holds another run's catalog: " + "; ".join(problems)
                + ". Use --overwrite to start over, or another --output."
            )


def finished_batches(catalog_dir: Path) -> set[int]:
    """Batch indices whose Parquet file is in place: the truth about what is done."""
    pdir = Path(catalog_dir) / PARQUET_DIR
    if not pdir.is_dir():
        return set()
    return {int(p.name[6:12]) for p in pdir.glob("batch-*.parquet")}


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
