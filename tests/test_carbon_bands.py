"""The check a GALAXY must pass (model/carbon_bands.py): a carbon star's C2 Swan band heads at rest are no
galaxy's; the shipped carbon star template shows them at Galactic velocities and not 3,000 km/s away, no other
shipped template shows them, and a catalog row the network calls GALAXY that shows them is published STAR,
fitted as one, flagged CARBON_BANDS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import TINY, one_torch_thread  # noqa: F401
from test_redshift_fit import from_template
from test_redshift_pipeline import records_of

from lamost_classify.contract import WAVELENGTH
from lamost_classify.model.carbon_bands import HEADS, swan_bands_at_rest
from lamost_classify.model.densenet import build_model
from lamost_classify.model.inference import Classifier, published_class
from lamost_classify.model.redshift import load_templates
from lamost_classify.model.weights import save_weights
from lamost_classify.pipeline import stages
from lamost_classify.pipeline.flags import Flag


def spectra(name: str, cases: list[tuple[float, float]], rng: np.random.Generator,
            index: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flux, ivar, pedestal) of a shipped template at each (z, S/N) of ``cases``."""
    made = [from_template(name, z, rng, snr=snr, index=index) for z, snr in cases]
    return tuple(np.stack([m[k] for m in made]) for k in (0, 1, 3))


def carbon_index() -> int:
    return load_templates()["STAR"].subclass.index("C")


def test_a_carbon_star_s_bands_are_found_at_rest_only():
    """The carbon template at -300 and +450 km/s (S/N 10 and 100) shows the bands; 3,000-15,000 km/s away, where
    no Galactic star is, with the blue head's windows masked, or with every pixel masked but those beside the
    heads at rest (nothing away from rest to compare with), it does not."""
    rng = np.random.default_rng(0)
    flux, ivar, pedestal = spectra("STAR", [(-0.001, 10.0), (0.0015, 100.0), (0.01, 100.0), (-0.02, 100.0),
                                            (0.05, 100.0), (0.0, 100.0), (0.0, 100.0)], rng, carbon_index())
    ivar[-2, np.abs(WAVELENGTH - HEADS[0]) < 40] = 0.0
    beside_heads = np.abs(WAVELENGTH[:, None] - np.array(HEADS)).min(axis=1) < 45
    ivar[-1, ~beside_heads] = 0.0
    assert swan_bands_at_rest(flux, ivar, pedestal).tolist() == [True, True, False, False, False, False, False]


def test_no_other_shipped_template_shows_a_carbon_star_s_bands():
    """Every other star template (white dwarfs, CVs, M and L stars among them) at Galactic velocities and S/N 10
    and 100, the galaxy template at z 0-1 and the QSO template at z 0.1-5 (the Lyman-alpha forest crossing the
    heads from z 2.9): none shows the bands."""
    rng = np.random.default_rng(1)
    library = load_templates()["STAR"]
    others = [i for i, s in enumerate(library.subclass) if s != "C"]
    stars = [spectra("STAR", [(-0.001, 10.0), (0.0015, 100.0)], rng, i) for i in others]
    flux, ivar, pedestal = (np.concatenate([s[k] for s in stars]) for k in range(3))
    assert not swan_bands_at_rest(flux, ivar, pedestal).any()
    for name, zs in (("GALAXY", np.arange(0.0, 1.0, 0.01)), ("QSO", np.arange(0.1, 5.0, 0.02))):
        flux, ivar, pedestal = spectra(name, [(z, 50.0) for z in zs], rng)
        assert not swan_bands_at_rest(flux, ivar, pedestal).any(), name


def test_published_class_makes_a_galaxy_with_carbon_bands_a_star():
    """Only a row published GALAXY moves, and not one its emission lines made a GALAXY; a STAR or a QSO with
    the bands keeps its class."""
    probs = np.array([[0.1, 0.7, 0.2], [0.1, 0.7, 0.2], [0.8, 0.15, 0.05], [0.1, 0.2, 0.7], [0.8, 0.15, 0.05]],
                     np.float32)
    qso_z = np.array([np.nan, np.nan, np.nan, 1.0, np.nan])
    carbon = np.array([True, False, True, True, True])
    lines = np.array([False, False, False, False, True])
    assert published_class(probs, qso_z, None, None, None, carbon).tolist() == [0, 1, 0, 2, 0]
    assert published_class(probs, qso_z, None, None, lines, carbon).tolist() == [0, 1, 0, 2, 1]
    assert published_class(probs, qso_z).tolist() == [1, 1, 0, 2, 0]


def test_a_carbon_star_called_galaxy_is_published_a_star(tmp_path):
    """End to end: a network that calls everything GALAXY publishes a carbon star as STAR, fitted as one near
    rest (the carbon template its best), flagged CARBON_BANDS, its probabilities the network's; a galaxy at z 0.1
    stays a GALAXY. ``class_rule_inputs``, which the yardstick publishes with, agrees."""
    torch.manual_seed(0)
    model = build_model("fast", **TINY).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([-1.0, 3.0, -1.0]))
    classifier = Classifier.load(save_weights(model, tmp_path / "calls-galaxy"), device="cpu", target_prior=None)
    rng = np.random.default_rng(3)
    star = spectra("STAR", [(0.0005, 40.0)], rng, carbon_index())
    galaxy = spectra("GALAXY", [(0.1, 40.0)], rng)
    flux, ivar, pedestal = (np.concatenate([a, b]).astype(np.float32) for a, b in zip(star, galaxy))

    probs, balanced, fit = classifier.predict_with_redshift(flux, ivar, pedestal)
    assert (probs.argmax(1) == 1).all()
    assert fit.classes.tolist() == [0, 1] and fit.carbon_bands.tolist() == [True, False]
    assert abs(fit.z[0] - 0.0005) < 5e-4 and fit.subclass[0] == "C"
    assert published_class(probs, *classifier.class_rule_inputs(probs, flux, ivar, pedestal)).tolist() == [0, 1]

    records = records_of(flux, ivar, pedestal=pedestal)
    table = stages.build_table(records, stages.classify(records, classifier), "test").to_pydict()
    assert table["class"] == ["STAR", "GALAXY"]
    assert [bool(f & int(Flag.CARBON_BANDS)) for f in table["flags"]] == [True, False]
    assert table["prob_galaxy"][0] == pytest.approx(float(probs[0, 1]))  # the network's, kept
