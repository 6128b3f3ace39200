"""Metrics laid out as the paper's Tables 1-2, re-weighted precision, S/N bins, report files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lamost_classify.model.evaluate import (
    hard_cases,
    PAPER_TABLE1, confusion_matrix, evaluate, format_report, format_table3, reweighted_precision, save_report,
    scores_from_confusion,
)

# The paper's Table 2 (rows: reference STAR, GALAXY, QSO; columns: prediction).
PAPER_TABLE2 = np.array([[88379, 160, 18], [25, 1014, 3], [20, 6, 252]])


def test_scores_from_the_papers_confusion_matrix_reproduce_its_table_1():
    scores = scores_from_confusion(PAPER_TABLE2)
    for name in ("STAR", "GALAXY", "QSO"):
        for k, key in enumerate(("precision", "recall", "f1")):
            assert scores[name][key] == pytest.approx(PAPER_TABLE1[name][k], abs=6e-5), (name, key)
    assert scores["mean"]["recall"] == pytest.approx(0.9592, abs=1e-4)
    assert scores["mean"]["f1"] == pytest.approx(0.9420, abs=1e-4)
    assert scores["GALAXY"]["support"] == 1042


def test_confusion_matrix_rows_are_truth():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]))
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_reweighted_precision_of_a_balanced_set_at_the_survey_mix():
    # Balanced 1000:1000:1000, 4 % of stars called galaxies: precision 0.96 here, ~0.23 in the survey.
    cm = np.array([[960, 40, 0], [0, 1000, 0], [0, 0, 1000]])
    assert scores_from_confusion(cm)["GALAXY"]["precision"] == pytest.approx(1000 / 1040)
    survey = reweighted_precision(cm, (0.985, 0.012, 0.003))
    assert survey["GALAXY"] == pytest.approx(0.012 / (0.012 + 0.04 * 0.985))
    assert survey["STAR"] == 1.0 and survey["QSO"] == 1.0
    # Re-weighting to the observed mix changes nothing.
    assert reweighted_precision(cm, (1 / 3, 1 / 3, 1 / 3))["GALAXY"] == pytest.approx(1000 / 1040)


def test_evaluate_splits_by_snr_and_takes_probabilities(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    probs = np.eye(3)[np.where(rng.random(400) < 0.8, y, (y + 1) % 3)] * 0.7 + 0.1
    snr = rng.uniform(0, 40, 400)
    snr[:5] = np.nan  # unknown S/N: in no bin
    report = evaluate(y, probs, snr)
    assert report["n"] == 400
    assert set(report["by_snr"]) == {"snr<5", "5-10", "10-20", "snr>20"}
    assert sum(b["n"] for b in report["by_snr"].values()) == 395
    text = format_report(report)
    assert "Average" in text and "[0.9987]" in text and "re-weighted" in text and "10-20" in text
    json_path, png_path = save_report(report, tmp_path)
    assert json.loads(json_path.read_text())["confusion_matrix"] == report["confusion_matrix"]
    assert png_path.stat().st_size > 5000


def test_absent_class_gives_undefined_not_a_crash():
    report = evaluate(np.array([0, 0, 1]), np.array([0, 0, 1]))
    assert np.isnan(report["scores"]["QSO"]["recall"]) and report["scores"]["mean"]["f1"] == 1.0
    assert "   -  " in format_report(report)


def test_table3_layout():
    text = format_table3({"fc4": {"precision": 0.5, "recall": 0.4, "f1": 0.45}})
    assert "fc4" in text and "[0.3299]" in text


def test_hard_cases_pick_their_spectra_and_count_what_the_misses_were_called():
    truth = {
        "class": ["STAR", "STAR", "STAR", "GALAXY", "GALAXY", "GALAXY", "QSO", "QSO", "STAR"],
        "subclass": ["K5", "M2", "A1", "PASSIVE", "PASSIVE", "STARFORMING", "QSO", "QSO", "B2"],
        "template": ["sdss-star:K5III (1)", "rr-star-M", "sdss-star:A1V (2)", "rr-galaxy", "rr-galaxy",
                     "rr-galaxy", "sdss-qso", "sdss-qso", "sdss-star:B2Ve (3)"],
        "z": [0.0, 0.0, 0.0, 0.05, 0.3, 0.02, 0.5, 2.5, 0.0],
        "snr_g": [30, 30, 30, 30, 30, 30, 4, 4, 30],
    }
    #        K5 M2 A1 pas pas-far sf  qso-lowz qso-hiz Be
    y_pred = [0, 1, 1, 0, 1, 1, 1, 2, 1]
    cases = hard_cases(truth, np.array(y_pred))
    km = cases["K and M stars (vs passive galaxies)"]
    assert (km["n"], km["recall"], km["called"]) == (2, 0.5, {"STAR": 1, "GALAXY": 1, "QSO": 0})
    passive = cases["passive galaxies at z < 0.1 (vs K stars)"]
    assert (passive["n"], passive["recall"], passive["called"]["STAR"]) == (1, 0.0, 1)  # z = 0.3 is not in it
    assert cases["emission-line O/B stars (vs star-forming galaxies)"]["n"] == 1
    assert cases["emission-line O/B stars (vs star-forming galaxies)"]["called"]["GALAXY"] == 1
    assert cases["star-forming galaxies at z < 0.1 (vs emission-line stars)"]["recall"] == 1.0
    qso = cases["QSOs at z < 1, S/N < 10 (vs galaxies)"]
    assert (qso["n"], qso["recall"], qso["called"]["GALAXY"]) == (1, 0.0, 1)
    # Through evaluate: in the report, printed, and absent cases left out.
    report = evaluate(np.array([["STAR", "GALAXY", "QSO"].index(c) for c in truth["class"]]), np.array(y_pred),
                      np.array(truth["snr_g"], float), truth=truth)
    assert report["hard_cases"] == cases
    assert "Known hard cases" in format_report(report)
    assert set(hard_cases({k: v[:3] for k, v in truth.items()}, np.array(y_pred[:3]))) == {
        "K and M stars (vs passive galaxies)"}


def test_precision_is_reweighted_to_the_survey_mix_in_every_snr_bin():
    # Balanced, one S/N bin: 100 per class, 1 star called GALAXY. At 98.5 : 1.2 : 0.3 that one star
    # weighs 98.5/1.2 against each galaxy: GALAXY purity 100 / (100 + 82.1) = 0.549.
    y_true = np.repeat([0, 1, 2], 100)
    y_pred = y_true.copy()
    y_pred[0] = 1
    report = evaluate(y_true, y_pred, np.full(300, 7.0))
    rp = report["by_snr"]["5-10"]["reweighted_precision"]
    assert rp["GALAXY"] == pytest.approx(100 / (100 + 98.5 / 1.2), rel=1e-3)
    assert rp["STAR"] == 1.0 and rp["QSO"] == 1.0
    assert "by S/N bin" in format_report(report).split("re-weighted")[-1]


def test_recall_by_redshift_bins_each_class_by_its_own_bins():
    truth = {
        "class": ["GALAXY", "GALAXY", "GALAXY", "GALAXY", "QSO", "QSO", "QSO", "STAR"],
        "subclass": ["PASSIVE"] * 4 + ["BROADLINE"] * 3 + ["G5"],
        "template": ["t"] * 8,
        "z": [0.05, 0.15, 0.25, 0.45, 0.5, 2.5, 3.5, 0.0001],
        "snr_g": [10.0] * 8,
    }
    #          g<.1 g.1-.2 g.2-.3 g>.3 q<1 q2-3 q>3 star
    y_pred = [0, 1, 1, 1, 1, 2, 2, 0]
    report = evaluate(np.array([1, 1, 1, 1, 2, 2, 2, 0]), np.array(y_pred), truth=truth)
    galaxy, qso = report["by_redshift"]["GALAXY"], report["by_redshift"]["QSO"]
    assert list(galaxy) == ["z<0.1", "0.1-0.2", "0.2-0.3", "z>0.3"]
    assert galaxy["z<0.1"] == {"n": 1, "recall": 0.0, "called": {"STAR": 1, "GALAXY": 0, "QSO": 0}}
    assert galaxy["z>0.3"]["recall"] == 1.0
    assert set(qso) == {"z<1", "2-3", "z>3"}  # no QSO at 1-2: no empty bin
    assert qso["z<1"]["called"]["GALAXY"] == 1 and qso["z>3"]["recall"] == 1.0
    assert "STAR" not in report["by_redshift"]
    text = format_report(report)
    assert "Recall by redshift bin" in text and "0.2-0.3" in text


def test_recall_by_kind_groups_stars_by_letter_and_galaxies_and_qsos_by_subclass():
    truth = {
        "class": ["STAR", "STAR", "STAR", "STAR", "GALAXY", "GALAXY", "GALAXY", "QSO", "QSO"],
        "subclass": ["K3", "K7", "G2", "WD", "PASSIVE", "PASSIVE", "POSTSTARBURST", "BROADLINE", "BAL"],
        "template": ["t"] * 9,
        "z": [0.0, 0.0, 0.0, 0.0, 0.05, 0.4, 0.1, 1.5, 2.5],
        "snr_g": [10.0] * 9,
    }
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 0, 0, 1, 0, 0, 2, 1])  # a K7 star called GALAXY, two galaxies STAR, the BAL GALAXY
    kinds = evaluate(y_true, y_pred, truth=truth)["by_kind"]
    assert list(kinds["STAR"]) == ["G", "K", "WD"]
    assert kinds["STAR"]["K"] == {"n": 2, "recall": 0.5, "called": {"STAR": 1, "GALAXY": 1, "QSO": 0}}
    assert kinds["GALAXY"]["PASSIVE"]["recall"] == 0.5 and kinds["GALAXY"]["POSTSTARBURST"]["called"]["STAR"] == 1
    assert kinds["QSO"]["BAL"]["called"]["GALAXY"] == 1 and kinds["QSO"]["BROADLINE"]["recall"] == 1.0
    text = format_report(evaluate(y_true, y_pred, truth=truth))
    assert "Recall by kind" in text and "POSTSTARBURST" in text and "(1 STAR)" in text


def test_f1_at_the_survey_mix_uses_reweighted_precision():
    cm = np.array([[960, 40, 0], [30, 970, 0], [0, 0, 1000]])
    report = evaluate(np.repeat([0, 1, 2], 1000), np.concatenate([np.repeat([0, 1], [960, 40]),
                                                                 np.repeat([0, 1], [30, 970]), np.full(1000, 2)]))
    assert report["confusion_matrix"] == cm.tolist()
    p = 0.97 * 0.012 / (0.97 * 0.012 + 0.04 * 0.985)
    assert report["reweighted_f1"]["GALAXY"] == pytest.approx(2 * p * 0.97 / (p + 0.97))
    assert report["reweighted_f1"]["QSO"] == 1.0
    assert report["reweighted_f1"]["GALAXY"] < report["scores"]["GALAXY"]["f1"]
