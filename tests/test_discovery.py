"""Discovering a run's inputs: every input spectrum exactly once, list files read from where they are,
release names checked, and plan and Parquet reader agreeing on what a table of spectra is."""

from __future__ import annotations

import glob
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lamost_classify.mocks.writers import write_lamost_fits
from lamost_classify.mocks import sample
from lamost_classify.pipeline.flags import Flag
from lamost_classify.pipeline.plan import discover_inputs, discover_release, expand_glob, make_plan
from lamost_classify.pipeline.readers import read_batch, read_parquet_spectra
from lamost_classify.pipeline.releases import UnknownRelease, get_release
from lamost_classify.pipeline.spectrum import SpectrumReadError

NATIVE = 10 ** (3.5682 + 1e-4 * np.arange(3909))


def spectrum_file(path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    flux = 100 + np.sin(np.arange(NATIVE.size) / 30)
    write_lamost_fits(path, "v2", NATIVE, flux, np.full(NATIVE.size, 0.5), np.zeros(NATIVE.size), header={"OBSID": 1})
    return str(path)


@pytest.fixture
def looped_tree(tmp_path):
    """data/a/spec-1.fits, data/a/up -> data (a loop), data/b -> ../elsewhere (a real link) with spec-2.fits."""
    one = spectrum_file(tmp_path / "data" / "a" / "spec-1.fits")
    two = spectrum_file(tmp_path / "elsewhere" / "spec-2.fits")
    (tmp_path / "data" / "a" / "up").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "data" / "b").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    return tmp_path, one, two


def test_a_glob_through_a_symlink_loop_lists_each_file_once(looped_tree):
    tmp_path, one, _ = looped_tree
    pattern = str(tmp_path / "data" / "**" / "*.fits")
    assert glob.glob(pattern, recursive=True).count(one) == 1
    assert len(glob.glob(pattern, recursive=True)) > 10  # what Python's glob makes of the loop
    assert expand_glob(pattern) == [one, str(tmp_path / "data" / "b" / "spec-2.fits")]  # the real link is followed
    assert sorted(map(os.path.realpath, discover_inputs([str(tmp_path / "data")]))) == sorted(
        map(os.path.realpath, expand_glob(pattern)))


def test_an_input_that_names_no_file_is_warned_about(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    with caplog.at_level(logging.WARNING):
        assert discover_inputs([str(tmp_path / "empty"), str(tmp_path / "*.fits")]) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"input {tmp_path / 'empty'} holds no spectrum file (.fits, .fits.gz, .fit, .fit.gz, .fz)",
        f"input {tmp_path / '*.fits'} matches no file",
    ]


