"""Mock family "physical": it draws what it claims (classes, redshifts, subclasses, features at the right
observed wavelengths, S/N, instrument randomisation), deterministically, without any files."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from mocks import family_physical as fp
from mocks.instrument import WAVELENGTH
from mocks.physical import common, detector, galaxies, qsos, stars

C_KMS = 299_792.458
BALANCED = (1 / 3, 1 / 3, 1 / 3)


@pytest.fixture(scope="module")
def balanced() -> "fp.MockChunk":
    return next(fp.simulate(768, seed=11, chunk_size=768, snr_distribution="loguniform", snr_range=(3.0, 80.0)))


def test_chunk_shapes_types_and_truth(balanced):
    c = balanced
    assert c.flux.shape == c.ivar.shape == c.andmask.shape == (768, WAVELENGTH.size)
    assert c.flux.dtype == np.float32 and c.ivar.dtype == np.float32 and c.andmask.dtype == np.int32
    assert np.isfinite(c.flux).all() and np.isfinite(c.ivar).all() and (c.ivar >= 0).all()
    t = c.truth
    assert t["id"].dtype == np.int64 and np.array_equal(t["id"], np.arange(768))
    assert t["z"].dtype == np.float64
    for key in ("snr_g", "snr_r", "resolution"):
        assert t[key].dtype == np.float32
    assert set(t["family"]) == {"physical"}
    assert set(t["class"]) == {"STAR", "GALAXY", "QSO"}
    # masked pixels are exactly those with ivar 0, and they carry an andmask bit
    assert np.array_equal(c.ivar == 0, c.andmask != 0)


def test_class_counts_follow_the_mix():
    c = next(fp.simulate(1024, seed=5, class_mix=(0.6, 0.3, 0.1), chunk_size=1024))
    counts = np.array([(c.truth["class"] == k).sum() for k in ("STAR", "GALAXY", "QSO")])
    expected = 1024 * np.array([0.6, 0.3, 0.1])
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected)), counts
    only_stars = next(fp.simulate(300, seed=5, class_mix=(1, 0, 0), chunk_size=300))
    assert set(only_stars.truth["class"]) == {"STAR"}


def test_redshift_ranges(balanced):
    t = balanced.truth
    z, cls = t["z"], t["class"]
    assert np.all(np.abs(z[cls == "STAR"]) * C_KMS < 500.0)
    assert np.all((z[cls == "GALAXY"] > 0) & (z[cls == "GALAXY"] <= 0.5))
    assert np.median(z[cls == "GALAXY"]) < 0.3
    zq = z[cls == "QSO"]
    assert np.all((zq >= 0.05) & (zq <= 4.5)) and (zq < 0.3).any() and (zq > 2.5).any()


def test_subclasses_and_hard_cases_present():
    rng = np.random.default_rng(1)
    _, st = stars.draw_and_render(rng, 1500)
    sub = st["subclass"]
    letters = np.array([s[0] for s in sub])
    assert np.isin(letters, ["F", "G", "K"]).mean() > 0.55  # LAMOST is mostly FGK
    for special in ("WD", "C", "Be", "CV"):
        assert (sub == special).sum() >= 3, special
    assert any(s.startswith("M") and s.endswith("e") for s in sub)  # M dwarfs with H-alpha
    assert {"physical-star:DA", "physical-star:DC"} <= set(st["template"])
    _, gal = galaxies.draw_and_render(rng, 300)
    assert set(gal["subclass"]) == set(galaxies.SUBCLASS_WEIGHTS)
    assert ((gal["subclass"] == "PASSIVE") & (gal["z"] < 0.1)).sum() >= 20  # red galaxies that look like K stars
    _, q = qsos.draw_and_render(rng, 400)
    bal_share = (q["subclass"][q["z"] > 1.5] == "BAL").mean()
    assert 0.05 < bal_share < 0.25
    assert set(q["subclass"][q["z"] <= 1.5]) == {"BROADLINE"}
    assert ((q["z"] < 1.0)).sum() > 50


def _at(flux: np.ndarray, wave: float) -> float:
    return float(np.interp(wave, common.WORK_WAVE, flux))


def _window(flux: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return flux[(common.WORK_WAVE > lo) & (common.WORK_WAVE < hi)]


def _kept(changed: np.ndarray, before: np.ndarray, z: float, lo: float, hi: float) -> float:
    """Mean flux ratio ``changed`` / ``before`` over rest lo-hi A of a star at redshift ``z``."""
    one = 1 + z
    return float(np.mean(_window(changed, lo * one, hi * one) / _window(before, lo * one, hi * one)))


def _peak_offset(flux: np.ndarray, wave: float, half: float = 15.0) -> float:
    """Observed wavelength of the maximum within +-half A of ``wave``, minus ``wave``."""
    sel = np.abs(common.WORK_WAVE - wave) < half
    return float(common.WORK_WAVE[sel][np.argmax(flux[sel])] - wave)


def test_galaxy_features_at_the_observed_wavelengths():
    flux, t = galaxies.draw_and_render(np.random.default_rng(3), 120)
    z = t["z"]
    passive = np.flatnonzero(t["subclass"] == "PASSIVE")
    assert passive.size >= 10
    for i in passive:
        one = 1 + z[i]
        d4000 = _window(flux[i], 4000 * one, 4100 * one).mean() / _window(flux[i], 3850 * one, 3950 * one).mean()
        assert d4000 > 1.3, (i, z[i], d4000)
        # Ca II K and Mg b are absorption dips at their redshifted place, not at rest
        k = 3934.78 * one
        assert _at(flux[i], k) < 0.9 * np.median(_window(flux[i], k - 40, k + 40))
    starforming = np.flatnonzero(t["subclass"] == "STARFORMING")
    assert starforming.size >= 10
    for i in starforming:
        ha = 6564.61 * (1 + z[i])
        if ha > 9000:
            continue
        assert abs(_peak_offset(flux[i], ha, 6.0)) < 1.5
        assert _at(flux[i], ha) > 1.2 * np.median(_window(flux[i], ha - 120, ha + 120))
        # the same spectrum read at a wrong redshift shows no line there
        wrong = 6564.61 * (1 + z[i] + 0.02)
        assert _at(flux[i], wrong) < _at(flux[i], ha)


def test_qso_broad_lines_and_forest_at_the_observed_wavelengths():
    flux, t = qsos.draw_and_render(np.random.default_rng(4), 150)
    z = t["z"]
    checked = 0
    # the strongest broad lines stand above the continuum 5-7% to either side (Lyman alpha: red side only)
    for rest, ratio, sides in ((6564.61, 1.1, (-1, 1)), (1549.06, 1.03, (-1, 1)), (1215.67, 1.2, (1,))):
        for i in range(len(z)):
            obs = rest * (1 + z[i])
            if not 4000 < obs < 8500 or (rest != 6564.61 and t["subclass"][i] == "BAL"):
                continue
            around = np.mean([np.median(_window(flux[i], obs * (1 + 0.05 * s), obs * (1 + 0.07 * s))) if s > 0
                              else np.median(_window(flux[i], obs * (1 - 0.07), obs * (1 - 0.05))) for s in sides])
            assert _at(flux[i], obs) > ratio * around, (i, rest, z[i])
            checked += 1
    assert checked > 60
    high = np.flatnonzero(z > 3.0)
    assert high.size
    for i in high:  # the Lyman-alpha forest: less flux blueward of Lyman alpha than redward, and a ragged one
        lya = 1215.67 * (1 + z[i])
        blue, red = _window(flux[i], lya - 300, lya - 60), _window(flux[i], lya + 150, lya + 300)
        assert blue.mean() < red.mean()
        assert np.std(np.diff(blue)) > 5 * np.std(np.diff(red))


def test_star_lines_at_their_radial_velocity():
    flux, t = stars.draw_and_render(np.random.default_rng(6), 400)
    a_stars = np.flatnonzero(np.char.startswith(t["subclass"].astype(str), "A"))
    assert a_stars.size >= 10
    for i in a_stars:
        hb = 4862.68 * (1 + t["z"][i])
        sel = np.abs(common.WORK_WAVE - hb) < 15
        assert abs(common.WORK_WAVE[sel][np.argmin(flux[i][sel])] - hb) < 1.0
        assert _at(flux[i], hb) < 0.75 * np.median(_window(flux[i], hb + 60, hb + 120))
    be = np.flatnonzero(t["subclass"] == "Be")
    for i in be:  # Be stars: H-alpha in emission at z ~ 0, like a star-forming galaxy
        ha = 6564.61 * (1 + t["z"][i])
        assert _window(flux[i], ha - 8, ha + 8).max() > 1.2 * np.median(_window(flux[i], ha + 50, ha + 150))


def test_k_and_m_stars_have_the_mgh_and_mg_b_trough_deeper_in_dwarfs():
    # The trough below the 5211 A MgH head that real LAMOST K and M stars show (README, the physical family);
    # F stars have none of it (G stars' shallower one is Mg b's blend, the next test).
    flux, t = stars.draw_and_render(np.random.default_rng(7), 600)
    sub = t["subclass"].astype(str)

    def trough(i: int) -> float:  # the 5080-5200 A flux against the 5250-5300 A side, at the star's z
        one = 1 + t["z"][i]
        return np.median(_window(flux[i], 5080 * one, 5200 * one)) / np.median(_window(flux[i], 5250 * one, 5300 * one))

    cool = [trough(i) for i in np.flatnonzero(np.isin(sub, ["K5", "K6", "K7", "M0", "M1"]))]
    warm = [trough(i) for i in np.flatnonzero(np.char.startswith(sub, "F"))]
    assert len(cool) >= 5 and len(warm) >= 10
    assert np.median(cool) < 0.8 < 0.9 < np.median(warm)
    mgh = stars.MGH_DWARF, stars.MGH_GIANT
    assert mgh[0] > mgh[1] > 0  # gravity-sensitive: dwarfs deeper


def test_g_and_k_stars_have_the_cn_violet_bands_and_f_stars_none(monkeypatch):
    # The bands (heads at 4216 and 3883 A, degraded to the violet) that hold real G and K stars' blue below
    # their continuum (docs/families.md): the same stars drawn with and without them differ only blueward
    # of each head, and only below CN_VIOLET_TEFF.
    with_bands, t = stars.draw_and_render(np.random.default_rng(8), 400)
    monkeypatch.setattr(stars, "CN_VIOLET_DEPTHS", np.zeros_like(stars.CN_VIOLET_DEPTHS))
    without, t2 = stars.draw_and_render(np.random.default_rng(8), 400)
    assert np.array_equal(t["subclass"], t2["subclass"])
    sub = t["subclass"].astype(str)

    def kept(i: int, lo: float, hi: float) -> float:  # flux kept in rest lo-hi A
        return _kept(with_bands[i], without[i], t["z"][i], lo, hi)

    k = np.flatnonzero(np.isin(sub, ["K0", "K1", "K2", "K3", "K4"]))
    f = np.flatnonzero(np.isin(sub, ["F0", "F1", "F2", "F3"]))
    assert len(k) >= 10 and len(f) >= 10
    assert np.median([kept(i, 4150, 4212) for i in k]) < 0.75
    assert np.median([kept(i, 3840, 3880) for i in k]) < 0.7
    assert min(kept(i, 4225, 4300) for i in k) > 0.99  # redward of the head: untouched
    assert min(kept(i, 3800, 4300) for i in f) == 1.0


def test_g_stars_have_the_mg_b_blend_and_deeper_ca_ii_k_and_f_stars_neither(monkeypatch):
    # What real LAMOST G stars show against the clipped continuum (docs/families.md, "Its G stars under
    # the pedestal's lens"): a 4950-5210 A trough before MgH, and Ca II K deeper than in F stars. The same
    # stars drawn with and without the two laws differ only blueward of 5211 A and in Ca II H and K.
    laws, t = stars.draw_and_render(np.random.default_rng(10), 500)
    monkeypatch.setattr(stars, "MG_B_BLEND_DEPTH", 0.0)
    monkeypatch.setattr(stars, "CA_HK_GROWTH", 0.0)
    without, t2 = stars.draw_and_render(np.random.default_rng(10), 500)
    assert np.array_equal(t["subclass"], t2["subclass"])
    sub = t["subclass"].astype(str)

    def kept(i: int, lo: float, hi: float) -> float:
        return _kept(laws[i], without[i], t["z"][i], lo, hi)

    g = np.flatnonzero(np.isin(sub, ["G6", "G7", "G8", "G9", "K0", "K1"]))
    f = np.flatnonzero(np.isin(sub, ["F0", "F1", "F2", "F3", "F4", "F5"]))
    assert len(g) >= 10 and len(f) >= 10
    assert np.median([kept(i, 5100, 5205) for i in g]) < 0.95  # the blend
    assert np.median([kept(i, 3928, 3940) for i in g]) < 0.97  # Ca II K deeper
    assert min(kept(i, 5220, 5800) for i in g) > 0.999  # redward of the head: untouched
    assert all(kept(i, 3700, 8800) == 1.0 for i in f)


def test_na_d_grows_and_ca_ii_h_and_k_fade_in_cool_stars(monkeypatch):
    # As the real LAMOST stars' bands show them (docs/families.md, "Na D and Ca II H and K"): the same stars
    # drawn with and without the two laws differ only in those lines, Na D deeper from late G to M and
    # shallower in hotter stars, Ca II H and K shallower below CA_HK_FADE_TEFF and untouched above it.
    laws, t = stars.draw_and_render(np.random.default_rng(9), 500)
    monkeypatch.setattr(stars, "NA_D_SCALE", 1.0)
    monkeypatch.setattr(stars, "NA_D_GROWTH", 0.0)
    monkeypatch.setattr(stars, "CA_HK_FLOOR", 1.0)
    without, t2 = stars.draw_and_render(np.random.default_rng(9), 500)
    assert np.array_equal(t["subclass"], t2["subclass"])
    sub = t["subclass"].astype(str)

    def kept(i: int, lo: float, hi: float) -> float:  # flux kept in rest lo-hi A, with the laws against without
        return _kept(laws[i], without[i], t["z"][i], lo, hi)

    cool = np.flatnonzero(np.isin(sub, ["K5", "K6", "K7", "M0", "M1"]))
    hot = np.flatnonzero(np.isin(sub, ["F5", "F6", "F7", "F8", "F9"]))
    assert len(cool) >= 10 and len(hot) >= 10
    assert max(kept(i, 5886, 5900) for i in cool) < 0.99  # Na D deeper
    assert min(kept(i, 5886, 5900) for i in hot) > 1.0  # and shallower in F stars
    assert min(kept(i, 3928, 3940) for i in cool) > 1.05  # Ca II K filled in
    assert all(kept(i, 3928, 3940) == 1.0 for i in hot)
    assert all(kept(i, 4400, 5800) == 1.0 for i in np.concatenate([cool, hot]))  # nothing else moves


def test_determinism_across_chunking_and_start():
    whole = next(fp.simulate(400, seed=9, chunk_size=400))
    parts = list(fp.simulate(300, seed=9, start=100, chunk_size=70))
    assert [len(p) for p in parts] == [70, 70, 70, 70, 20]
    joined = fp.MockChunk.concat(parts)
    assert np.array_equal(joined.flux, whole.flux[100:])
    assert np.array_equal(joined.ivar, whole.ivar[100:])
    assert np.array_equal(joined.truth["id"], whole.truth["id"][100:])
    assert np.array_equal(joined.truth["subclass"], whole.truth["subclass"][100:])
    other = next(fp.simulate(100, seed=10, chunk_size=100))
    assert not np.array_equal(other.flux, whole.flux[:100])


def test_snr_g_measured_near_the_requested_value(balanced):
    t = balanced.truth
    ratio = t["snr_g"] / t["snr_requested"]
    assert abs(np.median(ratio) - 1) < 0.03
    assert np.mean(np.abs(ratio - 1) < 0.1) > 0.9
    assert t["snr_g"].min() > 2.0 and t["snr_g"].max() < 100.0
    real = next(fp.simulate(512, seed=2, chunk_size=512)).truth["snr_requested"]  # 'real': mostly bright
    assert (real >= 2.0).all() and (real <= 100.0).all() and np.median(real) > 15


def test_instrument_resolution_and_arm_mismatch_vary(balanced):
    t = balanced.truth
    assert t["resolution"].min() >= 1300 and t["resolution"].max() <= 2500 and t["resolution"].std() > 100
    assert 0.05 < np.mean(np.abs(t["arm_mismatch"]) > 0.15) < 0.3


def test_arm_mismatch_and_lsf_are_seen_in_the_output():
    rng = np.random.default_rng(0)
    flat = np.ones((200, common.N_WORK))
    obs = detector.observe(rng, flat, np.full(200, 200.0))
    blue = np.median(obs["flux"][:, (WAVELENGTH > 5550) & (WAVELENGTH < 5650)], axis=1)
    red = np.median(obs["flux"][:, (WAVELENGTH > 5950) & (WAVELENGTH < 6050)], axis=1)
    assert np.corrcoef(np.log(red / blue), obs["arm_mismatch"])[0, 1] > 0.9
    # an unresolved line comes out with the width of the LSF: FWHM = c / R
    line = np.zeros((200, common.N_WORK))
    centre = np.argmin(np.abs(common.WORK_WAVE - 5500.0))
    line[:, centre] = 1.0
    r5500, res = detector.resolution_curve(np.random.default_rng(1), 200)
    out = detector.convolve_lsf(line, res)
    sub = common.KMS_PER_SUBPIXEL
    width = np.sqrt((out * (np.arange(common.N_WORK) - centre) ** 2).sum(axis=1)) * sub * 2.3548
    assert np.allclose(width, C_KMS / res[:, centre], rtol=0.05)
    assert np.corrcoef(width, 1 / r5500)[0, 1] > 0.95


def test_noise_matches_ivar():
    rng = np.random.default_rng(2)
    obs = detector.observe(rng, np.ones((100, common.N_WORK)), np.full(100, 30.0))
    g = (WAVELENGTH > 4200) & (WAVELENGTH < 5000)
    f, iv = obs["flux"][:, g].astype(np.float64), obs["ivar"][:, g].astype(np.float64)
    both = (iv[:, 1:] > 0) & (iv[:, :-1] > 0)
    # the continuum cancels in the difference of neighbours
    chi = (np.diff(f, axis=1) * np.sqrt(1 / (1 / np.where(both, iv[:, 1:], 1) + 1 / np.where(both, iv[:, :-1], 1))))[both]
    mad_sigma = 1.4826 * np.median(np.abs(chi - np.median(chi)))
    assert 0.9 < mad_sigma < 1.1  # noise drawn after the LSF: independent pixels, as ivar says


def test_bad_arguments_are_one_clear_error():
    with pytest.raises(ValueError, match="snr_distribution"):
        next(fp.simulate(10, 1, snr_distribution="gaussian"))
    with pytest.raises(ValueError, match="class_mix"):
        next(fp.simulate(10, 1, class_mix=(1.0, -0.5, 0.5)))


def test_shares_no_astrophysics_code_with_other_families():
    """Only the MockChunk container and the WAVELENGTH grid may come from the rest of mocks/."""
    files = [Path(fp.__file__), *Path(common.__file__).parent.glob("*.py")]
    allowed = {("simulate", "MockChunk"), ("simulate", "rechunk"), ("instrument", "WAVELENGTH")}  # containers and the grid, no physics
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                module = (node.module or "").split(".")[-1]
                if module in ("physical", "") or path.parent.name == "physical" and node.level == 1:
                    continue
                for alias in node.names:
                    assert (module, alias.name) in allowed, f"{path.name} imports {alias.name} from {module}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("mocks"):
                assert node.module in ("mocks.physical",), f"{path.name} imports {node.module}"
