"""Star subclasses (model/redshift.py's star fit) from the shipped templates: LAMOST-derived medians next to
spEigenStar, typed at the star's own radial velocity; and, with ../shared, on the held-out real LAMOST stars."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, requires_shared
from test_redshift_fit import from_template

from lamost_classify.model.redshift import STEP, RedshiftFitter, arm_join_ramp, load_templates, templates_path
from lamost_classify.model.redshift_metrics import mk_letter, star_type_confusion
from lamost_classify.pipeline.grid import N_PIXELS

STAR_DIRS = ("lamost-dr8-stars", "lamost/dr10-stars-A", "lamost/dr1", "lamost/dr2", "lamost/releases")


@pytest.fixture(scope="module")
def fitter() -> RedshiftFitter:
    torch.set_num_threads(1)
    return RedshiftFitter()


def test_the_shipped_star_templates_carry_lamost_medians_with_valid_types():
    with np.load(templates_path()) as data:
        names = [str(n) for n in data["STAR_names"]]
        labels = [str(s) for s in data["STAR_subclass"]]
        basis = data["STAR_basis"]
    lamost = [label for name, label in zip(names, labels) if name.startswith("LAMOST ")]
    assert len(lamost) >= 20
    assert all(re.fullmatch(r"[OBAFGKM]\d", label) for label in lamost)
    assert {"A", "F", "G", "K", "M"} <= {label[0] for label in lamost}
    sdss = [label for name, label in zip(names, labels) if not name.startswith("LAMOST ")]
    # spEigenStar stays for what LAMOST's stars lack, once per subtype, never where a LAMOST median exists.
    assert {"O", "B", "WD", "C", "L", "CV"} <= {mk_letter(label) for label in sdss}
    typed = [label for label in sdss if re.fullmatch(r"[OBAFGKM]\d", label)]
    assert len(typed) == len(set(typed)) and not set(typed) & set(lamost)
    assert np.isfinite(basis).all() and (np.median(basis, axis=1) > 0).all()


def test_a_star_one_pixel_and_a_third_off_keeps_its_subtype(fitter):
    rng = np.random.default_rng(5)
    library = load_templates()["STAR"]
    wanted = ["A5", "F5", "G5", "K5", "M0"]
    made = [from_template("STAR", 0.0002, rng, snr=40, index=library.subclass.index(label), tilt=0.2)
            for label in wanted]
    result = fitter.fit(np.stack([m[0] for m in made]), np.stack([m[1] for m in made]), np.zeros(len(made), int),
                        pedestal=np.array([m[3] for m in made]))
    # 140 km/s: typed at the star's own velocity, not at z = 0, so the lines meet the template's.
    assert result.subclass == wanted
    np.testing.assert_allclose(result.z, [m[2] for m in made], atol=0.2 * STEP * np.log(10))


def test_a_star_with_every_other_pixel_masked_keeps_its_subtype(fitter):
    rng = np.random.default_rng(3)
    library = load_templates()["STAR"]
    wanted = ["A5", "F5", "G5", "K5"]
    made = [from_template("STAR", 0.0002, rng, snr=40, index=library.subclass.index(label), tilt=0.2)
            for label in wanted]
    flux, ivar = np.stack([m[0] for m in made]), np.stack([m[1] for m in made])
    ivar[:, ::2] = 0.0  # moved to rest, a pixel between two valid ones must still count
    assert fitter.fit(flux, ivar, np.zeros(len(made), int), pedestal=np.array([m[3] for m in made])).subclass == wanted


def test_moving_to_rest_interpolates_flux_and_variance():
    f = torch.arange(N_PIXELS, dtype=torch.float32).expand(2, -1).contiguous()
    w = torch.full((2, N_PIXELS), 4.0)
    w[1, 101] = 0.0  # a masked pixel: its neighbour at t < 0.5 stands in for it
    flux, weight = RedshiftFitter._star_rest_frame(f, w, torch.tensor([0.25, 0.25]))
    assert flux[0, 100].item() == 100.25 and weight[0, 100].item() == 4.0  # 1 / (0.75 / 4 + 0.25 / 4)
    assert (flux[1, 100].item(), weight[1, 100].item()) == (100.0, 4.0)  # 101 masked: 100, the nearer
    assert weight[1, 101].item() == 0.0  # 101 itself is nearer to 101 than to 102


def test_the_chi2_that_decides_a_star_type_is_exact_at_high_snr(fitter):
    rng = np.random.default_rng(6)
    library = load_templates()["STAR"]
    flux, ivar, _, pedestal = from_template("STAR", 0.0, rng, snr=400, index=library.subclass.index("A1"), tilt=0.2)
    flux = flux + pedestal  # as the fit sees a star
    # Templates near zero over the blue (late M) are where float32 round-off once gave chi2 < 0.
    picks = [library.subclass.index(label) for label in ("A1", "F5", "K5", "M6", "M8")]
    at_rest = fitter.star_at_rest
    f, w = torch.from_numpy(flux[None]), torch.from_numpy(ivar[None])

    def exact(poly: np.ndarray, templates: np.ndarray, flux: np.ndarray, ivar: np.ndarray) -> list[float]:
        out = []
        for t in templates:
            design = (t * poly).T * np.sqrt(ivar)[:, None]
            coeffs = np.linalg.lstsq(design, flux * np.sqrt(ivar), rcond=None)[0]
            out.append(float(np.sum(ivar * (flux - (t * poly).T @ coeffs) ** 2)))
        return out

    # The first pass fits pixel pairs: their inverse-variance weighted flux, the templates' and terms' means.
    def binned(x: np.ndarray) -> np.ndarray:
        return x[..., 0:N_PIXELS - 1:2] + x[..., 1:N_PIXELS:2]

    ivar_bin = binned(ivar)
    flux_bin = binned(ivar * flux) / ivar_bin
    templates = at_rest[picks].double().numpy()
    shortlist = fitter._star_chi2(f, w)[0, picks].numpy()  # float32 sums, fewer terms and pixels: a shortlist
    np.testing.assert_allclose(shortlist, exact(binned(fitter.shortlist_poly.numpy()) / 2, binned(templates) / 2,
                                                flux_bin, ivar_bin), rtol=0.02)
    assert shortlist.argmin() == 0
    deciding = fitter._star_misfits(f, w, at_rest, torch.tensor([picks])).sum(-1)[0].numpy()
    np.testing.assert_allclose(deciding, exact(fitter.star_poly.numpy(), templates, flux, ivar), rtol=1e-4)  # the tiny ridge
    assert deciding.argmin() == 0


@requires_shared
def test_held_out_real_lamost_stars_get_lamost_letters(fitter):
    from lamost_classify.mocks.instrument import is_held_out
    from lamost_classify.pipeline.grid import prepare
    from lamost_classify.pipeline.readers import read_batch

    # Only the held-out 30%: the LAMOST templates were made from the rest.
    files = [str(p) for sub in STAR_DIRS for p in sorted((SHARED_DATA / sub).glob("spec-*")) if is_held_out(p)]
    spectra = read_batch(files)
    batch = prepare(spectra)
    rows = [i for i, s in enumerate(spectra)
            if str(s.meta.get("lamost_class") or "").upper() == "STAR" and batch.ivar[i].any()]
    assert len(rows) >= 100
    result = fitter.fit(batch.flux[rows], batch.ivar[rows], np.zeros(len(rows), int), pedestal=batch.pedestal[rows])
    lamost = [str(spectra[i].meta.get("lamost_subclass") or "") for i in rows]
    confusion = star_type_confusion(lamost, result.subclass)
    assert confusion["letter_agreement"] >= 0.85
    letters, matrix = confusion["letters"], np.array(confusion["matrix"])
    for letter in "AFGK":
        row = matrix[letters.index(letter)]
        if row.sum() >= 5:  # each common letter: most of LAMOST's stars of that letter get it
            assert row[letters.index(letter)] > row.sum() / 2, (letter, dict(zip(letters, row.tolist())))


def test_a_star_whose_two_arms_disagree_in_scale_keeps_its_letter(fitter):
    # LAMOST's blue and red arms' flux scales differ by up to 2x in real files (docs/realism.md): a step at
    # the join that a polynomial cannot follow. Without the arm-join term in the star's multiplier, G5 and
    # G7 stars with their red arm 2x came out K0.
    rng = np.random.default_rng(11)
    library = load_templates()["STAR"]
    wanted = ["A5", "F5", "G5", "G7", "K3"]
    made = [from_template("STAR", 0.0, rng, snr=50, index=library.subclass.index(label)) for label in wanted]
    step = 1.0 + arm_join_ramp()[0].numpy()
    flux = np.stack([(m[0] + m[3]) * step for m in made])  # the spectrum over its span, red arm 2x
    lowest, span = flux.min(1, keepdims=True), np.ptp(flux, axis=1, keepdims=True)
    ivar = np.stack([m[1] for m in made]) / step**2 * span**2
    result = fitter.fit((flux - lowest) / span, ivar, np.zeros(len(made), int), pedestal=(lowest / span)[:, 0])
    assert [s[0] for s in result.subclass] == [s[0] for s in wanted]
