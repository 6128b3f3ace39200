"""The shipped model through the whole pipeline: a small simulated release comes out classified as its
truth table says, through the CLI; and the shipped weights load and match their card."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from lamost_classify import CLASS_NAMES
from lamost_classify.cli import main
from lamost_classify.mocks.release import write_release
from lamost_classify.mocks.instrument import WAVELENGTH
from lamost_classify.mocks.simulate import simulate
from lamost_classify.model.inference import Classifier
from lamost_classify.model.weights import resolve_weights
from lamost_classify.pipeline import grid
from lamost_classify.pipeline.flags import Flag
from conftest import LAMOST_DATA, requires_shared

pytestmark = pytest.mark.slow


def test_shipped_weights_load_and_are_small():
    path = resolve_weights(None)
    assert path.exists() and path.stat().st_size < 20e6
    clf = Classifier.load(None, device="cpu")
    card = clf.card
    assert card["class_names"] == list(CLASS_NAMES)
    assert card["metrics"]["test_balanced"]["STAR"]["f1"] > 0.9
    assert clf.name.startswith(card["name"])


@pytest.mark.parametrize("name", ["default", "single"])
def test_each_shipped_cards_prior_is_the_survey_mix_at_its_chosen_strength(name):
    """What the catalog applies (``default_target_prior``) and what the card says was chosen
    (``chosen_prior_strength``, README "The shipped model, measured") must not drift apart, e.g. by a
    card edited by hand."""
    from lamost_classify.model.recipe import strength_prior
    from lamost_classify.model.weights import read_card

    metrics = read_card(resolve_weights(name))["metrics"]
    assert metrics["default_target_prior"] == pytest.approx(strength_prior(metrics["chosen_prior_strength"]))
    assert Classifier.load(name, device="cpu").target_prior == pytest.approx(metrics["default_target_prior"])


@pytest.fixture(scope="module")
def balanced_release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    write_release(simulate(90, seed=123, class_mix="balanced", chunk_size=90), root, seed=123)
    (root / "20111024" / "MOCK0001" / "spec-55858-MOCK0001_sp16-250.fits.gz").write_bytes(b"")
    return root


def test_run_matches_truth_table(balanced_release, tmp_path):
    out = tmp_path / "catalog"
    result = CliRunner().invoke(main, [
        "run", "--input", str(balanced_release), "--output", str(out), "--batch-size", "32",
        "--workers", "1", "--no-progress", "--prior", "1,1,1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["spectra"] == 91

    rows = pq.read_table(out / "parquet").to_pylist()
    truth = pq.read_table(balanced_release / "mock_truth.parquet").to_pylist()
    by_file = {str(balanced_release / t["file"]): t["class"] for t in truth}
    got = {r["source"]: r["class"] for r in rows}
    assert set(by_file) <= set(got)
    correct = np.mean([got[f] == c for f, c in by_file.items()])
    # Measured with the shipped model on this seed: see the closing note; the bound leaves margin.
    assert correct >= 0.85, f"only {correct:.2%} of the mock release classified as its truth"
    broken = [r for r in rows if r["source"].endswith("sp16-250.fits.gz")]
    assert len(broken) == 1 and broken[0]["class"] is None and broken[0]["flags"] & 1
    assert set(summary["classes"]) <= {*CLASS_NAMES, "none"}


def test_a_cosmic_ray_does_not_turn_galaxies_and_qsos_into_stars():
    # Three native pixels at 10^4 times the median flux squashed the normalised spectrum under them, and the
    # shipped model published mock galaxies and QSOs as STAR; masked (SPIKE_MASKED), each keeps its class.
    chunk = next(iter(simulate(12, seed=5, class_mix=(0.0, 0.5, 0.5), snr_distribution="loguniform",
                               snr_range=(10.0, 30.0), chunk_size=12)))
    spiked = chunk.flux.astype(np.float64)
    median = np.median(np.abs(spiked), axis=1)
    spiked[:, 1500:1503] = 1e4 * median[:, None]
    clf = Classifier.load(None, device="cpu")
    clean, hit = (grid.prepare_arrays(WAVELENGTH, f, chunk.ivar, chunk.andmask) for f in (chunk.flux, spiked))
    assert (hit.flags & Flag.SPIKE_MASKED).all() and not (clean.flags & Flag.SPIKE_MASKED).any()
    (p_clean, _, fit_clean), (p_hit, _, fit_hit) = (clf.predict_with_redshift(b.flux, b.ivar) for b in (clean, hit))
    # (with ../shared's templates all 12 clean copies come out galaxies and QSOs; with the fallback 8)
    assert (p_hit.argmax(1) == p_clean.argmax(1)).all() and (p_clean.argmax(1) > 0).sum() >= 6
    np.testing.assert_allclose(fit_hit.z, fit_clean.z, atol=1e-3)


@requires_shared
def test_real_lamost_stars_stay_stars():
    """Every real LAMOST spectrum the survey calls STAR (1,152 in ../shared: DR1, DR2, DR5-13, DR10 A
    stars) through read -> prepare -> the shipped model at the survey prior. At the survey's mix a
    STAR recall of 0.995 already makes ~30% of "galaxies" stars, so this is the number that matters.
    The first shipped model reached 0.9948 here (6 misses, all spikes or arm-scale errors); the one
    fine-tuned with survey_artefacts and faint mocks misses 1 (S/N 7.5, a broken arm join)."""
    from lamost_classify.pipeline import grid
    from lamost_classify.pipeline.readers import read_batch

    files = sorted(str(p) for sub in ("dr10-stars-A", "releases", "dr2", "dr1") for p in (LAMOST_DATA / sub).glob("spec-*"))
    spectra = [s for s in read_batch(files) if (s.meta.get("lamost_class") or "").upper() == "STAR"]
    assert len(spectra) > 1000
    prepared = grid.prepare(spectra)
    labels = Classifier.load("default", device="cpu").predict_proba(prepared.flux).argmax(axis=1)
    missed = [(s.source, float(snr)) for s, label, snr in zip(spectra, labels, prepared.snr) if label != 0]
    assert 1 - len(missed) / len(spectra) >= 0.995, missed
