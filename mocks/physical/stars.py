"""Stars from first principles: a blackbody at Teff with line blanketing, Balmer lines that peak at A0,
metal lines and Ca II H&K that grow towards K, TiO/CaH/VO bands in M stars, C2/CN bands in carbon stars,
DA/DC white dwarfs, and the emission-line stars that look most like galaxies (Be, dMe, CVs)."""

from __future__ import annotations

import numpy as np

from .common import (C_KMS, WORK_WAVE, LineAccumulator, add_strong_lines, band_heads, ccm_k, dust, equivalent_width_area, log_uniform,
                     planck, smooth_step)

#: Kinds of star and how often each is drawn: LAMOST is mostly F, G and K.
KIND_WEIGHTS = {"O": 0.003, "B": 0.03, "A": 0.09, "F": 0.25, "G": 0.28, "K": 0.22, "M": 0.07,
                "WD": 0.015, "C": 0.008, "Be": 0.012, "dMe": 0.015, "CV": 0.007}
LETTERS = "OBAFGKM"
SUBTYPE_RANGE = {"O": (3, 9), "B": (0, 9), "A": (0, 9), "F": (0, 9), "G": (0, 9), "K": (0, 7), "M": (0, 6)}
#: spectral code (10 x letter index + subtype) -> Teff
_CODE = np.array([3, 5, 9, 10, 12, 15, 18, 20, 25, 30, 35, 40, 45, 50, 55, 57, 60, 63, 66, 69], dtype=float)
_TEFF = np.array([44000, 40000, 32000, 30000, 21000, 15500, 12000, 9700, 8100, 7200, 6500, 5900, 5600, 5250, 4400,
                  4000, 3850, 3400, 2900, 2500], dtype=float)

BALMER = np.array([6564.61, 4862.68, 4341.68, 4102.89, 3971.20, 3890.16, 3836.47, 3798.98, 3771.70, 3751.22,
                   3735.43, 3723.00])
