"""Galaxies: old, young and mixed stellar populations with a modelled 4000 A break and absorption lines
broadened by the stellar velocity dispersion, plus nebular emission whose ratios place each galaxy on
the BPT plane (star forming, composite, Seyfert, LINER), and Calzetti dust."""

from __future__ import annotations

import numpy as np

from .common import (REST_WAVE, WORK_WAVE, LineAccumulator, add_strong_lines, band_heads, calzetti_k, dust, equivalent_width_area, planck,
                     redshifted, smooth_step)
from .stars import BALMER, METAL_FOREST

SUBCLASS_WEIGHTS = {"PASSIVE": 0.33, "POSTSTARBURST": 0.05, "STARFORMING": 0.30, "MIXED": 0.10, "SEYFERT": 0.11,
                    "LINER": 0.11}
#: old-population absorption: rest wave (vacuum A), equivalent width (A) of a typical elliptical, own width (km/s);
#: the G band, Fe4383, Fe5270, Fe5335 and Na D blends set so that the passive galaxies' Lick indices sit at
#: published ellipticals' (training/galaxy_continua.py; docs/families.md)
OLD_LINES = np.array([
    (3934.78, 8.0, 30), (3969.59, 7.0, 30), (4102.89, 1.0, 30), (4227.92, 1.2, 30), (4305.0, 7.5, 400),
    (4384.0, 8.5, 150), (4455.0, 1.2, 100), (4531.0, 2.5, 150), (4668.0, 4.0, 300), (4862.68, 1.8, 30),
    (5015.0, 4.0, 250), (5168.76, 1.2, 30), (5174.13, 1.5, 30), (5185.05, 1.8, 30), (5271.0, 3.3, 60),
    (5336.0, 3.9, 60), (5407.0, 1.5, 60), (5891.58, 2.3, 30), (5897.56, 2.0, 30), (6564.61, 1.5, 30),
    (8500.36, 1.0, 30), (8544.44, 2.6, 30), (8664.52, 2.2, 30),
])
#: MgH under Mg b in the old population's K giants and dwarfs (heads at 5211 and 4780 A, degraded to the
#: violet; optical depth at the 5211 A head, times the galaxy's metals): the Mg2 trough of ellipticals
OLD_MGH_HEADS, OLD_MGH_SCALES, OLD_MGH_SHARES = np.array([5211.0, 4780.0]), np.array([130.0, 100.0]), np.array([1.0, 0.2])
OLD_MGH_DEPTH = 0.25
#: the young population's share of the light at 5500 A, per kind, and its colour temperature (K): set so
#: that star-forming galaxies have the rest-frame colours of SDSS's blue sequence (g - r ~0.2-0.65; Strateva
#: et al. 2001, Baldry et al. 2004), which hotter, larger young shares overshot (docs/families.md)
YOUNG_FRACTION = {"PASSIVE": (0.0, 0.05), "POSTSTARBURST": (0.3, 0.6), "STARFORMING": (0.2, 0.7), "MIXED": (0.2, 0.5),
                  "SEYFERT": (0.1, 0.5), "LINER": (0.0, 0.2)}
YOUNG_TEFF = (9000.0, 16000.0)
HA, HB = 6564.61, 4862.68
#: emission lines (vacuum A)
OII_A, OII_B, NEV, NEIII, OIII_A, OIII_B = 3727.09, 3729.88, 3426.85, 3869.86, 4960.30, 5008.24
OI_A, OI_B, NII_A, NII_B, SII_A, SII_B, HEI = 6302.05, 6365.54, 6549.86, 6585.27, 6718.29, 6732.67, 5877.25
BALMER_DECREMENT = np.array([2.86, 1.0, 0.468, 0.259, 0.159, 0.105])  #: case B, relative to H-beta


#: the old population's blackbody mix (K, G and F giants and dwarfs, at colour temperatures), with the
#: blue end dimmed by unresolved metal lines, and the shape of the 4000 A break, tabulated once in the
#: rest frame. The temperatures give the colours of nearby ellipticals, g-r ~ 0.77, g-i ~ 1.2 (AB).
OLD_CONTINUUM = (0.55 * planck(REST_WAVE, 4400.0) + 0.35 * planck(REST_WAVE, 5500.0) + 0.10 * planck(REST_WAVE, 7200.0)) \
    * np.exp(-0.3 * (3800.0 / REST_WAVE) ** 6)
BELOW_BREAK = 1.0 - smooth_step(REST_WAVE, 3980.0, 40.0)
BELOW_BALMER_JUMP = 1.0 - smooth_step(REST_WAVE, 3650.0, 15.0)
#: the strongest lines of the metal forest: enough to blanket the blue, few enough to stay fast
GALAXY_FOREST = tuple(a[np.argsort(METAL_FOREST[1])[-120:]] for a in METAL_FOREST)


def kauffmann(x: np.ndarray) -> np.ndarray:
    """Kauffmann et al. (2003) upper edge of star-forming galaxies in log [OIII]/Hb vs log [NII]/Ha."""
    return 0.61 / (np.minimum(x, 0.0) - 0.05) + 1.3


