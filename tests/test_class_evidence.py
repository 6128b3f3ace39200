"""training/redshift_class_evidence.py: the chi2 rule it measures, and that the survey-mix score fits only
the rows the rule could change."""

from __future__ import annotations

import numpy as np
from script_loader import load_script


def _script():
    return load_script("training/redshift_class_evidence.py")


# rows: called STAR with a likely galaxy that fits better by 30; the same by 20; a less likely galaxy that
# fits better by 30; called GALAXY though a star fits better
P = np.array([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.99, 0.01, 0.0], [0.2, 0.8, 0.0]])
BALANCED = np.array([[0.1, 0.9, 0.0], [0.1, 0.9, 0.0], [0.6, 0.4, 0.0], [0.01, 0.99, 0.0]])
CHI2 = np.array([[130.0, 100.0, 500.0], [120.0, 100.0, 500.0], [130.0, 100.0, 500.0], [50.0, 100.0, 500.0]])


def test_the_rule_moves_only_star_calls_whose_other_class_is_likely_and_fits_better_by_25():
    ev = _script()
    assert ev.combined(P, BALANCED, CHI2, 0.5).tolist() == [1, 0, 0, 1]
    assert ev.combined(P, BALANCED, CHI2, 0.95).tolist() == [0, 0, 0, 1]


def test_the_survey_mix_score_fits_only_the_rows_the_rule_could_change(monkeypatch, capsys):
    ev = _script()
    fitted = []

    def fake_chi2(fitter, flux, ivar, pedestal):
        fitted.append(flux[:, 0].tolist())
        return CHI2[flux[:, 0].astype(int)]

    monkeypatch.setattr(ev, "same_pixel_chi2", fake_chi2)
    flux = np.arange(4, dtype=np.float32)[:, None] * np.ones((4, 3), np.float32)  # row index in pixel 0
    y = np.array([1, 0, 0, 1])
    ev.report_at_mix("test", None, flux, np.ones_like(flux), np.zeros(len(flux)), y, P, BALANCED)
    assert fitted == [[0.0, 1.0]]  # row 2's balanced galaxy probability (0.4) is below every threshold
    out = capsys.readouterr().out
    assert "2 rows the rule could change" in out
    assert "combined t=0.5   recall STAR 1.0000 GALAXY 1.0000" in out
    assert "network          recall STAR 1.0000 GALAXY 0.5000" in out
