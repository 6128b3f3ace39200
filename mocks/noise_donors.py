"""The noise donor library: real LAMOST noise that :func:`.instrument.add_noise` puts on mocks.

Built from real files when ../shared/data/lamost exists (:func:`build_noise_library`; held-out files,
:func:`.instrument.is_held_out`, are never donors), else read from the compact statistical summary shipped
in ``mocks/data/noise_summary.npz`` (:func:`load_noise_summary`), so mocks on a fresh machine still get
real-looking noise. :func:`noise_library` picks between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lamost_classify.contract import N_NATIVE
from lamost_classify.contract import NATIVE_WAVELENGTH as WAVELENGTH

from .instrument import (DONOR_SUBDIRS, NOISE_KERNEL_T, _read_real, default_lamost_dir, is_held_out,
                         real_files)


@dataclass
class NoiseLibrary:
    """Real noise, per donor spectrum (K donors), on the native grid.

    ``sigma_shape``: sigma(lambda) / median sigma over valid pixels, 0 where the donor had no data;
    ``continuum``: the donor's smooth flux continuum / its median (to undo the part of the noise that
    followed the donor's own spectrum); ``bad``: donor pixels with ivar == 0 or out of its range;
    ``andmask``: donor pixels with andmask != 0; ``snr``: SNRU..SNRZ from its header (nan if absent);
    Measured over all donors, per native pixel (see :func:`measure_excess` and :func:`measure_telluric`):
    ``noise_excess``: smooth ratio of the real pixel-to-pixel scatter to what the ivar says;
    ``sky_residual``: the extra scatter on top of that at the night-sky lines (in units of sigma);
    ``telluric``: the mean transmission of the uncorrected telluric bands (O2 B and A, H2O near 7250 A).
    """

    sigma_shape: np.ndarray  # (K, N) float32
    continuum: np.ndarray  # (K, N) float32
    bad: np.ndarray  # (K, N) bool
    andmask: np.ndarray  # (K, N) bool
    snr: np.ndarray  # (K, 5) float32
    noise_excess: np.ndarray  # (N,) float32
    sky_residual: np.ndarray  # (N,) float32
    telluric: np.ndarray  # (N,) float32
    names: list[str]  # donor file names (no directories)
    snr_quantiles: np.ndarray  # (101, 2) quantiles of (snr_g, snr_r) over the real files read
    source: str

    def __len__(self) -> int:
        return len(self.sigma_shape)


def _binned_median(x: np.ndarray, width: int) -> np.ndarray:
    """A smooth running-median-like curve per row: nan-medians of ``width``-pixel bins, interpolated
    (a true running median over every donor and pixel would cost far more, for no visible gain)."""
    n = x.shape[1]
    nb = int(np.ceil(n / width))
    padded = np.pad(x, ((0, 0), (0, nb * width - n)), constant_values=np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(padded.reshape(x.shape[0], nb, width), axis=2)
    centres = np.minimum(np.arange(nb) * width + (width - 1) / 2, n - 1)
    out = np.empty_like(x, dtype=np.float64)
    for i, m in enumerate(med):
        ok = np.isfinite(m)
        out[i] = np.interp(np.arange(n), centres[ok], m[ok]) if ok.any() else np.nan
    return out


def build_noise_library(root: str | Path, subdirs: tuple[str, ...] = DONOR_SUBDIRS,
                        include_held_out: bool = False) -> NoiseLibrary:
    """Donors from the real files under ``root`` (held-out files skipped unless asked), in sorted order."""
    files = [p for p in real_files(root, subdirs) if include_held_out or not is_held_out(p)]
    rows, names = [], []
    for p in files:
        r = _read_real(p)
        if r is None:
            continue
        good = (r["ivar"] > 0) & np.isfinite(r["ivar"]) & np.isfinite(r["flux"])
        if good.sum() < N_NATIVE // 2:
            continue
        rows.append(r)
        names.append(p.name)
    if not rows:
        raise FileNotFoundError(f"no readable LAMOST spectra under {root}/{{{','.join(subdirs)}}}")
    flux = np.stack([r["flux"] for r in rows])
    ivar = np.stack([r["ivar"] for r in rows])
    andmask = np.stack([r["andmask"] for r in rows]) != 0
    bad = ~((ivar > 0) & np.isfinite(ivar) & np.isfinite(flux))
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(bad, np.nan, 1.0 / np.sqrt(np.where(bad, 1.0, ivar)))
    sigma_med = np.nanmedian(sigma, axis=1, keepdims=True)
    shape = sigma / sigma_med
    noise_excess, sky_residual = measure_excess(flux, sigma, np.stack([r["snr"] for r in rows])[:, 1])
    telluric = measure_telluric(np.where(bad | andmask, np.nan, flux))
    cont = _binned_median(np.where(bad | andmask, np.nan, flux), 101)
    cont = cont / np.nanmedian(cont, axis=1, keepdims=True)
    cont = np.where(np.isfinite(cont) & (cont > 0), cont, 1.0)
    snr = np.stack([r["snr"] for r in rows])
    gr = snr[:, 1:3][np.isfinite(snr[:, 1:3]).all(axis=1)]
    return NoiseLibrary(
        sigma_shape=np.nan_to_num(shape, nan=0.0).astype(np.float32), continuum=cont.astype(np.float32),
        bad=bad, andmask=andmask & ~bad, snr=snr, noise_excess=noise_excess, sky_residual=sky_residual, telluric=telluric,
        names=names, snr_quantiles=np.quantile(gr, np.linspace(0, 1, 101), axis=0).astype(np.float32),
        source=f"real files under {root}",
    )


def _second_difference(x: np.ndarray) -> np.ndarray:
    """x_i - (x_{i-1} + x_{i+1}) / 2, nan at the ends: removes a smooth continuum, keeps the noise."""
    out = np.full_like(x, np.nan)
    out[:, 1:-1] = x[:, 1:-1] - 0.5 * (x[:, :-2] + x[:, 2:])
    return out


def _kernel_second_difference_scale(t: float = NOISE_KERNEL_T) -> float:
    """Median |second difference| of unit-variance noise correlated by the kernel [t, 1, t]."""
    rho1, rho2 = 2 * t / (1 + 2 * t * t), t * t / (1 + 2 * t * t)
    return 0.6745 * np.sqrt(1.5 - 2 * rho1 + 0.5 * rho2)


def measure_excess(flux: np.ndarray, sigma: np.ndarray, snr_g: np.ndarray, max_snr: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """(noise_excess, sky_residual) per pixel from donors' real scatter against their ivar.

    Only donors with snr_g < ``max_snr`` count: at higher S/N the curvature of the stars' own lines
    dominates the second difference. The per-pixel median over donors of |second difference| / sigma,
    over what correlated Gaussian noise would give, is the total excess e; its median over 100-pixel
    bins is the smooth part (``noise_excess``, both arms' own levels); what stands above it, in
    quadrature, is ``sky_residual`` (sharp: the night-sky lines).
    """
    low = np.isfinite(snr_g) & (snr_g < max_snr)
    if low.sum() < 10:  # too few faint donors: take the faintest 10
        low = np.argsort(np.nan_to_num(snr_g, nan=np.inf))[:10]
    ratio = np.abs(_second_difference(flux[low])) / sigma[low] / _kernel_second_difference_scale()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        total = np.nanmedian(ratio, axis=0)
    total = np.where(np.isfinite(total), total, 1.0)
    smooth = _binned_median(total[None, :], 100)[0]
    sky = np.sqrt(np.clip(total**2 - smooth**2, 0.0, None))
    sky = np.where(sky > 0.8 * smooth, sky, 0.0)  # keep real lines (> 1.28x), not the scatter of the median
    return smooth.astype(np.float32), sky.astype(np.float32)


#: Telluric bands LAMOST leaves in the spectra: O2 B band, H2O, O2 A band (vacuum A, with side bands).
TELLURIC_BANDS = ((6860.0, 6960.0), (7160.0, 7340.0), (7590.0, 7700.0))


def measure_telluric(flux: np.ndarray, side: float = 30.0) -> np.ndarray:
    """Mean transmission in the telluric bands: median over donors of flux / a straight continuum
    through the side bands. 1 outside the bands."""
    import warnings

    out = np.ones(N_NATIVE)
    for lo, hi in TELLURIC_BANDS:
        band = (WAVELENGTH >= lo) & (WAVELENGTH <= hi)
        left = (WAVELENGTH >= lo - side) & (WAVELENGTH < lo)
        right = (WAVELENGTH > hi) & (WAVELENGTH <= hi + side)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fl, fr = np.nanmedian(flux[:, left], axis=1), np.nanmedian(flux[:, right], axis=1)
            wl, wr = WAVELENGTH[left].mean(), WAVELENGTH[right].mean()
            cont = fl[:, None] + (fr - fl)[:, None] * (WAVELENGTH[band] - wl) / (wr - wl)
            t = np.nanmedian(flux[:, band] / cont, axis=0)
        out[band] = np.clip(np.where(np.isfinite(t), t, 1.0), 0.0, 1.0)
    return out.astype(np.float32)


SUMMARY_PATH = Path(__file__).resolve().parent / "data" / "noise_summary.npz"
#: Where the shape of sigma is quantised for the summary: ln(sigma/median) in [-2, 4.3] on 255 levels
#: (2.5% steps, well under the noise in sigma itself); 255 marks "no data".
_QLO, _QHI = -2.0, 4.3
_CONT_KNOTS = 64


def save_noise_summary(lib: NoiseLibrary, path: str | Path = SUMMARY_PATH, n_donors: int = 96) -> Path:
    """Write the compact summary shipped with the package: ``n_donors`` donors evenly spaced in S/N rank.

    Kept per donor: the sigma shape (uint8, log-quantised), the continuum at 64 knots (float16), the
    positions of bad and andmask pixels (uint16 index lists), SNRU..SNRZ. Kept overall: the noise excess,
    sky residual and telluric curves (float16) and the (snr_g, snr_r) quantiles of every real file read.
    Derived statistics, not the files.
    """
    order = np.argsort(np.nan_to_num(lib.snr[:, 1], nan=0.0))  # evenly spaced in S/N rank
    picks = np.unique(order[np.linspace(0, len(order) - 1, min(n_donors, len(order))).round().astype(int)])
    shape = lib.sigma_shape[picks]
    q = np.where(shape > 0, np.clip(np.round((np.log(np.maximum(shape, 1e-30)) - _QLO) / (_QHI - _QLO) * 254), 0, 254), 255)
    knots = np.linspace(0, N_NATIVE - 1, _CONT_KNOTS).round().astype(int)
    bad_idx = [np.flatnonzero(lib.bad[i]).astype(np.uint16) for i in picks]
    and_idx = [np.flatnonzero(lib.andmask[i]).astype(np.uint16) for i in picks]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        sigma_q=q.astype(np.uint8), continuum=lib.continuum[picks][:, knots].astype(np.float16), knots=knots.astype(np.uint16),
        bad_idx=np.concatenate(bad_idx), bad_len=np.array([len(b) for b in bad_idx], np.uint32),
        and_idx=np.concatenate(and_idx), and_len=np.array([len(a) for a in and_idx], np.uint32),
        snr=lib.snr[picks].astype(np.float32), noise_excess=lib.noise_excess.astype(np.float16),
        sky_residual=lib.sky_residual.astype(np.float16), telluric=lib.telluric.astype(np.float16),
        snr_quantiles=lib.snr_quantiles.astype(np.float32), names=np.array([lib.names[i] for i in picks]),
    )
    return path


def load_noise_summary(path: str | Path = SUMMARY_PATH) -> NoiseLibrary:
    """The shipped summary as a NoiseLibrary (same interface as one built from real files)."""
    with np.load(path) as z:
        q = z["sigma_q"].astype(np.float64)
        shape = np.where(q == 255, 0.0, np.exp(_QLO + q / 254 * (_QHI - _QLO)))
        knots = z["knots"].astype(int)
        cont = np.stack([np.interp(np.arange(N_NATIVE), knots, c.astype(np.float64)) for c in z["continuum"]])

        def unpack(idx: np.ndarray, lens: np.ndarray) -> np.ndarray:
            out = np.zeros((len(lens), N_NATIVE), bool)
            for i, part in enumerate(np.split(idx.astype(int), np.cumsum(lens)[:-1])):
                out[i, part] = True
            return out

        return NoiseLibrary(
            sigma_shape=shape.astype(np.float32), continuum=cont.astype(np.float32),
            bad=unpack(z["bad_idx"], z["bad_len"]), andmask=unpack(z["and_idx"], z["and_len"]),
            snr=z["snr"], noise_excess=z["noise_excess"].astype(np.float32), sky_residual=z["sky_residual"].astype(np.float32),
            telluric=z["telluric"].astype(np.float32), names=[str(s) for s in z["names"]],
            snr_quantiles=z["snr_quantiles"], source=f"summary {Path(path).name}",
        )


_LIBRARY_CACHE: dict[str, NoiseLibrary] = {}


def noise_library(source: str | Path | None = None) -> NoiseLibrary:
    """The donor library: 'summary' = the shipped summary; a directory = real files there;
    None = real files when ../shared/data/lamost exists, else the summary. Cached per process."""
    if source is None:
        found = default_lamost_dir()
        source = str(found) if found is not None else "summary"
    key = str(source)
    if key not in _LIBRARY_CACHE:
        _LIBRARY_CACHE[key] = load_noise_summary() if key == "summary" else build_noise_library(key)
    return _LIBRARY_CACHE[key]