def kewley(x: np.ndarray) -> np.ndarray:
    """Kewley et al. (2001) maximum starburst line."""
    return 0.61 / (np.minimum(x, 0.4) - 0.47) + 1.19


def starlight(rng: np.random.Generator, rest: np.ndarray, rows: np.ndarray, z: np.ndarray, young_fraction: np.ndarray,
              young_teff: np.ndarray, young_balmer_ew: np.ndarray, sigma_v: np.ndarray, ebv_stars: np.ndarray) -> np.ndarray:
    """Old + young population continuum with absorption at redshift z, normalised near rest 5500 A."""
    n = len(rows)
    d4000 = rng.uniform(1.6, 2.2, n)[:, None]
    metal = rng.uniform(0.7, 1.3, n)[:, None]
    t = rest
    old = redshifted(OLD_CONTINUUM, z) * (1.0 - (1.0 - 1.1 / d4000) * redshifted(BELOW_BREAK, z))
    young = planck(t, young_teff[:, None]) * (1.0 - 0.3 * redshifted(BELOW_BALMER_JUMP, z))
    one = (1.0 + z)[:, None]
    local = np.arange(n)
    acc_old = LineAccumulator(n)
    r = np.broadcast_to(local[:, None], (n, len(OLD_LINES)))
    add_strong_lines(acc_old, r, OLD_LINES[None, :, 0] * one, OLD_LINES[None, :, 0],
                     np.hypot(sigma_v[:, None], OLD_LINES[None, :, 2]), metal * OLD_LINES[None, :, 1])
    fw, fe = GALAXY_FOREST
    acc_old.add(np.broadcast_to(local[:, None], (n, fw.size)), fw[None, :] * one, np.hypot(sigma_v[:, None], 10.0),
                equivalent_width_area(metal * fe[None, :] * 1.5, fw))
    tau_old = acc_old.render() + band_heads(t, np.array([6159.0, 7055.0]), np.array([150.0, 180.0]),
                                            np.broadcast_to(np.array([0.02, 0.03]), (n, 2)), toward_red=True)
    tau_old += band_heads(t, OLD_MGH_HEADS, OLD_MGH_SCALES, OLD_MGH_DEPTH * metal * OLD_MGH_SHARES[None, :],
                          toward_red=False)
    acc_young = LineAccumulator(n)
    ew = young_balmer_ew[:, None] * np.array([0.6, 0.9, 1.0, 1.0, 0.9, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15])[None, :]
    acc_young.add(np.broadcast_to(local[:, None], ew.shape), BALMER[None, :] * one, np.hypot(sigma_v[:, None], 500.0),
                  equivalent_width_area(ew, BALMER))
    f = young_fraction[:, None]
    light = (1.0 - f) * old * np.exp(-tau_old) + f * young * np.exp(-acc_young.render())
    return light * dust(t, ebv_stars[:, None], calzetti_k)


def nebular_ratios(rng: np.random.Generator, kind: np.ndarray) -> dict[str, np.ndarray]:
    """log line ratios per galaxy from its place on the BPT plane and the [SII], [OI] diagrams."""
    n = len(kind)
    x = np.empty(n)
    y = np.empty(n)
    sf, comp, sey, lin = (kind == k for k in ("STARFORMING", "MIXED", "SEYFERT", "LINER"))
    x[sf] = -0.45 - rng.exponential(0.3, sf.sum()).clip(0, 0.9)
    y[sf] = kauffmann(x[sf]) - rng.uniform(0.05, 0.4, sf.sum())
    x[comp] = rng.uniform(-0.4, -0.1, comp.sum())
    y[comp] = rng.uniform(np.maximum(kauffmann(x[comp]), -0.6), kewley(x[comp]))
    x[sey] = rng.uniform(-0.2, 0.4, sey.sum())
    y[sey] = np.minimum(np.maximum(kewley(x[sey]), 1.05 * x[sey] + 0.45) + rng.uniform(0.05, 0.5, sey.sum()), 1.3)
    x[lin] = rng.uniform(-0.15, 0.45, lin.sum())
    lo = np.maximum(np.where(x[lin] < 0.4, kewley(x[lin]), -0.5), -0.5) + 0.02
    hi = np.maximum(1.05 * x[lin] + 0.45 - 0.05, lo)
    y[lin] = rng.uniform(lo, hi)
    other = ~(sf | comp | sey | lin)
    x[other], y[other] = -0.5, -0.5
    table = {"STARFORMING": (-0.45, -1.5, 0.3, -1.0, -9), "MIXED": (-0.4, -1.3, 0.35, -0.8, -9),
             "SEYFERT": (-0.3, -1.0, 0.4, -0.2, -0.7), "LINER": (-0.1, -0.8, 0.6, -0.6, -9)}
    out = {"n2ha": x, "o3hb": y}
    for j, key in enumerate(("s2ha", "o1ha", "o2hb", "ne3hb", "ne5hb")):
        mean = np.array([table.get(k, (-9,) * 5)[j] for k in kind])
        out[key] = mean + rng.normal(0, 0.15, n)
    return out