def test_glob_matching_follows_glob_rules(tmp_path, monkeypatch):
    for name in ("x/spec-1.fits", "x/y/spec-2.fits", "x/.hidden/spec-3.fits", "x/y/notes.txt", "x/y/z/spec-4.fits.gz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert expand_glob("x/**/spec-*.fits") == sorted(glob.glob("x/**/spec-*.fits", recursive=True))
    assert expand_glob("**/*.fits*") == sorted(glob.glob("**/*.fits*", recursive=True))
    assert expand_glob(str(tmp_path / "x" / "**" / "*.gz")) == [str(tmp_path / "x/y/z/spec-4.fits.gz")]


def test_duplicate_inputs_are_kept_once_with_one_warning(looped_tree, monkeypatch, caplog):
    tmp_path, one, two = looped_tree
    monkeypatch.chdir(tmp_path / "data")
    via_link = str(tmp_path / "data" / "b" / "spec-2.fits")
    sources = [one, two, one, "a/spec-1.fits", str(tmp_path / "data" / "a" / "up" / "a" / "spec-1.fits"), via_link]
    messages: list[str] = []
    plan = make_plan(sources, batch_size=10, warn=messages.append)
    assert plan.sources.to_pylist() == [one, two]
    assert messages == ["4 duplicate inputs were ignored (a file named twice, or reached again through a symlink): "
                        "each spectrum is classified once"]
    with caplog.at_level(logging.WARNING):
        assert len(make_plan(sources + [one], batch_size=10)) == 2
    assert [r.getMessage()[:26] for r in caplog.records] == ["5 duplicate inputs were ig"]
    caplog.clear()
    make_plan([one, two], batch_size=10)
    assert caplog.records == []
    # rows of a Parquet table are sources of their own
    assert len(make_plan(["t.parquet#0", "t.parquet#1", "./t.parquet#1"], 10, warn=messages.append)) == 2


def test_relative_paths_in_a_list_file_are_relative_to_the_list(tmp_path, monkeypatch):
    one = spectrum_file(tmp_path / "spectra" / "spec-1.fits")
    two = spectrum_file(tmp_path / "lists" / "here" / "spec-2.fits")
    listing = tmp_path / "lists" / "files.txt"
    listing.write_text(f"# my files\n../spectra/spec-1.fits\n\nhere/spec-2.fits\n{one}\n")
    monkeypatch.chdir(tmp_path / "spectra")  # somewhere the relative names would miss
    sources = discover_inputs([str(listing)])
    assert list(map(os.path.realpath, sources)) == [one, two, one]
    assert len(make_plan(sources, 10, warn=lambda _: None)) == 2
    assert all(s.flags & Flag.UNREADABLE == 0 for s in read_batch(sources))


@pytest.mark.parametrize("name", ["DR55", "smaple", "DR0", "", "lamost"])
def test_unknown_release_names_are_refused_with_the_valid_ones(name):
    with pytest.raises(UnknownRelease, match=r"unknown release .*valid names are DR1, DR2, .*DR13, sample") as caught:
        get_release(name)
    assert isinstance(caught.value, ValueError)  # what the CLI shows as one line
    if name == "smaple":
        assert "did you mean 'sample'?" in str(caught.value)


@pytest.mark.parametrize(("name", "expected"), [("dr5", "DR5"), ("DR13", "DR13"), ("Sample", "sample"), (" dr1 ", "DR1")])
def test_known_release_names(name, expected):
    assert get_release(name).name == expected


def test_the_sample_release_says_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(sample, "SAMPLE_SIZE", 3)
    root = sample.sample_release(log=lambda _: None, root=tmp_path / "sample")
    spectra = read_batch(discover_release(get_release("sample"), root))
    readable = [s for s in spectra if not s.flags & Flag.UNREADABLE]
    assert len(readable) == 3 and len(spectra) == 3 + len(sample.BROKEN_FILES)
    assert {s.meta["release"] for s in readable} == {"sample"}


# ---------------------------------------------------------------- Parquet tables: plan and reader agree


def table(path, **columns) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


@pytest.mark.parametrize("columns", [("flux",), ("FLUX", "ivar"), ("flux_norm",), ("flux_norm", "Flux")])
def test_plan_takes_the_parquet_tables_the_reader_reads(tmp_path, columns):
    path = table(tmp_path / "t.parquet", obsid=[1, 2], **{name: [[1.0, 2.0, 3.0]] * 2 for name in columns})
    try:
        read_parquet_spectra(path)
        reader_reads = True
    except SpectrumReadError:
        reader_reads = False
    if reader_reads:
        assert discover_inputs([path]) == [f"{path}#0", f"{path}#1"]
    else:
        with pytest.raises(ValueError, match=r"t\.parquet: a table of flux_norm .*`lamost-classify evaluate MODEL "):
            discover_inputs([path])


def test_a_catalog_without_the_naming_columns_is_one_clear_error(tmp_path):
    path = table(tmp_path / "cat.parquet", obsid=[1, 2], planid=["A", "B"], lmjd=[55859, 55860])
    with pytest.raises(ValueError, match=r"cat\.parquet: row 1 has no obsdate, spid, fiberid; a LAMOST general catalog"):
        discover_inputs([path])
