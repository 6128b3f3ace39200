"""What the machine and the user give the package: the CPUs it may use and the directory it may cache in.

One definition for every layer (pipeline, model, mocks), so a SLURM allocation or ``LAMOST_CLASSIFY_CACHE``
is honoured everywhere alike. Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path


def available_cpus() -> int:
    """CPUs this process may use: SLURM's allocation, else the affinity mask, not the whole node's."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        return max(1, int(slurm))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cache_dir() -> Path:
    """The package's cache directory: ``$LAMOST_CLASSIFY_CACHE``, else ``$XDG_CACHE_HOME/lamost-classify``,
    else ``~/.cache/lamost-classify``. Not created here."""
    base = os.environ.get("LAMOST_CLASSIFY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lamost-classify")
    return Path(base)
