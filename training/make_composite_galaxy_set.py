"""Galaxies composed of real LAMOST stars, as a training-set directory leave_one_family_out.py takes.

    python training/make_composite_galaxy_set.py --out work/composites --n 3000

Empirical population synthesis from the real stars make_real_star_set.py trains on (the same files: not
held out, the file's CLASS is STAR, here also S/N g >= 20): an old population of two G/K stars (and now
and then an M star), plus a young one of an A/F star with a fraction of the light at 5500 A that depends on
the kind, each star moved to rest by its own Z, broadened by a stellar velocity dispersion, given emission
lines with BPT-plane ratios (star-forming, LINER, Seyfert; none or weak for passive and post-starburst), and
redshifted. Every absorption line, continuum and noise pixel is a real LAMOST one; none of the mock
families' astrophysics is used, so no leave-one-family-out fold sees its left-out family through them.

Two things a shifted star would carry wrongly are mended: each star's telluric bands are divided out in its
own frame and the old star's are put back at the observed wavelengths; the blue end a redshift uncovers
(below the stars' 3700 A rest) is the composite's own blue level with its own noise. So that neither says
"galaxy", every galaxy comes with one of the stars as observed, its blue end lost alike at a redshift drawn
alike. Then noise is added (the spectrum's own noise shape, scaled) down to an S/N g drawn log-uniform in
--snr, and each is prepared by the pipeline's own grid. Written as ``train_flux.npy`` +
``train_truth.parquet`` (--n galaxies, class GALAXY, label 1, subclass the kind, z; --n stars, class STAR,
label 0, subclass the letter, z 0; snr_g, template the files, family 'real-composite'). With --held-out the
stars are the 30% held out instead and the set is OUT/test.parquet, a table for `lamost-classify evaluate`:
galaxies of real spectra that no network has trained on.
The SDSS and lamost-qso spectra are validation only and never read here.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_real_star_set import SHARED, star_files  # noqa: E402

if TYPE_CHECKING:
    from lamost_classify.pipeline.grid import PreparedBatch

C_KMS = 299_792.458
#: km/s per native pixel (1e-4 in log10 lambda)
KMS_PER_PIXEL = C_KMS * np.log(10.0) * 1e-4
#: Rest-frame pixels kept below the native grid's 3700 A, so that z up to MAX_Z has a rest grid.
PAD = 700
MAX_Z = 10 ** (PAD * 1e-4) - 1
MIN_COMPONENT_SNR = 20.0

#: Emission lines, vacuum A: (name, rest wavelength). Doublets' fixed ratios are set in ``line_fluxes``.
LINES = {"OII_3727": 3727.09, "OII_3730": 3729.88, "NeIII_3870": 3870.16, "Hdelta": 4102.89, "Hgamma": 4341.68,
         "Hbeta": 4862.68, "OIII_4960": 4960.30, "OIII_5008": 5008.24, "OI_6302": 6302.05, "NII_6550": 6549.86,
         "Halpha": 6564.61, "NII_6585": 6585.27, "SII_6718": 6718.29, "SII_6733": 6732.67}

#: kind: (share of the set, young light fraction range, log10 EW(H-alpha) range in A or None for no lines)
KINDS = {"PASSIVE": (0.30, (0.0, 0.1), None), "POSTSTARBURST": (0.10, (0.3, 0.8), (-0.5, 0.5)),
         "STARFORMING": (0.35, (0.2, 0.95), (0.7, 2.2)), "LINER": (0.10, (0.0, 0.3), (0.0, 0.9)),
         "SEYFERT": (0.15, (0.0, 0.5), (0.5, 1.8))}


@dataclass
class Components:
    """Real stars at rest on the padded native grid (flux normalised at 5500 A, variance, telluric bands
    divided out), each star's own telluric transmission, and the star as observed, on the native grid."""

    names: list[str]
    letters: np.ndarray  # (S,) first letter of LAMOST's SUBCLASS
    flux: np.ndarray  # (S, PAD + N_NATIVE), NaN where the star has no data
    var: np.ndarray
    telluric: np.ndarray  # (S, N_NATIVE)
    obs_flux: np.ndarray  # (S, N_NATIVE), same normalisation
    obs_var: np.ndarray


def rest_grid() -> np.ndarray:
    """log10 wavelength of the rest frame's pixels: the native grid's step, PAD pixels below its start."""
    from lamost_classify.contract import NATIVE_COEFF0, NATIVE_COEFF1, N_NATIVE

    return NATIVE_COEFF0 + NATIVE_COEFF1 * np.arange(-PAD, N_NATIVE)