BALMER_EW_A0 = 1.25 * np.array([14, 16, 15, 14, 12, 10, 8, 6, 5, 4, 3, 2.5])  #: A0 V equivalent widths (A)
CA_K, CA_H = 3934.78, 3969.59
NA_D2, NA_D1 = 5891.58, 5897.56
#: metal lines: rest wave, EW at full metal strength, intrinsic width (km/s), extra growth in cool stars;
#: strengths set so line depths of F, G, K mocks at LAMOST resolution are near the real DR8 stars'
METALS = np.array([
    (CA_K, 18.0, 30, 0.0), (CA_H, 14.0, 30, 0.0), (4227.92, 1.5, 20, 2.0), (4305.0, 14.0, 400, 0.2),
    (4383.55, 1.2, 20, 0.3), (4668.0, 1.0, 150, 0.3), (5168.76, 1.2, 20, 1.5), (5174.13, 1.8, 20, 1.5),
    (5185.05, 2.2, 20, 1.5), (5271.0, 1.3, 30, 0.5), (5336.0, 1.0, 30, 0.5), (NA_D2, 2.0, 20, 0.0),
    (NA_D1, 1.8, 20, 0.0), (8500.36, 1.0, 25, 0.0), (8544.44, 2.5, 25, 0.0), (8664.52, 2.0, 25, 0.0),
])
NA_D = np.isin(METALS[:, 0], (NA_D2, NA_D1))  #: METALS rows of Na D, which grows with its own law (below)
#: Na D grows from late G to M (``NA_D_GROWTH`` per 1000 K below ``NA_D_TEFF``, times ``NA_D_SCALE``), and
#: Ca II H and K, seen against a continuum fitted with the lines clipped away, fade from ``CA_HK_FADE_TEFF``
#: down, as they do in the real LAMOST K5-M0 stars: both set by those stars' bands alone
#: (training/star_realism.py, docs/families.md).
NA_D_SCALE, NA_D_TEFF, NA_D_GROWTH = 0.85, 5600.0, 1.8
CA_HK_FADE_TEFF, CA_HK_FADE_SPAN, CA_HK_FLOOR = 4700.0, 1000.0, 0.2
HE_I = np.array([4027.3, 4472.7, 5877.3, 6679.99])
HE_II = np.array([4687.02, 4542.86, 5413.03])
TIO_HEADS = np.array([4762, 4955, 5168, 5449, 5849, 6159, 6653, 7055, 7589, 8433], dtype=float)
TIO_SCALES = np.array([80, 90, 100, 120, 120, 150, 150, 180, 150, 100], dtype=float)
TIO_DEPTHS = np.array([0.3, 0.35, 0.45, 0.4, 0.3, 0.5, 0.45, 0.7, 0.5, 0.3])
CAH_HEADS, CAH_SCALES, CAH_DEPTHS = np.array([6385.0, 6830.0]), np.array([60.0, 80.0]), np.array([0.3, 0.3])
#: MgH A-X (heads at 5211 and 4780 A, degraded to the violet): with Mg b it makes the 4950-5210 A trough
#: of K and M stars, deeper in dwarfs (gravity-sensitive)
MGH_HEADS, MGH_SCALES, MGH_DEPTHS = np.array([5211.0, 4780.0]), np.array([130.0, 100.0]), np.array([1.0, 0.2])
MGH_TEFF = 5300.0  # K: the band appears in late G and K stars and grows to M
MGH_DWARF, MGH_GIANT = 0.6, 0.35  # optical depth at the 5211 A head, reached 900 K below MGH_TEFF
#: Mg b's wings with the Fe I lines about it: the 4950-5210 A trough that real G stars show before MgH
#: (optical depth at 5211 A, growing from MG_B_BLEND_TEFF over MG_B_BLEND_SPAN K, times the metals)
MG_B_BLEND_TEFF, MG_B_BLEND_SPAN, MG_B_BLEND_DEPTH = 6000.0, 700.0, 0.45
#: Ca II H and K grow from G0 to K (times 1 + CA_HK_GROWTH over CA_HK_GROWTH_SPAN K below CA_HK_GROWTH_TEFF)
CA_HK_GROWTH_TEFF, CA_HK_GROWTH_SPAN, CA_HK_GROWTH = 5500.0, 700.0, 0.5
TIO_TEFF = 3900.0  # K: TiO bands from here down (real K7 stars show none, M0 stars a little)
VO_HEADS, VO_SCALES, VO_DEPTHS = np.array([7400.0, 7865.0]), np.array([100.0, 150.0]), np.array([0.4, 0.4])
SWAN_HEADS, SWAN_SCALES = np.array([4737.0, 5165.0, 5636.0, 6191.0]), np.array([120.0, 150.0, 180.0, 200.0])
SWAN_DEPTHS = np.array([0.8, 0.9, 0.7, 0.4])
#: CN violet system (heads at 4216 and 3883 A, degraded to the violet): with the Fe I and Ca I lines under
#: it, the depressed 4100-4216 and 3850-3883 A of G and K stars, stronger in giants
CN_VIOLET_HEADS, CN_VIOLET_SCALES, CN_VIOLET_DEPTHS = np.array([4216.0, 3883.0]), np.array([100.0, 60.0]), np.array([0.7, 1.75])
CN_VIOLET_TEFF = 6300.0  # K: the bands appear in late F and G stars and reach full strength 1500 K cooler
CN_VIOLET_TEFF_COOL = 3700.0  # K: the 3883 A band fades again from 700 K above this (real K7-M0 stars' 3800-3900 A
# is not held down); what holds their 4100-4216 A down (the 4216 A band's place here) stays
CN_VIOLET_DWARF, CN_VIOLET_GIANT = 1.0, 1.5
CN_HEADS = np.array([6926.0, 7088.0, 7259.0, 7876.0, 8067.0, 8320.0])
CN_SCALES, CN_DEPTHS = np.array([60.0, 60, 70, 100, 100, 90]), np.array([0.4, 0.4, 0.4, 0.5, 0.5, 0.4])


def _metal_forest() -> tuple[np.ndarray, np.ndarray]:
    """A fixed list of weak metal lines, denser to the blue, that blankets cool stars' blue spectra."""
    r = np.random.default_rng(4_000_000)
    wave = 1.0 / r.uniform(1 / 6800.0, 1 / 3680.0, 500)
    ew = np.exp(r.uniform(np.log(0.03), np.log(0.35), 500)) * (4500.0 / wave) ** 1.5
    return wave, ew


METAL_FOREST = _metal_forest()


def teff_of(code: np.ndarray) -> np.ndarray:
    return np.exp(np.interp(code, _CODE, np.log(_TEFF)))


