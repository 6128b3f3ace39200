"""The mock simulator: determinism, physics (lines where they must be), outputs, fresh-machine fallbacks."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from conftest import TEMPLATES, requires_templates
from lamost_classify.mocks import noise_donors
from lamost_classify.mocks.instrument import WAVELENGTH, is_held_out
from lamost_classify.mocks.noise_donors import load_noise_summary
from lamost_classify.mocks.simulate import BLOCK, MockChunk, Simulator, simulate
from lamost_classify.mocks.igm import igm_transmission, load_igm
from lamost_classify.mocks.templates import analytic_templates, load_templates


@pytest.fixture(scope="module")
def summary():
    return load_noise_summary()


@pytest.fixture(scope="module")
def fresh_sim(summary):
    """What a fresh machine has: the analytic templates and the shipped noise summary."""
    return Simulator(templates=analytic_templates(), library=summary, class_mix=(1, 1, 1))


@pytest.fixture(scope="module")
def real_templates():
    return load_templates(TEMPLATES)


def _one_shot(sim, n, seed, **kw):
    return MockChunk.concat(list(simulate(n, seed, simulator=sim, chunk_size=n, **kw)))


def test_same_seed_same_mocks_and_chunking_does_not_matter(fresh_sim):
    n = BLOCK + 44  # crosses a block boundary
    one = _one_shot(fresh_sim, n, 11)
    again = _one_shot(fresh_sim, n, 11)
    chunks = list(simulate(n, 11, simulator=fresh_sim, chunk_size=77))
    assert [len(c) for c in chunks] == [77, 77, 77, 69]
    chunked = MockChunk.concat(chunks)
    for a in (again, chunked):
        np.testing.assert_array_equal(one.flux, a.flux)
        np.testing.assert_array_equal(one.ivar, a.ivar)
        np.testing.assert_array_equal(one.andmask, a.andmask)
        for k in one.truth:
            np.testing.assert_array_equal(one.truth[k], a.truth[k])
    other = _one_shot(fresh_sim, 50, 12)
    assert not np.array_equal(other.flux, one.flux[:50])


def test_start_offset_gives_the_same_mocks_as_one_shot(fresh_sim):
    whole = _one_shot(fresh_sim, 300, 3)
    part = _one_shot(fresh_sim, 60, 3, start=230)
    np.testing.assert_array_equal(part.flux, whole.flux[230:290])
    np.testing.assert_array_equal(part.truth["id"], np.arange(230, 290))


def test_chunk_arrays_and_truth(fresh_sim):
    c = _one_shot(fresh_sim, 120, 5)
    assert c.flux.shape == c.ivar.shape == c.andmask.shape == (120, 3909)
    assert c.flux.dtype == c.ivar.dtype == np.float32 and c.andmask.dtype == np.int32
    assert np.isfinite(c.flux).all() and (c.ivar >= 0).all()
    assert set(c.truth["class"]) == {"STAR", "GALAXY", "QSO"}
    z, cls = c.truth["z"], c.truth["class"]
    assert (np.abs(z[cls == "STAR"]) <= 300 / 299792.458 + 1e-12).all()
    assert ((z[cls == "GALAXY"] >= 0) & (z[cls == "GALAXY"] <= 0.6)).all()
    assert ((z[cls == "QSO"] >= 0.1) & (z[cls == "QSO"] <= 4.5)).all()
    # Masked pixels (andmask) never keep a positive ivar, as in the real files.
    assert not ((c.andmask != 0) & (c.ivar > 0)).any()


def test_noise_is_scaled_to_the_drawn_snr(summary):
    sim = Simulator(templates=analytic_templates(), library=summary, class_mix=(1, 0, 0), snr_distribution="loguniform",
                    snr_range=(10.0, 10.5))
    c = _one_shot(sim, 80, 2)
    # The truth's snr_g is measured like LAMOST's SNRG (median flux * sqrt(ivar) in 4050-5300 A).
    assert np.median(c.truth["snr_g"]) == pytest.approx(10.25, rel=0.08)
    # ...and the real scatter follows it: flux - (noiseless smooth) over sigma is of order 1, not 0 or 10.
    g = (WAVELENGTH > 4500) & (WAVELENGTH < 5200)
    resid = np.diff(c.flux[:, g], axis=1) * np.sqrt(c.ivar[:, g][:, 1:])
    ok = c.ivar[:, g][:, 1:] > 0
    assert 0.8 < np.median(np.abs(resid[ok])) / 0.6745 < 1.8


def test_class_mix_and_balanced(summary):
    sim = Simulator(templates=analytic_templates(), library=summary, class_mix=(0.985, 0.012, 0.003))
    c = _one_shot(sim, 512, 1)
    assert (c.truth["class"] == "STAR").mean() > 0.95
    with pytest.raises(ValueError):
        Simulator(templates=analytic_templates(), library=summary, class_mix=(1, -1, 0))


def test_is_held_out_is_a_fixed_30_percent_by_name():
    names = [f"spec-59522-GAC{i:05d}_sp{i % 16 + 1:02d}-{i % 250 + 1:03d}.fits.gz" for i in range(4000)]
    frac = np.mean([is_held_out(n) for n in names])
    assert 0.27 < frac < 0.33
    for n in names[:200]:
        assert is_held_out(n) == is_held_out("/some/dir/" + n.replace(".fits.gz", ".fits"))


def test_shipped_noise_summary_is_small_and_complete(summary):
    assert noise_donors.SUMMARY_PATH.stat().st_size < 400_000
    assert len(summary) >= 32
    assert summary.sigma_shape.shape == (len(summary), 3909)
    assert np.isfinite(summary.snr_quantiles).all() and (np.diff(summary.snr_quantiles[:, 0]) >= 0).all()
    # The sky residual sits on the night-sky lines: O I 5578.9 A carries some, a line-free stretch none.
    near = np.abs(WAVELENGTH - 5578.9) < 4
    assert summary.sky_residual[near].max() > 0.3
    assert summary.sky_residual[(WAVELENGTH > 4600) & (WAVELENGTH < 4650)].max() == 0
    # Donors' masks come with them: some donors have masked pixels.
    assert (summary.bad | summary.andmask).any(axis=1).sum() > len(summary) // 2


def test_the_summary_writer_reproduces_the_shipped_summary(summary, tmp_path):
    """save_noise_summary is how the shipped file was made: what it writes, load_noise_summary reads back."""
    again = load_noise_summary(noise_donors.save_noise_summary(summary, tmp_path / "summary.npz", n_donors=len(summary)))
    assert again.names == summary.names
    for field in ("bad", "andmask", "snr", "snr_quantiles"):
        np.testing.assert_array_equal(getattr(again, field), getattr(summary, field))
    for field in ("sigma_shape", "continuum", "noise_excess", "sky_residual", "telluric"):
        np.testing.assert_allclose(getattr(again, field), getattr(summary, field), rtol=2e-3, atol=1e-3)


def test_none_of_the_shipped_donors_is_held_out(summary):
    assert not any(is_held_out(n) for n in summary.names)


def _peak_wavelength(model: np.ndarray, centre: float, half_width: float = 40.0) -> float:
    w = np.abs(WAVELENGTH - centre) < half_width
    return float(WAVELENGTH[w][np.argmax(model[w])])


def test_lines_land_where_they_must_analytic(fresh_sim):
    # H alpha of a z = 0.1 star-forming galaxy at 6564.61 * 1.1 A (vacuum), within one pixel (1.7 A).
    ha = fresh_sim.noiseless("analytic-galaxy", 0.1, index=1)[0]
    assert _peak_wavelength(ha, 6564.61 * 1.1) == pytest.approx(6564.61 * 1.1, abs=1.7)
    qso = fresh_sim.noiseless("analytic-qso", 1.0)[0]
    assert _peak_wavelength(qso, 5597.5) == pytest.approx(5597.5, abs=4.0)


@requires_templates
def test_lines_land_where_they_must_real_templates(real_templates, summary):
    sim = Simulator(templates=real_templates, library=summary)
    gal = sim.templates.get("rr-galaxy")
    sf = [i for i, lab in enumerate(gal.labels) if lab == "STARFORMING"][:5]
    for i in sf:
        m = sim.noiseless("rr-galaxy", 0.1, index=i)[0]
        assert _peak_wavelength(m, 6564.61 * 1.1, 15.0) == pytest.approx(6564.61 * 1.1, abs=1.7)
    # Mg II 2798.75 A of a z = 1 QSO at ~5598 A (a broad blend of the doublet).
    for name in ("sdss-qso", "rr-qso-loz"):
        m = sim.noiseless(name, 1.0)[0]
        assert _peak_wavelength(m, 5597.5, 60.0) == pytest.approx(5597.5, abs=8.0), name


@requires_templates
def test_igm_absorbs_blueward_of_lyman_alpha_at_z3(real_templates, summary):
    sim = Simulator(templates=real_templates, library=summary)
    with_igm = sim.noiseless("sdss-qso", 3.0)[0]
    without = sim.noiseless("sdss-qso", 3.0, igm=False)[0]
    lya = 1215.67 * 4.0
    blue = (WAVELENGTH > 3800) & (WAVELENGTH < lya - 60)
    red = WAVELENGTH > lya + 60
    ratio = with_igm[blue].sum() / without[blue].sum()
    assert 0.4 < ratio < 0.9  # Inoue+14 mean transmission of the forest at z ~ 2-3
    np.testing.assert_allclose(with_igm[red], without[red], rtol=1e-6)


def test_igm_transmission_matches_inoue14_limits():
    coeffs = load_igm(TEMPLATES if TEMPLATES.is_dir() else None)
    w = np.linspace(3000, 9000, 500)
    t15 = igm_transmission(1.5, w, coeffs)  # Ly alpha at 3039 A: absorption below it only
    assert (t15[w > 1215.67 * 2.5] == 1).all() and (t15[w < 1215.67 * 2.5] < 1).all()
    t4 = igm_transmission(4.0, w, coeffs)
    assert (t4[w > 1215.67 * 5 + 1] == 1).all()
    assert t4[w < 1215.67 * 5 - 50].mean() < t4[w < 1215.67 * 5 - 50].max() <= 1
    # Deeper at higher z at the same observed wavelength.
    assert igm_transmission(4.0, np.array([4500.0]), coeffs)[0] < igm_transmission(3.0, np.array([4500.0]), coeffs)[0]


@requires_templates
def test_real_templates_are_read_as_documented(real_templates):
    names = {s.name for s in real_templates.sets}
    assert {"sdss-star", "rr-galaxy", "sdss-galaxy", "sdss-qso", "rr-qso-loz", "rr-qso-hiz"} <= names
    stars = real_templates.get("sdss-star")
    assert len(stars) == 123 and stars.labels[0] == "A0"
    gal = real_templates.get("rr-galaxy")
    kinds = set(gal.labels)
    assert kinds == {"PASSIVE", "STARFORMING"}
    assert real_templates.get("rr-qso-hiz").redshifts.min() >= 1.0
    # Eigen draws stay physical: no negative flux.
    rng = np.random.default_rng(0)
    spectra, _, _ = real_templates.get("sdss-qso").draw(rng, 50)
    assert (spectra >= 0).all()


def test_cli_writes_parquet_and_release(tmp_path):
    from lamost_classify.cli import main

    runner = CliRunner()
    out = tmp_path / "mocks.parquet"
    r = runner.invoke(main, ["simulate", "--n", "30", "--seed", "4", "--balanced", "--format", "parquet", "--out", str(out),
                             "--noise", "summary", "--templates", str(tmp_path / "missing")])
    assert r.exit_code != 0 and "does not exist" in r.output
    r = runner.invoke(main, ["simulate", "--n", "30", "--seed", "4", "--balanced", "--format", "parquet", "--out", str(out),
                             "--noise", "summary"])
    assert r.exit_code == 0, r.output
    assert "spectra/s" in r.output
    t = pq.read_table(out)
    assert t.num_rows == 30
    assert {"obsid", "class", "subclass", "template", "z", "snr_g", "snr_r", "ra", "dec", "designation", "flux", "ivar",
            "andmask"} <= set(t.column_names)
    assert len(t["flux"][0].as_py()) == 3909
    assert t.schema.field("andmask").type.value_type == "int32"

    root = tmp_path / "release"
    r = runner.invoke(main, ["simulate", "--n", "12", "--seed", "4", "--balanced", "--out", str(root), "--layout", "dr2-8",
                             "--noise", "summary"])
    assert r.exit_code == 0, r.output
    files = sorted(root.glob("*/MOCK0001/spec-*-MOCK0001_sp01-*.fits.gz"))
    assert len(files) == 12
    from astropy.io import fits

    truth = pq.read_table(root / "mock_truth.parquet").to_pylist()
    with fits.open(files[0]) as h:
        hdr = h[0].header
        assert h[0].data.shape == (5, 3909)
        assert hdr["DATA_V"] == "MOCK" and hdr["PLANID"] == "MOCK0001" and hdr["COEFF0"] == pytest.approx(3.5682)
        row = next(t for t in truth if t["obsid"] == hdr["OBSID"])
        assert hdr["CLASS"] == row["class"] and hdr["Z"] == pytest.approx(row["z"])
    catalog = (root / "mock_catalog.csv").read_text().splitlines()
    assert catalog[0].split(",")[:9] == ["obsid", "designation", "obsdate", "lmjd", "planid", "spid", "fiberid", "ra", "dec"]
    assert len(catalog) == 13