def read_components(files: list[str]) -> Components:
    """The usable real stars of ``files``, each on the observed native grid, telluric bands divided out,
    moved to rest."""
    from lamost_classify.contract import NATIVE_LOG_WAVELENGTH, NATIVE_WAVELENGTH
    from lamost_classify.mocks.noise_donors import measure_telluric
    from lamost_classify.pipeline.readers import read_batch

    grid = rest_grid()
    names, letters, fluxes, variances, tellurics, observed = [], [], [], [], [], []
    for path, s in zip(files, read_batch(files)):
        letter = str(s.meta.get("lamost_subclass") or "")[:1].upper()
        if (s.meta.get("lamost_class") or "").upper() != "STAR" or letter not in "AFGKM" or s.flux.size < 2:
            continue
        good = (s.andmask == 0) & (s.ivar > 0) & np.isfinite(s.flux)
        if good.sum() < 1000:
            continue
        wl = np.asarray(s.wavelength, np.float64)
        flux = np.interp(NATIVE_WAVELENGTH, wl[good], s.flux[good], left=np.nan, right=np.nan)
        var = np.interp(NATIVE_WAVELENGTH, wl[good], 1.0 / s.ivar[good], left=np.nan, right=np.nan)
        g_band = (NATIVE_WAVELENGTH > 4000) & (NATIVE_WAVELENGTH < 5500)
        if not np.nanmedian(flux[g_band] / np.sqrt(var[g_band])) >= MIN_COMPONENT_SNR:
            continue
        scale = np.nanmedian(flux[(NATIVE_WAVELENGTH > 5450) & (NATIVE_WAVELENGTH < 5550)])
        if not scale > 0:
            continue
        observed.append((flux / scale, var / scale**2))
        telluric = np.clip(measure_telluric(flux[None, :]), 0.2, 1.0)
        flux, var = flux / telluric, var / telluric**2
        rest = NATIVE_LOG_WAVELENGTH - np.log10(1.0 + float(s.meta.get("lamost_z") or 0.0))
        flux = np.interp(grid, rest, flux, left=np.nan, right=np.nan)
        var = np.interp(grid, rest, var, left=np.nan, right=np.nan)
        names.append(Path(path).name)
        letters.append(letter)
        fluxes.append(flux / scale)
        variances.append(var / scale**2)
        tellurics.append(telluric)
    return Components(names, np.array(letters), np.array(fluxes), np.array(variances), np.array(tellurics),
                      np.array([f for f, _ in observed]), np.array([v for _, v in observed]))


def broaden(flux: np.ndarray, var: np.ndarray, sigma_kms: float) -> tuple[np.ndarray, np.ndarray]:
    """Convolve with a gaussian of ``sigma_kms`` (on top of the instrument's, which the stars already
    have); the variance with the kernel squared, as a smoothed noise has it. NaN stays NaN."""
    sigma = sigma_kms / KMS_PER_PIXEL
    x = np.arange(-int(4 * sigma) - 1, int(4 * sigma) + 2)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    have = np.isfinite(flux)
    f = np.convolve(np.where(have, flux, 0.0), kernel, mode="same")
    w = np.convolve(have.astype(float), kernel, mode="same")
    v = np.convolve(np.where(have, var, 0.0), kernel**2, mode="same")
    inside = have & (w > 0.999)
    return np.where(inside, f / np.maximum(w, 1e-9), np.nan), np.where(inside, v, np.nan)


def line_fluxes(kind: str, ew_halpha: float, rng: np.random.Generator) -> dict[str, float]:
    """Each line's flux in units of the continuum at H-alpha (so H-alpha's is ``ew_halpha``, its equivalent
    width in A), the ratios drawn on the BPT plane for the kind (star-forming below Kauffmann et al. 2003,
    Seyfert above Kewley et al. 2001), with fixed doublet ratios and a Balmer decrement of 2.86-6."""
    u = rng.uniform
    if kind in ("STARFORMING", "POSTSTARBURST"):
        n2 = u(-1.3, -0.4)
        o3 = u(-0.9, min(0.61 / (n2 - 0.05) + 1.3, 0.9) - 0.05)
        s2, o1, o2 = u(0.15, 0.5), u(0.01, 0.06), u(0.7, 4.0)
    elif kind == "SEYFERT":
        n2, o3 = u(-0.3, 0.3), u(0.5, 1.1)
        s2, o1, o2 = u(0.3, 0.8), u(0.08, 0.4), u(1.0, 4.0)
    else:  # LINER
        n2, o3 = u(-0.2, 0.4), u(-0.4, 0.4)
        s2, o1, o2 = u(0.4, 1.0), u(0.1, 0.4), u(2.0, 6.0)
    hbeta = 1.0 / u(2.86, 6.0)
    oiii = hbeta * 10**o3
    s2_ratio = u(0.45, 1.45)  # [S II] 6718/6733, density
    o2_ratio = u(0.35, 1.5)  # [O II] 3730/3727, density
    fluxes = {"Halpha": 1.0, "Hbeta": hbeta, "Hgamma": 0.47 * hbeta, "Hdelta": 0.26 * hbeta,
              "NII_6585": 10**n2, "NII_6550": 10**n2 / 3.05, "OIII_5008": oiii, "OIII_4960": oiii / 2.98,
              "NeIII_3870": u(0.03, 0.12) * oiii, "OI_6302": o1,
              "SII_6718": s2 * s2_ratio / (1 + s2_ratio), "SII_6733": s2 / (1 + s2_ratio),
              "OII_3727": o2 * hbeta / (1 + o2_ratio), "OII_3730": o2 * hbeta * o2_ratio / (1 + o2_ratio)}
    return {k: v * ew_halpha for k, v in fluxes.items()}