def balmer_strength(teff: np.ndarray) -> np.ndarray:
    """1 at A0 (9700 K), falling faster to the cool side than to the hot one."""
    x = np.log10(teff / 9700.0)
    return np.exp(-0.5 * (x / np.where(x < 0, 0.12, 0.2)) ** 2)


def metal_strength(teff: np.ndarray) -> np.ndarray:
    return np.clip((7800.0 - teff) / 2600.0, 0.0, 1.5)


def coolness(teff: np.ndarray) -> np.ndarray:
    return np.clip((4600.0 - teff) / 1000.0, 0.0, 1.5)


#: Teff -> colour temperature of the optical continuum: real cool stars are bluer than a blackbody at
#: their Teff (H- opacity). Set so the 6900/4500 A and 8450/4500 A flux ratios of the A, F, G and K
#: mocks match those of the real LAMOST DR8 stars in ../shared (16-84% ranges overlapping); A stars
#: against the real DR10 A stars' median spectrum.
_COLOUR_TEFF = np.array([3000.0, 4500.0, 5600.0, 6500.0, 8500.0, 10000.0])
_COLOUR_FACTOR = np.array([1.2, 1.2, 1.1, 1.1, 1.18, 1.12])


def colour_temperature(teff: np.ndarray) -> np.ndarray:
    return teff * np.interp(teff, _COLOUR_TEFF, _COLOUR_FACTOR)


def continuum(rest: np.ndarray, teff: np.ndarray, blanket: np.ndarray) -> np.ndarray:
    """Continuum at the colour temperature with the blue suppressed by unresolved metal lines
    (``blanket`` >= 0) and, in A and B stars, by the crowding high Balmer lines below 3800 A (the
    Balmer jump seen at LAMOST resolution); arrays broadcast."""
    return planck(rest, colour_temperature(teff)) * np.exp(-blanket * (4000.0 / rest) ** 4) \
        * (1.0 - 0.3 * balmer_strength(teff) * (1.0 - smooth_step(rest, 3790.0, 30.0)))


def absorption_lines(acc: LineAccumulator, rows: np.ndarray, z: np.ndarray, teff: np.ndarray, metal: np.ndarray,
                     broad_kms: np.ndarray, wing: np.ndarray, balmer_scale: np.ndarray | float = 1.0) -> None:
    """Balmer, metal, He and forest lines as optical depth (equivalent width used as the tau area)."""
    one = 1.0 + z[:, None]
    b = balmer_strength(teff)[:, None] * BALMER_EW_A0[None, :] * np.asarray(balmer_scale).reshape(-1, 1)
    # pressure-broadened Balmer lines: a narrow core and wide wings (wider in dwarfs, hotter stars)
    wing_kms = wing[:, None] * 1300.0
    r = np.broadcast_to(rows[:, None], b.shape)
    acc.add(r, BALMER[None, :] * one, np.hypot(broad_kms[:, None], 120.0), equivalent_width_area(0.35 * b, BALMER))
    acc.add(r, BALMER[None, :] * one, np.hypot(broad_kms[:, None], wing_kms), equivalent_width_area(0.65 * b, BALMER))
    m = metal_strength(teff)[:, None] * metal[:, None]
    ew = m * METALS[None, :, 1] * (1.0 + METALS[None, :, 3] * coolness(teff)[:, None])
    ew[:, :2] += 0.4  # Ca II H&K (and interstellar Ca) are seen even in A stars
    # and they grow fast from A to F, before the other metal lines
    ew[:, :2] += np.array([5.0, 4.0])[None, :] * np.clip((9500.0 - teff) / 2500.0, 0.0, 1.0)[:, None] * metal[:, None]
    ew[:, NA_D] *= NA_D_SCALE * (1.0 + NA_D_GROWTH * np.clip((NA_D_TEFF - teff) / 1000.0, 0.0, 2.5))[:, None]
    ew[:, :2] *= (1.0 + CA_HK_GROWTH * np.clip((CA_HK_GROWTH_TEFF - teff) / CA_HK_GROWTH_SPAN, 0.0, 1.0))[:, None]
    ew[:, :2] *= np.clip(1.0 - (CA_HK_FADE_TEFF - teff) / CA_HK_FADE_SPAN, CA_HK_FLOOR, 1.0)[:, None]
    r = np.broadcast_to(rows[:, None], ew.shape)
    add_strong_lines(acc, r, METALS[None, :, 0] * one, METALS[None, :, 0], np.hypot(broad_kms[:, None], METALS[None, :, 2]), ew)
    he = np.exp(-0.5 * (np.log10(teff / 20000.0) / 0.08) ** 2)[:, None] * np.array([0.8, 1.2, 1.0, 0.6])[None, :]
    r = np.broadcast_to(rows[:, None], he.shape)
    acc.add(r, HE_I[None, :] * one, np.hypot(broad_kms[:, None], 30.0), equivalent_width_area(he, HE_I))
    he2 = np.clip((teff - 30000.0) / 10000.0, 0.0, 1.0)[:, None] * np.array([0.6, 0.5, 0.5])[None, :]
    acc.add(np.broadcast_to(rows[:, None], he2.shape), HE_II[None, :] * one, np.hypot(broad_kms[:, None], 30.0),
            equivalent_width_area(he2, HE_II))
    fw, fe = METAL_FOREST
    f = (m * (1.0 + coolness(teff)[:, None])) * fe[None, :]
    acc.add(np.broadcast_to(rows[:, None], f.shape), fw[None, :] * one, np.hypot(broad_kms[:, None], 10.0),
            equivalent_width_area(f, fw))


