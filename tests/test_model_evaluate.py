"""Metrics laid out as the paper's Tables 1-2, re-weighted precision, S/N bins, report files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lamost_classify.model.evaluate import (
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
