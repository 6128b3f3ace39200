"""The plan and the Parquet reader agree on what a Parquet table of spectra is: a table the reader would
refuse is refused when the run is planned (one line, non-zero exit, no traceback, nothing written), and
a table the plan expands into ``path#row`` sources is one whose every row the reader reads."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from lamost_classify.cli import main
from lamost_classify.pipeline.plan import discover_inputs
from lamost_classify.pipeline.readers import read_batch, read_parquet_spectra
from lamost_classify.pipeline.spectrum import SpectrumReadError

SPECTRUM = [1.0, 2.0, 3.0]
TABLES = {
    "flux": {"flux": [SPECTRUM] * 2},
    "FLUX and ivar": {"FLUX": [SPECTRUM] * 2, "ivar": [SPECTRUM] * 2},
    "flux_norm only": {"flux_norm": [SPECTRUM] * 2},
    "flux_norm and Flux": {"flux_norm": [SPECTRUM] * 2, "Flux": [SPECTRUM] * 2},
    "flux as numbers": {"flux": [1.0, 2.0]},
    "flux as strings": {"flux": [["a", "b"]] * 2},
    "ivar as numbers": {"flux": [SPECTRUM] * 2, "ivar": [1.0, 2.0]},
    "wavelength as strings": {"flux": [SPECTRUM] * 2, "wavelength": [["a", "b", "c"]] * 2},
}


def write_table(path: Path, columns: dict) -> str:
    pq.write_table(pa.table({"obsid": [1, 2], **columns}), path)
    return str(path)


@pytest.mark.parametrize("columns", TABLES.values(), ids=TABLES.keys())
def test_plan_refuses_exactly_the_tables_the_reader_refuses(tmp_path, columns):
    path = write_table(tmp_path / "t.parquet", columns)
    try:
        read_parquet_spectra(path)
    except SpectrumReadError as exc:
        with pytest.raises(ValueError) as refused:
            discover_inputs([path])
        assert str(refused.value) == str(exc)
        return
    sources = discover_inputs([path])
    assert sources == [f"{path}#0", f"{path}#1"]
    assert [s.meta["obsid"] for s in read_batch(sources)] == [1, 2]


def test_a_table_without_flux_is_a_general_catalog_of_files(tmp_path):
    path = write_table(tmp_path / "cat.parquet", {"file": ["a/spec-1.fits.gz", "b/spec-2.fits.gz"]})
    assert discover_inputs([path]) == [str(tmp_path / "a/spec-1.fits.gz"), str(tmp_path / "b/spec-2.fits.gz")]


@pytest.mark.parametrize(("columns", "phrase"), [
    ({"flux_norm": [SPECTRUM] * 2}, "score it with `lamost-classify evaluate MODEL"),
    ({"flux": [1.0, 2.0]}, "column 'flux' is double; it must hold one list of numbers per spectrum"),
    ({"flux": [SPECTRUM] * 2, "ivar": [["x"] * 3] * 2}, "column 'ivar' is list<"),
    (None, "not a readable Parquet file"),
])
def test_run_refuses_an_unreadable_table_of_spectra_in_one_line(tmp_path, columns, phrase):
    path = tmp_path / "t.parquet"
    if columns is None:
        path.write_bytes(b"PAR1 not a Parquet file")
    else:
        write_table(path, columns)
    out = tmp_path / "catalog"
    result = CliRunner().invoke(main, ["run", "--input", str(path), "--output", str(out), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and phrase in errors[0] and str(path) in errors[0], result.output
    assert not out.exists()
