"""The package's layers, read from the source: the contract at the bottom, model/ and mocks/ beside each
other above it, pipeline/ and the commands on top.

An import is found by walking each module's syntax tree, so lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package name it installs as (pyproject.toml's package-dir).
PACKAGES = {"model": "lamost_classify.model", "mocks": "lamost_classify.mocks"}
BOTTOM_MODULES = [ROOT / "lamost_classify" / "contract.py", ROOT / "lamost_classify" / "host.py"]
# What model/ and mocks/ must never import: the pipeline, and the CLI above it.
FORBIDDEN = ("lamost_classify.pipeline", "lamost_classify.commands", "lamost_classify.cli")


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against ``package``,
    the package the file belongs to); ``from x import y`` yields both ``x`` and ``x.y``, since ``y``
    may be a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def package_of(path: Path) -> str:
    """The dotted package a source file under one of PACKAGES (or lamost_classify/) belongs to."""
    rel = path.relative_to(ROOT).parent.parts
    top = PACKAGES.get(rel[0], rel[0])
    return ".".join([top, *rel[1:]])


def layered_files() -> list[Path]:
    files = sorted(p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py"))
    assert files, f"no source found under {ROOT}: {', '.join(PACKAGES)}"
    return files


def forbidden_imports(path: Path, package: str) -> list[str]:
    return sorted(m for m in imported_modules(path, package) if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


@pytest.mark.parametrize("path", layered_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_model_and_mocks_import_nothing_of_the_pipeline(path: Path) -> None:
    assert forbidden_imports(path, package_of(path)) == [], f"{path.relative_to(ROOT)} imports the layer above it"


@pytest.mark.parametrize("path", BOTTOM_MODULES, ids=lambda p: p.name)
def test_bottom_modules_import_only_numpy_and_the_standard_library(path: Path) -> None:
    imported = imported_modules(path, "lamost_classify")
    tops = {m.split(".")[0] for m in imported} - {"__future__"}
    allowed = set(sys.stdlib_module_names) | {"numpy"}
    assert tops <= allowed, f"{path.name} imports {sorted(tops - allowed)}"


def test_the_check_sees_relative_lazy_and_from_imports(tmp_path: Path) -> None:
    """The walk must catch every spelling a forbidden import can take, or the tests above prove nothing."""
    spellings = [
        "from lamost_classify.pipeline.grid import prepare_arrays",
        "import lamost_classify.pipeline.flags",
        "from lamost_classify import pipeline",
        "from ..pipeline import grid",
        "def f():\n    from lamost_classify.commands import run",
    ]
    probe = tmp_path / "probe.py"
    for source in spellings:
        probe.write_text(source + "\n")
        assert forbidden_imports(probe, "lamost_classify.model"), f"missed: {source!r}"
    probe.write_text("from lamost_classify.contract import N_PIXELS\nfrom .weights import load_weights\n"
                     "from ..contract import Flag\n")
    assert forbidden_imports(probe, "lamost_classify.model") == []
