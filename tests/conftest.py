"""Shared test fixtures. Tests that read others' data (../shared/data) skip cleanly on a fresh clone."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LAMOST_SHARED_DATA", REPO.parent / "shared" / "data"))
LAMOST_DATA = SHARED_DATA / "lamost"
TEMPLATES = SHARED_DATA / "templates"

requires_shared = pytest.mark.skipif(
    not LAMOST_DATA.is_dir(), reason=f"real LAMOST files not found at {LAMOST_DATA} (fresh clone: ../shared absent)"
)
requires_templates = pytest.mark.skipif(
    not TEMPLATES.is_dir(), reason=f"templates not found at {TEMPLATES} (fresh clone: ../shared absent)"
)


@pytest.fixture
def weights(tmp_path) -> Path:
    """A copy of the shipped weights and card in tmp_path, for a test to edit or damage."""
    from lamost_classify.model.weights import packaged_weights_dir

    src = packaged_weights_dir() / "default.safetensors"
    dst = tmp_path / "copy.safetensors"
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst
