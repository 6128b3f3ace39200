"""Mock family "eigen": SDSS eigenspectra, real LAMOST stars and their noise, through our own instrument.

Built independently of mocks/simulate.py, instrument.py and templates.py: only the ``MockChunk``
container and the native ``WAVELENGTH`` grid are shared. Every reader, line list, LSF, dust law, IGM and
noise model is the family's own: the classes are drawn here, from the data files mocks/eigen/library.py
reads, with the pieces of mocks/eigen/common.py, and pass through mocks/eigen/detector.py.

- GALAXY: linear combinations of the 4 spEigenGal-56436 eigenspectra. Plausible coefficients come from
  projecting the 750 DESI redrock galaxy archetypes onto that basis (the archetypes never enter a mock
  themselves); a mock is a convex combination of two projected archetypes of the same kind (passive or
  line-emitting, by the H-alpha equivalent width of the eigen combination), so it stays positive. A
  share of them gains a narrow AGN line set (Seyfert or LINER ratios) of our own; subclasses come from
  the BPT diagram measured on the rest-frame spectrum. Stellar velocity dispersion 50-350 km/s,
  Calzetti-like dust.
- QSO: spEigenQSO-55732 (rest frame from 450 A) with eigen-1..3 coefficients drawn around the mean and
  kept only where the spectrum stays positive; SMC-like dust; a Lyman-alpha/beta forest of random
  absorbers whose mean optical depth follows a Madau-1995-like power law, plus Lyman-limit absorption;
  BAL troughs in a share; host-galaxy light (a passive eigen galaxy) below z 0.5.
- STAR: the 123 real spEigenStar spectra, the real LAMOST DR8 stars with S/N > 30 (already at LAMOST
  resolution), spEigenCVstar and made emission-line stars (Be, dMe, CV), each with a radial velocity.
- Instrument: resolution varying with wavelength (R 1300-2500), flux-calibration tilt, blue/red arm
  scale mismatch at a join in 5700-5900 A, Milky Way dust, sky-subtraction residuals at sky-line
  wavelengths, cosmic rays, rare huge unmasked spikes, fibre throughput, and noise with the real
  per-pixel noise shape and bad-pixel mask of a LAMOST DR8 star, scaled to the drawn S/N.

Determinism: mock ``i`` belongs to block ``i // BLOCK`` whose random stream is
``np.random.SeedSequence([seed, block])``: any chunking of the same (seed, ids) gives the same mocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .eigen.common import (C_KMS, CAII_H, CAII_K, CIV, G_BAND, HALPHA, HBETA, HDELTA, HEI_5877, HEII_4687, HGAMMA,
                           KMS_PER_PIX, LOGW, MGII, NII_6550, NII_6585, OI_6302, OII_3728, OIII_4960, OIII_5008,
                           SII_6718, SII_6733, SIIV, WAVELENGTH, calzetti_k, gaussian_lines, local_continuum,
                           lyman_forest, smc_k, to_native)
from .eigen.detector import draw_snr, lsf, through_instrument
from .eigen.library import is_supergiant, load_library, templates_root
from .simulate import MockChunk

FAMILY = "eigen"
BLOCK = 256  #: mocks per random stream
#: Line-of-sight dispersion (km/s) already in the SDSS templates: SDSS's own LSF (R ~ 2000)
TEMPLATE_SIGMA_KMS = 64.0
#: Broadening already in the eigen-galaxy lines: SDSS's LSF plus a typical galaxy's dispersion
EIGEN_GALAXY_SIGMA_KMS = 120.0
STAR_SOURCES = {"sdss": 0.28, "lamost": 0.26, "redrock": 0.16, "be": 0.08, "dme": 0.08, "cv": 0.06, "wd": 0.04,
                "carbon": 0.04}
#: Line-of-sight broadening left in redrock archetypes after averaging them into 1e-4 dex pixels
REDROCK_SIGMA_KMS = 20.0
AGN_FRACTION = 0.25  #: share of line-emitting galaxies given an AGN narrow-line set
PASSIVE_FRACTION = 0.4  #: share of galaxies mixed from two passive projected archetypes
#: share mixed from a passive and a line-emitting one (weights 0.03-0.5 on the latter): the projected
#: emitters alone have H-alpha EW 35-155 A (5-95%), far stronger than most galaxies'
WEAK_EMITTER_FRACTION = 0.2
BAL_FRACTION = 0.12


# --------------------------------------------------------------------------------------------------
# the three classes, rendered onto the native grid (before the instrument)

def _draw_galaxy(rng: np.random.Generator, lib: dict, info: dict) -> tuple[np.ndarray, str, str, float, float]:
    loglam, eigen = lib["gal_loglam"], lib["gal_eigen"]
    u = rng.random()
    passive, emitting = lib["gal_passive"], lib["gal_emitting"]
    if u < PASSIVE_FRACTION:
        kind, first, second, t = "passive", passive, passive, rng.random()
    elif u < PASSIVE_FRACTION + WEAK_EMITTER_FRACTION:  # mostly old light with a little star formation
        kind, first, second, t = "weak-emitting", passive, emitting, rng.uniform(0.03, 0.5)
    else:
        kind, first, second, t = "emitting", emitting, emitting, rng.random()
    a, b = int(rng.integers(len(first))), int(rng.integers(len(second)))
    rest = ((1 - t) * first[a] + t * second[b]) @ eigen
    wave_rest = 10.0**loglam
    template = f"spEigenGal-56436 archetype-mix {kind} {a}/{b} t={t:.2f}"
    if kind == "passive":
        subclass = "PASSIVE"
    else:
        if rng.random() < AGN_FRACTION:
            agn = "SEYFERT" if rng.random() < 0.5 else "LINER"
            rest = rest + _agn_lines(rng, loglam, rest, agn)
            template += f" +{agn.lower()} lines"
        subclass = _bpt_subclass(wave_rest, rest)
    # dust in the galaxy (rest frame)
    ebv = info["ebv"] = rng.exponential(0.08)
    rest = rest * 10.0 ** (-0.4 * ebv * calzetti_k(wave_rest))
    # redshift: LAMOST-like, most below 0.3
    z = float(np.clip(0.5 * rng.beta(1.5, 4.0), 0.003, 0.5))
    flux = to_native(loglam, rest[None], np.array([z]))[0]
    sigma_v = info["velocity_dispersion"] = float(rng.uniform(50.0, 350.0))
    return _with_dispersion(flux, sigma_v), subclass, template, z, TEMPLATE_SIGMA_KMS


def _with_dispersion(flux: np.ndarray, sigma_v: float) -> np.ndarray:
    """Broaden an eigen-galaxy spectrum on the native grid to a stellar velocity dispersion sigma_v (km/s)."""
    extra = np.sqrt(max(sigma_v**2 - EIGEN_GALAXY_SIGMA_KMS**2, 0.0)) / KMS_PER_PIX
    return gaussian_filter1d(flux, extra) if extra > 0.3 else flux


def _agn_lines(rng: np.random.Generator, loglam: np.ndarray, rest: np.ndarray, kind: str) -> np.ndarray:
    """Narrow AGN lines (Seyfert: high [O III]/H-beta; LINER: strong [N II], [S II], [O I]) of our own."""
    wave = 10.0**loglam
    ha_flux = rng.uniform(5.0, 60.0) * local_continuum(rest, wave, HALPHA)  # EW(H-alpha) 5-60 A
    hb = ha_flux / 3.1 * rng.uniform(0.6, 1.0)  # Balmer decrement with some reddening
    # ([O III]/H-beta, [N II]/H-alpha, [S II]/H-alpha, [O I]/H-alpha) ranges
    ranges = ((4, 12), (0.6, 1.5), (0.4, 0.8), (0.05, 0.2)) if kind == "SEYFERT" else ((0.8, 2.5), (1.0, 2.5), (0.6, 1.2), (0.2, 0.5))
    o3, n2, s2, o1 = (rng.uniform(*r) * base for r, base in zip(ranges, (hb, ha_flux, ha_flux, ha_flux)))
    centers = np.array([HALPHA, HBETA, OIII_5008, OIII_4960, NII_6585, NII_6550, SII_6718, SII_6733, OI_6302, OII_3728])
    fluxes = np.array([ha_flux, hb, o3, o3 / 2.98, n2, n2 / 2.95, s2 * 0.55, s2 * 0.45, o1, rng.uniform(1, 3) * hb])
    return gaussian_lines(loglam, centers, fluxes, rng.uniform(150.0, 400.0))


def _bpt_subclass(wave: np.ndarray, rest: np.ndarray) -> str:
    """Star forming, composite (MIXED) or AGN from the BPT line ratios measured on the spectrum."""
    flux = {}
    for name, line in (("ha", HALPHA), ("n2", NII_6585), ("hb", HBETA), ("o3", OIII_5008)):
        inner = np.abs(wave - line) < 4.0
        flux[name] = float((rest[inner] - local_continuum(rest, wave, line)).sum())
    if min(flux.values()) <= 0:
        return "STARFORMING"
    x, y = np.log10(flux["n2"] / flux["ha"]), np.log10(flux["o3"] / flux["hb"])
    if x < 0.05 and y < 0.61 / (x - 0.05) + 1.3:  # Kauffmann et al. 2003
        return "STARFORMING"
    if x < 0.47 and y < 0.61 / (x - 0.47) + 1.19:  # Kewley et al. 2001
        return "MIXED"
    return "SEYFERT" if y > 1.05 * x + 0.45 else "LINER"  # Schawinski et al. 2007


def _draw_qso(rng: np.random.Generator, lib: dict, info: dict) -> tuple[np.ndarray, str, str, float, float]:
    loglam, eigen = lib["qso_loglam"], lib["qso_eigen"]
    wave_rest = 10.0**loglam
    check = (wave_rest > 1250) & (wave_rest < 7500)
    rms = np.sqrt((eigen[:, check] ** 2).mean(axis=1))
    coeff = np.concatenate([[1.0], rng.normal(0.0, 0.1, 3) * rms[0] / rms[1:]])
    for _ in range(6):  # shrink toward the mean until the spectrum is positive
        rest = coeff @ eigen
        if rest[check].min() > 0:
            break
        coeff[1:] *= 0.5
    rest = np.clip(rest, 0.02 * np.median(rest[check]), None)
    u = rng.random()
    z = float(rng.uniform(0.05, 0.3) if u < 0.15 else rng.uniform(0.3, 2.5) if u < 0.85 else rng.uniform(2.5, 4.5))
    subclass, template = "BROADLINE", "spEigenQSO-55732 c=" + ",".join(f"{c:.3f}" for c in coeff[1:])
    if rng.random() < BAL_FRACTION:
        subclass = "BAL"
        rest = rest * _bal_troughs(rng, wave_rest)
    info["ebv"] = rng.exponential(0.04)
    rest = rest * 10.0 ** (-0.4 * info["ebv"] * smc_k(wave_rest))
    if z < 0.5:  # host-galaxy light, a passive eigen galaxy, fading with redshift
        pool = lib["gal_passive"]
        host = pool[rng.integers(len(pool))] @ lib["gal_eigen"]
        host_rest = np.interp(loglam, lib["gal_loglam"], host, left=0.0, right=0.0)
        at5100 = (wave_rest > 5050) & (wave_rest < 5150)
        share = rng.uniform(0.1, 0.6) * (1 - z / 0.5)
        scale = share / max(1 - share, 1e-3) * rest[at5100].mean() / max(host_rest[at5100].mean(), 1e-30)
        rest = rest + scale * host_rest
        template += f" +host {share:.2f}"
    flux = to_native(loglam, rest[None], np.array([z]))[0]
    flux = flux * lyman_forest(rng, WAVELENGTH, z)
    return flux, subclass, template, z, TEMPLATE_SIGMA_KMS


def _bal_troughs(rng: np.random.Generator, wave_rest: np.ndarray) -> np.ndarray:
    """Broad absorption blueward of C IV and Si IV (and Mg II in a third: LoBALs)."""
    v_center, v_width, depth = rng.uniform(3000, 20000), rng.uniform(2000, 10000), rng.uniform(0.3, 0.9)
    lines = [CIV, SIIV] + ([MGII] if rng.random() < 0.3 else [])
    trans = np.ones_like(wave_rest)
    for line in lines:
        center = line * (1 - v_center / C_KMS)
        sigma = line * v_width / C_KMS / 2.355
        trans *= 1 - depth * np.exp(-0.5 * ((wave_rest - center) / sigma) ** 2)
    return trans


def _draw_star(rng: np.random.Generator, lib: dict, info: dict) -> tuple[np.ndarray, str, str, float, float]:
    kinds = list(STAR_SOURCES)
    p = np.array(list(STAR_SOURCES.values()))
    kind = kinds[rng.choice(len(kinds), p=p / p.sum())]
    v = float(np.clip(rng.normal(0, 200) if rng.random() < 0.1 else rng.normal(0, 50), -480, 480))
    z = v / C_KMS
    names, subs = lib["star_names"], lib["star_subclass"]
    sigma_kms = TEMPLATE_SIGMA_KMS
    if kind == "lamost":
        k = int(rng.integers(len(lib["lamost_flux"])))
        dv = float(rng.normal(0, 20))  # a small extra shift: the star keeps its own RV
        flux = np.interp(LOGW - np.log10(1 + dv / C_KMS), LOGW, lib["lamost_flux"][k])
        info["intrinsic_snr"] = float(lib["lamost_snr"][k])  # its own noise counts toward the drawn S/N
        return flux, lib["lamost_subclass"][k], f"lamost-dr8:{lib['lamost_name'][k]}", lib["lamost_z"][k] + dv / C_KMS, 0.0
    if kind == "cv":
        if rng.random() < 0.5:
            coeff = np.concatenate([[1.0], rng.normal(0, 0.15, lib["cv_eigen"].shape[0] - 1)])
            rest = np.clip(coeff @ lib["cv_eigen"], 0.0, None)
            flux = to_native(lib["cv_loglam"], rest[None], np.array([z]))[0]
            return flux, "CV", "spEigenCVstar-55734", z, sigma_kms
        flux = _made_cv(rng, z)
        return flux, "CV", "made: blue continuum + broad Balmer/He", z, 1.0  # made at full resolution
    if kind == "wd":
        pick = [i for i, s in enumerate(subs) if s == "WD"]
    elif kind == "carbon":
        pick = [i for i, s in enumerate(subs) if s == "C"]
    elif kind == "be":
        pick = [i for i, s in enumerate(subs) if s[:1] == "B" or s in ("A0", "A1", "A2")]
    elif kind in ("dme", "redrock"):
        # the SDSS library's M stars are giants: M dwarfs come from the redrock M archetypes
        pool = [i for i, s in enumerate(lib["rr_subclass"]) if kind == "redrock" or s == "M"]
        k = pool[int(rng.integers(len(pool)))]
        flux = to_native(lib["rr_loglam"], lib["rr_flux"][k][None], np.array([z]))[0]
        subclass, template = lib["rr_subclass"][k], lib["rr_name"][k]
        if kind == "dme":
            flux = flux + _balmer_emission(rng, LOGW, flux, z, "dme")
            # 'Me' as the physical family writes 'M3e': these archetypes carry no subtype
            subclass, template = "Me", template + " +Balmer emission (dMe)"
        return flux, subclass, template, z, REDROCK_SIGMA_KMS
    else:  # any SDSS library star; supergiants are rare among LAMOST targets
        weight = np.array([0.15 if is_supergiant(n) else 1.0 for n in names])
        pick = list(range(len(names)))
        k = int(rng.choice(pick, p=weight / weight.sum()))
        flux = to_native(lib["star_loglam"], lib["star_flux"][k][None], np.array([z]))[0]
        return flux, subs[k], f"spEigenStar-55734:{names[k]}", z, sigma_kms
    k = int(pick[int(rng.integers(len(pick)))])
    flux = to_native(lib["star_loglam"], lib["star_flux"][k][None], np.array([z]))[0]
    subclass, template = subs[k], f"spEigenStar-55734:{names[k]}"
    if kind == "be":
        flux = flux + _balmer_emission(rng, LOGW, flux, z, kind)
        subclass, template = "Be", template + " +Balmer emission"
    return flux, subclass, template, z, sigma_kms


def _balmer_emission(rng: np.random.Generator, loglam: np.ndarray, flux: np.ndarray, z: float, kind: str) -> np.ndarray:
    """Be: H-alpha EW 5-50 A, H-beta weaker, 200-500 km/s wide; dMe: narrow Balmer EW 1-15 A and Ca II H&K."""
    wave = 10.0**loglam
    if kind == "be":
        ew_ha, width = rng.uniform(5, 50), rng.uniform(200, 500)
        lines = [(HALPHA, ew_ha), (HBETA, ew_ha * rng.uniform(0.1, 0.35)), (HGAMMA, ew_ha * rng.uniform(0.0, 0.1))]
    else:
        ew_ha, width = rng.uniform(1, 15), 30.0
        lines = [(HALPHA, ew_ha), (HBETA, ew_ha * rng.uniform(0.5, 1.5)), (HGAMMA, ew_ha * rng.uniform(0.5, 1.5)),
                 (HDELTA, ew_ha * rng.uniform(0.3, 1.0)), (CAII_K, ew_ha * rng.uniform(0.5, 2.0)),
                 (CAII_H, ew_ha * rng.uniform(0.5, 2.0))]
    centers = np.array([c * (1 + z) for c, _ in lines])
    fluxes = np.array([ew * (1 + z) * max(local_continuum(flux, wave, c), 0.0) for (_, ew), c in zip(lines, centers)])
    return gaussian_lines(loglam, centers, fluxes, width)


def _made_cv(rng: np.random.Generator, z: float) -> np.ndarray:
    """A dwarf nova in quiescence: a hot blue continuum plus broad Balmer and He I/He II emission."""
    wave = WAVELENGTH / (1 + z)
    temp = rng.uniform(10000, 30000)
    cont = wave**-5 / np.expm1(1.4388e8 / (wave * temp))
    cont /= np.median(cont[G_BAND])
    width = rng.uniform(600, 1500)
    lines = [(HALPHA, rng.uniform(20, 120)), (HBETA, rng.uniform(10, 60)), (HGAMMA, rng.uniform(5, 40)),
             (HDELTA, rng.uniform(3, 25)), (HEI_5877, rng.uniform(2, 15)), (HEII_4687, rng.uniform(0, 20))]
    centers = np.array([c * (1 + z) for c, _ in lines])
    fluxes = np.array([ew * (1 + z) * np.interp(c, WAVELENGTH, cont) for (_, ew), c in zip(lines, centers)])
    return cont + gaussian_lines(LOGW, centers, fluxes, width)


# --------------------------------------------------------------------------------------------------
# the interface

def _block(seed: int, block: int, lib: dict, class_mix: np.ndarray, snr_distribution: str,
           snr_range: tuple[float, float]) -> dict:
    rng = np.random.default_rng(np.random.SeedSequence([seed, block]))
    n = BLOCK
    classes = np.array(["STAR", "GALAXY", "QSO"])[rng.choice(3, size=n, p=class_mix)]
    rows: dict[str, list] = {k: [] for k in ("flux", "ivar", "andmask", "class", "subclass", "template", "z", "snr_g",
                                               "snr_r", "resolution", "snr_requested", "arm_mismatch", "arm_join",
                                               "velocity_dispersion", "ebv")}
    drawers = {"STAR": _draw_star, "GALAXY": _draw_galaxy, "QSO": _draw_qso}
    for cls in classes:
        info: dict = {}
        flux, subclass, template, z, tmpl_sigma = drawers[cls](rng, lib, info)
        if tmpl_sigma > 0:
            flux, resolution = lsf(rng, flux, tmpl_sigma)
        else:  # real LAMOST stars: already at LAMOST's resolution
            resolution = 1800.0
        snr = draw_snr(rng, lib, snr_distribution, *snr_range)
        noisy, ivar, andmask, snr_g, snr_r, arm, join = through_instrument(rng, lib, flux, snr,
                                                                    info.get("intrinsic_snr", np.inf))
        for key, value in (("flux", noisy), ("ivar", ivar), ("andmask", andmask), ("class", cls), ("subclass", subclass),
                           ("template", template), ("z", z), ("snr_g", snr_g), ("snr_r", snr_r),
                           ("resolution", resolution), ("snr_requested", snr), ("arm_mismatch", float(np.log(arm))),
                           ("arm_join", join),
                           ("velocity_dispersion", info.get("velocity_dispersion", np.nan)),
                           ("ebv", info.get("ebv", 0.0))):
            rows[key].append(value)
    return rows


def simulate(n: int, seed: int, *, class_mix: Sequence[float] = (1 / 3, 1 / 3, 1 / 3), snr_distribution: str = "real",
             snr_range: tuple[float, float] = (2.0, 100.0), start: int = 0, chunk_size: int = 1000,
             templates_dir: str | Path | None = None) -> Iterator[MockChunk]:
    """Yield mocks ``start .. start + n - 1`` of this family in chunks of ``chunk_size`` (see the module docstring)."""
    if snr_distribution not in ("real", "loguniform"):
        raise ValueError(f"snr_distribution must be 'real' or 'loguniform', not {snr_distribution!r}")
    mix = np.asarray(class_mix, dtype=np.float64)
    if mix.shape != (3,) or (mix < 0).any() or mix.sum() <= 0:
        raise ValueError(f"class_mix must be three non-negative fractions (STAR, GALAXY, QSO), not {tuple(class_mix)}")
    mix = mix / mix.sum()
    lib = load_library(str(templates_root(templates_dir)))
    cache: dict[int, dict] = {}
    for lo in range(start, start + n, chunk_size):
        hi = min(lo + chunk_size, start + n)
        parts: dict[str, list] = {}
        for i in range(lo, hi):
            b = i // BLOCK
            if b not in cache:
                cache.clear()
                cache[b] = _block(seed, b, lib, mix, snr_distribution, tuple(snr_range))
            for key, values in cache[b].items():
                parts.setdefault(key, []).append(values[i - b * BLOCK])
        m = hi - lo
        truth = {
            "id": np.arange(lo, hi, dtype=np.int64),
            "class": np.array(parts["class"], dtype=str), "subclass": np.array(parts["subclass"], dtype=str),
            "template": np.array(parts["template"], dtype=str), "z": np.array(parts["z"], dtype=np.float64),
            "snr_g": np.array(parts["snr_g"], dtype=np.float32), "snr_r": np.array(parts["snr_r"], dtype=np.float32),
            "resolution": np.array(parts["resolution"], dtype=np.float32), "family": np.full(m, FAMILY),
            "snr_requested": np.array(parts["snr_requested"], dtype=np.float32),
            "arm_mismatch": np.array(parts["arm_mismatch"], dtype=np.float32),  # ln(red arm / blue arm scale)
            "arm_join": np.array(parts["arm_join"], dtype=np.float32),
            # galaxies' stellar velocity dispersion (km/s; NaN for others) and intrinsic E(B-V) (0 for stars)
            "velocity_dispersion": np.array(parts["velocity_dispersion"], dtype=np.float32),
            "ebv": np.array(parts["ebv"], dtype=np.float32),
        }
        yield MockChunk(np.array(parts["flux"], dtype=np.float32), np.array(parts["ivar"], dtype=np.float32),
                        np.array(parts["andmask"], dtype=np.int32), truth)
