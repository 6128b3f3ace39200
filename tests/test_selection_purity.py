"""training/selection_purity.py: completeness and purity of a selection at the survey mix."""

from __future__ import annotations

import numpy as np
import pytest
from script_loader import load_script


def _script():
    return load_script("training/selection_purity.py")


def test_purity_weights_each_class_by_its_share_of_the_mix():
    sp = _script()
    # 1,000 of each class; the selection takes 10 stars, 900 galaxies and 100 QSOs
    label = np.repeat([0, 1, 2], 1000)
    selected = np.zeros(3000, bool)
    selected[:10] = selected[1000:1900] = selected[2000:2100] = True
    scores = sp.selection_scores(selected, label, 1, mix=(0.985, 0.012, 0.003))
    assert scores["completeness"] == pytest.approx(0.9)
    expected = 0.012 * 0.9 / (0.985 * 0.01 + 0.012 * 0.9 + 0.003 * 0.1)
    assert scores["purity_at_mix"] == pytest.approx(expected)
    assert scores["stars_selected"] == 10 and scores["n_stars"] == 1000 and scores["n_class"] == 1000
    # balanced, the same selection would be 90% pure; at the mix one star in a hundred costs half of that
    assert scores["purity_at_mix"] < 0.55


def test_all_column_takes_the_real_snr_sets_and_bins_take_every_set():
    sp = _script()
    n = 600
    rng = np.random.default_rng(0)
    label = np.tile([0, 1, 2], n // 3)
    balanced = np.eye(3)[label] * 0.8 + 0.1
    rows = {"class": label.copy(), "balanced": balanced, "label": label, "snr_g": rng.uniform(2, 40, n),
            "real_snr": np.arange(n) < n // 2}
    rows["class"][label == 1] = 0  # every galaxy published as STAR: the balanced selection finds them
    out = sp.measure(rows)["GALAXY"]
    assert out["class = 'GALAXY'"]["all"]["completeness"] == 0.0
    assert out["prob_galaxy_balanced > 0.5"]["all"]["completeness"] == 1.0
    assert out["prob_galaxy_balanced > 0.5"]["all"]["n_class"] == (label[: n // 2] == 1).sum()
    assert sum(v["n_class"] for k, v in out["prob_galaxy_balanced > 0.5"].items() if k != "all") == (label == 1).sum()
    assert out["(class = 'GALAXY' OR prob_galaxy_balanced > 0.5) AND snr_g > 5"]["snr<5"]["completeness"] == 0.0