def compose(c: Components, rng: np.random.Generator, kind: str, z: float) -> tuple[np.ndarray, np.ndarray, str]:
    """One composite galaxy on the observed native grid (flux, variance; NaN where the redshift uncovered
    rest wavelengths the stars lack) and the names of its stars."""
    from lamost_classify.contract import NATIVE_COEFF1, NATIVE_LOG_WAVELENGTH

    grid = rest_grid()
    _, young_range, ew_range = KINDS[kind]
    old = rng.choice(np.flatnonzero(np.isin(c.letters, list("GK"))), 2, replace=False)
    parts = [(old[0], rng.uniform(0.3, 0.7)), (old[1], 1.0)]
    m_pool = np.flatnonzero(c.letters == "M")
    if len(m_pool) and rng.random() < 0.3:
        parts.append((rng.choice(m_pool), rng.uniform(0.02, 0.1)))
    total = sum(w for _, w in parts)
    young_fraction = rng.uniform(*young_range)
    parts = [(i, (1 - young_fraction) * w / total) for i, w in parts]
    parts.append((rng.choice(np.flatnonzero(np.isin(c.letters, list("AF")))), young_fraction))
    flux = sum(w * c.flux[i] for i, w in parts)
    var = sum(w**2 * c.var[i] for i, w in parts)
    flux, var = broaden(flux, var, rng.uniform(100, 300) if kind in ("PASSIVE", "LINER") else rng.uniform(40, 200))

    if ew_range is not None:
        wave = 10**grid
        continuum = np.nanmedian(flux[(wave > 6500) & (wave < 6630)])
        sigma_gas = np.hypot(rng.uniform(100, 400) if kind == "SEYFERT" else rng.uniform(40, 250), 70.0)
        for name, f in line_fluxes(kind, 10 ** rng.uniform(*ew_range), rng).items():
            width = LINES[name] * sigma_gas / C_KMS
            flux = flux + continuum * f * np.exp(-0.5 * ((wave - LINES[name]) / width) ** 2) / (np.sqrt(2 * np.pi) * width)

    at = (NATIVE_LOG_WAVELENGTH - np.log10(1 + z) - grid[0]) / NATIVE_COEFF1  # rest-grid pixel of each observed one
    telluric = c.telluric[old[1]]
    obs_flux = np.interp(at, np.arange(grid.size), flux) * telluric
    obs_var = np.interp(at, np.arange(grid.size), var) * telluric**2
    return obs_flux, obs_var, "+".join(c.names[i] for i, _ in parts)


def finish(flux: np.ndarray, var: np.ndarray, blue_lost: int, snr_target: float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The first ``blue_lost`` pixels and those without data before the first with data become the
    spectrum's own blue level with its own noise (the same for galaxies and stars, so that it says nothing
    of the class); other pixels without data are masked (infinite variance), as a file's are. Then noise is
    added in the spectrum's own shape down to ``snr_target`` in the g band (none if it is fainter already)."""
    from lamost_classify.contract import NATIVE_WAVELENGTH

    flux, var = flux.copy(), var.copy()
    missing = ~np.isfinite(flux) | ~np.isfinite(var)
    blue = np.arange(flux.size) < max(blue_lost, int(np.argmax(~missing)))
    first = np.flatnonzero(~missing & ~blue)[:60]
    level, sigma = np.median(flux[first]), np.sqrt(np.median(var[first]))
    flux[blue] = level + sigma * rng.standard_normal(blue.sum())
    var[blue] = sigma**2
    flux[missing & ~blue], var[missing & ~blue] = 0.0, np.inf
    g_band = (NATIVE_WAVELENGTH > 4000) & (NATIVE_WAVELENGTH < 5500)
    snr = float(np.nanmedian(np.where(np.isfinite(var[g_band]), flux[g_band] / np.sqrt(var[g_band]), np.nan)))
    if snr > snr_target:
        k2 = (snr / snr_target) ** 2
        flux = flux + np.sqrt(var * (k2 - 1)) * rng.standard_normal(flux.size)
        var = var * k2
    return flux, var


