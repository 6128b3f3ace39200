"""train / evaluate / explain / model-info on tiny Parquet tables."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import LAMOST_DATA, requires_shared
from model_fixtures import one_torch_thread, synthetic_spectra  # noqa: F401

from lamost_classify import CLASS_NAMES
from lamost_classify.cli import main
from lamost_classify.commands.model import prepare_spectra
from lamost_classify.model.labelled import load_labelled, split_validation


def write_flux_norm_table(path, n_per_class: int = 8, seed: int = 0) -> None:
    flux, labels = synthetic_spectra(n_per_class, seed=seed)
    classes = [CLASS_NAMES[c] for c in labels]
    classes[int(np.flatnonzero(labels == 0)[0])] = "UNKNOWN"  # a star left out, with a count
    pq.write_table(pa.table({
        "class": classes,
        "flux_norm": pa.array(list(flux), type=pa.list_(pa.float32())),
        "snr": np.linspace(1, 30, len(labels)).astype(np.float32),
    }), path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One `lamost-classify train` run (fast preset, 2 epochs) shared by the tests below."""
    root = tmp_path_factory.mktemp("cli")
    table = root / "labelled.parquet"
    write_flux_norm_table(table)
    result = CliRunner().invoke(main, [
        "train", str(table), "--out", str(root / "run"), "--epochs", "2", "--batch-size", "12",
        "--val-fraction", "0.25", "--threads", "1", "--no-progress", "--name", "tiny", "--tilts", "0.5",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return root, table, result.output


def test_train_writes_weights_card_logs_and_prints_the_tables(trained):
    root, table, output = trained
    run = root / "run"
    assert {"tiny.safetensors", "tiny.json", "checkpoint.pt", "log.csv", "loss.png", "validation.json",
            "validation.png"} <= {p.name for p in run.iterdir()}
    card = json.loads((run / "tiny.json").read_text())
    assert card["name"] == "fast-tiny" and card["temperature"] > 0
    assert card["training"]["train_counts"] == {"STAR": 5, "GALAXY": 6, "QSO": 6}
    assert card["training"]["dropped"] == {"class not STAR/GALAXY/QSO": 1}
    assert card["training"]["data_sha256"] and card["metrics"]["validation"]["confusion_matrix"]
    assert card["training"]["settings"]["tilt_fraction"] == 0.5  # the recipe's options reach the card
    assert "Confusion matrix" in output and "temperature" in output and "left out" in output
    # The prepared arrays were cached beside the input and are reused.
    assert len(list(root.glob("labelled.parquet.prepared-*/flux.npy"))) == 1


def test_evaluate_prints_tables_and_writes_json_and_png(trained, tmp_path):
    root, table, _ = trained
    result = CliRunner().invoke(main, ["evaluate", str(root / "run" / "tiny.safetensors"), str(table),
                                       "--out", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["n"] == 23 and report["model"].startswith("fast-tiny@")
    assert set(report["by_snr"]) == {"snr<5", "5-10", "10-20", "snr>20"}
    assert (tmp_path / "evaluation.png").exists() and "Precision re-weighted" in result.output


def test_evaluate_under_the_survey_prior_takes_the_cards_as_the_catalog_does(trained, tmp_path):
    import shutil

    root, table, _ = trained
    for suffix in (".safetensors", ".json"):
        shutil.copy(root / "run" / f"tiny{suffix}", tmp_path / f"tiny{suffix}")
    card = json.loads((tmp_path / "tiny.json").read_text())
    card["metrics"]["default_target_prior"] = [0.5, 0.3, 0.2]  # as train_shipped.py --rescore writes it
    (tmp_path / "tiny.json").write_text(json.dumps(card))
    for prior, expected in (("survey", [0.5, 0.3, 0.2]), ("train", None)):
        result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "tiny.safetensors"), str(table), "--prior",
                                           prior, "--out", str(tmp_path / prior), "--device", "cpu"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        report = json.loads((tmp_path / prior / "evaluation.json").read_text())
        assert report["probability_prior"] == (expected and pytest.approx(expected))


def test_explain_draws_a_png(trained, tmp_path):
    root, _, _ = trained
    spectrum = tmp_path / "one.npy"
    np.save(spectrum, synthetic_spectra(1)[0][0])
    out = tmp_path / "cam.png"
    result = CliRunner().invoke(main, ["explain", str(root / "run" / "tiny.safetensors"), str(spectrum),
                                       "--z", "0.05", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert out.stat().st_size > 10000
    bad = tmp_path / "short.npy"
    np.save(bad, np.zeros(10))
    result = CliRunner().invoke(main, ["explain", str(root / "run" / "tiny.safetensors"), str(bad), "--out", str(out)])
    assert result.exit_code != 0 and "2600" in result.output


def test_model_info_lists_layers_parameters_and_flops():
    result = CliRunner().invoke(main, ["model-info", "--preset", "fast", "--preset", "fc4"])
    assert result.exit_code == 0, result.output
    fast = next(line for line in result.output.splitlines() if line.startswith("fast"))
    assert fast.split()[1] == "36" and float(fast.split()[3]) == pytest.approx(36.1, abs=1)


def test_a_native_grid_table_goes_through_the_pipeline_preparation(tmp_path):
    # flux/ivar lists on the LAMOST grid 10**(3.5682 + 1e-4 i), read by the pipeline's Parquet reader.
    n_native = 3909
    wave = 10 ** (3.5682 + 1e-4 * np.arange(n_native))
    rng = np.random.default_rng(0)
    flux = [100 + 10 * np.sin(wave / 300) + rng.normal(0, 1, n_native) for _ in range(4)]
    flux[3][:] = np.nan  # unusable: dropped, counted
    table = tmp_path / "native.parquet"
    pq.write_table(pa.table({
        "class": ["STAR", "GALAXY", "QSO", "STAR"],
        "flux": pa.array([f.astype(np.float32) for f in flux], type=pa.list_(pa.float32())),
        "ivar": pa.array([np.ones(n_native, np.float32)] * 4, type=pa.list_(pa.float32())),
    }), table)
    data = load_labelled(table, prepare_spectra=prepare_spectra)
    assert data.labels.tolist() == [0, 1, 2]
    assert data.dropped == {"unusable spectrum (flags)": 1}
    flux_norm = data.spectra()
    assert flux_norm.shape == (3, 2600) and flux_norm.max() == 1.0 and flux_norm.min() == 0.0
    assert np.all(data.snr > 50)


def test_fits_directory_needs_a_truth_table(tmp_path):
    result = CliRunner().invoke(main, ["train", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "--truth" in result.output


def test_validation_split_is_stratified():
    labels = np.array([0] * 100 + [1] * 10 + [2] * 5)
    train, val = split_validation(labels, 0.2, seed=0)
    assert np.bincount(labels[val]).tolist() == [20, 2, 1]
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 115


@requires_shared
def test_explain_a_real_lamost_file_marks_lines_at_its_own_redshift(tmp_path):
    from lamost_classify.model.densenet import build_model
    from lamost_classify.model.weights import save_weights
    from model_fixtures import TINY

    fits = sorted((LAMOST_DATA / "dr10-stars-A").glob("*.fits.gz"))[0]
    weights = save_weights(build_model("fast", **TINY), tmp_path / "untrained", overrides=TINY)
    out = tmp_path / "real.png"
    result = CliRunner().invoke(main, ["explain", str(weights), str(fits), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert out.stat().st_size > 10000


@requires_shared
def test_a_fits_directory_with_a_truth_table(tmp_path):
    root = LAMOST_DATA / "dr10-stars-A"
    names = sorted(p.name for p in root.glob("*.fits.gz"))[:3]
    truth = tmp_path / "truth.csv"
    truth.write_text("file,class\n" + "".join(f"{n},STAR\n" for n in names) + "no-such-file.fits,GALAXY\n")
    data = load_labelled(root, truth, prepare_spectra)
    assert data.labels.tolist() == [0, 0, 0] and data.spectra().shape == (3, 2600)
    assert data.dropped == {"unusable spectrum (flags)": 1}  # the missing file, counted, not a crash
    assert list(tmp_path.glob("truth.csv.prepared-*/flux.npy"))  # cached beside the truth table
    assert not list(root.parent.glob("*.prepared-*"))  # nothing written into the data tree


def test_evaluate_scores_the_hard_cases_when_the_table_has_mock_truth(trained, tmp_path):
    root, table, _ = trained
    labelled = pq.read_table(table)
    n = labelled.num_rows
    with_truth = labelled.append_column("subclass", pa.array(["K5"] * n)).append_column(
        "template", pa.array(["sdss-star:K5III (1)"] * n)).append_column(
        "z", pa.array([0.0] * n)).append_column("snr_g", pa.array([30.0] * n))
    path = tmp_path / "with-truth.parquet"
    pq.write_table(with_truth, path)
    result = CliRunner().invoke(main, ["evaluate", str(root / "run" / "tiny.safetensors"), str(path),
                                       "--out", str(tmp_path / "eval"), "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    stars = int(sum(c == "STAR" for c in labelled.column("class").to_pylist()))  # the UNKNOWN one is left out
    assert report["hard_cases"]["K and M stars (vs passive galaxies)"]["n"] == stars
    assert "Known hard cases" in result.output
    # Without those columns (the table above): no hard-case section, no error.
    plain = CliRunner().invoke(main, ["evaluate", str(root / "run" / "tiny.safetensors"), str(table),
                                      "--out", str(tmp_path / "plain"), "--device", "cpu"])
    assert plain.exit_code == 0 and "Known hard cases" not in plain.output


def test_library_errors_reach_the_terminal_as_one_line(trained, tmp_path):
    root, table, _ = trained
    no_class = tmp_path / "no-class.parquet"
    pq.write_table(pa.table({"flux_norm": pa.array([np.zeros(2600, np.float32)], type=pa.list_(pa.float32()))}), no_class)
    result = CliRunner().invoke(main, ["train", str(no_class), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "needs a 'class' column" in result.output and "Traceback" not in result.output
    # A finished run resumed with other settings: the checkpoint's refusal, as one line.
    result = CliRunner().invoke(main, [
        "train", str(table), "--out", str(root / "run"), "--epochs", "2", "--batch-size", "12", "--lr", "0.5",
        "--val-fraction", "0.25", "--threads", "1", "--no-progress", "--name", "tiny",
    ])
    assert result.exit_code == 1, result.output
    assert "other settings" in result.output and "'lr'" in result.output and result.exception.__class__ is SystemExit


def test_load_labelled_says_what_it_needs(tmp_path):
    from lamost_classify.model.labelled import LabelledDataError

    raw = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"class": ["STAR"], "flux": pa.array([np.ones(10, np.float32)], type=pa.list_(pa.float32()))}), raw)
    with pytest.raises(LabelledDataError, match="not on the grid"):
        load_labelled(raw)
    truth = tmp_path / "truth.csv"
    truth.write_text("name,class\na.fits,STAR\n")
    with pytest.raises(LabelledDataError, match="'file' \\(or 'source'\\) and 'class'"):
        load_labelled(tmp_path, truth, prepare_spectra)
