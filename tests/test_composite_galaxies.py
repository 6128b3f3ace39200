"""training/make_composite_galaxy_set.py: galaxies composed of real stars draw what they claim."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import requires_shared
from script_loader import load_script

from lamost_classify.contract import N_NATIVE, NATIVE_WAVELENGTH


@pytest.fixture(scope="module")
def composites():
    return load_script("training/make_composite_galaxy_set.py")


def fake_components(m, letters: str = "GGKAF") -> object:
    """Flat stars with one absorption line at rest 5000 A, no data below rest 3800 A, no telluric bands."""
    wave = 10 ** m.rest_grid()
    flux = 1.0 - 0.5 * np.exp(-0.5 * ((wave - 5000.0) / 2.0) ** 2)
    flux = np.where(wave < 3800.0, np.nan, flux)
    n = len(letters)
    return m.Components(
        names=[f"star-{i}" for i in range(n)], letters=np.array(list(letters)),
        flux=np.tile(flux, (n, 1)), var=np.full((n, wave.size), 1e-4), telluric=np.ones((n, N_NATIVE)),
        obs_flux=np.ones((n, N_NATIVE)), obs_var=np.full((n, N_NATIVE), 1e-4))


def test_broadening_keeps_the_line_and_widens_it_by_the_dispersion(composites):
    m = composites
    x = np.arange(400, dtype=float)
    line = np.exp(-0.5 * ((x - 200) / 1.5) ** 2)
    flux = np.where(x < 20, np.nan, line)
    out, var = m.broaden(flux, np.ones_like(x), 200.0)
    assert np.nansum(out) == pytest.approx(line.sum(), rel=1e-6)
    width = np.sqrt(np.nansum(out * (x - 200) ** 2) / np.nansum(out))
    assert width == pytest.approx(np.hypot(1.5, 200.0 / m.KMS_PER_PIXEL), rel=0.02)
    assert np.isnan(out[:20]).all() and np.isnan(var[:20]).all()
    assert np.nanmax(var) < 0.5  # a smoothed noise is smaller


def test_line_ratios_lie_where_the_kind_says_on_the_bpt_plane(composites):
    rng = np.random.default_rng(1)
    for _ in range(200):
        sf = composites.line_fluxes("STARFORMING", 1.0, rng)
        x, y = np.log10(sf["NII_6585"] / sf["Halpha"]), np.log10(sf["OIII_5008"] / sf["Hbeta"])
        assert y < 0.61 / (x - 0.05) + 1.3  # below Kauffmann et al. 2003
        sy = composites.line_fluxes("SEYFERT", 1.0, rng)
        x, y = np.log10(sy["NII_6585"] / sy["Halpha"]), np.log10(sy["OIII_5008"] / sy["Hbeta"])
        assert y > 0.61 / (x - 0.47) + 1.19  # above Kewley et al. 2001
        for lines in (sf, sy):
            assert lines["OIII_5008"] / lines["OIII_4960"] == pytest.approx(2.98)
            assert 2.86 <= lines["Halpha"] / lines["Hbeta"] <= 6.0


def test_a_composite_is_redshifted_broadened_and_given_its_lines(composites):
    m = composites
    c = fake_components(m)
    rng = np.random.default_rng(0)
    flux, var, template = m.compose(c, rng, "STARFORMING", 0.1)
    assert flux.shape == var.shape == (N_NATIVE,)
    assert len(template.split("+")) >= 3
    red = NATIVE_WAVELENGTH > 6000
    assert NATIVE_WAVELENGTH[red][np.argmax(flux[red])] == pytest.approx(6564.61 * 1.1, abs=3.0)
    trough = (NATIVE_WAVELENGTH > 5400) & (NATIVE_WAVELENGTH < 5600)
    assert NATIVE_WAVELENGTH[trough][np.argmin(flux[trough])] == pytest.approx(5500.0, abs=2.0)
    # The rest wavelengths the stars lack (below 3800 A) are what the redshift uncovered: no data yet.
    assert np.isnan(flux[NATIVE_WAVELENGTH < 3800 * 1.1 - 5]).all()
    assert np.isfinite(flux[NATIVE_WAVELENGTH > 3800 * 1.1 + 30]).all()  # beyond the broadening's edge
    passive, _, _ = m.compose(c, np.random.default_rng(0), "PASSIVE", 0.1)
    assert np.nanmax(passive[red]) < 1.01  # no lines


def test_finish_fills_the_lost_blue_end_and_adds_noise_down_to_the_target(composites):
    m = composites
    rng = np.random.default_rng(3)
    flux = np.linspace(1.0, 2.0, N_NATIVE)
    flux[:50] = flux[-30:] = np.nan
    var = np.full(N_NATIVE, 1e-4)
    out, out_var = m.finish(flux, var, 200, 10.0, rng)
    assert np.isfinite(out[:-30]).all() and np.isfinite(out_var[:-30]).all()
    assert np.median(out[:200]) == pytest.approx(np.median(flux[200:260]), rel=0.05)
    assert np.isinf(out_var[-30:]).all()  # the red end without data is masked, not filled
    g = (NATIVE_WAVELENGTH > 4000) & (NATIVE_WAVELENGTH < 5500)
    assert np.median(out[g] / np.sqrt(out_var[g])) == pytest.approx(10.0, rel=0.05)
    assert np.std(out[g] - flux[g]) > 0.5 * np.median(flux[g]) / 10.0
    bright = flux.copy()
    bright[:50] = 1.0
    kept, _ = m.finish(bright, var, 0, 1000.0, rng)  # fainter than the target already: no noise added
    assert np.array_equal(kept[:-30], bright[:-30])


@requires_shared
def test_the_set_pairs_each_galaxy_with_a_real_star_never_a_held_out_one(composites):
    from lamost_classify.mocks.instrument import is_held_out

    c = composites.read_components(composites.star_files())
    prepared, truth = composites.make(c, 10, 0, (0.01, 0.15), (3.0, 80.0))
    assert prepared.flux.shape == prepared.ivar.shape == (20, 2600) and np.isfinite(prepared.flux).all()
    assert (prepared.ivar >= 0).all() and (prepared.ivar > 0).mean() > 0.9
    assert truth["class"] == ["GALAXY", "STAR"] * 10 and truth["label"] == [1, 0] * 10
    assert all(0.01 <= z <= 0.15 for z in truth["z"][::2]) and set(truth["z"][1::2]) == {0.0}
    files = [name for t in truth["template"] for name in t.split("+")]
    assert files and not any(is_held_out(name) for name in files)


def test_a_held_out_set_is_one_table_that_evaluate_reads_with_its_kinds_and_redshifts(composites, tmp_path):
    from lamost_classify.model.labelled import hard_case_truth, load_labelled
    from lamost_classify.pipeline.grid import PreparedBatch

    rng = np.random.default_rng(0)
    prepared = PreparedBatch(flux=rng.random((4, 2600)).astype(np.float32), flags=np.zeros(4, np.uint32),
                             snr=np.full(4, 10.0, np.float32), coverage=np.ones(4, np.float32),
                             ivar=rng.random((4, 2600)).astype(np.float32) * 100,
                             pedestal=np.array([0.1, -0.2, 0.0, 0.3], np.float32))
    truth = {"id": list("abcd"), "class": ["GALAXY", "STAR"] * 2, "label": [1, 0] * 2,
             "subclass": ["PASSIVE", "K", "STARFORMING", "A"], "z": [0.05, 0.0, 0.1, 0.0],
             "template": list("abcd"), "family": ["real-composite"] * 4, "snr_g": [5.0, 6.0, 7.0, 8.0]}
    path = tmp_path / "test.parquet"
    composites.write_table(path, prepared, truth)
    labelled = load_labelled(path)
    assert np.array_equal(np.asarray(labelled.spectra()), prepared.flux)
    # What the redshift fit reads (evaluate scores the redshifts of a table with ivar_norm).
    assert np.array_equal(np.asarray(labelled.inverse_variances()), prepared.ivar)
    assert np.array_equal(np.asarray(labelled.pedestals()), prepared.pedestal)
    assert labelled.labels.tolist() == [1, 0, 1, 0] and labelled.snr.tolist() == [5.0, 6.0, 7.0, 8.0]
    assert hard_case_truth(path, None, labelled)["subclass"] == truth["subclass"]
