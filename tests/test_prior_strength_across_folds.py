"""training/prior_strength_across_folds.py: a fold's strength comes from the other folds, never its own."""

from __future__ import annotations

import pytest
from model_fixtures import write_slope_sets
from script_loader import load_script

from lamost_classify.model.recipe import PRIOR_STRENGTHS

LOFO_SETS = ("lofo_train", "lofo_val", "lofo_test", "lofo_test_snr")


@pytest.fixture(scope="module")
def script():
    return load_script("training/prior_strength_across_folds.py")


def test_each_fold_gets_the_strength_its_sibling_folds_meet_most_aims_at(script):
    met = {"a": {0.0: 5, 0.5: 0, 1.0: 0},  # a's own best (0) must not choose a's strength
           "b": {0.0: 1, 0.5: 3, 1.0: 3},
           "c": {0.0: 1, 0.5: 2, 1.0: 4}}
    assert script.nested_strengths(met) == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert script.best_strength({0.0: 2, 0.25: 4, 0.5: 4}) == 0.25  # equals: the weaker prior
    with pytest.raises(ValueError, match="two folds"):
        script.nested_strengths({"a": met["a"]})


def test_scores_every_fold_at_every_strength_and_reports_both_choices(tmp_path, script):
    for seed, family in enumerate(("a", "b", "c")):
        write_slope_sets(tmp_path / "families" / family, LOFO_SETS, family, seed)
    data = tmp_path / "families"
    lofo = load_script("training/leave_one_family_out.py")
    lofo.main(["--data", str(data), "--out", str(tmp_path / "out"), "--leave-out", "a", "b", "--epochs", "1",
               "--milestones", "", "--threads", "1", "--batch-size", "16"])
    result = script.main(["--data", str(data), f"a={tmp_path / 'out'}", f"b={tmp_path / 'out'}", "--threads", "1",
                          "--json", str(tmp_path / "strengths.json")])
    assert (tmp_path / "strengths.json").exists()
    for family in ("a", "b"):
        fold = result["folds"][family]
        assert sorted(fold["by_strength"]) == list(PRIOR_STRENGTHS)
        assert all(0 <= row["met"] <= 5 for row in fold["by_strength"].values())
        other = "b" if family == "a" else "a"
        met = {s: r["met"] for s, r in result["folds"][other]["by_strength"].items()}
        assert result["nested_strength"][family] == script.best_strength(met)
    with pytest.raises(SystemExit, match="FAMILY=DIR"):
        script.main(["--data", str(data), f"a={tmp_path / 'out'}", f"a={tmp_path / 'out'}"])
