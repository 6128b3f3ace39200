"""Labelled mock LAMOST spectra: draw a source, redshift it, pass it through the instrument.

Stages per block of mocks, in the order the data flows:

1. ``draw_sources``: class from the class mix, then template set and spectrum, redshift, E(B-V), LSF
   resolution, S/N and noise donor for each mock;
2. ``render``: rest-frame spectra -> IGM (QSOs at z > 2) -> native grid -> LSF -> dust -> calibration;
3. ``instrument.add_noise``: donor noise, sky residuals and masks;
4. a :class:`MockChunk` with the arrays and a truth table.

Determinism: mock number ``i`` of master seed ``s`` comes from block ``i // BLOCK`` whose random
stream is ``SeedSequence([s, block])``, so a million mocks generated in chunks, in any order, on any
number of workers, equal one-shot generation (given the same templates and noise library).

Writing mocks out (a release tree of FITS files, or a Parquet table) is :mod:`.release`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from lamost_classify.contract import SURVEY_PRIOR

from . import instrument
from .igm import igm_transmission, load_igm
from .instrument import N_NATIVE, WAVELENGTH
from .noise_donors import NoiseLibrary, noise_library
from .templates import TemplateLibrary, TemplateSet, load_templates

BALANCED = (1 / 3, 1 / 3, 1 / 3)
BLOCK = 256  #: mocks per random stream (see the module docstring)

#: How often each star template set is used. LAMOST stars are mostly F, G and K dwarfs and giants; the
#: SDSS library adds real spectra of every type (O to M, giants, supergiants, carbon stars, WDs).
STAR_SET_WEIGHTS = {"sdss-star": 0.30, "rr-star-A": 0.08, "rr-star-B": 0.02, "rr-star-F": 0.18,
                    "rr-star-G": 0.18, "rr-star-K": 0.15, "rr-star-M": 0.07, "rr-star-WD": 0.02,
                    "analytic-star": 1.0}
#: Supergiants and bright giants (luminosity class I, II) are rare among LAMOST targets; their narrow
#: Balmer wings made mock A stars stand out against real ones (docs/realism.md round 4).
SUPERGIANT_WEIGHT = 0.1


def is_supergiant(template_name: str) -> bool:
    """True for an SDSS library star of luminosity class I or II ('A1Iae (12953)', 'A2II (39866)')."""
    import re

    m = re.match(r"^sdss-star:(?:sd:?)?[OBAFGKM][\d.]*(?:/[OBAFGKM]?[\d.]*)?(\S*)", template_name)
    rest = m.group(1) if m else ""
    return rest.startswith("I") and not rest.startswith(("III", "IV"))


GALAXY_SET_WEIGHTS = {"rr-galaxy": 0.6, "sdss-galaxy": 0.4, "analytic-galaxy": 1.0}
#: Share of galaxies drawn from passive (no emission line) archetypes: the hard case of red galaxies
#: that look like K stars must be well represented.
PASSIVE_FRACTION = 0.45
QSO_SET_WEIGHTS = {"sdss-qso": 0.4, "rr-qso-loz": 0.35, "rr-qso-hiz": 0.25, "analytic-qso": 1.0}
QSO_Z_RANGE = (0.1, 4.5)

RESOLUTION_MEAN, RESOLUTION_SIGMA = 1800.0, 150.0  # LAMOST LRS R ~ 1800 at 5500 A
#: Flux-calibration tilt (lambda/6000)**beta, beta ~ N(0, TILT_SIGMA). 0.15 made the 8800/4500 A flux
#: ratios of mock A stars spread 20% wider than the real ones' (10-90%); 0.08 with the dust matches.
TILT_SIGMA = 0.08
#: LAMOST's mean flux-calibration residual: the median real dr10-stars-A spectrum (not held out) over
#: the median matched mock, both scaled to 1 at 4500 A, in 50 A bins, running median of 5 bins
#: (docs/realism.md round 5). It holds the +2.5% step of the red arm at the 5900 A join, a +7% blue
#: end and a red end that falls to -8% by 8900 A. Applied to every class: calibration does not know
#: what the object is.
_CALIBRATION_KNOTS = np.arange(3725.0, 9100.0, 50.0)
_CALIBRATION_VALUES = np.array([
    1.077, 1.077, 1.077, 1.064, 1.048, 1.035, 1.005, 1.005, 1.008, 1.008, 1.008, 1.008, 1.003, 1.003, 1.001,
    1.002, 1.002, 1.002, 1.007, 1.008, 1.008, 1.008, 0.999, 0.998, 0.996, 0.986, 0.986, 0.985, 0.985, 0.985,
    0.990, 0.992, 0.992, 0.992, 0.988, 0.988, 0.988, 0.988, 0.991, 0.991, 0.991, 0.989, 0.989, 0.989, 1.007,
    1.014, 1.014, 1.014, 1.014, 1.012, 1.012, 1.014, 1.015, 1.014, 1.014, 1.013, 1.012, 1.010, 1.009, 1.009,
    1.009, 1.005, 1.005, 1.005, 1.002, 0.997, 0.994, 0.994, 0.994, 0.994, 0.994, 0.993, 0.993, 0.992, 0.990,
    0.987, 0.981, 0.981, 0.981, 0.981, 0.981, 0.976, 0.976, 0.976, 0.980, 0.980, 0.980, 0.977, 0.977, 0.976,
    0.976, 0.975, 0.966, 0.964, 0.964, 0.946, 0.937, 0.935, 0.934, 0.927, 0.926, 0.927, 0.927, 0.925, 0.929,
    0.929, 0.888, 0.821])
MEAN_CALIBRATION = np.interp(WAVELENGTH, _CALIBRATION_KNOTS, _CALIBRATION_VALUES).astype(np.float32)

#: Scattered light: share of the object's g flux = N(SCATTER_MEAN, SCATTER_SIGMA) / snr_g (docs/realism.md).
SCATTER_MEAN, SCATTER_SIGMA = 1.5, 2.0


@dataclass
class MockChunk:
    """A block of mocks: native-grid arrays and the truth, row for row."""

    flux: np.ndarray  # (n, 3909) float32
    ivar: np.ndarray  # (n, 3909) float32
    andmask: np.ndarray  # (n, 3909) int32
    truth: dict[str, np.ndarray]  # id, class, subclass, template, z, snr_u..snr_z, ebv, resolution, donor
    wavelength: np.ndarray = field(default_factory=lambda: WAVELENGTH.copy())

    def __len__(self) -> int:
        return len(self.flux)

    def truth_table(self) -> pa.Table:
        return pa.table({k: pa.array(v) for k, v in self.truth.items()})

    def slice(self, start: int, stop: int) -> "MockChunk":
        return MockChunk(self.flux[start:stop], self.ivar[start:stop], self.andmask[start:stop],
                         {k: v[start:stop] for k, v in self.truth.items()})

    @staticmethod
    def concat(chunks: Sequence["MockChunk"]) -> "MockChunk":
        return MockChunk(np.concatenate([c.flux for c in chunks]), np.concatenate([c.ivar for c in chunks]),
                         np.concatenate([c.andmask for c in chunks]),
                         {k: np.concatenate([c.truth[k] for c in chunks]) for k in chunks[0].truth})


def rechunk(block_of: Callable[[int], "MockChunk"], start: int, n: int, chunk_size: int,
            block_size: int = BLOCK) -> Iterator["MockChunk"]:
    """Mocks ``start`` .. ``start+n-1`` as chunks of ``chunk_size``, from fixed blocks of ``block_size``
    (``block_of(b)`` makes block ``b``): chunking never changes which random stream a mock comes from."""
    stop = start + n
    pending: list[MockChunk] = []
    have = 0
    for b in range(start // block_size, math.ceil(stop / block_size)):
        lo, hi = max(start, b * block_size) - b * block_size, min(stop, (b + 1) * block_size) - b * block_size
        pending.append(block_of(b).slice(lo, hi))
        have += hi - lo
        while have >= chunk_size:
            merged = MockChunk.concat(pending)
            yield merged.slice(0, chunk_size)
            rest = merged.slice(chunk_size, len(merged))
            pending, have = ([rest] if len(rest) else []), len(rest)
    if have:
        yield MockChunk.concat(pending)


@dataclass
class Source:
    """What each mock of a block is, before it is rendered (one array entry per mock)."""

    objclass: np.ndarray
    set_name: np.ndarray
    subclass: np.ndarray
    template: np.ndarray
    z: np.ndarray
    ebv: np.ndarray
    resolution: np.ndarray
    snr_g: np.ndarray
    donor: np.ndarray
    rest: dict[str, np.ndarray]  # set name -> (rows of that set, n) rest spectra, in the order of the rows


class Simulator:
    """Holds the templates and the noise library; makes blocks of mocks.

    ``snr_distribution``: 'real' draws snr_g from the S/N distribution of the real files (restricted to
    ``snr_range``); 'donor' uses each noise donor's own SNRG (matched S/N, for comparisons with real
    spectra); 'loguniform' is uniform in log S/N over ``snr_range``.
    ``star_types``: only star templates whose subclass starts with one of these (e.g. ('A',)).
    """

    def __init__(self, templates_dir: str | Path | None = None, noise: str | Path | None = None,
                 class_mix: Sequence[float] = SURVEY_PRIOR, snr_distribution: str | np.ndarray = "real",
                 snr_range: tuple[float, float] = (2.0, 300.0), star_types: Sequence[str] | None = None,
                 templates: TemplateLibrary | None = None, library: NoiseLibrary | None = None,
                 sky_scale: float = 1.0, calibration_scale: float = 1.0, mean_calibration: bool = True):
        self.templates = templates if templates is not None else load_templates(templates_dir)
        root = None if self.templates.source == "analytic" else self.templates.source
        self.igm = load_igm(root)
        self.library = library if library is not None else noise_library(noise)
        mix = np.asarray(class_mix, dtype=np.float64)
        if mix.shape != (3,) or (mix < 0).any() or mix.sum() <= 0:
            raise ValueError(f"class_mix must be 3 non-negative numbers (STAR, GALAXY, QSO), got {class_mix}")
        self.class_mix = mix / mix.sum()
        if not isinstance(snr_distribution, np.ndarray) and snr_distribution not in ("real", "donor", "loguniform"):
            raise ValueError(f"snr_distribution must be 'real', 'donor', 'loguniform' or an array of S/N values, not {snr_distribution!r}")
        self.snr_distribution = snr_distribution
        self.snr_range = snr_range
        self.sky_scale = sky_scale
        self.calibration_scale = calibration_scale
        self.mean_calibration = mean_calibration
        self.star_types = tuple(star_types) if star_types else None
        self._star_pools = self._build_star_pools()
        self._moon = self._moonlight()

    def _moonlight(self) -> np.ndarray:
        """Shape of the scattered light / sky-continuum residual: a solar-type (G) star on the native grid,
        normalised to 1 in the g window (moonlit sky is sunlight)."""
        for s in self.templates.by_class("STAR"):
            g = [i for i, lab in enumerate(s.labels) if lab.startswith("G")]
            if g:
                m = self.noiseless(s.name, 0.0, index=g[0])[0].astype(np.float64)
                return (m / np.median(m[instrument.SNR_WINDOW_G])).astype(np.float32)
        return np.ones(N_NATIVE, np.float32)

    # ---- 1. draw sources ----

    def _build_star_pools(self) -> list[tuple[TemplateSet, np.ndarray, np.ndarray, float]]:
        """(set, usable spectrum indices, their probabilities, set weight) per star set, after star_types."""
        pools = []
        for s in self.templates.by_class("STAR"):
            idx = np.arange(len(s))
            if self.star_types:
                idx = idx[[any(s.labels[i].startswith(t) for t in self.star_types) for i in idx]]
            if len(idx):
                w = np.array([SUPERGIANT_WEIGHT if is_supergiant(s.template_names[i]) else 1.0 for i in idx])
                pools.append((s, idx, w / w.sum(), STAR_SET_WEIGHTS.get(s.name, 0.05)))
        if not pools:
            raise ValueError(f"no star template matches star_types={self.star_types}")
        return pools

    def draw_sources(self, rng: np.random.Generator, n: int) -> Source:
        cls = rng.choice(3, n, p=self.class_mix)
        out = {k: np.empty(n, object) for k in ("objclass", "set_name", "subclass", "template")}
        z = np.zeros(n)
        rest: dict[str, list[tuple[int, np.ndarray]]] = {}

        def put(rows: np.ndarray, s: TemplateSet, spectra: np.ndarray, subs: list[str], names: list[str], zz: np.ndarray) -> None:
            out["objclass"][rows] = s.objclass
            out["set_name"][rows] = s.name
            out["subclass"][rows] = subs
            out["template"][rows] = names
            z[rows] = zz
            rest.setdefault(s.name, []).extend(zip(rows.tolist(), spectra))

        # Stars: a set by weight, a spectrum, a radial velocity (thin disc mostly, a halo tail to 300 km/s).
        rows = np.flatnonzero(cls == 0)
        if len(rows):
            w = np.array([p[3] for p in self._star_pools])
            which = rng.choice(len(self._star_pools), len(rows), p=w / w.sum())
            for k, (s, idx, prob, _) in enumerate(self._star_pools):
                r = rows[which == k]
                if not len(r):
                    continue
                pick = rng.choice(idx, len(r), p=prob)
                rv = np.where(rng.random(len(r)) < 0.9, rng.normal(0, 40, len(r)), rng.uniform(-300, 300, len(r)))
                put(r, s, s.spectra(pick), [s.labels[i] for i in pick], [s.template_names[i] for i in pick], rv / instrument.C_KMS)
        # Galaxies: z mostly 0-0.3 with a tail to 0.6; a fixed share from passive archetypes.
        rows = np.flatnonzero(cls == 1)
        if len(rows):
            sets = self.templates.by_class("GALAXY")
            w = np.array([GALAXY_SET_WEIGHTS.get(s.name, 0.2) for s in sets])
            which = rng.choice(len(sets), len(rows), p=w / w.sum())
            zz = np.clip(0.6 * rng.beta(1.5, 5.0, len(rows)), 0.003, 0.6)
            for k, s in enumerate(sets):
                sel = which == k
                r = rows[sel]
                if not len(r):
                    continue
                if s.eigen:
                    spectra, subs, names = s.draw(rng, len(r))
                    from .templates import _galaxy_kinds

                    subs = _galaxy_kinds(spectra, s.loglam0)
                else:
                    labels = np.array(s.labels)
                    passive = np.flatnonzero(labels == "PASSIVE")
                    active = np.flatnonzero(labels != "PASSIVE")
                    want_passive = rng.random(len(r)) < PASSIVE_FRACTION
                    pick = np.where(want_passive & (len(passive) > 0),
                                    passive[rng.integers(0, max(len(passive), 1), len(r))] if len(passive) else 0,
                                    active[rng.integers(0, max(len(active), 1), len(r))] if len(active) else 0)
                    spectra, subs, names = s.spectra(pick), [s.labels[i] for i in pick], [s.template_names[i] for i in pick]
                put(r, s, spectra, subs, names, zz[sel])
        # QSOs: a set by weight, z from that set's own table of real QSO redshifts (within its coverage).
        rows = np.flatnonzero(cls == 2)
        if len(rows):
            sets = self.templates.by_class("QSO")
            w = np.array([QSO_SET_WEIGHTS.get(s.name, 0.2) for s in sets])
            which = rng.choice(len(sets), len(rows), p=w / w.sum())
            for k, s in enumerate(sets):
                r = rows[which == k]
                if not len(r):
                    continue
                spectra, subs, names = s.draw(rng, len(r))
                put(r, s, spectra, subs, names, self._qso_z(rng, s, len(r)))

        resolution = np.clip(rng.normal(RESOLUTION_MEAN, RESOLUTION_SIGMA, n), 1300, 2400)
        # Dust: stars sit in the disc (LAMOST looks at the anticentre a lot), extragalactic sources high up.
        # The stars' gamma distribution (mean 0.20, sd 0.13) is what makes the 4500/7500 A colours of mock A
        # stars match those of the real dr10-stars-A spectra (median and 16-84% range; docs/realism.md).
        ebv = np.where(cls == 0, np.minimum(rng.gamma(2.4, 0.085, n), 1.2), np.minimum(rng.exponential(0.04, n), 0.3))
        donor = rng.integers(0, len(self.library), n)
        snr_g = self._draw_snr(rng, n, donor)
        ordered = {name: np.stack([spec for _, spec in sorted(items, key=lambda t: t[0])]) for name, items in rest.items()}
        return Source(objclass=out["objclass"].astype(str), set_name=out["set_name"].astype(str),
                      subclass=out["subclass"].astype(str), template=out["template"].astype(str), z=z, ebv=ebv,
                      resolution=resolution, snr_g=snr_g, donor=donor, rest=ordered)

    def _qso_z(self, rng: np.random.Generator, s: TemplateSet, n: int) -> np.ndarray:
        lo_w, hi_w = s.wave_range
        zmin = max(QSO_Z_RANGE[0], 9100.0 / hi_w - 1.0)  # the template must reach the red end...
        zmax = min(QSO_Z_RANGE[1], 3700.0 / lo_w - 1.0)  # ...and the blue end
        table = s.redshifts if s.redshifts is not None else np.array([])
        table = table[(table >= zmin) & (table <= zmax)]
        if len(table) < 10:
            return rng.uniform(zmin, zmax, n)
        # A real redshift with a small jitter, so 1000s of mocks do not repeat the table's values exactly.
        return np.clip(table[rng.integers(0, len(table), n)] + rng.normal(0, 0.02, n), zmin, zmax)

    def _draw_snr(self, rng: np.random.Generator, n: int, donor: np.ndarray) -> np.ndarray:
        lo, hi = self.snr_range
        if isinstance(self.snr_distribution, np.ndarray):  # resample given values (e.g. real spectra's)
            return self.snr_distribution[rng.integers(0, len(self.snr_distribution), n)].astype(np.float64)
        if self.snr_distribution == "donor":
            own = self.library.snr[donor, 1].astype(np.float64)
            fallback = instrument.draw_snr(rng, n, self.library, lo, hi)
            return np.where(np.isfinite(own) & (own > 0), own, fallback)
        if self.snr_distribution == "loguniform":
            return np.exp(rng.uniform(np.log(lo), np.log(hi), n))
        return instrument.draw_snr(rng, n, self.library, lo, hi)

    # ---- 2. render ----

    def render(self, rng: np.random.Generator, src: Source) -> tuple[np.ndarray, np.ndarray]:
        """Noiseless native-grid models (n, 3909) and their coverage."""
        n = len(src.z)
        model = np.zeros((n, N_NATIVE), np.float32)
        covered = np.zeros((n, N_NATIVE), bool)
        for name, spectra in src.rest.items():
            s = self.templates.get(name)
            rows = np.flatnonzero(src.set_name == name)
            flux, cov = instrument.redshift_to_native(spectra.astype(np.float32), s.loglam0, src.z[rows])
            if s.objclass == "QSO":
                flux = self._igm(rng, flux, src.z[rows])
            flux = instrument.apply_lsf(flux, instrument.lsf_sigma_pixels(src.resolution[rows], s.resolution))
            model[rows], covered[rows] = flux, cov
        model *= instrument.ccm89_extinction(WAVELENGTH, src.ebv)
        model *= instrument.calibration_curves(rng, n, tilt_sigma=TILT_SIGMA * self.calibration_scale,
                                               wiggle_sigma=0.02 * self.calibration_scale,
                                               arm_sigma=0.02 * self.calibration_scale)
        if self.mean_calibration:
            model *= MEAN_CALIBRATION[None, :]
        # Telluric bands as strong as the real ones on average, scaled per spectrum (airmass, water).
        depth = np.exp(rng.normal(0.0, 0.3, (n, 1)))
        model *= np.power(np.clip(self.library.telluric, 1e-3, 1.0)[None, :], depth).astype(np.float32)
        # Flux unit: LAMOST's relative calibration spans ~10-10^4 in the files; the level does not matter
        # to the classifier (min-max normalisation), only that it is not always the same.
        cont = np.median(np.where(covered, model, np.nan), axis=1)
        scale = np.exp(rng.uniform(np.log(20.0), np.log(5000.0), n)) / np.where(cont > 0, cont, 1.0)
        model = model * scale[:, None].astype(np.float32)
        # Scattered (moon)light and sky-continuum subtraction errors: an additive solar-type continuum whose
        # share of the object's g-band flux grows as the object gets fainter (~ SCATTER_C / snr_g). It
        # fills in lines and flattens the blue end of faint real spectra.
        g_level = np.median(model[:, instrument.SNR_WINDOW_G], axis=1)
        share = rng.normal(SCATTER_MEAN, SCATTER_SIGMA, n) / np.maximum(src.snr_g, 1.0)
        return model + (share * g_level)[:, None].astype(np.float32) * self._moon[None, :], covered

    def _igm(self, rng: np.random.Generator, flux: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Lyman-alpha forest on native-grid fluxes: Inoue+14 mean transmission with fluctuations around it.

        Applied before the LSF: the transmission is a function of observed wavelength only."""
        out = flux.copy()
        for i in np.flatnonzero(z > 2.0):
            t = igm_transmission(float(z[i]), WAVELENGTH, self.igm)
            forest = t < 0.999
            if not forest.any():
                continue
            # The forest is a sum of absorbers, not a smooth curve: raise the mean transmission to a power
            # that fluctuates pixel to pixel (a lognormal field of unit mean, ~2 pixels = 140 km/s
            # correlation), so the mean stays near Inoue's and single pixels dip deep at higher z.
            g = rng.standard_normal(forest.sum() + 1)
            g = (g[:-1] + g[1:]) / np.sqrt(2.0)
            x = np.exp(0.8 * g - 0.32)
            t[forest] = t[forest] ** x
            out[i] = flux[i] * t
        return out

    def noiseless(self, set_name: str, z: float | np.ndarray, index: int | np.ndarray = 0, resolution: float = RESOLUTION_MEAN,
                  igm: bool = True, seed: int = 0) -> np.ndarray:
        """Native-grid model(s) of one template set at redshift(s) ``z``, through redshift, IGM (QSOs, mean
        transmission only) and LSF; no dust, calibration or noise. Eigen sets use eigenspectrum 0."""
        s = self.templates.get(set_name)
        z = np.atleast_1d(np.asarray(z, dtype=np.float64))
        index = np.broadcast_to(np.asarray(index), z.shape)
        rest = np.tile(s.basis[0], (len(z), 1)) if s.eigen else s.spectra(index)
        flux, _ = instrument.redshift_to_native(rest, s.loglam0, z)
        if igm and s.objclass == "QSO":
            flux = flux * np.stack([igm_transmission(float(zi), WAVELENGTH, self.igm) for zi in z]).astype(np.float32)
        return instrument.apply_lsf(flux, instrument.lsf_sigma_pixels(np.full(len(z), resolution), s.resolution))

    # ---- a block ----

    def block(self, seed: int, index: int) -> MockChunk:
        """Mocks number index*BLOCK .. (index+1)*BLOCK-1 of master seed ``seed``."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
        src = self.draw_sources(rng, BLOCK)
        model, covered = self.render(rng, src)
        noisy = instrument.add_noise(rng, model, covered, src.snr_g, self.library, donor=src.donor, sky_scale=self.sky_scale)
        ids = np.arange(index * BLOCK, (index + 1) * BLOCK, dtype=np.int64)
        truth = {
            "id": ids, "class": src.objclass, "subclass": src.subclass, "template": src.template,
            "z": src.z.astype(np.float64),
            **{f"snr_{b}": noisy.snr[:, j] for j, b in enumerate("ugriz")},
            "ebv": src.ebv.astype(np.float32), "resolution": src.resolution.astype(np.float32),
            "donor": np.array([self.library.names[d] for d in src.donor]),
        }
        return MockChunk(noisy.flux, noisy.ivar, noisy.andmask, truth)


def simulate(n: int, seed: int, class_mix: Sequence[float] | str = SURVEY_PRIOR, templates_dir: str | Path | None = None,
             snr_distribution: str = "real", snr_range: tuple[float, float] = (2.0, 300.0), chunk_size: int = 1000,
             start: int = 0, noise: str | Path | None = None, star_types: Sequence[str] | None = None,
             simulator: Simulator | None = None) -> Iterator[MockChunk]:
    """Mocks ``start`` .. ``start+n-1`` of master seed ``seed``, as chunks of ``chunk_size``.

    ``class_mix``: (star, galaxy, qso) fractions, or 'survey' (0.985, 0.012, 0.003) or 'balanced'.
    Chunk boundaries do not change the mocks (see the module docstring): ``simulate(n, s, chunk_size=k)``
    concatenated equals ``simulate(n, s, chunk_size=n)``, and ``start`` lets workers split a run.
    """
    if n < 0 or chunk_size < 1 or start < 0:
        raise ValueError("n and start must be >= 0 and chunk_size >= 1")
    if isinstance(class_mix, str):
        class_mix = {"survey": SURVEY_PRIOR, "balanced": BALANCED}[class_mix]
    sim = simulator or Simulator(templates_dir=templates_dir, noise=noise, class_mix=class_mix,
                                 snr_distribution=snr_distribution, snr_range=snr_range, star_types=star_types)
    yield from rechunk(lambda b: sim.block(seed, b), start, n, chunk_size)
