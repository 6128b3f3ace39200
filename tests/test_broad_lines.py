"""The broad-line check a QSO must pass where H-alpha is on the grid (model/broad_lines.py), and the catalog
row it gives: a narrow-line galaxy the network calls QSO is published as its next class, flagged NO_BROAD_LINE;
and the other way round, a GALAXY showing a broad H-alpha beside a narrow one is published QSO, BROAD_H_ALPHA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import TINY, one_torch_thread  # noqa: F401
from test_redshift_fit import from_template
from test_redshift_pipeline import records_of

from lamost_classify import SURVEY_PRIOR
from lamost_classify.contract import BROAD_MIN_SIGMA_KMS, N_PIXELS, WAVELENGTH
from lamost_classify.model import rest_lines
from lamost_classify.model.broad_lines import (BROAD_MAX_RATIO, FORBIDDEN, H_ALPHA, _Window, broad_line_shown,
                                                 fit_h_alpha, narrow_lines_only, quadratic_continuum, window_on_grid)
from lamost_classify.model.densenet import build_model
from lamost_classify.model.inference import Classifier, published_class, qso_checks
from lamost_classify.model.redshift import RedshiftFitter
from lamost_classify.model.weights import save_weights
from lamost_classify.pipeline import stages
from lamost_classify.pipeline.flags import Flag

C_KMS = 299_792.458
# rest (vacuum A), flux relative to H-alpha: a star-forming galaxy's strong lines
NARROW_LINES = {3728.5: 1.2, 4862.7: 0.35, 5008.2: 0.5, 4960.3: 0.17, 6564.6: 1.0, 6585.3: 0.35, 6549.9: 0.12,
                6718.3: 0.2, 6732.7: 0.15}


def gaussian(rest: float, z: float, sigma_kms: float) -> np.ndarray:
    """A unit-area line on the grid (per pixel), as the log-linear grid samples it."""
    v = np.log(WAVELENGTH / (rest * (1 + z))) * C_KMS
    step = np.log(WAVELENGTH[1] / WAVELENGTH[0]) * C_KMS
    return np.exp(-0.5 * (v / sigma_kms) ** 2) * step / (sigma_kms * np.sqrt(2 * np.pi))


def emission_spectrum(z: float, rng: np.random.Generator, narrow_sigma: float = 150.0,
                      broad_sigma: float | None = None, broad_share: float = 3.0, strength: float = 1.0,
                      snr: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """A flat continuum at 0.3 with narrow lines (H-alpha's peak ~``strength`` above it) and, optionally, a
    broad H-alpha carrying ``broad_share`` times the narrow H-alpha's flux; Gaussian noise of S/N ``snr``."""
    area = strength * narrow_sigma / 100
    flux = np.full(N_PIXELS, 0.3)
    for rest, ratio in NARROW_LINES.items():
        flux += area * ratio * gaussian(rest, z, narrow_sigma)
    if broad_sigma is not None:
        flux += area * broad_share * gaussian(6564.6, z, broad_sigma)
    sigma = 0.3 / snr
    return flux + rng.normal(0, sigma, N_PIXELS), np.full(N_PIXELS, 1 / sigma**2)


def test_narrow_lines_are_told_from_a_broad_h_alpha():
    rng = np.random.default_rng(0)
    galaxy = emission_spectrum(0.1, rng)
    liner = emission_spectrum(0.2, rng, narrow_sigma=300.0)  # wide narrow lines are still narrow
    qso = emission_spectrum(0.1, rng, broad_sigma=2000.0)
    narrowest_qso = emission_spectrum(0.25, rng, broad_sigma=1.2 * BROAD_MIN_SIGMA_KMS)
    flux, ivar = (np.stack(a) for a in zip(galaxy, liner, qso, narrowest_qso))
    z = np.array([0.1, 0.2, 0.1, 0.25])
    assert narrow_lines_only(flux, ivar, z).tolist() == [True, True, False, False]
    # a wide broad H-alpha well detected is a type 1 AGN's, however faint beside the narrow line (a Seyfert 1.9)
    seyfert_19 = emission_spectrum(0.1, np.random.default_rng(7), broad_sigma=2200.0, broad_share=0.3, snr=60.0)
    fit = fit_h_alpha(*seyfert_19, 0.1)
    assert fit["ratio_upper"] < BROAD_MAX_RATIO and fit["sigma_kms"] >= 1900 and not fit["narrow_only"]
    broad = fit_h_alpha(qso[0], qso[1], 0.1)
    assert broad["sigma_kms"] == pytest.approx(2000.0, rel=0.3) and broad["ratio"] == pytest.approx(3.0, rel=0.3)
    assert not broad["narrow_only"]


def explicit_least_squares(design: np.ndarray, flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, float]:
    """Coefficients and chi2 of one explicit design matrix (pixels, k), by numpy's own solver."""
    root = np.sqrt(ivar)
    coef = np.linalg.lstsq(design * root[:, None], flux * root, rcond=None)[0]
    return coef, float(np.sum(ivar * (flux - design @ coef) ** 2))


def test_the_window_fits_are_those_of_their_explicit_designs():
    """The fits put their normal equations together from each column's inner products, not from every
    combination's design matrix: each combination of offset and widths solves as its own design would (H-alpha's
    window with and without a broad line; a Balmer line's window at rest)."""
    rng = np.random.default_rng(6)
    flux, ivar = emission_spectrum(0.1, rng, broad_sigma=1500.0, broad_share=0.5, snr=20.0)
    ivar[rng.random(N_PIXELS) < 0.1] = 0.0
    rest = WAVELENGTH / 1.1
    valid = (rest > 6250.0) & (rest < 6850.0) & (ivar > 0)
    window = _Window(np.log(WAVELENGTH[valid]), flux[valid], ivar[valid], np.log(1.1))
    shifts, balmer = np.array([-50.0, 0.0, 75.0]), np.array([80.0, 200.0])
    forbidden, broad = np.array([120.0, 250.0]), np.array([1000.0, 2500.0])

    def column(rest_wave: float, shift: float, sigma: float) -> np.ndarray:
        return window.lines(rest_wave, np.array([shift]), np.array([sigma]))[0, 0]

    for broad_too in (False, True):
        coef, chi2, _ = window.solve(shifts, balmer, forbidden, broad if broad_too else None)
        for i, j, l, k in np.ndindex(len(shifts), len(balmer), len(forbidden), len(broad) if broad_too else 1):
            columns = [window.continuum, column(H_ALPHA, shifts[i], balmer[j])[:, None]]
            columns += [sum(r * column(w, shifts[i], forbidden[l]) for w, r in zip(waves, ratios))[:, None]
                        for waves, ratios in FORBIDDEN]
            if broad_too:
                columns.append(column(H_ALPHA, shifts[i], broad[k])[:, None])
            expected, expected_chi2 = explicit_least_squares(np.hstack(columns), window.flux, window.ivar)
            at = (i, j, l, k) if broad_too else (i, j, l)
            assert coef[at] == pytest.approx(expected, rel=1e-6, abs=1e-9)
            assert chi2[at] == pytest.approx(expected_chi2, rel=1e-8)

    pixels, lines = rest_lines._window_lines(6564.61)
    star = 1.0 + 2.0 * gaussian(6564.61, 0.0, 400.0)[pixels] + rng.normal(0, 0.02, len(pixels))
    weights = np.full(len(pixels), 2500.0)
    flux_row, ivar_row = np.zeros(N_PIXELS), np.zeros(N_PIXELS)
    flux_row[pixels], ivar_row[pixels] = star, weights
    amplitude, error, chi2, dof = rest_lines._window_fit(flux_row, ivar_row, 6564.61)
    continuum = quadratic_continuum(np.log(WAVELENGTH[pixels]))
    for v, w in ((0, 0), (10, 5), (20, 11)):
        expected, expected_chi2 = explicit_least_squares(np.hstack([continuum, lines[v, w][:, None]]), star, weights)
        assert amplitude[v, w] == pytest.approx(expected[-1], rel=1e-6) and chi2[v, w] == pytest.approx(expected_chi2)


def test_a_faint_bump_as_wide_as_the_window_is_no_broad_line():
    """A component at the widest sigma the fit tries (FWHM ~9,300 km/s, most of the window) carrying a third of
    the narrow H-alpha's flux is a galaxy's continuum curving under H-alpha as much as a line: narrow only. A
    QSO's line that wide carries more than its narrow H-alpha, and a Seyfert 1.9's narrower one counts."""
    widest = emission_spectrum(0.1, np.random.default_rng(3), broad_sigma=4000.0, broad_share=0.3, snr=200.0)
    fit = fit_h_alpha(*widest, 0.1)
    assert fit["sigma_kms"] == pytest.approx(3960.0, rel=0.01) and fit["ratio_upper"] < BROAD_MAX_RATIO
    assert fit["narrow_only"]
    qso = emission_spectrum(0.1, np.random.default_rng(3), broad_sigma=4000.0, broad_share=3.0, snr=200.0)
    assert not fit_h_alpha(*qso, 0.1)["narrow_only"]
    seyfert_19 = emission_spectrum(0.1, np.random.default_rng(3), broad_sigma=2200.0, broad_share=0.3, snr=200.0)
    assert not fit_h_alpha(*seyfert_19, 0.1)["narrow_only"]


def test_a_qso_fit_aliased_away_from_the_galaxy_lines_is_judged_at_the_lines_z():
    """A narrow-line galaxy at z 0.08 whose QSO fit aliased to z 1.4 (H-alpha off the grid there) shows no
    broad H-alpha at its lines' z: narrow only; a broad-line QSO at z 0.08 fitted at the same alias keeps its
    broad H-alpha there."""
    rng = np.random.default_rng(4)
    galaxy = emission_spectrum(0.08, rng)
    qso = emission_spectrum(0.08, rng, broad_sigma=2000.0)
    flux, ivar = (np.stack(a) for a in zip(galaxy, qso))
    alias, lines_z = np.array([1.4, 1.4]), np.array([0.08, 0.08])
    assert qso_checks(flux, ivar, alias)[1].tolist() == [False, False]
    assert qso_checks(flux, ivar, alias, lines_z)[1].tolist() == [True, False]
    assert qso_checks(flux, ivar, alias, np.array([np.nan, np.nan]))[1].tolist() == [False, False]


def test_nothing_is_judged_where_the_spectrum_cannot_show_it():
    """No verdict without H-alpha on the grid, without its pixels, or without a line to see: a faint QSO or a
    featureless spectrum is not called a galaxy by this check."""
    rng = np.random.default_rng(1)
    galaxy_far = emission_spectrum(0.5, rng)  # H-alpha at 9,850 A, off the grid
    faint = emission_spectrum(0.1, rng, broad_sigma=2000.0, snr=0.5)
    flat = (np.full(N_PIXELS, 0.3) + rng.normal(0, 0.01, N_PIXELS), np.full(N_PIXELS, 1e4))
    masked = emission_spectrum(0.1, rng)
    masked[1][np.abs(WAVELENGTH - 6564.6 * 1.1) < 300] = 0.0  # H-alpha's window without data
    flux, ivar = (np.stack(a) for a in zip(galaxy_far, faint, flat, masked))
    assert narrow_lines_only(flux, ivar, np.array([0.5, 0.1, 0.1, 0.1])).tolist() == [False] * 4
    assert narrow_lines_only(flux[:1], ivar[:1], np.array([np.nan])).tolist() == [False]
    # a faint QSO whose narrow core shows but whose broad wings drown: a broad line is not ruled out
    core = emission_spectrum(0.3, np.random.default_rng(1), broad_sigma=2800.0, broad_share=1.0, snr=3.0)
    fit = fit_h_alpha(*core, 0.3)
    assert fit["narrow_significance"] > 5 and fit["ratio_upper"] > BROAD_MAX_RATIO and not fit["narrow_only"]
    assert window_on_grid(np.array([0.0, 0.3, 0.35])).tolist() == [True, True, False]


def test_published_class_moves_a_qso_with_narrow_lines_only():
    probs = np.array([[0.2, 0.1, 0.7], [0.2, 0.1, 0.7], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1]], np.float32)
    qso_z = np.array([0.1, 0.1, 0.2, np.nan])
    assert published_class(probs, qso_z, np.array([True, False, True, True])).tolist() == [0, 2, 1, 1]
    assert published_class(probs, qso_z).tolist() == [2, 2, 2, 1]


