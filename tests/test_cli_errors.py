"""Bad input to the command line gives one clear line and a non-zero exit, never a traceback, and never
deletes or adds anything it should not (issue 12: query, export, slurm-script and the model commands)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lamost_classify.cli import main
from lamost_classify.query import count, select

from test_query import ROWS, write_catalog


def run_cli(*args) -> "object":
    """The command as a user runs it; a clean exit is a SystemExit, anything else is a crash."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), f"crashed: {result.exception!r}\n{result.output}"
    assert "Traceback" not in result.output
    return result


def error_line(result) -> str:
    """The one 'Error: ...' line of a failed command."""
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def catalog(tmp_path) -> Path:
    return write_catalog(tmp_path / "catalog")


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# -- export --format hats: nothing outside --out, nothing before every check --------------------------


@pytest.mark.parametrize("name", ["../victim", "..", ".", "", "a/b", "/tmp/victim", ".hidden"])
def test_hats_name_must_be_a_plain_folder_name(catalog, tmp_path, monkeypatch, name):
    monkeypatch.setattr("lamost_classify.export.hats_available", lambda: True)  # reach the deletion step
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    before = tree(tmp_path)
    result = run_cli("export", catalog, "--format", "hats", "--out", out, "--name", name, "--overwrite")
    assert result.exit_code == 1
    assert "--name" in error_line(result) and "not a path" in error_line(result)
    assert tree(tmp_path) == before and (victim / "keep.txt").read_text() == "precious"


def test_hats_without_the_extra_deletes_nothing(catalog, tmp_path, monkeypatch):
    monkeypatch.setattr("lamost_classify.export.hats_available", lambda: False)
    old = tmp_path / "out" / "lc"
    old.mkdir(parents=True)
    (old / "hats.properties").write_text("an earlier export")
    result = run_cli("export", catalog, "--format", "hats", "--out", tmp_path / "out", "--name", "lc", "--overwrite")
    assert result.exit_code == 1 and "pip install 'lamost-classify[hats]'" in error_line(result)
    assert (old / "hats.properties").read_text() == "an earlier export"


def test_hats_overwrite_never_replaces_the_catalog_or_a_folder_that_is_not_hats(catalog, tmp_path, monkeypatch):
    monkeypatch.setattr("lamost_classify.export.hats_available", lambda: True)
    before = tree(catalog)
    # --out/--name naming the catalog itself, or a folder inside it
    for out, name in [(catalog.parent, catalog.name), (catalog, "parquet"), (catalog / "parquet", "lc")]:
        result = run_cli("export", catalog, "--format", "hats", "--out", out, "--name", name, "--overwrite")
        assert result.exit_code == 1, result.output
        assert "the catalog" in error_line(result)
        assert tree(catalog) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    result = run_cli("export", catalog, "--format", "hats", "--out", tmp_path, "--name", "notes", "--overwrite")
    assert result.exit_code == 1 and "is not a HATS catalog" in error_line(result)
    assert (other / "thesis.tex").exists()


# -- outputs never land inside the catalog -------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("query", "{cat}", "--format", "csv", "--out", "{cat}/parquet/qsos.csv"),
        ("query", "{cat}", "--format", "parquet", "--out", "{cat}/parquet/batch-000099.parquet"),
        ("query", "{cat}/parquet", "--format", "fits", "--out", "{cat}/selection.fits"),
        ("query", "{cat}", "--stats", "--plot", "{cat}/stats.png"),
        ("export", "{cat}", "--format", "parquet", "--out", "{cat}/parquet/batch-000099.parquet", "--overwrite"),
        ("export", "{cat}", "--format", "fits", "--out", "{cat}/all.fits"),
        ("export", "{cat}", "--format", "csv", "--out", "{cat}", "--overwrite"),
    ],
)
def test_outputs_inside_the_catalog_are_refused(catalog, args):
    before = tree(catalog)
    result = run_cli(*(a.format(cat=catalog) for a in args))
    assert result.exit_code == 2
    assert "inside the catalog" in error_line(result)
    assert tree(catalog) == before
    assert count(catalog) == len(ROWS)


def test_export_to_a_missing_folder_is_one_line(catalog, tmp_path):
    result = run_cli("export", catalog, "--format", "fits", "--out", tmp_path / "no" / "such" / "x.fits")
    assert result.exit_code == 1 and "does not exist; create it first" in error_line(result)


# -- the catalog reader reads the catalog's batches and nothing else -----------------------------------


def test_stray_files_in_parquet_are_ignored_and_named_once(catalog, tmp_path):
    parquet = catalog / "parquet"
    shutil.copy(parquet / "batch-000001.parquet", parquet / "batch-000001 (copy).parquet")
    shutil.copy(parquet / "batch-000002.parquet", parquet / "selection.parquet")
    result = run_cli("query", catalog, "--format", "csv", "--columns", "obsid")
    assert result.exit_code == 0, result.output
    obsids = [int(x) for x in result.stdout.splitlines()[1:]]
    assert sorted(obsids) == sorted(r[0] for r in ROWS)  # every row once, no copy counted
    notes = [line for line in result.stderr.splitlines() if "ignored" in line]
    assert len(notes) == 1
    assert "batch-000001 (copy).parquet" in notes[0] and "selection.parquet" in notes[0]
    out = tmp_path / "all.parquet"
    assert run_cli("export", catalog, "--format", "parquet", "--out", out).exit_code == 0
    assert select(out).read_all().num_rows == len(ROWS)


