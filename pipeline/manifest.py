"""The run's manifest: which input set (plan fingerprint), which model (weights and card), which settings,
which batches are finished. A resume must match all but the last.

A batch is finished when its Parquet file exists under ``parquet/``: the file is renamed into place only
after it (and its Zarr region) is completely written, so its presence is the commit. manifest.json keeps
the list too, for people and tools, and is rewritten atomically as batches finish.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lamost_classify.contract import CLASS_RULE, MANIFEST_FILE, PARQUET_DIR

from .schema import SCHEMA


class ResumeRefused(Exception):
    """The output directory holds another run (other inputs, model or settings): resuming would mix catalogs."""


class ManifestError(Exception):
    """manifest.json cannot be read (truncated, not JSON, keys missing): the directory's state is unknown."""


# What is recorded besides the plan and the model: every run setting that changes a catalog row's numbers
# or where its rows live. The input list and batch size are in the fingerprint; the model's weights, card
# and temperature are in the model id (``contract.model_id``).
SETTINGS = ("prior", "precision", "backend", "device", "save_flux", "save_cam")


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
    settings: dict = field(default_factory=dict)
    # The catalog's columns as this version writes them: batches of another version would not stack.
    columns: list[str] | None = field(default_factory=lambda: list(SCHEMA.names))
    version: int = 2
    class_rule: str | None = CLASS_RULE  # how this version publishes a class from the model's outputs

    def save(self, catalog_dir: Path) -> None:
        atomic_write_text(Path(catalog_dir) / MANIFEST_FILE, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, catalog_dir: Path) -> Manifest | None:
        """The manifest in ``catalog_dir`` (None when there is none); ManifestError names a broken one."""
        path = Path(catalog_dir) / MANIFEST_FILE
        if not path.exists():
            return None
        fix = "rerun with --overwrite to start this catalog over (or use another --output)"
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path} is corrupt ({exc}): {fix}") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{path} is not a run manifest (a JSON object was expected): {fix}")
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in ("fingerprint", "model", "n_sources", "batch_size", "n_batches", "release")
                         if n not in data)
        if missing:
            raise ManifestError(f"{path} is incomplete (no {', '.join(missing)}): {fix}")
        data.setdefault("columns", None)  # written before the columns were recorded
        data.setdefault("class_rule", None)  # before the rule was recorded: every class the most probable
        return cls(**{k: v for k, v in data.items() if k in names})

    def check_same_run(self, other: Manifest) -> None:
        """Refuse to resume over a different input set, model or setting, saying which differs (old vs new)."""
        problems = []
        if self.fingerprint != other.fingerprint:
            problems.append(
                f"the input set differs ({self.n_sources} sources, batch size {self.batch_size} before; "
                f"{other.n_sources} sources, batch size {other.batch_size} now)"
            )
        if self.model != other.model:
            problems.append(f"the model differs ({self.model} before, {other.model} now)")
        for name in SETTINGS:
            old, new = self.settings.get(name, "not recorded"), other.settings.get(name, "not recorded")
            if old != new:
                problems.append(f"--{name.replace('_', '-')} differs ({_show(old)} before, {_show(new)} now)")
        if self.columns != other.columns:
            before, now = set(self.columns or ()), set(other.columns or ())
            problems.append("its batches were written by another version of lamost-classify, with other columns ("
                            + ("not recorded" if self.columns is None else
                               f"now added: {', '.join(sorted(now - before)) or 'none'}; "
                               f"now gone: {', '.join(sorted(before - now)) or 'none'}") + ")")
        if self.class_rule != other.class_rule:
            before = self.class_rule or "the most probable, not recorded"
            problems.append(f"its classes were published by another version's rule ({before} before; "
                            f"{other.class_rule} now)")
        if problems:
            raise ResumeRefused(
                "the output directory holds another run's catalog: " + "; ".join(problems)
                + ". Use --overwrite to start over, or another --output."
            )


def _show(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


BATCH_FILE = re.compile(r"batch-(\d{6})\.parquet")


def finished_batches(catalog_dir: Path) -> set[int]:
    """Batch indices whose Parquet file is in place: the truth about what is done."""
    pdir = Path(catalog_dir) / PARQUET_DIR
    if not pdir.is_dir():
        return set()
    return {int(m.group(1)) for p in pdir.iterdir() if (m := BATCH_FILE.fullmatch(p.name))}


def batch_files(catalog_dir: Path, n_batches: int) -> list[Path]:
    """The Parquet files of batches 0 .. n_batches-1 that are in place: what the catalog is made of."""
    pdir = Path(catalog_dir) / PARQUET_DIR
    return [pdir / f"batch-{i:06d}.parquet" for i in sorted(finished_batches(catalog_dir)) if i < n_batches]


def stray_files(catalog_dir: Path, n_batches: int) -> list[str]:
    """Names in parquet/ that are not a batch file of this plan (copies, other runs' batches, anything
    else); our own unfinished ``.batch-*.tmp`` files are not counted: a run removes them."""
    pdir = Path(catalog_dir) / PARQUET_DIR
    if not pdir.is_dir():
        return []
    strays = []
    for p in pdir.iterdir():
        m = BATCH_FILE.fullmatch(p.name)
        if not (m and int(m.group(1)) < n_batches) and not _is_own_temp(p.name):
            strays.append(p.name)
    return sorted(strays)


def remove_unfinished(catalog_dir: Path) -> None:
    """Delete temporary batch files a killed run left behind (only call while holding the catalog lock)."""
    pdir = Path(catalog_dir) / PARQUET_DIR
    if pdir.is_dir():
        for p in pdir.iterdir():
            if _is_own_temp(p.name):
                p.unlink(missing_ok=True)


def _is_own_temp(name: str) -> bool:
    return name.startswith(".batch-") and name.endswith(".tmp")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