def test_a_narrow_line_galaxy_called_qso_is_published_as_its_next_class(tmp_path):
    """End to end: a network that calls everything QSO (GALAXY next) publishes a star-forming galaxy at
    z 0.1 as GALAXY, fitted as one, flagged NO_BROAD_LINE, its probabilities the network's; a QSO with a
    broad H-alpha at z 0.15 and an spEigenQSO QSO at z 1.5 (H-alpha off the grid) stay QSOs."""
    torch.manual_seed(0)
    model = build_model("fast", **TINY).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([-1.0, 1.0, 3.0]))
    classifier = Classifier.load(save_weights(model, tmp_path / "calls-qso"), device="cpu", target_prior=None)
    rng = np.random.default_rng(2)
    galaxy = emission_spectrum(0.1, rng, strength=2.0)
    broad = emission_spectrum(0.15, rng, broad_sigma=2500.0, strength=2.0)
    far = from_template("QSO", 1.5, rng, snr=30)
    flux = np.stack([galaxy[0], broad[0], far[0]]).astype(np.float32)
    ivar = np.stack([galaxy[1], broad[1], far[1]])

    probs, balanced, fit = classifier.predict_with_redshift(flux, ivar)
    assert (probs.argmax(1) == 2).all() and (balanced.argmax(1) == 2).all()
    assert fit.classes.tolist() == [1, 2, 2] and fit.no_broad_line.tolist() == [True, False, False]
    assert not fit.no_qso_redshift.any()
    assert abs(fit.z[0] - 0.1) < 0.003 and abs(fit.z[1] - 0.15) < 0.01 * 1.15  # the galaxy fitted as one

    records = records_of(flux, ivar)
    table = stages.build_table(records, stages.classify(records, classifier), "test").to_pydict()
    assert table["class"] == ["GALAXY", "QSO", "QSO"]
    assert [bool(f & int(Flag.NO_BROAD_LINE)) for f in table["flags"]] == [True, False, False]
    assert table["prob_qso"][0] == pytest.approx(float(probs[0, 2]))  # the network's, kept


