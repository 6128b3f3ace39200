"""Properties of the resampler and normaliser in pipeline/grid.py, checked against independent arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lamost_classify.pipeline import grid
from lamost_classify.pipeline.flags import Flag
from lamost_classify.pipeline.spectrum import Spectrum

# Any RuntimeWarning from grid.py is a bug: expected ones must be silenced where they arise.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

N_NATIVE = 3909
NATIVE = 10 ** (3.5682 + 1e-4 * np.arange(N_NATIVE))  # the LAMOST grid, 3700-9099 A
OUT_WIDTH = np.diff(grid.OUTPUT_EDGES)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def overlap_integral(edges: np.ndarray, values: np.ndarray, lo: float, hi: float) -> float:
    """Integral of a piecewise-constant function over [lo, hi], summed pixel by pixel (no cumulative sums)."""
    overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
    return float(np.sum(values * overlap))


def inner_output_pixels(wavelength: np.ndarray) -> tuple[int, int]:
    """First and one-past-last output pixels lying entirely inside the native coverage."""
    edges = grid.native_edges(wavelength)
    a = int(np.searchsorted(grid.OUTPUT_EDGES, edges[0], side="left"))
    b = int(np.searchsorted(grid.OUTPUT_EDGES, edges[-1], side="right")) - 1
    return a, b


def test_grid_constants():
    assert grid.WAVELENGTH.shape == (grid.N_PIXELS,) == (2600,)
    assert grid.WAVELENGTH[0] == pytest.approx(3690.0) and grid.WAVELENGTH[-1] == pytest.approx(9100.0)
    assert np.all(np.diff(grid.OUTPUT_EDGES) > 0)
    # log-linear: every output pixel spans the same step in log10(wavelength)
    assert np.allclose(np.diff(np.log10(grid.WAVELENGTH)), np.log10(9100 / 3690) / 2599)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-3, 1e6, allow_subnormal=False), start=st.integers(0, 2000), length=st.integers(1, 500))
def test_flux_is_conserved_over_whole_output_pixels(seed, scale, start, length):
    rng = np.random.default_rng(seed)
    flux = rng.uniform(0.0, scale, N_NATIVE)
    res = grid.resample(NATIVE, flux[None], np.ones((1, N_NATIVE)), np.ones((1, N_NATIVE), bool))
    a, b = inner_output_pixels(NATIVE)
    a = min(a + start, b - 1)
    b = min(a + length, b)
    assert res.valid[0, a:b].all()
    out_integral = float(np.sum(res.flux[0, a:b].astype(np.float64) * OUT_WIDTH[a:b]))
    native_integral = overlap_integral(grid.native_edges(NATIVE), flux, grid.OUTPUT_EDGES[a], grid.OUTPUT_EDGES[b])
    assert out_integral == pytest.approx(native_integral, rel=1e-5)


@SETTINGS
@given(level=st.floats(-1e6, 1e6, allow_subnormal=False), slope=st.floats(-10.0, 10.0, allow_subnormal=False), period=st.floats(200.0, 5000.0, allow_subnormal=False), seed=st.integers(0, 2**16))
def test_linear_and_smooth_input_is_reproduced(level, slope, period, seed):
    # A constant comes back exactly; a line or a slow sine to within what one native pixel can blur.
    native_width = float(np.max(np.diff(grid.native_edges(NATIVE))))
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi)
    cases = [
        (lambda w: np.full_like(w, level), 1e-6 * abs(level) + 1e-12),
        (lambda w: level + slope * (w - 6000.0), abs(slope) * native_width + 1e-6 * abs(level) + 1e-9),
        (lambda w: 1.0 + 0.5 * np.sin(2 * np.pi * w / period + phase), 0.5 * 2 * np.pi / period * native_width + 1e-6),
    ]
    a, b = inner_output_pixels(NATIVE)
    for func, tolerance in cases:
        res = grid.resample(NATIVE, func(NATIVE)[None], np.ones((1, N_NATIVE)), np.ones((1, N_NATIVE), bool))
        expected = func(grid.WAVELENGTH[a:b])
        assert np.max(np.abs(res.flux[0, a:b] - expected)) <= tolerance


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_per_row_wavelengths_match_one_row_at_a_time(seed):
    # The batched searchsorted over per-row grids must agree with resampling each row on its own.
    rng = np.random.default_rng(seed)
    b = 4
    starts = 3.5682 + rng.uniform(-0.02, 0.02, b)
    steps = 1e-4 * rng.uniform(0.8, 1.2, b)
    wavelength = 10 ** (starts[:, None] + steps[:, None] * np.arange(N_NATIVE))
    flux = rng.normal(100, 20, (b, N_NATIVE))
    ivar = rng.uniform(0, 1, (b, N_NATIVE))
    valid = rng.uniform(size=(b, N_NATIVE)) > 0.1
    batch = grid.resample(wavelength, flux, ivar, valid)
    for i in range(b):
        one = grid.resample(wavelength[i], flux[i : i + 1], ivar[i : i + 1], valid[i : i + 1])
        np.testing.assert_allclose(batch.flux[i], one.flux[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(batch.ivar[i], one.ivar[0], rtol=1e-5)
        assert np.array_equal(batch.valid[i], one.valid[0]) and np.array_equal(batch.covered[i], one.covered[0])


# Anything a broken file could hold: NaN, inf, huge, tiny, negative, zero.
nasty = st.floats(allow_nan=True, allow_infinity=True, width=32, allow_subnormal=False)


@SETTINGS
@given(
    flux=hnp.arrays(np.float32, (2, 400), elements=nasty),
    ivar=hnp.arrays(np.float32, (2, 400), elements=nasty),
    andmask=hnp.arrays(np.int32, (2, 400), elements=st.sampled_from([0, 0, 0, 1, 1 << 30])),
)
def test_prepared_output_is_always_2600_finite_values_in_0_1(flux, ivar, andmask):
    wavelength = 10 ** np.linspace(np.log10(3600), np.log10(9300), 400)
    out = grid.prepare_arrays(wavelength, flux, ivar, andmask)
    assert out.flux.shape == (2, grid.N_PIXELS) and out.flux.dtype == np.float32
    assert np.all(np.isfinite(out.flux)) and out.flux.min() >= 0.0 and out.flux.max() <= 1.0
    assert out.flags.dtype == np.uint32 and out.flags.shape == (2,)
    for i in range(2):
        has_nonfinite = not (np.isfinite(flux[i]).all() and np.isfinite(ivar[i]).all())
        assert bool(out.flags[i] & Flag.NONFINITE_REPAIRED) == has_nonfinite
        usable = np.isfinite(flux[i]) & np.isfinite(ivar[i]) & (ivar[i] > 0) & (andmask[i] == 0)
        if not usable.any():
            assert out.flags[i] & Flag.NO_FLUX and not out.flux[i].any()


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), masked_fraction=st.floats(0.0, 0.9, allow_subnormal=False), garbage=st.sampled_from(["nan", "inf", "huge", "random"]))
def test_masked_pixels_never_leak_into_the_output(seed, masked_fraction, garbage):
    rng = np.random.default_rng(seed)
    flux = rng.normal(100, 30, N_NATIVE)
    ivar = rng.uniform(0.01, 1, N_NATIVE)
    andmask = (rng.uniform(size=N_NATIVE) < masked_fraction).astype(np.int32)
    ivar[rng.uniform(size=N_NATIVE) < masked_fraction / 2] = 0.0  # ivar = 0 masks as well
    masked = (andmask != 0) | (ivar <= 0)
    other = flux.copy()
    fill = {"nan": np.nan, "inf": np.inf, "huge": 1e30, "random": None}[garbage]
    other[masked] = rng.normal(-1e4, 1e4, masked.sum()) if fill is None else fill
    a = grid.prepare_arrays(NATIVE, flux, ivar, andmask)
    b = grid.prepare_arrays(NATIVE, other, ivar, andmask)
    assert np.array_equal(a.flux, b.flux)
    assert np.array_equal(a.snr, b.snr, equal_nan=True) and np.array_equal(a.coverage, b.coverage)
    assert (a.flags & ~np.uint32(Flag.NONFINITE_REPAIRED)) == (b.flags & ~np.uint32(Flag.NONFINITE_REPAIRED))


@pytest.mark.parametrize("flux_value", [3e38, -3e38, 1e-45, 0.0])
@pytest.mark.parametrize("ivar_value", [3e38, 1e-45, 1.0])
def test_extreme_finite_values_saturate_without_warnings(flux_value, ivar_value):
    flux = np.full((1, N_NATIVE), flux_value, np.float32)
    flux[0, ::7] = 1.0  # not constant, so normalisation has a range
    out = grid.prepare_arrays(NATIVE, flux, np.full((1, N_NATIVE), ivar_value, np.float32))
    assert np.all(np.isfinite(out.flux)) and out.flux.min() >= 0 and out.flux.max() <= 1
    assert np.isfinite(out.snr[0])


def test_a_pixel_far_below_zero_is_masked_and_flagged_not_taken_as_the_minimum():
    # Three native pixels at -100x the continuum (10,000 sigma): as the min-max minimum they lifted the whole
    # spectrum to ~0.99, and a real S/N-68 F star's balanced STAR probability fell from 1.00 to 0.51.
    rng = np.random.default_rng(4)
    flux = 100.0 + rng.normal(0.0, 1.0, (1, N_NATIVE))
    ivar = np.ones((1, N_NATIVE))
    dipped, shallow = flux.copy(), flux.copy()
    dipped[0, 2000:2003] = -1e4
    shallow[0, 2000] = -5.0  # 5 sigma below zero: noise can do that, so it stays
    clean, out, kept = (grid.prepare_arrays(NATIVE, f, ivar) for f in (flux, dipped, shallow))
    assert out.flags[0] & Flag.NEGATIVE_MASKED and not clean.flags[0] & Flag.NEGATIVE_MASKED
    assert not kept.flags[0] & Flag.NEGATIVE_MASKED and kept.flux[0].min() == 0.0
    near = np.abs(grid.LOG_WAVELENGTH - np.log10(NATIVE[2001])) < 5e-4  # the output pixels the dip touched
    np.testing.assert_allclose(out.flux[0, ~near], clean.flux[0, ~near], atol=1e-6)


def test_a_spike_far_above_the_spectrum_is_masked_and_flagged_not_taken_as_the_maximum():
    # Three native pixels at 10,000x the continuum (a cosmic ray): as the min-max maximum they squashed the
    # spectrum under them, and mock galaxies and QSOs came out STAR. Lines and steep continua stay.
    rng = np.random.default_rng(5)
    x = np.arange(N_NATIVE)
    flux = 100.0 + rng.normal(0.0, 1.0, N_NATIVE) + 3000.0 * np.exp(-0.5 * ((x - 1000) / 1.1) ** 2)  # a 30x line
    ivar = np.ones((1, N_NATIVE))
    spiked, low = flux.copy(), flux.copy()
    spiked[2000:2003] = 1e6
    low[2000:2003] = 5e3  # 50x: the network has learnt spikes this high (model/augment.py), so it stays
    steep = 1.0 + 400.0 * (x / N_NATIVE) ** 8  # a cool star's red end, 400x its blue end
    clean, out, kept, cool = (grid.prepare_arrays(NATIVE, f[None], ivar) for f in (flux, spiked, low, steep))
    assert out.flags[0] & Flag.SPIKE_MASKED
    assert not any(b.flags[0] & Flag.SPIKE_MASKED for b in (clean, kept, cool))
    assert clean.flux[0].max() == 1.0 and kept.flux[0].max() == 1.0
    near = np.abs(grid.LOG_WAVELENGTH - np.log10(NATIVE[2001])) < 5e-4  # the output pixels the spike touched
    np.testing.assert_allclose(out.flux[0, ~near], clean.flux[0, ~near], atol=1e-6)
    assert out.ivar[0, near].min() < clean.ivar[0, near].min()  # masked there, not fitted


def test_the_pedestal_gives_back_what_the_normalisation_subtracted():
    # flux + pedestal is the spectrum over its span, zero at zero flux: what a template times a polynomial fits
    rng = np.random.default_rng(6)
    flux = 50.0 + 40.0 * np.sin(np.arange(N_NATIVE) / 300.0) + rng.normal(0.0, 0.5, N_NATIVE)
    ones = np.ones((1, N_NATIVE))
    out, brighter = (grid.prepare_arrays(NATIVE, k * flux[None], ones) for k in (1.0, 3.0))
    rebinned = grid.resample(NATIVE, flux[None], ones, ones.astype(bool))
    ratio = (out.flux[0] + out.pedestal[0])[rebinned.valid[0]] / rebinned.flux[0, rebinned.valid[0]]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    assert 0.1 < out.pedestal[0] < 1 and np.isclose(brighter.pedestal[0], out.pedestal[0])
    batch = grid.prepare([Spectrum(wavelength=NATIVE, flux=flux.astype(np.float32), ivar=ones[0].astype(np.float32),
                                   andmask=np.zeros(N_NATIVE, np.int32))])
    assert np.isclose(batch.pedestal[0], out.pedestal[0])


def test_a_flux_of_exactly_zero_is_a_fill_and_masked_whatever_its_ivar():
    # LAMOST files end in pixels of flux 0 with an ivar, up to ~250x their neighbours': as data they set the
    # normalisation's minimum and pulled the redshift fit (README).
    rng = np.random.default_rng(7)
    flux = 100.0 + rng.normal(0.0, 1.0, (1, N_NATIVE))
    ivar = np.ones((1, N_NATIVE))
    filled, filled_ivar = flux.copy(), ivar.copy()
    filled[0, -5:] = 0.0
    filled_ivar[0, -5:] = 60.0
    clean, out = grid.prepare_arrays(NATIVE, flux, ivar), grid.prepare_arrays(NATIVE, filled, filled_ivar)
    end = grid.LOG_WAVELENGTH > np.log10(NATIVE[-7])  # the output pixels the fill touched
    np.testing.assert_allclose(out.flux[0, ~end], clean.flux[0, ~end], atol=1e-6)
    assert out.ivar[0, end].max() <= clean.ivar[0, end].max() and out.pedestal[0] == clean.pedestal[0]


def test_normalise_maps_valid_min_and_max_to_0_and_1():
    flux = np.array([[5.0, 1.0, 3.0, 100.0], [2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    valid = np.array([[True, True, True, False], [True, True, True, True], [False] * 4])
    out, flags = grid.normalise(flux, valid)
    np.testing.assert_allclose(out[0], [1.0, 0.0, 0.5, 0.5])  # the masked last pixel: its valid neighbour's
    assert flags[0] == 0
    assert flags[1] == Flag.CONSTANT_FLUX and np.all(out[1] == grid.FILL_VALUE)
    assert flags[2] == Flag.NO_FLUX and np.all(out[2] == grid.FILL_VALUE)


def test_masked_pixels_are_the_line_between_their_valid_neighbours():
    # As 0-runs they read as absorption: QSOs with many masked pixels were called STAR (README).
    flux = np.array([[0.0, 1.0, 9.0, 9.0, 4.0, 2.0, 9.0]])
    valid = np.array([[False, True, False, False, True, True, False]])
    out, flags = grid.normalise(flux, valid)
    np.testing.assert_allclose(out[0], [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1 / 3, 1 / 3], atol=1e-6)
    assert flags[0] == 0


def test_uncovered_pixels_are_invalid_and_lower_the_coverage():
    blue = NATIVE < 5000  # 3700-5000 A: a third of the log grid
    n = int(blue.sum())
    out = grid.prepare_arrays(NATIVE[blue], np.arange(n, dtype=float)[None] + 1, np.ones((1, n)))
    expected = np.log10(5000 / 3690) / np.log10(9100 / 3690)
    assert out.coverage[0] == pytest.approx(expected, abs=0.005)
    assert out.flags[0] & Flag.LOW_COVERAGE
    assert np.all(out.flux[0, grid.WAVELENGTH > 5010] == 1.0)  # the last covered pixel's value, not a drop to 0
    assert np.all(out.ivar[0, grid.WAVELENGTH > 5010] == 0)


def test_an_arm_mostly_without_data_is_flagged():
    # The network learnt from both arms; a real star with its blue arm blanked came out GALAXY or QSO
    # under the balanced prior (README). A few masked pixels, or a third of an arm, are no such thing.
    rng = np.random.default_rng(7)
    flux = 100.0 + rng.normal(0.0, 1.0, (5, N_NATIVE))
    ivar = np.ones((5, N_NATIVE))
    ivar[1, NATIVE < 5700] = 0.0  # the blue arm gone
    ivar[2, (NATIVE > 5900) & (np.arange(N_NATIVE) % 10 < 6)] = 0.0  # 60% of the red arm masked
    ivar[3, (NATIVE > 5900) & (np.arange(N_NATIVE) % 10 < 3)] = 0.0  # 30% of it
    flux[4, NATIVE < 5700] = 0.0  # the blue arm filled with zeros (with its ivar), as some files do
    out = grid.prepare_arrays(NATIVE, flux, ivar)
    assert [bool(f & Flag.ARM_MISSING) for f in out.flags] == [False, True, True, False, True]


def spectrum(wavelength, flux, flags=0, source="x"):
    n = len(flux)
    return Spectrum(wavelength=np.asarray(wavelength, float), flux=np.asarray(flux, np.float32),
                    ivar=np.ones(n, np.float32), andmask=np.zeros(n, np.int32), source=source, flags=flags)


def test_prepare_mixes_grids_unreadable_and_broken_records_without_raising():
    rng = np.random.default_rng(0)
    other = 10 ** (3.57 + 1.1e-4 * np.arange(3000))
    spectra = [
        spectrum(NATIVE, rng.normal(100, 5, N_NATIVE)),
        spectrum(other, rng.normal(50, 5, 3000)),
        spectrum([], [], flags=int(Flag.UNREADABLE)),
        spectrum(NATIVE, rng.normal(100, 5, N_NATIVE)),
        spectrum(NATIVE[:10], rng.normal(100, 5, 9)),  # inconsistent arrays: a reader bug, still no crash
    ]
    out = grid.prepare(spectra)
    assert out.flux.shape == (5, grid.N_PIXELS)
    assert [bool(f & Flag.UNREADABLE) for f in out.flags] == [False, False, True, False, True]
    assert out.coverage[0] > 0.99 and out.coverage[1] > 0.8 and out.coverage[2] == 0
    # the two spectra on the native grid went through one block and match doing them alone
    alone = grid.prepare([spectra[3]])
    np.testing.assert_array_equal(out.flux[3], alone.flux[0])
