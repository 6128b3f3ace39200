"""host.py: the one CPU count and the one cache directory every layer uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamost_classify.host import available_cpus, cache_dir


def test_cache_dir_prefers_lamost_classify_cache_then_xdg_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAMOST_CLASSIFY_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("LAMOST_CLASSIFY_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "lamost-classify"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "lamost-classify"


def test_available_cpus_takes_slurms_allocation_over_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert available_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert available_cpus() == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "not a number")  # ignored, as SLURM never writes one
    assert available_cpus() == len(os.sched_getaffinity(0))


def test_the_local_cluster_and_torch_threads_use_the_same_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from lamost_classify.pipeline.cluster import local_cluster_size

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    assert local_cluster_size() == (5, 1)