def test_a_galaxy_whose_balanced_qso_fit_aliased_is_judged_at_its_lines_z(tmp_path, monkeypatch):
    """A row the survey prior publishes GALAXY while the balanced prior says QSO gets the balanced NO_BROAD_LINE
    bit from H-alpha's window at its galaxy lines' z when its QSO fit aliased far from them (to z 1.3, H-alpha
    off the grid; the aliasing forced by the test), as ``class_rule_inputs`` (the yardstick's) reads the row."""
    torch.manual_seed(0)
    model = build_model("fast", **TINY).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([-5.0, 2.0, 3.0]))  # survey prior: GALAXY; balanced: QSO
    classifier = Classifier.load(save_weights(model, tmp_path / "galaxy-or-qso"), device="cpu",
                                 target_prior=SURVEY_PRIOR)
    galaxy = emission_spectrum(0.1, np.random.default_rng(3), strength=2.0)
    flux, ivar = galaxy[0][None].astype(np.float32), galaxy[1][None]
    fitter = RedshiftFitter(device="cpu")
    own_fit = fitter.fit

    def aliased(flux, ivar, classes, *args, **kwargs):
        result = own_fit(flux, ivar, classes, *args, **kwargs)
        result.z = np.where(np.asarray(classes) == 2, 1.3, result.z)
        return result

    monkeypatch.setattr(fitter, "fit", aliased)
    classifier.fitter = fitter
    probs, balanced, fit = classifier.predict_with_redshift(flux, ivar)
    assert probs.argmax(1).tolist() == [1] and balanced.argmax(1).tolist() == [2]
    assert fit.classes.tolist() == [1] and fit.z_balanced[0] == 1.3
    assert fit.no_broad_line.tolist() == [True] and not fit.no_qso_redshift.any() and not fit.galaxy_lines.any()
    _, narrow, *_ = classifier.class_rule_inputs(balanced, flux, ivar)
    assert narrow.tolist() == [True]


