"""QSOs: a broken power law, broad and narrow emission lines, an Fe II pseudo-continuum of gaussian
multiplets, the Balmer continuum, SMC-like dust, host-galaxy starlight at low z, BAL troughs, and a
Lyman-alpha/beta forest of Poisson absorbers rescaled to the observed mean transmission."""

from __future__ import annotations

import numpy as np

from .common import (C_KMS, REST_LOGLAM, REST_WAVE, STEP, WORK_WAVE, LineAccumulator, dust, equivalent_width_area,
                     log_uniform, planck, redshifted, smc_k, smooth_step)
from .galaxies import starlight

#: broad lines: rest wave (vacuum A), equivalent-width range (A, rest)
BROAD = np.array([(1215.67, 40, 150), (1240.14, 5, 25), (1399.8, 4, 15), (1549.06, 15, 70), (1640.42, 1, 5),
                  (1908.73, 8, 30), (2799.12, 15, 60), (4102.89, 3, 10), (4341.68, 8, 25), (4862.68, 30, 120),
                  (5877.25, 2, 8), (6564.61, 150, 450)])
NARROW = np.array([(5008.24, 3, 40), (4960.30, 1, 13), (3728.5, 1, 6), (3426.85, 0.5, 3), (3869.86, 1, 4)])
LYA, LYB, LYMAN_LIMIT = 1215.67, 1025.72, 911.75
BAL_LINES = np.array([1215.67, 1240.14, 1399.8, 1549.06])


def _fe_ii_lines() -> tuple[np.ndarray, np.ndarray]:
    """Fixed positions and weights of the Fe II multiplets (UV 2200-3090 A, optical 4400-5400 A)."""
    r = np.random.default_rng(26_000)
    uv = np.concatenate([r.uniform(2200, 2500, 40), r.uniform(2400, 2660, 60), r.uniform(2700, 3090, 60)])
    opt = np.concatenate([r.uniform(4420, 4700, 30), r.uniform(4900, 5050, 8), r.uniform(5150, 5400, 30)])
    wave = np.concatenate([uv, opt])
    weight = np.concatenate([r.uniform(0.3, 1.0, uv.size) / uv.size, r.uniform(0.3, 1.0, opt.size) / opt.size])
    return wave, weight, wave < 4000


FE_WAVE, FE_WEIGHT, FE_IS_UV = _fe_ii_lines()
FE_FWHM = np.geomspace(1500.0, 12000.0, 10)  #: widths at which the Fe II templates are tabulated


def _fe_ii_templates() -> tuple[np.ndarray, np.ndarray]:
    """(len(FE_FWHM), N_REST) UV and optical Fe II profiles, unit total equivalent width each, rest frame."""
    out = []
    for part in (FE_IS_UV, ~FE_IS_UV):
        acc = LineAccumulator(len(FE_FWHM), loglam0=float(REST_LOGLAM[0]), width=REST_LOGLAM.size)
        w = FE_WEIGHT[part] / FE_WEIGHT[part].sum()
        acc.add(np.repeat(np.arange(len(FE_FWHM)), part.sum()), np.tile(FE_WAVE[part], len(FE_FWHM)),
                np.repeat(FE_FWHM / 2.355, part.sum()), np.tile(equivalent_width_area(w, FE_WAVE[part]), len(FE_FWHM)))
        out.append(acc.render())
    return out[0], out[1]


FE_UV, FE_OPTICAL = _fe_ii_templates()
BALMER_CONTINUUM = planck(REST_WAVE, 15000.0) * (1.0 - np.exp(-np.minimum((REST_WAVE / 3646.0) ** 3, 50.0))) \
    * (1.0 - smooth_step(REST_WAVE, 3646.0, 25.0))


def draw_redshift(rng: np.random.Generator, n: int) -> np.ndarray:
    u = rng.uniform(0, 1, n)
    return np.where(u < 0.12, rng.uniform(0.05, 0.3, n), np.where(u < 0.85, rng.uniform(0.3, 2.5, n), rng.uniform(2.5, 4.5, n)))


