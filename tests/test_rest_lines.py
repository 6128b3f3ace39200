"""The at-rest check a QSO must pass (model/rest_lines.py): a Balmer series in emission at z ~ 0 is a Galactic
star's, whatever redshift the QSO fit aliased it to; a QSO whose own lines lie near those wavelengths keeps
its class, and the catalog row of a CV the network calls QSO is published STAR, flagged NO_QSO_REDSHIFT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import TINY, one_torch_thread  # noqa: F401
from test_broad_lines import gaussian
from test_redshift_fit import from_template
from test_redshift_pipeline import records_of

from lamost_classify.contract import N_PIXELS, WAVELENGTH
from lamost_classify.model.densenet import build_model
from lamost_classify.model.inference import Classifier, published_class, qso_checks
from lamost_classify.model.redshift import load_templates
from lamost_classify.model.rest_lines import (BALMER, MIN_SCALED_SIGNIFICANCE, QSO_LINES, balmer_series_at_rest,
                                              line_significance)
from lamost_classify.model.weights import save_weights
from lamost_classify.pipeline import stages
from lamost_classify.pipeline.flags import Flag

C_KMS = 299_792.458
BALMER_SERIES = {6564.61: 1.0, 4862.68: 0.6, 4341.68: 0.4, 4102.89: 0.3}  # rest (vacuum A): flux / H-alpha's


def lines_spectrum(rng: np.random.Generator, lines: dict[float, float], z: float = 0.0, sigma_kms: float = 900.0,
                   strength: float = 1.0, snr: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """A blue continuum with emission lines (rest A: flux relative to the first) at redshift ``z``, the first
    line's peak ~``strength`` above the continuum, and Gaussian noise of S/N ``snr``."""
    continuum = 0.2 + 0.3 * (WAVELENGTH[0] / WAVELENGTH) ** 2
    area = strength * sigma_kms / 100
    flux = continuum + sum(area * ratio * gaussian(rest, z, sigma_kms) for rest, ratio in lines.items())
    sigma = 0.3 / snr
    return flux + rng.normal(0, sigma, N_PIXELS), np.full(N_PIXELS, 1 / sigma**2)


def test_a_balmer_series_at_rest_is_told_from_a_qso_s_lines():
    """A CV's series at rest (120 km/s) is at rest whatever z the QSO fit aliased it to; the same series,
    broader, at z 0.12 (a QSO: its H-gamma falls on H-beta at rest) is not; H-alpha alone (a Be star's weak
    series) is not a series; nor is a featureless spectrum."""
    rng = np.random.default_rng(0)
    cv = lines_spectrum(rng, BALMER_SERIES, z=120 / C_KMS)
    significance = line_significance(*cv, BALMER)
    assert (significance >= MIN_SCALED_SIGNIFICANCE).all()
    qso = lines_spectrum(rng, BALMER_SERIES, z=0.12, sigma_kms=1500.0)
    h_alpha_only = lines_spectrum(rng, {6564.61: 1.0})
    flat = lines_spectrum(rng, {})
    flux, ivar = (np.stack(a) for a in zip(cv, cv, cv, qso, h_alpha_only, flat))
    qso_z = np.array([1.345, 4.40, 0.12, 0.12, 1.345, 1.345])
    assert balmer_series_at_rest(flux, ivar, qso_z).tolist() == [True, True, True, False, False, False]


def test_published_class_makes_a_qso_with_the_series_at_rest_a_star():
    """The series at rest publishes STAR whatever the next class; the other reasons publish the next class."""
    probs = np.array([[0.1, 0.3, 0.6], [0.1, 0.3, 0.6], [0.1, 0.3, 0.6], [0.1, 0.6, 0.3]], np.float32)
    qso_z = np.array([1.345, 0.01, 1.345, np.nan])
    series = np.array([True, False, False, True])
    assert published_class(probs, qso_z, None, series).tolist() == [0, 1, 2, 1]
    assert published_class(probs, qso_z, np.array([False, False, True, False]), series).tolist() == [0, 1, 1, 1]


def test_nothing_is_judged_without_the_series_windows():
    """A window at rest without data, or a series too faint to see, leaves the network's class standing."""
    rng = np.random.default_rng(1)
    masked = lines_spectrum(rng, BALMER_SERIES)
    masked[1][np.abs(WAVELENGTH - 4862.68) < 100] = 0.0  # H-beta's window without data
    faint = lines_spectrum(rng, BALMER_SERIES, snr=0.3)
    flux, ivar = (np.stack(a) for a in zip(masked, faint))
    assert np.isnan(line_significance(*masked, BALMER)[1])
    assert balmer_series_at_rest(flux, ivar, np.array([1.345, 1.345])).tolist() == [False, False]


