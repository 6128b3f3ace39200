"""The check a STAR must pass (model/galaxy_lines.py): a galaxy's emission lines lined up at one z beyond the
stars' velocities are no star's; the shipped star templates, emission-line stars among them, show none, and a
catalog row the network calls STAR that shows them is published GALAXY, fitted as one, flagged GALAXY_LINES."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import TINY, one_torch_thread  # noqa: F401
from test_broad_lines import gaussian
from test_redshift_fit import from_template
from test_redshift_pipeline import records_of

from lamost_classify.contract import GALAXY_LINES_MIN_NON_STAR_PROB, GALAXY_LINES_MIN_Z, N_PIXELS, WAVELENGTH
from lamost_classify.model.densenet import build_model
from lamost_classify.model import galaxy_lines
from lamost_classify.model.galaxy_lines import find_galaxy_lines
from lamost_classify.model.inference import Classifier, published_class
from lamost_classify.model.redshift import load_templates
from lamost_classify.model.weights import save_weights
from lamost_classify.pipeline import stages
from lamost_classify.pipeline.flags import Flag

# a star-forming galaxy's lines (rest, vacuum A): flux relative to H-alpha's
STAR_FORMING = {6564.61: 1.0, 6585.27: 0.3, 6549.86: 0.1, 6718.29: 0.2, 6732.67: 0.15, 4862.68: 0.35,
                5008.24: 0.5, 4960.30: 0.17, 3728.48: 0.8}


def galaxy(rng: np.random.Generator, z: float, lines: dict[float, float] = STAR_FORMING, snr: float = 20.0,
           sigma_kms: float = 150.0, strength: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """A K star's continuum (an old population's, as the network may read it) with a galaxy's emission lines
    at ``z``, H-alpha's peak ~``strength`` of the continuum, and Gaussian noise of S/N ``snr``."""
    library = load_templates()["STAR"]
    continuum, ivar, _, _ = from_template("STAR", 0.0, rng, snr=snr, index=library.subclass.index(
        next(s for s in library.subclass if s.startswith("K"))))
    area = strength * np.median(continuum) * sigma_kms / 100
    return continuum + sum(area * ratio * gaussian(rest, z, sigma_kms) for rest, ratio in lines.items()), ivar


def test_a_galaxy_s_lines_are_found_at_their_z():
    """Star-forming lines at z 0.05-0.55 (beyond 0.38 H-alpha has left the grid: [O II], H-beta and [O III] are
    three groups still) are found, at their z; at rest, below GALAXY_LINES_MIN_Z, they are not a galaxy's.
    (Where a line falls on a star's own line at rest it does not count: at z 0.6 H-beta lies on O I 7774, at
    0.7 [O III] on the Ca II triplet, and those galaxies keep the network's class.)"""
    rng = np.random.default_rng(0)
    zs = [0.05, 0.08, 0.2, 0.3, 0.55]
    flux, ivar = (np.stack(a) for a in zip(*(galaxy(rng, z) for z in zs + [0.0, GALAXY_LINES_MIN_Z / 3])))
    found, z = find_galaxy_lines(flux, ivar)
    assert found.tolist() == [True] * len(zs) + [False, False]
    assert np.abs(z[:len(zs)] - zs) == pytest.approx(0, abs=2e-3)


def test_the_first_bound_keeps_every_row_the_scan_finds():
    """The cheap bound (each group's lines at their best anywhere) keeps every row the per-z scan finds, here three
    groups just over the cut at a random z on noise of unit significance, and rules out rows of that noise alone."""
    rng = np.random.default_rng(2)
    names = list(galaxy_lines.GROUPS)
    best = rng.normal(0.0, 1.0, (500, N_PIXELS)).astype(np.float32)
    cut = galaxy_lines.MIN_SIGNIFICANCE
    for row in best[:400]:
        shift = rng.integers(len(galaxy_lines._SHIFTS))
        for name in rng.choice(names, size=3, replace=False):
            for a, b, first in galaxy_lines._LINE_PLACES[names.index(name)]:
                if a <= shift < b:
                    row[first + shift - a] = rng.uniform(cut, cut + 0.3)
    found = galaxy_lines._found_at(galaxy_lines._scan(best[None])).any(axis=1)
    kept = galaxy_lines._may_be_found(best)
    assert found[:400].sum() > 50 and not found[400:].any()
    assert (kept | ~found).all() and not kept[400:].any()


def test_two_lines_or_faint_lines_are_not_enough():
    """H-alpha and [N II] alone (two groups), no forbidden line (the Balmer lines alone at z 0.1), the lines in
    masked pixels, or the lines at S/N 1 leave the network's STAR standing."""
    rng = np.random.default_rng(1)
    two = galaxy(rng, 0.05, {6564.61: 1.0, 6585.27: 0.4})
    balmer = galaxy(rng, 0.1, {6564.61: 1.0, 4862.68: 0.35, 4341.68: 0.17})
    masked = galaxy(rng, 0.05)
    masked[1][np.abs(WAVELENGTH / 1.05 - 6600) < 150] = 0.0  # H-alpha, [N II], [S II] without data
    masked[1][np.abs(WAVELENGTH / 1.05 - 5000) < 40] = 0.0  # [O III] too
    faint = galaxy(rng, 0.05, snr=1.0)
    flux, ivar = (np.stack(a) for a in zip(two, balmer, masked, faint))
    assert not find_galaxy_lines(flux, ivar)[0].any()