def draw_and_render(rng: np.random.Generator, n: int, z_max: float = 0.5) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """n galaxies: (n, N_WORK) noiseless flux and truth columns subclass, template, z."""
    kinds = np.array(list(SUBCLASS_WEIGHTS))
    p = np.array(list(SUBCLASS_WEIGHTS.values()))
    kind = kinds[rng.choice(len(kinds), n, p=p / p.sum())]
    z = np.where(rng.uniform(0, 1, n) < 0.1, rng.uniform(0.2, z_max, n), rng.gamma(2.2, 0.045, n))
    z = np.clip(z, 0.002, z_max)
    f = rng.uniform(np.array([YOUNG_FRACTION[k][0] for k in kind]), np.array([YOUNG_FRACTION[k][1] for k in kind]))
    psb = kind == "POSTSTARBURST"
    young_teff = np.where(psb, rng.uniform(8500, 11000, n), rng.uniform(*YOUNG_TEFF, n))
    young_ew = np.where(psb, rng.uniform(8, 12, n), rng.uniform(3, 6, n))
    passive_like = np.isin(kind, ["PASSIVE", "POSTSTARBURST", "LINER"])
    sigma_v = np.where(passive_like, rng.uniform(100, 350, n), rng.uniform(50, 150, n))
    ebv_gas = np.where(passive_like, rng.exponential(0.05, n), rng.exponential(0.25, n))
    rest = WORK_WAVE[None, :] / (1.0 + z[:, None])
    rows = np.arange(n)
    flux = starlight(rng, rest, rows, z, f, young_teff, young_ew, sigma_v, 0.44 * ebv_gas)

    # nebular lines: H-alpha's equivalent width sets the scale, case-B ratios and the BPT place the rest
    em_kind = ~np.isin(kind, ["PASSIVE", "POSTSTARBURST"])
    ew_ha = np.zeros(n)
    rng_ew = {"STARFORMING": (8, 150), "MIXED": (4, 40), "SEYFERT": (4, 60), "LINER": (0.8, 8)}
    for k, (lo, hi) in rng_ew.items():
        sel = kind == k
        ew_ha[sel] = np.exp(rng.uniform(np.log(lo), np.log(hi), sel.sum()))
    ratios = nebular_ratios(rng, kind)
    sigma_gas = np.where(np.isin(kind, ["SEYFERT", "LINER"]), rng.uniform(120, 300, n), rng.uniform(50, 130, n))
    agn = np.isin(kind, ["SEYFERT", "LINER"])
    decrement = np.where(agn, 3.1, 2.86)
    ha_cont = np.array([np.interp(HA * (1 + z[i]), WORK_WAVE, flux[i]) for i in range(n)])
    f_ha = ew_ha * ha_cont * em_kind  # observed H-alpha flux (rest-A units, continuum-relative)
    hb = f_ha / decrement  # intrinsic H-beta, in units where dust is applied below relative to H-alpha
    n2 = 10 ** ratios["n2ha"] * f_ha
    o3 = 10 ** ratios["o3hb"] * hb
    s2 = 10 ** ratios["s2ha"] * f_ha
    s2_split = rng.uniform(0.8, 1.4, n)  # [SII] 6718/6733: electron density
    o1 = 10 ** ratios["o1ha"] * f_ha
    o2 = 10 ** ratios["o2hb"] * hb
    o2_split = rng.uniform(0.7, 1.4, n)
    lines = [(HA, f_ha), *[(BALMER[j], hb * BALMER_DECREMENT[j]) for j in range(1, 6)],
             (NII_B, n2), (NII_A, n2 / 3.05), (OIII_B, o3), (OIII_A, o3 / 2.98), (SII_A, s2 * s2_split / (1 + s2_split)),
             (SII_B, s2 / (1 + s2_split)), (OI_A, o1), (OI_B, o1 / 3.0), (OII_A, o2 / (1 + o2_split)),
             (OII_B, o2 * o2_split / (1 + o2_split)), (NEIII, 10 ** ratios["ne3hb"] * hb), (NEV, 10 ** ratios["ne5hb"] * hb),
             (HEI, 0.035 * f_ha)]
    wave = np.array([w for w, _ in lines])
    fl = np.stack([v for _, v in lines], axis=1)
    fl = fl * 10.0 ** (-0.4 * ebv_gas[:, None] * (calzetti_k(wave)[None, :] - calzetti_k(HA)))
    acc = LineAccumulator(n)
    acc.add(np.broadcast_to(rows[:, None], fl.shape), wave[None, :] * (1 + z[:, None]), sigma_gas[:, None],
            equivalent_width_area(fl, wave[None, :]))
    flux = flux + acc.render()
    template = np.char.add("physical-galaxy:", kind.astype(str))
    return flux, {"subclass": kind.astype(str), "template": template.astype(str), "z": z}