def test_the_shipped_templates_cv_is_at_rest_and_its_qsos_are_not():
    """The shipped star templates' CV at S/N 5 is at rest at every alias z; the shipped QSO template at the
    redshifts where its lines fall nearest the rest series (z 0.12, 0.35, 0.74, 1.34) is not, even at S/N 150."""
    rng = np.random.default_rng(2)
    cv = from_template("STAR", 0.0, rng, snr=5, index=load_templates()["STAR"].subclass.index("CV"))
    aliases = np.array([0.12, 0.35, 0.737, 1.345, 3.0, 4.4])
    assert balmer_series_at_rest(np.tile(cv[0], (6, 1)), np.tile(cv[1], (6, 1)), aliases).all()
    qsos = [from_template("QSO", z, rng, snr=150) for z in (0.118, 0.12, 0.122, 0.35, 0.737, 1.34)]
    flux, ivar = np.stack([q[0] for q in qsos]), np.stack([q[1] for q in qsos])
    assert not balmer_series_at_rest(flux, ivar, np.array([q[2] for q in qsos])).any()
    # at z 0.12 and 1.34 the QSO passes the cut at rest (its lines near the series'), but its own lines at its
    # own z fit better: that comparison is what keeps it a QSO
    for qso in (qsos[1], qsos[5]):
        at_rest, at_own_z = line_significance(*qso[:2], BALMER), line_significance(*qso[:2], QSO_LINES, qso[2])
        assert np.min(at_rest) >= MIN_SCALED_SIGNIFICANCE and np.nanmin(at_own_z) > np.min(at_rest)
    series, narrow = qso_checks(np.concatenate([flux, cv[0][None]]), np.concatenate([ivar, cv[1][None]]),
                                np.array([q[2] for q in qsos] + [1.345]))
    assert series.tolist() == [False] * 6 + [True] and not narrow[-1]


def test_a_cv_whose_qso_fit_aliases_is_published_as_a_star(tmp_path):
    """End to end: a network that calls everything QSO (GALAXY next) and proposes z 1.345 for it, so that the
    QSO fit of a CV at rest lands where Mg II falls on H-alpha, far above QSO_MIN_Z, publishes the CV as STAR
    (its lines are at rest: not its next class), fitted as one, flagged NO_QSO_REDSHIFT, its probabilities the
    network's; an spEigenQSO QSO at z 1.34 (its own Mg II on H-alpha at rest) stays a QSO."""
    torch.manual_seed(0)
    model = build_model("fast", **TINY, redshift_hidden=16).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([-1.0, 1.0, 3.0]))
        model.redshift.fc2.bias.copy_(torch.tensor([np.log(2.345), -6.0]))  # z 1.345, sigma 0.05 in log(1 + z)
    classifier = Classifier.load(save_weights(model, tmp_path / "calls-qso"), device="cpu", target_prior=None)
    rng = np.random.default_rng(3)
    cv = lines_spectrum(rng, BALMER_SERIES, strength=2.0)
    qso = from_template("QSO", 1.34, rng, snr=50)
    flux = np.clip(np.stack([cv[0], qso[0]]), 0, 1).astype(np.float32)
    ivar = np.stack([cv[1], qso[1]])

    probs, balanced, fit = classifier.predict_with_redshift(flux, ivar)
    assert (probs.argmax(1) == 2).all() and (balanced.argmax(1) == 2).all()
    assert fit.z_balanced[0] > 1.0  # the CV's QSO fit (the balanced class's) aliased: the old rule kept it a QSO
    assert fit.classes.tolist() == [0, 2] and fit.no_qso_redshift.tolist() == [True, False]
    assert abs(fit.z[0]) < 1e-3 and abs(fit.z[1] - qso[2]) < 0.01 * (1 + qso[2])
    assert not fit.no_broad_line.any()

    records = records_of(flux, ivar)
    table = stages.build_table(records, stages.classify(records, classifier), "test").to_pydict()
    assert table["class"] == ["STAR", "QSO"]
    assert [bool(f & int(Flag.NO_QSO_REDSHIFT)) for f in table["flags"]] == [True, False]
    assert table["prob_qso"][0] == pytest.approx(float(probs[0, 2]))  # the network's, kept
