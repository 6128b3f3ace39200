"""The built-in sample release (mocks/sample.py): generated once into the package's cache directory."""

from __future__ import annotations

from lamost_classify.mocks import sample


def test_the_sample_is_generated_once_into_the_cache_the_environment_names(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMOST_CLASSIFY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sample, "SAMPLE_SIZE", 3)
    said: list[str] = []
    root = sample.sample_release(log=said.append)
    assert root == tmp_path / "cache" / f"sample-v{sample.SAMPLE_VERSION}"
    assert (root / ".complete").is_file() and len(said) == 1
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("spec-*"))
    assert len(files) == 3 + len(sample.BROKEN_FILES)
    assert set(sample.BROKEN_FILES) <= set(files)
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # the temporary tree was renamed into place

    again = sample.sample_release(log=said.append)
    assert again == root and len(said) == 1  # found complete: not generated a second time