def test_a_broad_h_alpha_is_shown_only_wide_strong_and_plain():
    """A type 1 AGN's broad H-alpha (sigma 2,500 km/s, 3 times the narrow line's flux) beside its host's narrow
    lines is shown at its z; not a star-forming galaxy's lines, a Seyfert 1.9's faint broad line, one as narrow as
    a narrow-line Seyfert 1's (sigma 1,000) or as wide as the window (where a continuum's curvature fits as
    well), one too faint to be plain (S/N 3), nor anything with H-alpha off the grid or without a z."""
    rng = np.random.default_rng(5)
    spectra = [emission_spectrum(0.15, rng, broad_sigma=2500.0, strength=2.0),
               emission_spectrum(0.1, rng, strength=2.0),
               emission_spectrum(0.1, rng, broad_sigma=2200.0, broad_share=0.3, snr=60.0),
               emission_spectrum(0.1, rng, broad_sigma=1000.0, snr=60.0),
               emission_spectrum(0.1, rng, broad_sigma=4000.0, snr=200.0),
               emission_spectrum(0.1, rng, broad_sigma=2500.0, snr=3.0),
               emission_spectrum(0.5, rng, broad_sigma=2500.0, strength=2.0),
               emission_spectrum(0.15, rng, broad_sigma=2500.0, strength=2.0)]
    flux, ivar = (np.stack(a) for a in zip(*spectra))
    z = np.array([0.15, 0.1, 0.1, 0.1, 0.1, 0.1, 0.5, np.nan])
    assert broad_line_shown(flux, ivar, z).tolist() == [True] + [False] * 7
    fit = fit_h_alpha(flux[0], ivar[0], 0.15)
    assert fit["broad_shown"] and not fit["narrow_only"] and fit["ratio"] == pytest.approx(3.0, rel=0.1)


