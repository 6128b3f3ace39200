"""`lamost-classify evaluate`'s redshift part: the labelled set keeps the inverse variance, the fits are
scored by true class, S/N and z bin and the star types compared, or one line says why not."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import requires_templates
from model_fixtures import TINY, one_torch_thread  # noqa: F401

from lamost_classify.cli import main
from lamost_classify.commands.model import prepare_spectra
from lamost_classify.model import labelled as labelled_module
from lamost_classify.model.labelled import load_labelled
from lamost_classify.model.redshift import STEP, load_templates
from lamost_classify.pipeline.grid import N_PIXELS

SNR = 30.0
GALAXY_Z = (0.05, 0.15, 0.45)
QSO_Z = (0.6, 1.8)
STAR_LETTERS = ("G", "K", "M")


def from_template(name: str, z: float, rng: np.random.Generator,
                  index: int | None = None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(flux normalised to [0, 1], its ivar, the z of the whole-pixel shift, the pedestal the normalisation
    subtracted) from a shipped template at S/N ``SNR``."""
    tpl = load_templates()[name]
    basis = tpl.basis.numpy()
    rest = basis[index] if index is not None else basis[0] + 0.1 * basis[1]
    shift = round(np.log10(1 + z) / STEP)
    flux = np.interp(np.arange(N_PIXELS) + tpl.k0 - shift, np.arange(len(rest)), rest)
    lowest, span = flux.min(), flux.max() - flux.min()
    flux = (flux - lowest) / span
    sigma = max(float(np.median(flux)), 0.05) / SNR
    return (flux + rng.normal(0, sigma, N_PIXELS), np.full(N_PIXELS, 1 / sigma**2), 10 ** (shift * STEP) - 1,
            lowest / span)


def write_labelled_table(path, with_z: bool = True, with_ivar: bool = True) -> dict[str, list]:
    """3 stars (a G, a K and an M LAMOST template), 3 galaxies and 2 QSOs made from the shipped templates, as a
    flux_norm table with the truth (class, subclass, z), the pedestal and, optionally, ``ivar_norm``."""
    rng = np.random.default_rng(3)
    star_types = load_templates()["STAR"].subclass
    # the last template of each letter: a LAMOST median, whose letter is LAMOST's own
    rows = [("STAR", star_types[i], *from_template("STAR", 0.0, rng, i))
            for i in (max(j for j, s in enumerate(star_types) if s.startswith(c)) for c in STAR_LETTERS)]
    rows += [("GALAXY", "PASSIVE", *from_template("GALAXY", z, rng)) for z in GALAXY_Z]
    rows += [("QSO", "BROADLINE", *from_template("QSO", z, rng)) for z in QSO_Z]
    columns = {"class": [r[0] for r in rows], "subclass": [r[1] for r in rows],
               "flux_norm": pa.array([r[2].astype(np.float32) for r in rows], type=pa.list_(pa.float32())),
               "snr": np.full(len(rows), SNR, np.float32), "pedestal": np.array([r[5] for r in rows], np.float32)}
    if with_ivar:
        columns["ivar_norm"] = pa.array([r[3].astype(np.float32) for r in rows], type=pa.list_(pa.float32()))
    if with_z:
        columns["z"] = [r[4] for r in rows]
    pq.write_table(pa.table(columns), path)
    return columns


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory):
    """A TINY network with random weights: its classes are arbitrary, the fits as the true class are not."""
    from lamost_classify.model.densenet import build_model
    from lamost_classify.model.weights import save_weights

    return save_weights(build_model("fast", **TINY), tmp_path_factory.mktemp("model") / "untrained", overrides=TINY)


