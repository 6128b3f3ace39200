"""Discovery streams: paths come out sorted without being held, and the plan is built without a Python
list of them, with the same dedupe, order and fingerprint as before."""

from __future__ import annotations

import glob
import hashlib
import os
import tracemalloc

import pytest

from lamost_classify.pipeline import plan as plan_module
from lamost_classify.pipeline.plan import glob_files, iter_inputs, make_plan, walk_files

# Names whose sorted order differs from a walk that sorts each directory's names alone: 'b.c/x' sorts
# before 'b/x' because '.' < '/', yet 'b' < 'b.c'.
TRICKY = ["b/x.fits", "b.c/x.fits", "b-d/x.fits", "b.fits", "b0.fits", "a/b/c.fits", "a/b.fits", "a.fits",
          "B/x.fits", "b c/x.fits", ".hidden/x.fits", "b/.x.fits"]


@pytest.fixture
def tricky_tree(tmp_path):
    for name in TRICKY:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_walk_yields_paths_in_sorted_order(tricky_tree):
    walked = list(walk_files(tricky_tree))
    assert walked == sorted(walked)
    assert sorted(walked) == sorted(str(tricky_tree / name) for name in TRICKY)


@pytest.mark.parametrize("pattern", ["*/*.fits", "*", "b*/x.fits", "*.fits", ".*/*", "b/.*", "a/*/c.fits", "b?c/*"])
def test_a_glob_without_double_star_matches_pythons_glob_in_sorted_order(tricky_tree, monkeypatch, pattern):
    assert list(glob_files(str(tricky_tree / pattern))) == sorted(glob.glob(str(tricky_tree / pattern)))
    monkeypatch.chdir(tricky_tree)
    assert list(glob_files(pattern)) == sorted(glob.glob(pattern))


def test_inputs_are_streamed_and_a_missing_one_is_named_before_any_path(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("one.fits\n# a comment\n\n/abs/two.fits\n")
    sources = iter_inputs([str(listing)])
    assert iter(sources) is sources  # an iterator, not a list
    assert list(sources) == [str(tmp_path / "one.fits"), "/abs/two.fits"]
    with pytest.raises(FileNotFoundError, match="nope.txt does not exist"):
        iter_inputs([str(listing), str(tmp_path / "nope.txt")])


def test_repeats_are_found_even_when_every_hash_collides(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d", target_is_directory=True)
    sources = [str(tmp_path / "d" / f"{i}.fits") for i in range(5)]
    given = [sources[0], sources[1], str(tmp_path / "link" / "0.fits"), sources[2], sources[1], sources[3],
             sources[4]]
    monkeypatch.setattr(plan_module, "PLAN_CHUNK", 2)  # repeats across chunks
    messages: list[str] = []
    honest = make_plan(iter(given), 3, warn=messages.append)
    monkeypatch.setattr(plan_module, "hash", lambda _: 7, raising=False)  # every source on one hash
    colliding = make_plan(iter(given), 3, warn=messages.append)
    assert honest.sources.to_pylist() == colliding.sources.to_pylist() == sources
    assert messages == [messages[0]] * 2 and messages[0].startswith("2 duplicate inputs were ignored")


def test_the_fingerprint_is_the_documented_hash_of_batch_size_and_sources():
    sources = [f"/data/{i:03d}/spec-{i}.fits.gz" for i in range(250)]
    expected = hashlib.sha256(b"batch_size=100\n")
    expected.update("\n".join(sources).encode() + b"\n")
    assert make_plan(iter(sources), 100).fingerprint == expected.hexdigest()
    assert make_plan(sources, 100).fingerprint == expected.hexdigest()


def test_a_plan_holds_its_paths_more_compactly_than_a_list_of_them(monkeypatch):
    """Python strings cost ~2x their UTF-8 bytes (a list of them more, a set of them far more); the plan
    keeps the bytes once in an Arrow array."""
    monkeypatch.setattr(plan_module, "PLAN_CHUNK", 1000)
    n = 100_000

    def paths():
        for i in range(n):
            yield f"/data/lamost/dr5/{20120101 + i // 4000}/F{i // 4000:05d}/spec-{55800 + i // 4000}-F{i // 4000:05d}_sp{i % 4000 // 250:02d}-{i % 250:03d}.fits.gz" + "x" * 30

    utf8_bytes = sum(len(p) for p in paths())
    tracemalloc.start()
    try:
        plan = make_plan(paths(), 1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(plan) == n
    assert peak < 1.6 * utf8_bytes, (peak, utf8_bytes)