def test_no_shipped_star_template_shows_a_galaxy_s_lines():
    """Every star template of the shipped library (CVs, white dwarfs, carbon and M stars among them), at
    Galactic velocities and S/N 10 and 100: none is found a galaxy's lines, while the same K star with
    star-forming lines at z 0.05 is."""
    rng = np.random.default_rng(2)
    library = load_templates()["STAR"]
    spectra = [from_template("STAR", z, rng, snr=snr, index=i)
               for i in range(len(library.subclass)) for z, snr in ((-0.001, 10.0), (0.0015, 100.0))]
    flux, ivar = np.stack([s[0] for s in spectra]), np.stack([s[1] for s in spectra])
    found, _ = find_galaxy_lines(flux, ivar)
    assert not found.any(), [library.subclass[i // 2] for i in np.flatnonzero(found)]
    assert find_galaxy_lines(*(a[None] for a in galaxy(rng, 0.05)))[0].all()


def test_published_class_makes_a_star_with_a_galaxy_s_lines_a_galaxy():
    """Only a row published STAR moves; a GALAXY or a QSO with the lines keeps its class, and a QSO the
    Balmer series at rest makes a STAR is judged as a STAR."""
    probs = np.array([[0.8, 0.15, 0.05], [0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.1, 0.2, 0.7], [0.1, 0.3, 0.6]],
                     np.float32)
    qso_z = np.array([np.nan, np.nan, np.nan, 1.0, 1.345])
    lines = np.array([True, False, True, True, True])
    series = np.array([False, False, False, False, True])
    assert published_class(probs, qso_z, None, None, lines).tolist() == [1, 0, 1, 2, 2]
    assert published_class(probs, qso_z, None, series, lines).tolist() == [1, 0, 1, 2, 1]
    assert published_class(probs, qso_z, None, series).tolist() == [0, 0, 1, 2, 0]


@pytest.mark.parametrize("star_logit, read", [(3.0, True), (12.0, False)])
def test_a_star_called_galaxy_with_lines_is_published_a_galaxy(tmp_path, star_logit, read):
    """End to end: a network that calls everything STAR (GALAXY + QSO 0.13 under the balanced prior) publishes a
    star-forming galaxy at z 0.07 as GALAXY, fitted as one at its z, flagged GALAXY_LINES, its probabilities the
    network's; a K star stays a STAR. A network sure of its STAR (GALAXY + QSO 1e-5, below
    GALAXY_LINES_MIN_NON_STAR_PROB) is not read for lines: both stay STAR, in the catalog and in the yardstick's
    ``class_rule_inputs``."""
    torch.manual_seed(0)
    model = build_model("fast", **TINY).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([star_logit, 1.0, -1.0]))
    classifier = Classifier.load(save_weights(model, tmp_path / "calls-star"), device="cpu", target_prior=None)
    rng = np.random.default_rng(3)
    library = load_templates()["STAR"]
    star = from_template("STAR", 0.0, rng, snr=30, index=library.subclass.index(
        next(s for s in library.subclass if s.startswith("K"))))
    lines = galaxy(rng, 0.07)
    flux = np.stack([lines[0], star[0]])
    flux = ((flux - flux.min(1, keepdims=True)) / np.ptp(flux, 1, keepdims=True)).astype(np.float32)
    ivar = np.stack([lines[1], star[1]]) * np.ptp(np.stack([lines[0], star[0]]), 1, keepdims=True) ** 2

    probs, balanced, fit = classifier.predict_with_redshift(flux, ivar)
    assert (probs.argmax(1) == 0).all()
    assert (balanced[:, 1:].sum(1) >= GALAXY_LINES_MIN_NON_STAR_PROB).all() == read
    assert find_galaxy_lines(flux, ivar)[0].tolist() == [True, False]  # the lines are there either way
    assert fit.classes.tolist() == [int(read), 0] and fit.galaxy_lines.tolist() == [read, False]
    assert abs(fit.z[1]) < 2e-3
    if read:
        assert fit.z[0] == pytest.approx(0.07, abs=0.002)
    assert published_class(balanced, *classifier.class_rule_inputs(balanced, flux, ivar)).tolist() == [int(read), 0]

    records = records_of(flux, ivar)
    table = stages.build_table(records, stages.classify(records, classifier), "test").to_pydict()
    assert table["class"] == (["GALAXY", "STAR"] if read else ["STAR", "STAR"])
    assert [bool(f & int(Flag.GALAXY_LINES)) for f in table["flags"]] == [read, False]
    assert table["prob_star"][0] == pytest.approx(float(probs[0, 0]))  # the network's, kept
    assert len(flux[0]) == N_PIXELS