def evaluate(model, table, out) -> tuple[str, dict]:
    result = CliRunner().invoke(main, ["evaluate", str(model), str(table), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output, json.loads((out / "evaluation.json").read_text())


def test_evaluate_scores_redshifts_by_class_snr_and_z_and_types_the_stars(untrained_model, tmp_path):
    table = tmp_path / "labelled.parquet"
    write_labelled_table(table)
    output, report = evaluate(untrained_model, table, tmp_path / "eval")
    assert report["n"] == 8 and "Precision re-weighted" in output  # the class report is still there
    section = report["redshift"]
    as_true = section["redshift_true_class"]["by_class"]
    # Spectra at S/N 30 fitted with their own class's templates land within the tolerances.
    assert as_true["GALAXY"]["n"] == len(GALAXY_Z) and as_true["GALAXY"]["within"] == 1.0
    assert as_true["GALAXY"]["by_snr"][">= 20"]["within"] == 1.0
    assert set(as_true["GALAXY"]["by_z"]) == {"0-0.1", "0.1-0.2", "0.3-0.5"}
    assert as_true["QSO"]["within"] == 1.0 and as_true["QSO"]["catastrophic"] == 0.0
    assert as_true["STAR"]["within"] == 1.0
    assert section["star_types_true_class"]["n"] == 3 and section["star_types_true_class"]["letter_agreement"] == 1.0
    # The published side scores every true member, whatever class the random network gave it.
    published = section["redshift"]["by_class"]
    assert {k: v["n"] for k, v in published.items()} == {"STAR": 3, "GALAXY": 3, "QSO": 2}
    assert all(0.0 <= v["class_right"] <= 1.0 for v in published.values())
    assert section["seconds_per_spectrum"]["network_and_fit"] > 0
    assert "Redshift by true class" in output and "S/N >= 20" in output and "Star types" in output
    # z_err is scored against the truth too: its pulls, for every class fitted within tolerance
    assert all(v["pull_nmad"] > 0 and 0.0 <= v["within_z_err"] <= 1.0 for v in as_true.values())
    assert "NMAD of dz/z_err" in output


def test_evaluate_says_in_one_line_why_the_redshift_part_is_skipped(untrained_model, tmp_path):
    no_z = tmp_path / "no-z.parquet"
    write_labelled_table(no_z, with_z=False)
    output, report = evaluate(untrained_model, no_z, tmp_path / "a")
    assert "Redshift part skipped: the truth has no 'z' column." in output
    assert "redshift" not in report and report["redshift_skipped"] == "the truth has no 'z' column"

    no_ivar = tmp_path / "no-ivar.parquet"
    write_labelled_table(no_ivar, with_ivar=False)
    output, report = evaluate(untrained_model, no_ivar, tmp_path / "b")
    assert "Redshift part skipped: the labelled spectra have no inverse variance" in output
    assert "'ivar_norm'" in output and "redshift" not in report


def test_the_cache_keeps_ivar_and_a_cache_of_the_old_version_is_rebuilt(tmp_path, monkeypatch):
    table = tmp_path / "labelled.parquet"
    columns = write_labelled_table(table)
    current = labelled_module.CACHE_VERSION
    monkeypatch.setattr(labelled_module, "CACHE_VERSION", current - 1)
    load_labelled(table)
    (old,) = tmp_path.glob("labelled.parquet.prepared-*")
    (old / "ivar.npy").unlink()  # as the previous version wrote it: flux only
    monkeypatch.setattr(labelled_module, "CACHE_VERSION", current)
    data = load_labelled(table)
    (new,) = set(tmp_path.glob("labelled.parquet.prepared-*")) - {old}
    assert (new / "ivar.npy").exists()
    expected = np.stack([np.asarray(v, np.float32) for v in columns["ivar_norm"].to_pylist()])
    np.testing.assert_array_equal(data.inverse_variances(), expected)
    np.testing.assert_array_equal(data.inverse_variances(np.array([4])), expected[[4]])
    np.testing.assert_array_equal(data.pedestals(), columns["pedestal"])
    assert (data.pedestals() > 0).any()


def test_a_bad_ivar_norm_row_keeps_its_class_but_gets_no_pixel_to_fit(tmp_path):
    table = tmp_path / "labelled.parquet"
    columns = write_labelled_table(table)
    ivar = columns["ivar_norm"].to_pylist()
    ivar[1] = ivar[1][:10]  # wrong length
    ivar[2] = [-1.0] * N_PIXELS  # negative
    pq.write_table(pa.table({**columns, "ivar_norm": pa.array(ivar, type=pa.list_(pa.float32()))}), table)
    data = load_labelled(table)
    assert len(data.labels) == 8 and not data.dropped
    assert not data.inverse_variances()[1:3].any() and data.inverse_variances()[[0, 3]].all()


def test_spectra_the_reader_prepares_keep_their_inverse_variance(tmp_path):
    n_native = 3909
    wave = 10 ** (3.5682 + 1e-4 * np.arange(n_native))
    rng = np.random.default_rng(0)
    flux = [100 + 10 * np.sin(wave / 300) + rng.normal(0, 1, n_native) for _ in range(3)]
    table = tmp_path / "native.parquet"
    pq.write_table(pa.table({
        "class": ["STAR", "GALAXY", "QSO"],
        "flux": pa.array([f.astype(np.float32) for f in flux], type=pa.list_(pa.float32())),
        "ivar": pa.array([np.full(n_native, 4.0 * (k + 1), np.float32) for k in range(3)], type=pa.list_(pa.float32())),
    }), table)
    data = load_labelled(table, prepare_spectra=prepare_spectra)
    direct = prepare_spectra([f"{table}#{i}" for i in range(3)])
    np.testing.assert_array_equal(data.inverse_variances(), direct.ivar)
    np.testing.assert_array_equal(data.pedestals(), direct.pedestal)
    assert data.inverse_variances().max() > 0


@requires_templates
def test_evaluate_on_a_mock_release_table_with_the_shipped_model(tmp_path):
    from lamost_classify.mocks.release import write_parquet
    from lamost_classify.mocks.simulate import simulate

    table = write_parquet(simulate(24, 7, class_mix="balanced", snr_distribution="loguniform", snr_range=(20.0, 60.0)),
                          tmp_path / "mocks.parquet", 7)
    output, report = evaluate("default", table, tmp_path / "eval")
    galaxies = report["redshift"]["redshift_true_class"]["by_class"]["GALAXY"]
    assert galaxies["n"] > 3 and galaxies["within"] == 1.0 and galaxies["nmad"] < 0.001
    assert report["redshift"]["star_types"]["n"] > 0 and "Star types" in output


def test_evaluate_scores_the_class_the_catalog_publishes_no_qso_at_rest(tmp_path):
    """A network that calls everything QSO: with the ivar, evaluate's class report is the catalog's, so the
    cataclysmic variable (broad lines at rest, no QSO redshift) counts as published STAR, its next class, and
    the QSO at z 1.8 as QSO; without the ivar there is no fit, and both count as QSO."""
    import torch

    from lamost_classify.model.densenet import build_model
    from lamost_classify.model.weights import save_weights

    model = build_model("fast", **TINY).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([1.0, -1.0, 3.0]))
    path = save_weights(model, tmp_path / "calls-qso", overrides=TINY)
    rng = np.random.default_rng(8)
    cv = from_template("STAR", 0.0, rng, load_templates()["STAR"].subclass.index("CV"))
    qso = from_template("QSO", 1.8, rng)
    for with_ivar, called in ((True, [[1, 0, 0], [0, 0, 0], [0, 0, 1]]), (False, [[0, 0, 1], [0, 0, 0], [0, 0, 1]])):
        columns = {"class": ["STAR", "QSO"], "z": [cv[2], qso[2]],
                   "flux_norm": pa.array([r[0].astype(np.float32) for r in (cv, qso)], type=pa.list_(pa.float32())),
                   "snr": np.full(2, SNR, np.float32), "pedestal": np.array([cv[3], qso[3]], np.float32)}
        if with_ivar:
            columns["ivar_norm"] = pa.array([r[1].astype(np.float32) for r in (cv, qso)], type=pa.list_(pa.float32()))
        table = tmp_path / f"cv-and-qso-{with_ivar}.parquet"
        pq.write_table(pa.table(columns), table)
        _, report = evaluate(path, table, tmp_path / f"eval-{with_ivar}")
        assert report["confusion_matrix"] == called
