"""Redshift columns and flag bits through the pipeline stages, the fast path with a redshift head, and
the FITS export of the new columns."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from model_fixtures import TINY, one_torch_thread  # noqa: F401
from test_redshift_fit import from_template

from lamost_classify.model.densenet import build_model, redshift_estimate
from lamost_classify.model.fastpath import FastPath
from lamost_classify.model.inference import Classifier
from lamost_classify.model.weights import save_weights
from lamost_classify.pipeline import stages
from lamost_classify.pipeline.flags import Flag, describe
from lamost_classify.pipeline.plan import Batch
from lamost_classify.pipeline.schema import SCHEMA


class TemplateClassModel:
    """Gives each row a fixed class (the test knows the truth) and runs the real refinement."""

    name = "fixed@000000000000"

    def __init__(self, classes: np.ndarray) -> None:
        from lamost_classify.model.redshift import RedshiftFitter

        self.classes = classes
        self.fitter = RedshiftFitter()

    def _probs(self, n: int) -> np.ndarray:
        return np.eye(3, dtype=np.float32)[self.classes[:n]] * 0.9 + 0.1 / 3

    def predict_proba_and_balanced(self, flux):
        p = self._probs(len(flux))
        return p, p

    def predict_with_redshift(self, flux, ivar, pedestal=None):
        p = self._probs(len(flux))
        return p, p, self.fitter.fit(flux, ivar, p.argmax(1), pedestal=pedestal)

    def cam(self, flux):
        return flux


def records_of(flux: np.ndarray, ivar: np.ndarray, flags: np.ndarray | None = None,
               pedestal: np.ndarray | None = None) -> stages.PreparedRecords:
    n = len(flux)
    batch = Batch(index=0, start=0, stop=n, sources=tuple(f"mock-{i}" for i in range(n)))
    return stages.PreparedRecords(batch, flux.astype(np.float32), np.zeros(n, np.uint32) if flags is None else flags,
                                  np.full(n, 20.0, np.float32), [{} for _ in range(n)], [None] * n,
                                  ivar.astype(np.float32), pedestal)


def test_catalog_rows_carry_z_subclass_and_the_redshift_bits():
    rng = np.random.default_rng(5)
    made = [from_template("GALAXY", 0.2, rng), from_template("QSO", 1.5, rng),
            from_template("STAR", 0.0, rng, index=80), from_template("GALAXY", 0.1, rng)]
    flux, ivar = np.stack([m[0] for m in made]), np.stack([m[1] for m in made])
    flux = np.clip(flux, 0, 1)
    ivar[3, 200:] = 0  # few valid pixels
    flags = np.zeros(len(flux) + 1, np.uint32)
    flags[-1] = int(Flag.NO_FLUX)  # an unusable row: no class, no redshift
    flux, ivar = np.vstack([flux, np.zeros((1, flux.shape[1]))]), np.vstack([ivar, np.zeros((1, ivar.shape[1]))])
    records = records_of(flux, ivar, flags, np.array([m[3] for m in made] + [0.0], np.float32))
    model = TemplateClassModel(np.array([1, 2, 0, 1, 0]))
    table = stages.build_table(records, stages.classify(records, model), "test").to_pydict()
    z_true = [m[2] for m in made]
    assert abs(table["z"][0] - z_true[0]) < 1e-3 and abs(table["z"][1] - z_true[1]) < 1e-2
    assert abs(table["z"][2]) < 1e-3 and table["subclass"][2] == load_star_label(80)
    assert table["subclass"][1] == "BROADLINE" and table["subclass"][0] in ("STARFORMING", "PASSIVE", "AGN")
    assert all(e > 0 for e in table["z_err"][:3]) and all(d > 9 for d in table["delta_chi2"][:2])
    assert table["flags"][3] & int(Flag.Z_FEW_PIXELS) and not table["flags"][0] & int(Flag.Z_FEW_PIXELS)
    assert table["z"][4] is None and table["subclass"][4] is None and table["class"][4] is None


def test_the_stage_gives_the_star_fit_what_the_normalisation_subtracted():
    rng = np.random.default_rng(9)
    made = [from_template("STAR", 0.0, rng, snr=30, index=i, tilt=0.3) for i in (40, 80)]
    flux, ivar = np.clip(np.stack([m[0] for m in made]), 0, 1), np.stack([m[1] for m in made])
    pedestal = np.array([m[3] for m in made], np.float32)
    records = records_of(flux, ivar, pedestal=pedestal)
    result = stages.classify(records, TemplateClassModel(np.array([0, 0])))
    table = stages.build_table(records, result, "test").to_pydict()
    from lamost_classify.model.redshift import RedshiftFitter

    fitter = RedshiftFitter()
    given, without = (fitter.fit(flux, ivar, np.zeros(2, int), pedestal=p) for p in (pedestal, None))
    assert table["subclass"] == given.subclass and np.allclose(table["z"], given.z, atol=1e-7)
    assert (pedestal > 0).any() and not np.allclose(given.chi2, without.chi2)


def load_star_label(index: int) -> str:
    from lamost_classify.model.redshift import load_templates

    return load_templates()["STAR"].subclass[index]


def test_a_model_without_redshift_leaves_the_columns_null():
    class Plain:
        name = "plain@0"

        def predict_proba_and_balanced(self, flux):
            p = np.tile(np.float32([0.8, 0.1, 0.1]), (len(flux), 1))
            return p, p

    records = records_of(np.random.default_rng(0).random((2, 2600)), np.ones((2, 2600)))
    table = stages.build_table(records, stages.classify(records, Plain()), "test").to_pydict()
    assert table["class"] == ["STAR", "STAR"] and table["z"] == [None, None] and table["subclass"] == [None, None]


def test_flags_command_table_documents_the_redshift_bits():
    text = describe()
    for name in ("Z_SMALL_DELTA_CHI2", "Z_FIT_LIMIT", "Z_FEW_PIXELS"):
        assert name in text
    assert {f.name for f in Flag} >= {"Z_SMALL_DELTA_CHI2", "Z_FIT_LIMIT", "Z_FEW_PIXELS", "PRIOR_DOMINATED"}


def test_schema_describes_the_new_columns_and_fits_export_carries_them(tmp_path):
    from astropy.io import fits

    from lamost_classify.export import write_fits

    for name in ("z", "z_err", "delta_chi2", "subclass", "z_balanced", "z_err_balanced"):
        assert SCHEMA.field(name).metadata[b"description"]
    rng = np.random.default_rng(6)
    made = [from_template("GALAXY", 0.3, rng), from_template("STAR", 0.0, rng, index=40)]
    records = records_of(np.clip(np.stack([m[0] for m in made]), 0, 1), np.stack([m[1] for m in made]),
                         pedestal=np.array([m[3] for m in made], np.float32))
    table = stages.build_table(records, stages.classify(records, TemplateClassModel(np.array([1, 0]))), "test")
    (tmp_path / "cat" / "parquet").mkdir(parents=True)
    pq.write_table(table, tmp_path / "cat" / "parquet" / "batch-000000.parquet")
    write_fits(tmp_path / "cat", None, tmp_path / "out.fits")
    with fits.open(tmp_path / "out.fits") as h:
        data, header = h[1].data, h[1].header
        names = list(data.columns.names)
        assert abs(data["z"][0] - made[0][2]) < 1e-3 and data["subclass"][1].strip() == load_star_label(40)
        tcomm = header[f"TCOMM{names.index('z') + 1}"]
        assert "redshift" in tcomm
        assert "balanced prior" in header[f"TCOMM{names.index('z_balanced') + 1}"]
        assert data["z_balanced"][0] == data["z"][0]  # the published class is the balanced one here


def test_the_fast_path_returns_the_head_with_the_logits_and_the_classifier_uses_it(tmp_path):
    torch.manual_seed(0)
    model = build_model("fast", **TINY, redshift_hidden=8).eval()
    with torch.no_grad():  # a head that says something: z around 0.5 with a small sigma
        model.redshift.fc2.bias.copy_(torch.tensor([np.log1p(0.5), 2 * np.log(0.01)]))
    x = np.random.default_rng(1).random((5, 2600)).astype(np.float32)
    with torch.no_grad():
        logits, head = model.forward_with_redshift(torch.from_numpy(x))
    fast = FastPath(model, "cpu", "fp32")
    np.testing.assert_allclose(fast(x), logits.numpy(), atol=1e-4)  # the logits alone, as before
    np.testing.assert_allclose(fast.outputs(x)[:, 3:], head.numpy(), atol=1e-4)
    z, z_err = redshift_estimate(head)
    assert np.allclose(z, 0.5, atol=0.05)

    path = save_weights(model, tmp_path / "with-head")
    classifier = Classifier.load(path, device="cpu", target_prior=None)
    probs, balanced, fit = classifier.predict_with_redshift(x, np.full_like(x, 100.0))
    np.testing.assert_allclose(probs, classifier.predict_proba(x), atol=1e-6)
    assert len(fit.z) == 5 and np.isfinite(fit.z).all()


def test_the_shipped_model_fits_redshifts_without_a_head():
    classifier = Classifier.load("default", device="cpu")
    rng = np.random.default_rng(7)
    flux, ivar, z_true, _ = from_template("QSO", 1.2, rng, snr=30)
    probs, _, fit = classifier.predict_with_redshift(np.clip(flux, 0, 1)[None], ivar[None])
    assert probs.shape == (1, 3) and np.isfinite(fit.z[0]) and fit.subclass[0] is not None
    if probs.argmax() == 2:
        assert abs(fit.z[0] - z_true) < 0.01 * (1 + z_true)


def test_a_prior_dominated_row_also_gets_the_redshift_of_the_class_its_spectrum_favours(tmp_path):
    """A galaxy the survey prior publishes as STAR keeps a star's z, and gets its galaxy z in z_balanced:
    the README's complete samples, selected on prob_*_balanced, need it. Where the balanced prior agrees
    with the published class, z_balanced repeats z."""
    torch.manual_seed(0)
    model = build_model("fast", **TINY).eval()
    with torch.no_grad():  # the same logits for every spectrum: GALAXY ahead, not by enough for the survey prior
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 1.0, -5.0]))
    path = save_weights(model, tmp_path / "leans-galaxy")
    rng = np.random.default_rng(3)
    flux, ivar, z_true, _ = from_template("GALAXY", 0.2, rng, snr=30)
    flux, ivar = np.clip(flux, 0, 1)[None].astype(np.float32), ivar[None]

    survey = Classifier.load(path, device="cpu", target_prior=(0.985, 0.012, 0.003))
    probs, balanced, fit = survey.predict_with_redshift(flux, ivar)
    assert probs.argmax() == 0 and balanced.argmax() == 1  # published STAR, the spectrum alone says GALAXY
    assert abs(fit.z[0]) < 0.01 and fit.subclass[0] is not None  # a star's fit, as published
    assert abs(fit.z_balanced[0] - z_true) < 0.003 * (1 + z_true) and fit.z_err_balanced[0] > 0

    flat = Classifier.load(path, device="cpu", target_prior=None)
    _, _, same = flat.predict_with_redshift(flux, ivar)
    assert same.z_balanced[0] == same.z[0] and same.z_err_balanced[0] == same.z_err[0]

    records = records_of(flux, ivar)
    table = stages.build_table(records, stages.classify(records, survey), "test").to_pydict()
    assert table["class"] == ["STAR"] and table["flags"][0] & int(Flag.PRIOR_DOMINATED)
    assert abs(table["z_balanced"][0] - z_true) < 0.003 * (1 + z_true) and abs(table["z"][0]) < 0.01


def test_a_qso_that_fits_only_at_rest_is_published_as_its_next_class(tmp_path):
    """The network's QSO needs a QSO redshift: a cataclysmic variable (broad Balmer lines at rest) that it
    calls QSO fits no QSO above QSO_MIN_Z and is published as the next class, fitted as that, flagged
    NO_QSO_REDSHIFT, its probabilities the network's; a QSO at z 1.5 stays a QSO."""
    from lamost_classify.contract import QSO_MIN_Z
    from lamost_classify.model.redshift import load_templates

    torch.manual_seed(0)
    model = build_model("fast", **TINY).eval()
    with torch.no_grad():  # the same logits for every spectrum: QSO first, STAR second
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([1.0, -1.0, 3.0]))
    classifier = Classifier.load(save_weights(model, tmp_path / "calls-qso"), device="cpu", target_prior=None)
    rng = np.random.default_rng(4)
    cv = load_templates()["STAR"].subclass.index("CV")
    made = [from_template("STAR", 0.0, rng, snr=30, index=cv), from_template("QSO", 1.5, rng, snr=30)]
    flux, ivar = np.clip(np.stack([m[0] for m in made]), 0, 1).astype(np.float32), np.stack([m[1] for m in made])
    pedestal = np.array([m[3] for m in made], np.float32)

    probs, balanced, fit = classifier.predict_with_redshift(flux, ivar, pedestal)
    assert (probs.argmax(1) == 2).all() and (balanced.argmax(1) == 2).all()
    assert fit.z_balanced[0] < QSO_MIN_Z  # as a QSO it fits only at rest...
    assert fit.classes.tolist() == [0, 2] and fit.no_qso_redshift.tolist() == [True, False]  # ...so STAR
    assert abs(fit.z[0]) < 1e-3 and fit.subclass[0] == "CV"  # fitted as the star it is
    assert abs(fit.z[1] - made[1][2]) < 0.01 * (1 + made[1][2]) and fit.subclass[1] in ("BROADLINE", "BAL")

    records = records_of(flux, ivar, pedestal=pedestal)
    table = stages.build_table(records, stages.classify(records, classifier), "test").to_pydict()
    assert table["class"] == ["STAR", "QSO"] and table["subclass"][0] == "CV"
    assert table["flags"][0] & int(Flag.NO_QSO_REDSHIFT) and not table["flags"][1] & int(Flag.NO_QSO_REDSHIFT)
    assert table["prob_qso"][0] == pytest.approx(float(probs[0, 2]))  # the network's, kept
    assert table["confidence"][0] == pytest.approx(float(probs[0, 0])) and table["margin"][0] < 0  # the class's
    assert table["flags"][0] & int(Flag.LOW_CONFIDENCE) and not table["flags"][0] & int(Flag.PRIOR_DOMINATED)


def test_published_class_moves_only_a_qso_fitted_below_the_qso_range():
    """The rule alone: a QSO fitted below QSO_MIN_Z takes the more probable of the other two classes; a QSO
    fitted above it, or not fitted, stays; other classes and unusable rows are untouched."""
    from lamost_classify.contract import QSO_MIN_Z
    from lamost_classify.model.inference import published_class

    probs = np.array([[0.2, 0.1, 0.7], [0.1, 0.3, 0.6], [0.2, 0.1, 0.7], [0.2, 0.1, 0.7], [0.6, 0.1, 0.3],
                      [np.nan, np.nan, np.nan]], np.float32)
    qso_z = np.array([0.001, QSO_MIN_Z / 2, QSO_MIN_Z, np.nan, 0.001, 0.001])
    assert published_class(probs, qso_z).tolist() == [0, 1, 2, 2, 0, -1]