@pytest.mark.parametrize("content", [[], ["notes.txt"], ["table.parquet"]])
def test_a_folder_that_is_not_a_catalog_is_one_clear_error(tmp_path, content):
    folder = tmp_path / "somewhere"
    folder.mkdir()
    for name in content:
        (folder / name).write_text("x")
    for args in (("query", folder), ("query", folder, "--stats"), ("export", folder, "--format", "csv",
                                                                    "--out", tmp_path / "x.csv")):
        result = run_cli(*args)
        assert result.exit_code == 1
        assert "is not a lamost-classify catalog" in error_line(result)
        assert "run --output" in error_line(result)


@pytest.mark.parametrize("damaged", ["batch-000000.parquet", "batch-000002.parquet"])
def test_a_damaged_batch_file_is_one_clear_error(catalog, damaged):
    (catalog / "parquet" / damaged).write_bytes(b"not parquet at all")
    for args in (("query", catalog, "--stats"), ("query", catalog, "--format", "csv")):
        result = run_cli(*args)
        assert result.exit_code == 1 and damaged in error_line(result)


# -- --where: string literals are text; depth is refused clearly ---------------------------------------


@pytest.mark.parametrize(
    "where, expected",
    [
        ("source GLOB 'spec-11*'", {110, 111, 112, 113, 114}),
        ("source GLOB '*/*' OR source GLOB 'spec-10[12]*'", {101, 102}),
        ("source LIKE '%--%'", set()),
        ("error LIKE '%not a%' AND source NOT LIKE '%/*%;%'", {112}),
        ("source = 'it''s -- not a comment'", set()),
    ],
)
def test_where_accepts_comment_like_text_inside_strings(catalog, where, expected):
    result = run_cli("query", catalog, "--where", where, "--format", "csv", "--columns", "obsid")
    assert result.exit_code == 0, result.output
    assert {int(x) for x in result.stdout.splitlines()[1:]} == expected


@pytest.mark.parametrize("where", ["ra > 1 -- c", "ra > 1 /* c */", "ra > 1; SELECT 1", "source = 'a' -- '"])
def test_where_still_refuses_real_comments_and_statements(catalog, where):
    result = run_cli("query", catalog, "--where", where)
    assert result.exit_code == 1 and "--where refused" in error_line(result)


@pytest.mark.parametrize("depth", [600, 5000])
def test_deeply_nested_where_is_one_line(catalog, depth):
    result = run_cli("query", catalog, "--where", "NOT " * depth + "ra > 1")
    assert result.exit_code == 1 and "nested too deeply" in error_line(result)


def test_deeply_nested_where_in_a_real_process(catalog):
    """The recursion limit of a fresh interpreter, not pytest's: still one line."""
    proc = subprocess.run(
        [sys.executable, "-m", "lamost_classify.cli", "query", str(catalog), "--where", "NOT " * 600 + "ra > 1"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "Error: --where is nested too deeply to check: write it with fewer nested levels"
    ]


# -- slurm-script without the extra ---------------------------------------------------------------------


def test_slurm_script_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails as if not installed
    result = run_cli("slurm-script")
    assert result.exit_code == 1
    assert "pip install 'lamost-classify[slurm]'" in error_line(result)


# -- model commands: wrong names, tampered or mismatched weights ----------------------------------------


@pytest.fixture
def spectrum(tmp_path) -> Path:
    path = tmp_path / "spectrum.npy"
    np.save(path, np.linspace(0, 1, 2600, dtype=np.float32))
    return path


def model_commands(model, spectrum, tmp_path):
    return [
        ("explain", model, spectrum, "--out", tmp_path / "cam.png"),
        ("evaluate", model, spectrum, "--out", tmp_path / "eval"),
        ("train", spectrum, "--init-from", model, "--out", tmp_path / "run"),
    ]


def test_unknown_model_name(spectrum, tmp_path):
    for args in model_commands("no-such-model", spectrum, tmp_path):
        result = run_cli(*args)
        assert result.exit_code == 1, result.output
        assert "no shipped weights named 'no-such-model'" in error_line(result)
    assert not (tmp_path / "cam.png").exists()


def test_tampered_weights(weights, spectrum, tmp_path):
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    for args in model_commands(weights, spectrum, tmp_path):
        result = run_cli(*args)
        assert result.exit_code == 1, result.output
        line = error_line(result)
        assert "refused" in line and "does not match its card" in line


def test_weights_with_a_mismatched_card(weights, spectrum, tmp_path):
    card = json.loads(weights.with_suffix(".json").read_text())
    card["class_names"] = ["STAR", "GALAXY", "QSO", "UNKNOWN"]
    weights.with_suffix(".json").write_text(json.dumps(card))
    for args in model_commands(weights, spectrum, tmp_path):
        result = run_cli(*args)
        assert result.exit_code == 1, result.output
        assert "does not match this code" in error_line(result)
