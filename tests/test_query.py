"""Catalog queries and exports, on small hand-made catalogs written with the catalog SCHEMA."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lamost_classify.pipeline.flags import Flag
from lamost_classify.pipeline.schema import SCHEMA

F = Flag
# obsid, ra, dec, class, (p_star, p_galaxy, p_qso), flags, lamost_class.  Hand-placed so each filter has a
# known answer: 101-105 around (150, 2); 106/107 either side of RA 0/360; 109-111 near the north pole;
# 112 unreadable (no position, no class); 113 flagged and disagreeing with LAMOST; 114 LAMOST 'Unknown'.
ROWS = [
    (101, 150.0, 2.0, "QSO", (0.02, 0.03, 0.95), 0, "QSO"),
    (102, 150.5, 2.5, "QSO", (0.05, 0.03, 0.92), 0, "QSO"),  # 0.707 deg from (150, 2)
    (103, 151.2, 2.0, "QSO", (0.01, 0.02, 0.97), 0, "QSO"),  # 1.199 deg from (150, 2)
    (104, 150.2, 1.8, "QSO", (0.10, 0.05, 0.85), 0, "GALAXY"),
    (105, 150.1, 2.1, "GALAXY", (0.10, 0.85, 0.05), 0, "GALAXY"),
    (106, 359.9995, 0.0, "STAR", (0.99, 0.005, 0.005), 0, "STAR"),
    (107, 0.0005, 0.0, "STAR", (0.98, 0.01, 0.01), 0, "STAR"),
    (108, 180.0, 0.0, "STAR", (0.97, 0.02, 0.01), int(F.LOW_SNR), "STAR"),
    (109, 10.0, 89.99, "STAR", (0.90, 0.05, 0.05), 0, "STAR"),
    (110, 190.0, 89.995, "GALAXY", (0.20, 0.70, 0.10), 0, "STAR"),
    (111, 100.0, 89.0, "STAR", (0.90, 0.05, 0.05), 0, "STAR"),
    (112, None, None, None, (None, None, None), int(F.UNREADABLE | F.MISSING_METADATA), None),
    (113, 20.0, -30.0, "STAR", (0.55, 0.40, 0.05), int(F.LOW_SNR | F.LOW_CONFIDENCE), "GALAXY"),
    (114, 21.0, -31.0, "STAR", (0.93, 0.05, 0.02), 0, "Unknown"),
]


def catalog_rows(rows=ROWS) -> list[dict]:
    out = []
    for obsid, ra, dec, cls, probs, flags, lamost in rows:
        conf = None if cls is None else max(probs)
        srt = sorted(p for p in probs if p is not None)
        out.append(
            {
                "obsid": obsid,
                "source": f"spec-{obsid}.fits.gz",
                "designation": None if ra is None else f"LAMOST J{obsid:06d}",
                "ra": ra,
                "dec": dec,
                "lmjd": 57000 + obsid,
                "planid": f"plan{obsid % 3}",
                "spid": obsid % 16,
                "fiberid": obsid % 250,
                "snr_g": None if cls is None else 10.0 + obsid % 7,
                "snr_r": None if cls is None else 12.0,
                "snr_pixel": None if cls is None else 5.5,
                "class": cls,
                "prob_star": probs[0],
                "prob_galaxy": probs[1],
                "prob_qso": probs[2],
                "confidence": conf,
                "margin": None if cls is None else srt[-1] - srt[-2],
                "flags": flags,
                "lamost_class": lamost,
                "lamost_subclass": None,
                "lamost_z": None if lamost is None else 0.0,
                "model": "densenet-test@abc123",
                "release": "test",
                "error": "not a FITS file" if cls is None else None,
            }
        )
    return out


def write_catalog(root: Path | str, rows=ROWS, per_file: int = 5) -> Path:
    """A catalog directory like the pipeline's: parquet/batch-NNNNNN.parquet, plain strings."""
    root = Path(root)
    (root / "parquet").mkdir(parents=True, exist_ok=True)
    records = catalog_rows(rows)
    for i in range(0, len(records), per_file):
        table = pa.Table.from_pylist(records[i : i + per_file], schema=SCHEMA)
        pq.write_table(table, root / "parquet" / f"batch-{i // per_file:06d}.parquet", use_dictionary=False)
    (root / "manifest.json").write_text("{}")
    return root


# ---------------------------------------------------------------------------------------------------

import json
import re
import shlex

