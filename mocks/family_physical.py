"""Mock family "physical": LAMOST-like spectra built from first principles, sharing no astrophysics code
with mocks/simulate.py, instrument.py or templates.py (only the MockChunk container and the native grid).

Stars (mocks/physical/stars.py), galaxies (galaxies.py) and QSOs (qsos.py) are rendered on a grid twice
as fine as LAMOST's, then passed through this family's own instrument (detector.py). Needs no files.

Determinism: mock ``i`` of seed ``s`` belongs to block ``i // BLOCK`` drawn from
``np.random.SeedSequence([s, block])``, so any chunking or ``start`` gives the same mocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from lamost_classify.contract import CLASS_NAMES

from .physical import detector, galaxies, qsos, stars
from .simulate import MockChunk, rechunk

FAMILY = "physical"
BLOCK = 256
#: the 'real' S/N distribution: log-normal in snr_g, as LAMOST's files (mostly bright stars)
REAL_LOG10_SNR_MEAN, REAL_LOG10_SNR_SIGMA = 1.35, 0.35


def draw_snr(rng: np.random.Generator, n: int, distribution: str, snr_range: tuple[float, float]) -> np.ndarray:
    lo, hi = snr_range
    if distribution == "loguniform":
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    if distribution == "real":
        # inverse CDF of the log-normal truncated to the range: one uniform per mock, always in range
        from scipy.stats import norm
        a, b = norm.cdf((np.log10([lo, hi]) - REAL_LOG10_SNR_MEAN) / REAL_LOG10_SNR_SIGMA)
        return 10 ** (REAL_LOG10_SNR_MEAN + REAL_LOG10_SNR_SIGMA * norm.ppf(rng.uniform(a, b, n)))
    raise ValueError(f"snr_distribution must be 'real' or 'loguniform', not {distribution!r}")


def block(seed: int, index: int, class_mix: Sequence[float], snr_distribution: str,
          snr_range: tuple[float, float]) -> MockChunk:
    """Mocks index*BLOCK .. (index+1)*BLOCK-1 of master seed ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    mix = np.asarray(class_mix, dtype=np.float64)
    objclass = np.array(CLASS_NAMES)[rng.choice(3, BLOCK, p=mix / mix.sum())]
    snr_g = draw_snr(rng, BLOCK, snr_distribution, snr_range)
    source = np.empty((BLOCK, detector.WORK_WAVE.size))
    subclass = np.empty(BLOCK, dtype=object)
    template = np.empty(BLOCK, dtype=object)
    z = np.zeros(BLOCK)
    for name, module in (("STAR", stars), ("GALAXY", galaxies), ("QSO", qsos)):
        rows = np.flatnonzero(objclass == name)
        if rows.size:
            flux, truth = module.draw_and_render(rng, rows.size)
            source[rows] = flux
            subclass[rows], template[rows], z[rows] = truth["subclass"], truth["template"], truth["z"]
    obs = detector.observe(rng, source, snr_g)
    truth = {
        "id": np.arange(index * BLOCK, (index + 1) * BLOCK, dtype=np.int64),
        "class": objclass.astype(str), "subclass": subclass.astype(str), "template": template.astype(str),
        "z": z.astype(np.float64), "snr_g": obs["snr_g"], "snr_r": obs["snr_r"],
        "snr_requested": snr_g.astype(np.float32), "resolution": obs["resolution"],
        "arm_mismatch": obs["arm_mismatch"],
        "calibration_tilt": obs["calibration_tilt"], "family": np.full(BLOCK, FAMILY),
    }
    return MockChunk(obs["flux"], obs["ivar"], obs["andmask"], truth)


def simulate(n: int, seed: int, *, class_mix: Sequence[float] = (1 / 3, 1 / 3, 1 / 3), snr_distribution: str = "real",
             snr_range: tuple[float, float] = (2.0, 100.0), start: int = 0, chunk_size: int = 1000,
             templates_dir: str | Path | None = None) -> Iterator[MockChunk]:
    """Mocks ``start`` .. ``start+n-1`` of master seed ``seed`` in chunks of ``chunk_size``.

    ``templates_dir`` is accepted for the family interface and ignored: this family needs no files.
    """
    if n < 0 or chunk_size < 1 or start < 0:
        raise ValueError("n and start must be >= 0 and chunk_size >= 1")
    if len(class_mix) != 3 or min(class_mix) < 0 or sum(class_mix) <= 0:
        raise ValueError(f"class_mix must be three non-negative (star, galaxy, qso) fractions, not {class_mix!r}")
    draw_snr(np.random.default_rng(0), 1, snr_distribution, snr_range)  # check the arguments before any work
    yield from rechunk(lambda b: block(seed, b, class_mix, snr_distribution, snr_range), start, n, chunk_size,
                       BLOCK)