def test_published_class_makes_a_galaxy_with_a_broad_h_alpha_a_qso():
    """A GALAXY, the network's or one the galaxy-lines rule made of its STAR, with a broad H-alpha is a QSO; a
    STAR is not moved, nor a QSO the broad-line rule published as its next class (its narrow H-alpha stands)."""
    probs = np.array([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]],
                     np.float32)
    qso_z = np.array([np.nan, np.nan, np.nan, np.nan, 0.1])
    narrow = np.array([False, False, False, False, True])
    lines = np.array([False, False, False, True, False])
    broad = np.array([True, False, True, True, True])
    assert published_class(probs, qso_z, narrow, None, lines, None, broad).tolist() == [2, 1, 0, 2, 1]
    assert published_class(probs, qso_z, narrow, None, lines).tolist() == [1, 1, 0, 1, 1]


@pytest.mark.parametrize("galaxy_bias, published", [(3.0, "QSO"), (6.0, "GALAXY")])
def test_a_broad_line_agn_called_galaxy_is_published_a_qso(tmp_path, galaxy_bias, published):
    """End to end: a network that calls everything GALAXY, QSO under the balanced prior 0.05 (galaxy bias 3) or
    0.002 (6, below BROAD_CHECK_MIN_QSO_PROB: not checked), publishes a broad-line AGN at z 0.15 QSO, fitted
    as one at its z, flagged BROAD_H_ALPHA, its probabilities the network's; or leaves it GALAXY. A star-forming
    galaxy at z 0.1 stays GALAXY either way, and ``class_rule_inputs`` (the yardstick's) agrees."""
    torch.manual_seed(0)
    model = build_model("fast", **TINY).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([-1.0, galaxy_bias, 0.0]))
    classifier = Classifier.load(save_weights(model, tmp_path / "calls-galaxy"), device="cpu", target_prior=None)
    rng = np.random.default_rng(5)
    agn = emission_spectrum(0.15, rng, broad_sigma=2500.0, strength=2.0)
    galaxy = emission_spectrum(0.1, rng, strength=2.0)
    flux = np.stack([agn[0], galaxy[0]]).astype(np.float32)
    ivar = np.stack([agn[1], galaxy[1]])

    probs, balanced, fit = classifier.predict_with_redshift(flux, ivar)
    assert (probs.argmax(1) == 1).all()
    moved = published == "QSO"
    assert fit.classes.tolist() == [2 if moved else 1, 1] and fit.broad_h_alpha.tolist() == [moved, False]
    assert abs(fit.z[0] - 0.15) < (0.01 if moved else 0.003) * 1.15
    rule_inputs = classifier.class_rule_inputs(balanced, flux, ivar)
    assert published_class(balanced, *rule_inputs).tolist() == fit.classes.tolist()

    records = records_of(flux, ivar)
    table = stages.build_table(records, stages.classify(records, classifier), "test").to_pydict()
    assert table["class"] == [published, "GALAXY"]
    assert [bool(f & int(Flag.BROAD_H_ALPHA)) for f in table["flags"]] == [moved, False]
    assert table["prob_galaxy"][0] == pytest.approx(float(probs[0, 1]))  # the network's, kept