def make(c: Components, n: int, seed: int, z_range: tuple[float, float],
         snr_range: tuple[float, float]) -> tuple[PreparedBatch, dict[str, list]]:
    """``n`` composite galaxies and ``n`` of their stars as they are, with the same blue-end treatment and
    S/N draw: (the pipeline's prepared batch of the 2n, truth columns)."""
    from lamost_classify.contract import NATIVE_COEFF1, NATIVE_WAVELENGTH
    from lamost_classify.pipeline import grid

    rng = np.random.default_rng(seed)
    kinds = list(KINDS)
    shares = np.array([KINDS[k][0] for k in kinds])
    truth = {k: [] for k in ("id", "class", "label", "subclass", "z", "template", "family")}
    fluxes, variances = [], []
    for i in range(n):
        kind = kinds[rng.choice(len(kinds), p=shares / shares.sum())]
        z = rng.uniform(*z_range)
        flux, var, template = compose(c, rng, kind, z)
        star = rng.integers(len(c.names))
        # The star's blue end is lost as a galaxy's would be at a redshift drawn alike.
        star_lost = int(np.log10(1 + rng.uniform(*z_range)) / NATIVE_COEFF1)
        for row in ((flux, var, 0, "GALAXY", 1, kind, z, template),
                    (c.obs_flux[star], c.obs_var[star], star_lost, "STAR", 0, c.letters[star], 0.0, c.names[star])):
            f, v = finish(row[0], row[1], row[2], float(np.exp(rng.uniform(*np.log(snr_range)))), rng)
            fluxes.append(f)
            variances.append(v)
            for key, value in zip(("id", "class", "label", "subclass", "z", "template", "family"),
                                  (f"composite-{seed}-{i}-{row[3].lower()}", *row[3:], "real-composite")):
                truth[key].append(value)
    prepared = grid.prepare_arrays(NATIVE_WAVELENGTH, np.array(fluxes), 1.0 / np.array(variances))
    truth["snr_g"] = prepared.snr.astype(float).tolist()
    return prepared, truth


def write_table(path: Path, prepared: PreparedBatch, truth: dict[str, list]) -> None:
    """The set as one labelled table (``flux_norm`` on the grid, with its ``ivar_norm`` and ``pedestal`` for
    the redshift fit, ``snr`` for its S/N bins and the truth columns, which give its recall by kind and its
    redshifts), the form ``lamost-classify evaluate`` reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lamost_classify.mocks.release import list_rows

    columns = {"flux_norm": list_rows(prepared.flux, pa.float32()), "ivar_norm": list_rows(prepared.ivar, pa.float32()),
               "pedestal": pa.array(prepared.pedestal, pa.float32()), "snr": truth["snr_g"], **truth}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def main() -> None:
    from lamost_classify.model.labelled import save_set

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--z", type=float, nargs=2, default=(0.01, 0.15), help="redshift range, uniform")
    p.add_argument("--snr", type=float, nargs=2, default=(3.0, 80.0), help="S/N g range, log-uniform")
    p.add_argument("--held-out", action="store_true",
                   help="compose from the 30%% of real stars held out instead: galaxies of real spectra no network "
                        "trained on, written as OUT/test.parquet for lamost-classify evaluate, never a training set")
    args = p.parse_args()
    if args.z[1] > MAX_Z:
        raise SystemExit(f"--z {args.z[1]}: the rest grid reaches z {MAX_Z:.2f} at most")
    components = read_components(star_files(held_out=args.held_out))
    counts = {letter: int((components.letters == letter).sum()) for letter in "AFGKM"}
    if counts["G"] + counts["K"] < 2 or counts["A"] + counts["F"] < 1:
        raise SystemExit(f"too few real stars in {SHARED} to compose galaxies: {counts}")
    prepared, truth = make(components, args.n, args.seed, tuple(args.z), tuple(args.snr))
    if args.held_out:
        write_table(args.out / "test.parquet", prepared, truth)
    else:
        save_set(args.out, "train", prepared.flux, truth)
    print(f"{args.n} galaxies and {args.n} stars from {len(components.names)} real stars ({counts}) -> {args.out}")


if __name__ == "__main__":
    main()
