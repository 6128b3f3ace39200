"""Shared test fixtures. Tests that read others' data (../shared/data) skip cleanly on a fresh clone."""

from __future__ import annotations

import os
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
