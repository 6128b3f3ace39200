"""The built-in sample release: simulated LAMOST DR9-style files, generated once into a cache directory.

It is made only from what the package ships (the analytic templates and the shipped summary of real
LAMOST noise), so every machine generates the same files from the same seed, with or without
../shared. A few broken files are added on purpose, so the sample's catalog shows what flagged rows
look like.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from lamost_classify.contract import SURVEY_PRIOR
from lamost_classify.host import cache_dir

from .noise_donors import noise_library
from .release import write_release
from .simulate import Simulator, simulate
from .templates import analytic_templates

# 2: files carry TELESCOP/ORIGIN (readers check the instrument) and DATA_V = 'sample'.
SAMPLE_VERSION = 2
SAMPLE_SIZE = 2000
SAMPLE_SEED = 20260
BROKEN_FILES = {
    "20111024/MOCK0001/spec-55858-MOCK0001_sp16-251.fits.gz": b"\x1f\x8b\x08\x00truncated",
    "20111024/MOCK0001/spec-55858-MOCK0001_sp16-252.fits.gz": b"SIMPLE  =  this is not a FITS file",
    "20111024/MOCK0001/spec-55858-MOCK0001_sp16-253.fits": b"",
}


def sample_release(log: Callable[[str], object] = print, root: Path | None = None) -> Path:
    """The sample release's data root (below the package's cache directory unless ``root`` is given),
    generated on first use."""
    root = root or cache_dir() / f"sample-v{SAMPLE_VERSION}"
    if (root / ".complete").exists():
        return root
    log(f"generating the sample release ({SAMPLE_SIZE} simulated spectra) into {root} ...")
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    sim = Simulator(templates=analytic_templates(), library=noise_library("summary"), class_mix=SURVEY_PRIOR)
    # DATA_V = 'sample': the catalog's release column says which release a row came from.
    write_release(simulate(SAMPLE_SIZE, SAMPLE_SEED, simulator=sim), tmp, seed=SAMPLE_SEED, layout="v2",
                  data_v="sample")
    for rel, content in BROKEN_FILES.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(content)
    (tmp / ".complete").write_text(f"sample v{SAMPLE_VERSION}, seed {SAMPLE_SEED}\n")
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, root)  # atomic: a half-written sample is never picked up
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root