def lyman_forest(rng: np.random.Generator, z: np.ndarray) -> np.ndarray:
    """(n, N_WORK) transmission of the intergalactic medium in front of QSOs at redshifts z."""
    n = len(z)
    trans = np.ones((n, WORK_WAVE.size))
    need = np.flatnonzero(z > 1.95)
    if need.size == 0:
        return trans
    acc = LineAccumulator(need.size)
    z_lo = WORK_WAVE[0] / LYA - 1.0 - 0.1
    for j, i in enumerate(need):
        zq = z[i] - 3000.0 / C_KMS * (1 + z[i])  # proximity zone: the QSO ionises its surroundings
        lo = max(z_lo, 1.5)
        if zq <= lo:
            continue
        expected = 200.0 * ((1 + zq) ** 3.5 - (1 + lo) ** 3.5) / (3.5 * 3.5**2.5)  # dN/dz = 200 ((1+z)/3.5)^2.5
        k = rng.poisson(expected)
        u = rng.uniform(0, 1, k)  # inverse CDF of dN/dz
        za = ((1 + lo) ** 3.5 + u * ((1 + zq) ** 3.5 - (1 + lo) ** 3.5)) ** (1 / 3.5) - 1
        logn = np.log10(10 ** 12.8 * (1 - rng.uniform(0, 1, k) * (1 - 10 ** (-0.6 * 4.5))) ** (-1 / 0.6))
        b = np.clip(rng.normal(28, 8, k), 15, 60)
        tau0_area = 10 ** logn * 7.58e-13 * b * np.sqrt(2 * np.pi) / (b / np.sqrt(2))  # tau0 x sigma x sqrt(2 pi), in km/s
        pix_area = tau0_area / (C_KMS * np.log(10) * STEP)
        acc.add(np.full(k, j), LYA * (1 + za), b / np.sqrt(2), pix_area)
        acc.add(np.full(k, j), LYB * (1 + za), b / np.sqrt(2), pix_area * 0.16)
    tau = acc.render()
    # rescale the optical depth in chunks so the mean transmission follows tau_eff = 0.0018 (1+z)^3.92
    chunk = 64
    nchunk = WORK_WAVE.size // chunk
    t = tau[:, :nchunk * chunk].reshape(need.size, nchunk, chunk)
    zabs = WORK_WAVE[:nchunk * chunk].reshape(nchunk, chunk).mean(axis=1) / LYA - 1.0
    target = np.exp(-0.0018 * (1 + zabs) ** 3.92)[None, :]
    scale = np.ones((need.size, nchunk))
    has = t.sum(axis=2) > 0
    for _ in range(8):
        e = np.exp(-scale[..., None] * t)
        g = e.mean(axis=2) - target
        dg = -(t * e).mean(axis=2)
        scale = np.where(has & (dg < 0), np.clip(scale - g / np.minimum(dg, -1e-9), 0.0, 50.0), scale)
    tau[:, :nchunk * chunk] = (t * scale[..., None]).reshape(need.size, -1)
    rest = WORK_WAVE[None, :] / (1.0 + z[need][:, None])
    tau += rng.uniform(0.5, 4.0, need.size)[:, None] * (1.0 - smooth_step(rest, LYMAN_LIMIT, 3.0)) * (rest / LYMAN_LIMIT) ** 3
    trans[need] = np.exp(-tau)
    return trans


