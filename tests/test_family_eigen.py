"""Mock family "eigen" (mocks/family_eigen.py) draws what it claims: classes, redshifts, lines at the right
observed wavelengths, the hard-case subclasses, S/N, instrument randomisation, and chunk-independent output."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import TEMPLATES, requires_templates
from lamost_classify.mocks import family_eigen
from lamost_classify.mocks.instrument import WAVELENGTH
from lamost_classify.mocks.simulate import MockChunk

pytestmark = [requires_templates, pytest.mark.shared]


@pytest.fixture(scope="module")
def bright() -> MockChunk:
    """Balanced, bright mocks: features are visible spectrum by spectrum."""
    return MockChunk.concat(list(family_eigen.simulate(768, 11, snr_distribution="loguniform", snr_range=(60.0, 100.0),
                                                       chunk_size=300, templates_dir=TEMPLATES)))


def _band_mean(chunk: MockChunk, rows: np.ndarray, centers: np.ndarray, half_width: float | np.ndarray) -> np.ndarray:
    """Median unmasked flux within +- half_width A of a per-row observed wavelength."""
    out = np.full(len(rows), np.nan)
    widths = np.broadcast_to(half_width, len(rows))
    for k, (r, c, w) in enumerate(zip(rows, centers, widths)):
        sel = (np.abs(WAVELENGTH - c) < w) & (chunk.ivar[r] > 0)
        if sel.sum() >= 2:
            out[k] = np.median(chunk.flux[r, sel])
    return out


def _line_contrast(chunk: MockChunk, rows: np.ndarray, centers: np.ndarray, half_width: float = 4.0) -> np.ndarray:
    """Flux at the line over the median of sidebands 25-60 A away (> 1: emission, < 1: absorption)."""
    inner = _band_mean(chunk, rows, centers, half_width)
    side = np.full(len(rows), np.nan)
    for k, (r, c) in enumerate(zip(rows, centers)):
        d = np.abs(WAVELENGTH - c)
        sel = (d > 25) & (d < 60) & (chunk.ivar[r] > 0)
        if sel.sum() >= 5:
            side[k] = np.median(chunk.flux[r, sel])
    return inner / side


def test_interface_columns_and_types(bright: MockChunk) -> None:
    n = len(bright)
    assert bright.flux.shape == bright.ivar.shape == bright.andmask.shape == (n, WAVELENGTH.size)
    assert bright.flux.dtype == np.float32 and bright.ivar.dtype == np.float32 and bright.andmask.dtype == np.int32
    t = bright.truth
    assert np.array_equal(t["id"], np.arange(n)) and t["id"].dtype == np.int64
    assert t["z"].dtype == np.float64 and t["snr_g"].dtype == np.float32 and t["resolution"].dtype == np.float32
    assert set(t["family"]) == {"eigen"} and set(t["class"]) == {"STAR", "GALAXY", "QSO"}
    assert np.isfinite(bright.flux).all() and np.isfinite(bright.ivar).all()
    masked = bright.andmask != 0
    assert (bright.ivar[masked] == 0).all() and masked.any()
    assert (bright.andmask[bright.ivar == 0] != 0).all()
    # beyond the data (as in real files: LAMOST covers ~3700-9100 A) some pixels are masked at the red end
    assert (bright.ivar[:, -1] == 0).mean() > 0.05


def test_class_counts_follow_class_mix() -> None:
    mix = (0.6, 0.3, 0.1)
    chunk = MockChunk.concat(list(family_eigen.simulate(512, 5, class_mix=mix, templates_dir=TEMPLATES)))
    counts = Counter(chunk.truth["class"])
    for cls, p in zip(("STAR", "GALAXY", "QSO"), mix):
        expected, sd = 512 * p, np.sqrt(512 * p * (1 - p))
        assert abs(counts[cls] - expected) < 4 * sd, (cls, counts)


def test_redshift_ranges(bright: MockChunk) -> None:
    t = bright.truth
    gal, qso, star = (t["class"] == c for c in ("GALAXY", "QSO", "STAR"))
    assert t["z"][gal].min() >= 0 and t["z"][gal].max() <= 0.5 and np.median(t["z"][gal]) < 0.3
    assert t["z"][qso].min() >= 0.05 and t["z"][qso].max() <= 4.5 and (t["z"][qso] < 0.3).any()
    assert (np.abs(t["z"][star]) * family_eigen.C_KMS < 500).all()


def test_subclasses_include_the_hard_cases(bright: MockChunk) -> None:
    t = bright.truth
    sub = Counter(zip(t["class"], t["subclass"]))
    for cls, name in (("GALAXY", "PASSIVE"), ("GALAXY", "STARFORMING"), ("QSO", "BROADLINE"), ("QSO", "BAL"),
                      ("STAR", "Be"), ("STAR", "Me"), ("STAR", "CV"), ("STAR", "WD"), ("STAR", "C")):
        assert sub[(cls, name)] > 0, (cls, name, sub)
    assert sub[("GALAXY", "SEYFERT")] + sub[("GALAXY", "LINER")] > 0
    assert any(s.startswith("K") for c, s in sub if c == "STAR")
    # passive galaxies at low z: the K-star look-alikes
    assert ((t["subclass"] == "PASSIVE") & (t["z"] < 0.1)).sum() > 5


def test_halpha_emission_at_the_observed_wavelength(bright: MockChunk) -> None:
    t = bright.truth
    rows = np.flatnonzero((t["subclass"] == "STARFORMING") & (t["z"] < 0.35))
    observed = family_eigen.HALPHA * (1 + t["z"][rows])
    at_line = _line_contrast(bright, rows, observed)
    off_line = _line_contrast(bright, rows, observed * (1 + 0.01))  # 3,000 km/s away: no line there
    assert np.nanmedian(at_line) > 1.2 and np.nanmedian(off_line) < 1.1
    assert np.nanmean(at_line > off_line) > 0.85


def test_galaxies_carry_a_velocity_dispersion_that_broadens_their_lines(bright: MockChunk) -> None:
    t = bright.truth
    gal = t["class"] == "GALAXY"
    sigma = t["velocity_dispersion"]
    assert np.isnan(sigma[~gal]).all() and sigma[gal].min() >= 50 and sigma[gal].max() <= 350
    # one galaxy at a small and a large dispersion: the large one's absorption lines are shallower
    row = np.flatnonzero(gal)[0]
    clean = bright.flux[row] * (bright.ivar[row] > 0)
    structure = [np.abs(np.diff(family_eigen._with_dispersion(clean, s))).sum() for s in (60.0, 200.0, 340.0)]
    assert structure[0] > structure[1] > structure[2]


def test_passive_galaxies_show_the_4000_break_and_ca_k_redshifted(bright: MockChunk) -> None:
    t = bright.truth
    rows = np.flatnonzero((t["subclass"] == "PASSIVE") & (t["z"] > 0.0) & (t["z"] < 0.4))
    z = t["z"][rows]
    red = _band_mean(bright, rows, 4100 * (1 + z), 50 * (1 + z))
    blue = _band_mean(bright, rows, 3900 * (1 + z), 50 * (1 + z))
    assert np.nanmedian(red / blue) > 1.3  # D4000 of an old population
    ca_k = _line_contrast(bright, rows, family_eigen.CAII_K * (1 + z), 3.0)
    assert np.nanmedian(ca_k) < 0.9


def test_qso_broad_line_at_the_observed_wavelength(bright: MockChunk) -> None:
    t = bright.truth
    rows = np.flatnonzero((t["class"] == "QSO") & (t["subclass"] == "BROADLINE") & (t["z"] > 0.4) & (t["z"] < 2.1))
    observed = family_eigen.MGII * (1 + t["z"][rows])
    assert np.nanmedian(_line_contrast(bright, rows, observed, 15.0)) > 1.15
    hiz = np.flatnonzero((t["class"] == "QSO") & (t["z"] > 2.6))
    # the Lyman-alpha forest: flux blueward of Lyman-alpha is absorbed against that redward of it
    blue = _band_mean(bright, hiz, 1120 * (1 + t["z"][hiz]), 30 * (1 + t["z"][hiz]))
    red = _band_mean(bright, hiz, 1300 * (1 + t["z"][hiz]), 30 * (1 + t["z"][hiz]))
    assert np.nanmedian(blue / red) < 0.9


def test_be_stars_emit_halpha_at_their_radial_velocity(bright: MockChunk) -> None:
    t = bright.truth
    rows = np.flatnonzero(t["subclass"] == "Be")
    contrast = _line_contrast(bright, rows, family_eigen.HALPHA * (1 + t["z"][rows]))
    assert len(rows) > 0 and np.nanmedian(contrast) > 1.05


def test_snr_g_near_the_requested_value(bright: MockChunk) -> None:
    ratio = bright.truth["snr_g"] / bright.truth["snr_requested"]
    assert 0.9 < np.median(ratio) < 1.1
    assert (bright.truth["snr_g"] > 40).mean() > 0.9


def test_instrument_is_randomised(bright: MockChunk) -> None:
    t = bright.truth
    resolution = t["resolution"]
    assert resolution.min() >= 1300 and resolution.max() <= 2500 and resolution.std() > 50
    assert (np.abs(t["arm_mismatch"]) > 0.15).mean() > 0.05  # big arm mismatch in some
    assert (np.abs(t["arm_mismatch"]) < 0.05).mean() > 0.5
    assert ((t["arm_join"] >= 5700) & (t["arm_join"] <= 5900)).all()


def test_same_mocks_however_chunked() -> None:
    one = MockChunk.concat(list(family_eigen.simulate(300, 3, start=200, chunk_size=1000, templates_dir=TEMPLATES)))
    many = MockChunk.concat(list(family_eigen.simulate(300, 3, start=200, chunk_size=77, templates_dir=TEMPLATES)))
    tail = MockChunk.concat(list(family_eigen.simulate(50, 3, start=450, templates_dir=TEMPLATES)))
    assert np.array_equal(one.flux, many.flux) and np.array_equal(one.ivar, many.ivar)
    assert np.array_equal(one.truth["subclass"], many.truth["subclass"])
    assert np.array_equal(one.flux[250:], tail.flux) and np.array_equal(tail.truth["id"], np.arange(450, 500))
    other_seed = next(family_eigen.simulate(50, 4, start=450, templates_dir=TEMPLATES))
    assert not np.array_equal(other_seed.flux, tail.flux)


def test_missing_templates_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="spEigenGal"):
        next(family_eigen.simulate(1, 0, templates_dir=tmp_path))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="snr_distribution"):
        next(family_eigen.simulate(1, 0, snr_distribution="flat", templates_dir=TEMPLATES))
    with pytest.raises(ValueError, match="class_mix"):
        next(family_eigen.simulate(1, 0, class_mix=(1.0, -1.0, 0.0), templates_dir=TEMPLATES))


def test_shares_no_astrophysics_code_with_other_families():
    """Of the rest of mocks/ only the MockChunk container is imported; the grid comes from the contract."""
    files = [Path(family_eigen.__file__), *(Path(family_eigen.__file__).parent / "eigen").glob("*.py")]
    for path in files:
        inside = path.parent.name == "eigen"
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level == 0:
                assert not (node.module or "").startswith(("lamost_classify.mocks", "mocks")), \
                    f"{path.name} imports {node.module}"
                continue
            module = (node.module or "").split(".")
            if (inside and node.level == 1) or (not inside and module[0] == "eigen"):
                continue  # the family's own modules
            names = {(module[-1], alias.name) for alias in node.names}
            assert names <= {("simulate", "MockChunk")}, f"{path.name} imports {sorted(names)}"