import duckdb
import numpy as np
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lamost_classify.cli import main
from lamost_classify.export import hats_available, write, write_fits
from lamost_classify.query import (
    Cone,
    QueryError,
    Selection,
    UnsafeWhereError,
    connect,
    count,
    open_catalog,
    read_table,
    select,
    stats,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "query.md"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    root = write_catalog(tmp_path_factory.mktemp("cat") / "catalog")
    # A half-written batch of a running pipeline: hidden temporary name, not Parquet. Must be ignored.
    (root / "parquet" / ".batch-000009.1234.tmp").write_bytes(b"not parquet")
    return root


def obsids_of(catalog, selection=None, **kw) -> set[int]:
    table = select(catalog, selection or Selection(**kw)).read_all()
    return set(table.column("obsid").to_pylist())


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# -- open ---------------------------------------------------------------------------------------------


def test_open_catalog_reads_every_batch_with_units(catalog):
    dataset = open_catalog(catalog)
    assert dataset.count_rows() == len(ROWS)
    assert len(dataset.files) == 3  # 14 rows, 5 per file; the .tmp file is not one of them
    assert dataset.schema.field("ra").metadata[b"unit"] == b"deg"
    assert dataset.schema.field("class").metadata[b"description"].startswith(b"predicted class")
    # the dataset is a plain pyarrow dataset: its own filters push down
    t = dataset.to_table(columns=["obsid"], filter=ds.field("class") == "GALAXY")
    assert set(t.column("obsid").to_pylist()) == {105, 110}


def test_missing_and_empty_catalogs(tmp_path):
    with pytest.raises(QueryError, match="not found"):
        open_catalog(tmp_path / "nowhere")
    (tmp_path / "empty" / "parquet").mkdir(parents=True)
    assert count(tmp_path / "empty") == 0
    assert stats(tmp_path / "empty")["rows"] == 0


# -- filters, each against a hand-checked answer ------------------------------------------------------

FILTER_CASES = [
    (dict(classes=("QSO",)), {101, 102, 103, 104}),
    (dict(classes=("qso",), min_prob=0.9), {101, 102, 103}),
    # 109 and 111 store prob_star 0.9 as float32 (0.89999998): '>= 0.9' must keep them
    (dict(classes=("STAR", "GALAXY"), min_prob=0.9), {106, 107, 108, 109, 111, 114}),
    (dict(min_confidence=0.95), {101, 103, 106, 107, 108}),
    (dict(flags=("any",)), {108, 112, 113}),
    (dict(flags=("none",)), {101, 102, 103, 104, 105, 106, 107, 109, 110, 111, 114}),
    (dict(flags=("LOW_SNR",)), {108, 113}),
    (dict(flags=("UNREADABLE,low_confidence",)), {112, 113}),
    (dict(flags=("all:LOW_SNR,LOW_CONFIDENCE",)), {113}),
    (dict(flags=("none:UNUSABLE",)), {r[0] for r in ROWS} - {112}),
    (dict(flags=("any", "none:LOW_CONFIDENCE")), {108, 112}),
    (dict(flags=(("any", int(F.MISSING_METADATA)),)), {112}),
    (dict(obsids=(101, 113, 999)), {101, 113}),
    (dict(disagree=True), {104, 110, 113}),  # 114 is LAMOST 'Unknown': no disagreement
    (dict(where="snr_g > 15"), {104, 111}),  # snr_g = 10 + obsid % 7
    (dict(where="designation LIKE 'LAMOST J00010%'"), set(range(101, 110))),
    (dict(where='"class" IS NULL'), {112}),
    (dict(where="prob_galaxy BETWEEN 0.5 AND 0.9 AND lamost_class IN ('STAR', 'GALAXY')"), {105, 110}),
    (dict(classes=("QSO",), min_prob=0.9, cone=Cone(150.0, 2.0, 3600.0)), {101, 102}),
    (dict(classes=("QSO",), disagree=True), {104}),
]


@pytest.mark.parametrize("criteria,expected", FILTER_CASES, ids=[str(c) for c, _ in FILTER_CASES])
def test_filter(catalog, criteria, expected):
    assert obsids_of(catalog, **criteria) == expected
    assert count(catalog, Selection(**criteria)) == len(expected)


def test_columns_limit_and_streaming(catalog):
    reader = select(catalog, Selection(columns=("obsid", "RA")), batch_rows=3)
    batches = list(reader)
    assert len(batches) >= 5  # 14 rows come in batches of at most 3
    assert all(b.num_rows <= 3 for b in batches)
    assert reader.schema.names == ["obsid", "ra"]
    assert reader.schema.field("ra").metadata[b"unit"] == b"deg"
    assert select(catalog, Selection(limit=4)).read_all().num_rows == 4
    assert count(catalog, Selection(limit=4, classes=("GALAXY",))) == 2


@pytest.mark.parametrize(
    "criteria,message",
    [
        (dict(classes=("QUASAR",)), "unknown class"),
        (dict(min_prob=0.9), "needs a class"),
        (dict(min_confidence=1.5), r"\[0, 1\]"),
        (dict(flags=("LOW_SN",)), "unknown flag 'LOW_SN'"),
        (dict(flags=("some:LOW_SNR",)), "bad --flags"),
        (dict(columns=("obsid", "nope")), "unknown column 'nope'"),
        (dict(columns=("dist_arcsec",)), "only with a cone"),
        (dict(limit=-1), "limit"),
    ],
)
def test_bad_criteria_are_clear_errors(catalog, criteria, message):
    with pytest.raises(QueryError, match=message):
        select(catalog, Selection(**criteria)).read_all()


def test_cone_validation():
    for args in [(10, 91, 5), (10, 0, 0), (10, 0, -1), (float("nan"), 0, 5), (0, 0, 700000)]:
        with pytest.raises(QueryError):
            Cone(*args)


def test_obsid_file(catalog, tmp_path):
    listing = tmp_path / "ids.txt"
    listing.write_text("# wanted\n101\n\n113, 114   # two on a line\n")
    result = cli("query", catalog, "--obsid", listing, "--obsid", "105", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert sorted(int(line.split(",")[0]) for line in result.output.splitlines()[1:]) == [101, 105, 113, 114]
    listing.write_text("101\nabc\n")
    result = cli("query", catalog, "--obsid", listing)
    assert result.exit_code == 2 and "'abc' is not an integer obsid" in result.output


# -- cone search --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cone,expected",
    [
        ((0.0, 0.0, 5.0), {106, 107}),  # 359.9995 and 0.0005 are both 1.8" from (0, 0)
        ((360.0, 0.0, 5.0), {106, 107}),
        ((359.9999, 0.0, 3.0), {106, 107}),  # 1.44" and 2.16"
        ((0.0005, 0.0, 1.0), {107}),
        ((-0.0005, 0.0, 1.0), {106}),  # negative RA wraps
        ((0.0, 90.0, 60.0), {109, 110}),  # 36" and 18" from the pole, 3600" for 111
        ((10.0, 89.99, 60.0), {109, 110}),  # 110 is 54" away across the pole, at RA 190
        ((10.0, 89.99, 50.0), {109}),
        ((150.0, 2.0, 3600.0), {101, 102, 104, 105}),  # 103 is 1.199 deg away
    ],
)
def test_cone(catalog, cone, expected):
    assert obsids_of(catalog, cone=Cone(*cone)) == expected


def test_cone_distance_column_matches_astropy(catalog):
    from astropy.coordinates import SkyCoord

    t = read_table(catalog, cone=(150.0, 2.0, 3600.0))
    assert t["dist_arcsec"].unit == "arcsec"
    ref = SkyCoord(150.0, 2.0, unit="deg").separation(SkyCoord(t["ra"], t["dec"], unit="deg")).arcsec
    np.testing.assert_allclose(np.asarray(t["dist_arcsec"]), ref, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    ra=st.one_of(st.floats(0, 360, allow_subnormal=False), st.sampled_from([0.0, 359.99, 0.01, 180.0])),
    dec=st.one_of(st.floats(-90, 90, allow_subnormal=False), st.sampled_from([89.9, -89.95, 90.0, -90.0, 0.0])),
    radius=st.floats(0.5, 20_000, allow_subnormal=False),
    seed=st.integers(0, 2**16),
)
def test_cone_agrees_with_astropy_separation(ra, dec, radius, seed):
    """Any centre, including RA 0/360 and the poles: the same rows as astropy's separation."""
    from astropy.coordinates import SkyCoord

    rng = np.random.default_rng(seed)
    n = 300
    # Half the points scattered over the whole sky, half within ~2 radii of the centre.
    near_ra = ra + rng.normal(0, 2 * radius / 3600, n // 2) / max(np.cos(np.radians(dec)), 1e-3)
    near_dec = np.clip(dec + rng.normal(0, 2 * radius / 3600, n // 2), -90, 90)
    pts_ra = np.concatenate([rng.uniform(0, 360, n // 2), np.mod(near_ra, 360)])
    pts_dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, n // 2))), near_dec])
    table = pa.table({"obsid": np.arange(n, dtype=np.int64), "ra": pts_ra, "dec": pts_dec})
    got = set(select(ds.dataset(table), Selection(cone=Cone(ra, dec, radius))).read_all()["obsid"].to_pylist())
    sep = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(pts_ra, pts_dec, unit="deg")).arcsec
    clear = np.abs(sep - radius) > 1e-6  # points on the rim may go either way
    assert {i for i in np.flatnonzero(clear) if sep[i] <= radius} == got - set(np.flatnonzero(~clear))


# -- --where safety -----------------------------------------------------------------------------------

INJECTIONS = [
    "1=1; COPY catalog TO '/tmp/stolen.csv'",
    "1=1; ATTACH '/tmp/evil.db'",
    "ATTACH '/tmp/evil.db'",
    "read_csv('/etc/passwd') IS NOT NULL",
    "obsid IN (SELECT * FROM read_csv('/etc/passwd'))",
    "EXISTS (SELECT 1 FROM read_text('/etc/passwd'))",
    "1=1) UNION ALL SELECT * FROM read_parquet('/tmp/other.parquet') WHERE (1=1",
    "length(read_parquet('/tmp/x.parquet')) > 0",
    "length(getenv('HOME')) > 0",
    "current_setting('enable_external_access') = 'true'",
    "1=1) ORDER BY (1",
    "ra > 1 -- trailing comment",
    "ra > 1 /* comment */",
    "nosuchcolumn > 1",
    "other.ra > 1",
    "ra > ?",
    "",
]


@pytest.mark.parametrize("where", INJECTIONS)
def test_where_injection_is_refused(catalog, where):
    with pytest.raises(UnsafeWhereError):
        select(catalog, Selection(where=where))
    result = cli("query", catalog, "--where", where)
    assert result.exit_code != 0
    assert "--where" in result.output
    assert not Path("/tmp/stolen.csv").exists() and not Path("/tmp/evil.db").exists()


def test_connection_cannot_touch_files_even_unchecked(catalog):
    """Second line of defence: the DuckDB connection itself refuses files and setting changes."""
    con = connect(open_catalog(catalog))
    with pytest.raises(duckdb.PermissionException):
        con.execute("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access = true")
    assert con.execute("SELECT count(*) FROM catalog").fetchone()[0] == len(ROWS)


def test_where_allows_ordinary_conditions(catalog):
    for where in [
        "abs(lamost_z - 0.0) < 0.01 AND NOT (flags & 16 <> 0)",
        "CASE WHEN ra > 100 THEN 1 ELSE 0 END = 1",
        "CAST(ra AS INTEGER) = 150 OR ra::INTEGER = 20",
        "error ILIKE '%fits%' OR coalesce(snr_pixel, 0) > 5",
        "upper(lamost_class) = 'UNKNOWN' OR regexp_matches(designation, 'J00011[0-2]')",
        "catalog.dec > 89.5",
    ]:
        select(catalog, Selection(where=where)).read_all()  # must not raise


# -- output formats -----------------------------------------------------------------------------------


def expected_rows(catalog) -> pa.Table:
    return open_catalog(catalog).to_table()


def test_export_fits_read_back(catalog, tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    out = tmp_path / "cat.fits"
    result = cli("export", catalog, "--format", "fits", "--out", out)
    assert result.exit_code == 0, result.output
    assert "wrote 14 rows" in result.output
    t = Table.read(out, hdu="CATALOG")
    ref = expected_rows(catalog)
    assert list(t["obsid"]) == ref["obsid"].to_pylist()
    np.testing.assert_array_equal(np.asarray(t["ra"][:11]), ref["ra"].to_numpy(zero_copy_only=False)[:11])
    assert t["ra"].unit == "deg" and t["lmjd"].unit == "d"
    assert t["designation"][0] == "LAMOST J000101"
    i112 = ref["obsid"].to_pylist().index(112)
    assert np.ma.is_masked(t["ra"][i112])  # NaN in the file, masked by astropy
    assert t["class"][i112] in ("", np.ma.masked) and t["error"][i112] == "not a FITS file"
    assert np.ma.is_masked(t["row"][0])  # an integer null comes back masked through TNULL
    header = fits.getheader(out, "CATALOG")
    comments = {header[f"TTYPE{i}"]: header.get(f"TCOMM{i}") for i in range(1, header["TFIELDS"] + 1)}
    for name, _, _, description in __import__("lamost_classify.pipeline.schema", fromlist=["COLUMNS"]).COLUMNS:
        assert comments[name] == description


def test_fits_streams_in_batches_with_selection(catalog, tmp_path):
    from astropy.table import Table

    out = tmp_path / "sub.fits"
    n = write_fits(catalog, Selection(flags=("none",), columns=("obsid", "class", "error")), out, batch_rows=2)
    t = Table.read(out)
    assert n == len(t) == 11 and set(t["obsid"]) == {101, 102, 103, 104, 105, 106, 107, 109, 110, 111, 114}
    assert t.colnames == ["obsid", "class", "error"]
    n = write_fits(catalog, Selection(limit=3), tmp_path / "lim.fits", batch_rows=2)
    assert n == len(Table.read(tmp_path / "lim.fits")) == 3


def test_export_votable_read_back(catalog, tmp_path):
    from astropy.table import Table

    out = tmp_path / "cat.vot"
    assert cli("export", catalog, "--format", "votable", "--out", out).exit_code == 0
    t = Table.read(out, format="votable")
    assert list(t["obsid"]) == expected_rows(catalog)["obsid"].to_pylist()
    assert t["ra"].unit == "deg" and t["ra"].description == "right ascension (J2000)"
    assert t["prob_qso"].description.startswith("calibrated probability of QSO")


def test_votable_is_written_batch_by_batch_with_nulls_and_markup_kept(tmp_path):
    """The writer streams (one batch in memory): rows of every batch, in order; nulls, NaN, strings
    longer than the first row's and with XML markup or control characters come back as they were."""
    from astropy.table import Table

    from lamost_classify.export import write_votable

    schema = pa.schema([
        pa.field("obsid", pa.int64(), metadata={"description": "LAMOST obsid"}),
        pa.field("ra", pa.float64(), metadata={"unit": "deg", "description": "right ascension"}),
        pa.field("prob", pa.float32()),
        pa.field("error", pa.string()),
    ])
    batches = [
        pa.record_batch([pa.array([1, 2]), pa.array([10.5, None]), pa.array([0.25, float("nan")], pa.float32()),
                         pa.array([None, "x"])], schema=schema),
        pa.record_batch([pa.array([3]), pa.array([359.999999]), pa.array([1.0], pa.float32()),
                         pa.array(["unreadable: <HDU 1> & 'no data'\x00 (truncated)"])], schema=schema),
        pa.record_batch([pa.array([], pa.int64()), pa.array([], pa.float64()), pa.array([], pa.float32()),
                         pa.array([], pa.string())], schema=schema),
        pa.record_batch([pa.array([None]), pa.array([0.0]), pa.array([None], pa.float32()), pa.array([""])],
                        schema=schema),
    ]
    out = tmp_path / "stream.vot"
    assert write_votable(pa.RecordBatchReader.from_batches(schema, batches), out) == 4
    t = Table.read(out, format="votable")
    assert t["obsid"].tolist()[:3] == [1, 2, 3] and t["obsid"].mask.tolist() == [False, False, False, True]
    assert t["ra"][0] == 10.5 and t["ra"].mask[1] and t["ra"][2] == 359.999999 and t["ra"].unit == "deg"
    assert t["ra"].description == "right ascension" and t["obsid"].description == "LAMOST obsid"
    assert t["prob"][0] == 0.25 and t["prob"].mask.tolist() == [False, True, False, True]
    assert t["error"][2] == "unreadable: <HDU 1> & 'no data' (truncated)"
    assert t["error"][1] == "x"
    empty = tmp_path / "empty.vot"
    assert write_votable(pa.RecordBatchReader.from_batches(schema, []), empty) == 0
    assert len(Table.read(empty, format="votable")) == 0


def test_query_parquet_read_back(catalog, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "qso.parquet"
    result = cli("query", catalog, "--class", "QSO", "--cone", "150", "2", "3600", "--format", "parquet", "--out", out)
    assert result.exit_code == 0, result.output
    rows = duckdb.sql(f"SELECT obsid, dist_arcsec FROM read_parquet('{out}') ORDER BY obsid").fetchall()
    assert [r[0] for r in rows] == [101, 102, 104]
    schema = pq.read_schema(out)
    assert schema.field("ra").metadata[b"unit"] == b"deg"
    assert schema.field("dist_arcsec").metadata[b"unit"] == b"arcsec"
    assert schema.field("designation").type == pa.string()
    meta = pq.ParquetFile(out).metadata
    for i in range(meta.num_columns):
        assert not any("DICTIONARY" in e for e in meta.row_group(0).column(i).encodings)
    # refuses to overwrite unless asked
    assert cli("query", catalog, "--format", "parquet", "--out", out).exit_code == 2
    assert cli("query", catalog, "--format", "parquet", "--out", out, "--overwrite").exit_code == 0
    assert pq.read_metadata(out).num_rows == len(ROWS)


def test_export_csv_read_back(catalog, tmp_path):
    out = tmp_path / "cat.csv"
    assert cli("export", catalog, "--format", "csv", "--out", out, "--columns", "obsid,ra,class").exit_code == 0
    t = pacsv.read_csv(out, convert_options=pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False))
    assert t.column_names == ["obsid", "ra", "class"]
    assert t["obsid"].to_pylist() == expected_rows(catalog)["obsid"].to_pylist()
    assert t["class"].to_pylist()[11] is None and t["ra"].to_pylist()[11] is None  # 112: nulls unquoted-empty


def test_query_table_output(catalog, monkeypatch):
    result = cli("query", catalog, "--class", "GALAXY")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert "obsid" in lines[0] and "deg" in lines[1]  # names, then units
    assert len([ln for ln in lines if re.match(r"\s*1(05|10)\s", ln)]) == 2
    result = cli("query", catalog, "--limit", "2", "--columns", "obsid")
    assert result.exit_code == 0 and result.output.split() == ["obsid", "-----", "101", "102"]
    # without --limit a terminal gets the first TABLE_ROWS rows and a note that there are more
    monkeypatch.setattr("lamost_classify.commands.query.TABLE_ROWS", 3)
    lines = cli("query", catalog).output.splitlines()
    assert len(lines) == 3 + 3 + 1 and lines[-1].startswith("(first 3 rows")


def test_usage_errors(catalog):
    assert cli("query", catalog, "--class", "QUASAR").exit_code == 2
    assert cli("query", catalog, "--min-prob", "0.9").exit_code == 2
    assert cli("query", catalog, "--format", "fits").exit_code != 0  # needs --out
    assert cli("query", catalog, "--plot", "x.png").exit_code == 2  # --plot goes with --stats


@pytest.mark.skipif(not hats_available(), reason="HATS export needs the optional extra: pip install -e '.[hats]'")
def test_export_hats_read_back(catalog, tmp_path):
    import hats
    import pyarrow.parquet as pq

    result = cli("export", catalog, "--format", "hats", "--out", tmp_path, "--name", "lc",
                 "--max-order", "4", "--pixel-threshold", "5")
    assert result.exit_code == 0, result.output
    assert "13 rows" in result.output and "1 rows without ra/dec left out" in result.output
    hc = hats.read_hats(tmp_path / "lc")
    assert hc.catalog_info.total_rows == 13
    assert len(hc.get_healpix_pixels()) > 1  # partitioned, at most 5 rows each
    t = ds.dataset(tmp_path / "lc" / "dataset", format="parquet", partitioning="hive").to_table()
    assert sorted(t["obsid"].to_pylist()) == sorted(r[0] for r in ROWS if r[0] != 112)
    schema = pq.read_schema(tmp_path / "lc" / "dataset" / "_common_metadata")
    assert schema.field("ra").metadata[b"unit"] == b"deg"
    assert schema.field("prob_qso").metadata[b"description"].startswith(b"calibrated")


# -- stats ----------------------------------------------------------------------------------------------


def test_stats(catalog, tmp_path):
    s = stats(catalog)
    assert s["rows"] == 14 and s["flagged"] == 3
    assert s["classes"] == {"GALAXY": 2, "QSO": 4, "STAR": 7, "None": 1}
    assert s["flags"]["LOW_SNR"] == 2 and s["flags"]["UNREADABLE"] == 1 and s["flags"]["NO_FLUX"] == 0
    assert sum(s["histograms"]["prob_qso"]) == 13  # 112 has no probabilities
    assert s["histograms"]["prob_qso"][19] == 2  # 0.97 (103), 0.95 (101)
    assert {"class": "QSO", "lamost_class": "GALAXY", "rows": 1} in s["class_vs_lamost"]
    qso = stats(catalog, Selection(classes=("QSO",)))
    assert qso["rows"] == 4 and qso["classes"] == {"QSO": 4}

    result = cli("query", catalog, "--stats", "--class", "STAR", "--plot", tmp_path / "h.png")
    assert result.exit_code == 0, result.output
    assert re.search(r"STAR\s+7", result.output) and re.search(r"LOW_SNR\s+2", result.output)
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli("query", catalog, "--stats", "--out", tmp_path / "s.json").exit_code == 0
    assert json.loads((tmp_path / "s.json").read_text())["classes"]["QSO"] == 4


def test_read_table_units_and_masks(catalog):
    t = read_table(catalog, classes="QSO", columns=("obsid", "ra", "prob_qso"))
    assert sorted(t["obsid"]) == [101, 102, 103, 104]
    assert t["ra"].unit == "deg" and t["ra"].description == "right ascension (J2000)"
    full = read_table(catalog, Selection(obsids=(112,)))
    assert full["ra"].mask[0] and full["class"].mask[0] and full["error"][0] == "not a FITS file"


# -- docs/query.md: every snippet runs, and the four ways agree ----------------------------------------


def doc_blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(bash|python)\n(.*?)```", DOCS.read_text(), flags=re.S)


def needs_extra(code: str) -> str | None:
    if "--format hats" in code or "import lsdb" in code:
        try:
            import lsdb  # noqa: F401
        except ImportError:
            return "lsdb"
        if not hats_available():
            return "hats-import"
    return None


def test_docs_snippets_run_and_agree(tmp_path, monkeypatch):
    write_catalog(tmp_path / "catalog")
    monkeypatch.chdir(tmp_path)
    answers = {}
    blocks = doc_blocks()
    assert [lang for lang, _ in blocks].count("python") >= 4
    for i, (lang, code) in enumerate(blocks):
        if needs_extra(code):
            continue
        if lang == "bash":
            for line in code.strip().splitlines():
                argv = shlex.split(line)
                assert argv[0] == "lamost-classify", line
                result = CliRunner().invoke(main, argv[1:], catch_exceptions=False)
                assert result.exit_code == 0, f"{line}\n{result.output}"
            continue
        namespace: dict = {}
        exec(compile(code, f"{DOCS}:block{i}", "exec"), namespace)
        if "qsos" in namespace:
            answers[i] = set(int(x) for x in np.asarray(namespace["qsos"]["obsid"]))
    # the CLI's CSV, DuckDB, pyarrow, astropy (and LSDB when installed): the same two QSOs
    answers["cli"] = set(pacsv.read_csv("qsos.csv")["obsid"].to_pylist())
    assert len(answers) >= 4  # CLI, DuckDB, pyarrow, astropy; LSDB is a fifth when the extra is installed
    assert all(found == {101, 102} for found in answers.values()), answers


def test_batches_from_an_older_schema_read_alike(tmp_path):
    """A catalog whose first batches predate a column: the column reads as null there, and a column
    no file has yet reads as null everywhere."""
    root = write_catalog(tmp_path / "catalog")
    for f in (root / "parquet").glob("*.parquet"):
        dropped = ["row", "snr_pixel"] if f.name == "batch-000000.parquet" else ["row"]
        pq.write_table(pq.read_table(f).drop_columns(dropped), f)
    t = select(root, Selection(columns=("obsid", "snr_pixel", "row"))).read_all()
    assert t.num_rows == len(ROWS) and t.schema.field("row").type == pa.int64()
    assert t["row"].null_count == len(ROWS)
    assert obsids_of(root, where="snr_pixel IS NULL") == {101, 102, 103, 104, 105, 112}


def test_failed_export_leaves_no_file(catalog, tmp_path, monkeypatch):
    import lamost_classify.export as export

    def broken(batch, dtype):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_fits_records", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write(catalog, None, "fits", tmp_path / "x.fits")
    assert list(tmp_path.iterdir()) == []


def test_hats_without_the_extra_is_a_clear_error(catalog, tmp_path, monkeypatch):
    monkeypatch.setattr("lamost_classify.export.hats_available", lambda: False)
    result = cli("export", catalog, "--format", "hats", "--out", tmp_path)
    assert result.exit_code == 1 and "lamost-classify[hats]" in result.output