def emission(acc: LineAccumulator, rows: np.ndarray, z: np.ndarray, rest: np.ndarray, ew: np.ndarray, sigma_kms: np.ndarray,
             cont_at_line: np.ndarray, split_kms: np.ndarray | None = None) -> None:
    """Emission lines of rest equivalent width ``ew`` (n, L); double-peaked when ``split_kms`` > 0."""
    area = equivalent_width_area(ew, rest[None, :]) * cont_at_line
    r = np.broadcast_to(rows[:, None], ew.shape)
    if split_kms is None:
        acc.add(r, rest[None, :] * (1 + z[:, None]), sigma_kms, area)
        return
    for sign in (-1.0, 1.0):
        shift = 1.0 + sign * split_kms[:, None] / C_KMS
        acc.add(r, rest[None, :] * (1 + z[:, None]) * shift, sigma_kms, 0.5 * area)


def draw_and_render(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """n stars: (n, N_WORK) noiseless flux at the telescope and truth columns subclass, template, z."""
    kinds = np.array(list(KIND_WEIGHTS))
    p = np.array(list(KIND_WEIGHTS.values()))
    kind = kinds[rng.choice(len(kinds), n, p=p / p.sum())]
    base = np.where(kind == "Be", "B", np.where(kind == "dMe", "M", kind))
    letter_idx = np.array([LETTERS.find(b) for b in base])
    lo = np.array([SUBTYPE_RANGE.get(b, (0, 0))[0] for b in base])
    hi = np.array([SUBTYPE_RANGE.get(b, (0, 0))[1] for b in base])
    hi = np.where(kind == "Be", 7, hi)
    sub = lo + np.floor(rng.uniform(0, 1, n) * (hi - lo + 1)).astype(int)
    teff = teff_of(10.0 * letter_idx + sub + rng.uniform(0, 1, n))
    wd, carbon, cv = kind == "WD", kind == "C", kind == "CV"
    da = wd & (rng.uniform(0, 1, n) < 0.7)
    teff = np.where(da, log_uniform(rng, 7000, 40000, n), np.where(wd, log_uniform(rng, 4500, 12000, n), teff))
    teff = np.where(carbon, rng.uniform(2800, 3600, n), np.where(cv, log_uniform(rng, 8000, 25000, n), teff))
    feh = np.clip(rng.normal(-0.2, 0.3, n), -2.0, 0.5)
    metal = 10.0 ** (0.7 * feh)
    giant = rng.uniform(0, 1, n) < np.where(np.isin(base, ["G", "K"]), 0.4, 0.1)
    vsini = np.where(teff > 7000, rng.uniform(30, 250, n), rng.uniform(0, 15, n))
    vsini = np.where(kind == "Be", rng.uniform(150, 350, n), vsini)
    broad = np.hypot(vsini / 1.7, 12.0)
    wing = np.where(giant, 0.5, 1.0) * rng.uniform(0.7, 1.2, n)
    halo = rng.uniform(0, 1, n) < 0.15
    rv = np.clip(np.where(halo, rng.normal(0, 130, n), rng.normal(-5, 30, n)), -480, 480)
    z = rv / C_KMS
    ebv = rng.exponential(0.05, n)
    blanket = 0.12 * metal_strength(teff) * metal + 0.8 * carbon

    rest = WORK_WAVE[None, :] / (1.0 + z[:, None])
    rows = np.arange(n)
    acc = LineAccumulator(n)
    normal = ~(wd | carbon | cv)
    absorption_lines(acc, rows[normal], z[normal], teff[normal], metal[normal], broad[normal], wing[normal])
    # DA white dwarfs: only Balmer lines, pressure broadened to tens of A
    if da.any():
        s = balmer_strength(teff[da]) * 2.0 + 0.5
        ew = s[:, None] * BALMER_EW_A0[None, :] * 2.2 * rng.uniform(0.7, 1.2, da.sum())[:, None]
        sig = rng.uniform(1200, 2400, da.sum())[:, None] * np.ones_like(BALMER)[None, :]
        acc.add(np.broadcast_to(rows[da][:, None], ew.shape), BALMER[None, :] * (1 + z[da][:, None]), sig,
                equivalent_width_area(ew, BALMER))
    if carbon.any():  # carbon stars: K-M type metal lines under C2 and CN
        absorption_lines(acc, rows[carbon], z[carbon], teff[carbon], metal[carbon] * 0.7, broad[carbon], wing[carbon])
    tau = acc.render()
    cn_rows = np.flatnonzero((teff < CN_VIOLET_TEFF) & ~wd & ~cv)
    if cn_rows.size:
        t = teff[cn_rows]
        strength = np.where(giant[cn_rows], CN_VIOLET_GIANT, CN_VIOLET_DWARF) * metal[cn_rows] \
            * np.clip((CN_VIOLET_TEFF - t) / 1500.0, 0.0, 1.0)
        depth = strength[:, None] * CN_VIOLET_DEPTHS[None, :]
        depth[:, 1] *= np.clip((t - CN_VIOLET_TEFF_COOL) / 700.0, 0.0, 1.0)
        tau[cn_rows] += band_heads(rest[cn_rows], CN_VIOLET_HEADS, CN_VIOLET_SCALES, depth, toward_red=False)
    k_rows = np.flatnonzero((teff < MGH_TEFF) & ~carbon & ~wd & ~cv)
    if k_rows.size:  # no draw here: every other star and class keeps its spectrum for the same seed
        strength = np.where(giant[k_rows], MGH_GIANT, MGH_DWARF) * np.clip((MGH_TEFF - teff[k_rows]) / 900.0, 0.0, 1.0)
        tau[k_rows] += band_heads(rest[k_rows], MGH_HEADS, MGH_SCALES, strength[:, None] * MGH_DEPTHS[None, :],
                                  toward_red=False)
    blend_rows = np.flatnonzero((teff < MG_B_BLEND_TEFF) & ~carbon & ~wd & ~cv)
    if blend_rows.size:
        strength = MG_B_BLEND_DEPTH * metal[blend_rows] \
            * np.clip((MG_B_BLEND_TEFF - teff[blend_rows]) / MG_B_BLEND_SPAN, 0.0, 1.0)
        tau[blend_rows] += band_heads(rest[blend_rows], MGH_HEADS[:1], MGH_SCALES[:1], strength[:, None], toward_red=False)
    m_rows = np.flatnonzero((teff < TIO_TEFF) & ~carbon & ~wd)
    if m_rows.size:
        r = rest[m_rows]
        t = teff[m_rows]
        tio = np.clip((TIO_TEFF - t) / 1000.0, 0.0, 1.3)[:, None] * TIO_DEPTHS[None, :] * 1.6
        tau[m_rows] += band_heads(r, TIO_HEADS, TIO_SCALES, tio, toward_red=True)
        dwarf = (~giant[m_rows]).astype(float)
        tau[m_rows] += band_heads(r, CAH_HEADS, CAH_SCALES, (dwarf * np.clip((4000 - t) / 800, 0, 1.2))[:, None] * CAH_DEPTHS[None, :], True)
        tau[m_rows] += band_heads(r, VO_HEADS, VO_SCALES, np.clip((3200 - t) / 400, 0, 1)[:, None] * VO_DEPTHS[None, :], True)
    c_rows = np.flatnonzero(carbon)
    if c_rows.size:
        k = rng.uniform(0.6, 1.3, c_rows.size)[:, None]
        tau[c_rows] += band_heads(rest[c_rows], SWAN_HEADS, SWAN_SCALES, k * SWAN_DEPTHS[None, :] * 1.5, toward_red=False)
        tau[c_rows] += band_heads(rest[c_rows], CN_HEADS, CN_SCALES, k * CN_DEPTHS[None, :] * 1.5, toward_red=True)

    cont = continuum(rest, teff[:, None], blanket[:, None])
    cv_rows = np.flatnonzero(cv)
    if cv_rows.size:  # accretion disc: a hot blackbody plus a power law, sometimes the M-dwarf donor
        slope = rng.uniform(1.5, 2.5, cv_rows.size)[:, None]
        disc = 0.5 * cont[cv_rows] + 0.5 * (rest[cv_rows] / 5500.0) ** -slope
        donor = (rng.uniform(0, 1, cv_rows.size) < 0.3)[:, None] * rng.uniform(0.1, 0.5, cv_rows.size)[:, None]
        cont[cv_rows] = disc + donor * planck(rest[cv_rows], 3300.0) * np.exp(-band_heads(
            rest[cv_rows], TIO_HEADS, TIO_SCALES, np.broadcast_to(TIO_DEPTHS * 1.5, (cv_rows.size, TIO_HEADS.size)), True))
    flux = cont * np.exp(-tau)

    em = LineAccumulator(n)
    def cont_at(sel: np.ndarray, lines: np.ndarray) -> np.ndarray:
        rw = np.broadcast_to(lines[None, :], (sel.sum(), lines.size))
        return continuum(rw, teff[sel][:, None], blanket[sel][:, None])
    be = kind == "Be"
    if be.any():
        k = be.sum()
        lines = BALMER[:3]
        ew = rng.uniform(8, 60, k)[:, None] * np.array([1.0, 0.12, 0.04])[None, :]
        split = np.where(rng.uniform(0, 1, k) < 0.5, rng.uniform(80, 200, k), 0.0)[:, None]  # disc seen edge-on
        emission(em, rows[be], z[be], lines, ew, rng.uniform(100, 220, k)[:, None], cont_at(be, lines), split)
    dme = kind == "dMe"
    if dme.any():
        k = dme.sum()
        lines = np.array([BALMER[0], BALMER[1], BALMER[2], CA_K, CA_H])
        ew = rng.uniform(1, 12, k)[:, None] * np.array([1.0, 0.5, 0.35, 0.5, 0.4])[None, :] * (1 + 3 * np.array([0, 0, 0, 1, 1]))
        emission(em, rows[dme], z[dme], lines, ew, np.full((k, 1), 30.0), cont_at(dme, lines))
    if cv_rows.size:
        k = cv_rows.size
        lines = np.concatenate([BALMER[:4], HE_I, HE_II[:1]])
        ha = rng.uniform(15, 150, k)[:, None]
        ratios = np.concatenate([[1.0, 0.6, 0.5, 0.4], [0.05, 0.1, 0.12, 0.07]])[None, :]
        ew = ha * np.concatenate([np.broadcast_to(ratios, (k, ratios.shape[1])), rng.uniform(0, 0.25, (k, 1))], axis=1)
        fwhm = rng.uniform(800, 2500, k)[:, None]
        split = np.where(rng.uniform(0, 1, k) < 0.6, 0.3 * fwhm[:, 0], 0.0)[:, None]
        c_line = np.stack([np.interp(lines * (1 + z[i]), WORK_WAVE, cont[i]) for i in cv_rows])
        emission(em, rows[cv], z[cv], lines, ew, fwhm / 2.355 * np.where(split > 0, 0.6, 1.0), c_line, split)
    flux = flux + em.render()
    flux *= dust(WORK_WAVE[None, :], ebv[:, None], ccm_k)

    letter = np.array([LETTERS[i] if i >= 0 else "" for i in letter_idx])
    subclass = np.char.add(letter, sub.astype(str)).astype(object)
    subclass[kind == "dMe"] = np.char.add(subclass[kind == "dMe"].astype(str), "e")
    for special in ("WD", "C", "Be", "CV"):
        subclass[kind == special] = special
    template = np.char.add("physical-star:", subclass.astype(str)).astype(object)
    template[da] = "physical-star:DA"
    template[wd & ~da] = "physical-star:DC"
    template[giant & np.isin(base, ["G", "K"]) & normal] = np.char.add(template[giant & np.isin(base, ["G", "K"]) & normal].astype(str), "III")
    return flux, {"subclass": subclass.astype(str), "template": template.astype(str), "z": z}