def draw_and_render(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """n QSOs: (n, N_WORK) noiseless flux and truth columns subclass, template, z."""
    z = draw_redshift(rng, n)
    rows = np.arange(n)
    one = (1 + z)[:, None]
    rest = WORK_WAVE[None, :] / one
    alpha1 = rng.normal(-0.5, 0.3, n)[:, None]
    alpha2 = alpha1 - rng.uniform(0.5, 1.5, n)[:, None]
    brk = rng.uniform(4500, 5500, n)[:, None]
    # f_lambda ~ lambda^(-2 - alpha_nu), continuous at the break
    cont = np.where(rest < brk, (rest / brk) ** (-2 - alpha1), (rest / brk) ** (-2 - alpha2))
    cont_at = lambda w: np.where(w < brk, (w / brk) ** (-2 - alpha1), (w / brk) ** (-2 - alpha2))  # noqa: E731
    cont = cont + rng.uniform(0.05, 0.4, n)[:, None] * cont_at(np.full((n, 1), 3000.0)) * redshifted(BALMER_CONTINUUM, z) \
        / planck(np.array(3000.0), 15000.0)

    acc = LineAccumulator(n)
    fwhm = log_uniform(rng, 1500, 10000, n)[:, None] * rng.uniform(0.8, 1.2, (n, len(BROAD)))
    strength = 10 ** rng.normal(0, 0.15, n)[:, None]  # weak- and strong-lined QSOs
    ew = np.exp(rng.uniform(np.log(BROAD[:, 1]), np.log(BROAD[:, 2]), (n, len(BROAD)))) * strength
    shift = np.zeros((n, len(BROAD)))
    shift[:, 3] = -rng.uniform(0, 1500, n)  # C IV is often blueshifted
    centre = BROAD[None, :, 0] * one * (1 + shift / C_KMS)
    area = equivalent_width_area(ew, BROAD[None, :, 0]) * cont_at(np.broadcast_to(BROAD[None, :, 0], ew.shape))
    r = np.broadcast_to(rows[:, None], ew.shape)
    sigma = fwhm / 2.355
    acc.add(r, centre, sigma * 0.7, 0.6 * area)  # a peaky core and broad wings, as observed profiles
    acc.add(r, centre, sigma * 1.8, 0.4 * area)
    narrow_sigma = rng.uniform(150, 400, n)[:, None] / 2.355 * 2
    ew_n = np.exp(rng.uniform(np.log(NARROW[:, 1]), np.log(NARROW[:, 2]), (n, len(NARROW))))
    ew_n[:, 1] = ew_n[:, 0] / 2.98
    acc.add(np.broadcast_to(rows[:, None], ew_n.shape), NARROW[None, :, 0] * one, narrow_sigma,
            equivalent_width_area(ew_n, NARROW[None, :, 0]) * cont_at(np.broadcast_to(NARROW[None, :, 0], ew_n.shape)))
    # Fe II: many multiplets at the broad-line width (nearest tabulated); UV and optical strengths drawn apart
    k = np.abs(np.log(fwhm[:, 9:10] / FE_FWHM[None, :])).argmin(axis=1)
    ew_uv, ew_opt = rng.uniform(30, 100, n)[:, None], rng.uniform(10, 60, n)[:, None]
    fe = cont * (ew_uv * redshifted(FE_UV, z, k) + ew_opt * redshifted(FE_OPTICAL, z, k))
    flux = cont + fe + acc.render()

    # BAL troughs (velocity boxes with soft edges blueward of the high-ionisation lines) in ~13% of z > 1.5
    bal = (z > 1.5) & (rng.uniform(0, 1, n) < 0.13)
    for i in np.flatnonzero(bal):
        vmin, width, depth = rng.uniform(0, 5000), rng.uniform(2000, 20000), rng.uniform(0.3, 0.9)
        v = (1.0 - rest[i][None, :] / BAL_LINES[:, None]) * C_KMS  # outflow velocity relative to each line
        box = smooth_step(v, vmin, 300.0) * (1.0 - smooth_step(v, vmin + width, 800.0))
        flux[i] *= np.prod(1.0 - depth * box, axis=0)
    flux *= dust(rest, rng.exponential(0.03, n)[:, None], smc_k)
    # host galaxy at low z: old-dominated starlight of the same redshift, a fraction of the light at rest 5500 A
    host_f = np.where(z < 0.3, rng.uniform(0.15, 0.7, n), np.where(z < 0.8, rng.uniform(0.0, 0.3, n), 0.0))
    h = np.flatnonzero(host_f > 0)
    if h.size:
        light = starlight(rng, rest[h], h, z[h], rng.uniform(0.0, 0.3, h.size), rng.uniform(12000, 20000, h.size),
                          rng.uniform(3, 6, h.size), rng.uniform(100, 250, h.size), rng.exponential(0.1, h.size))
        qso_5500 = np.array([np.interp(5500.0, rest[i], flux[i]) for i in h])
        gal_5500 = np.array([np.interp(5500.0, rest[i], light[k]) for k, i in enumerate(h)])
        flux[h] += light * (host_f[h] / (1 - host_f[h]) * qso_5500 / gal_5500)[:, None]
    flux *= lyman_forest(rng, z)
    subclass = np.where(bal, "BAL", "BROADLINE")
    template = np.where(host_f > 0, "physical-qso:powerlaw+host", "physical-qso:powerlaw")
    return flux, {"subclass": subclass.astype(str), "template": template.astype(str), "z": z}
