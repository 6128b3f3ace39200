"""The Lyman-alpha forest on mock QSOs: the mean IGM transmission of Inoue, Shimizu, Iwata & Tanaka (2014).

The coefficients are read from redrock's ``igm/`` files in the template directory when present, else the
first rows of the table shipped below are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class IGMCoefficients:
    lam: np.ndarray  # (39,) Lyman series wavelengths
    laf: np.ndarray  # (39, 3) A_LAF coefficients
    dla: np.ndarray  # (39, 2) A_DLA coefficients


#: Inoue+14 table 2 is shipped by redrock as igm/LAFcoeff.txt and igm/DLAcoeff.txt; when the files are
#: absent these first rows (Ly alpha..Ly delta, the ones that matter at LAMOST's blue end for z < 4.5)
#: are used, with the higher series left out.
_IGM_FALLBACK = IGMCoefficients(
    lam=np.array([1215.670, 1025.720, 972.537, 949.743]),
    laf=np.array([[1.68976e-02, 2.35379e-03, 1.02611e-04], [4.69229e-03, 6.53625e-04, 2.84940e-05],
                  [2.23898e-03, 3.11884e-04, 1.35962e-05], [1.31901e-03, 1.83735e-04, 8.00974e-06]]),
    dla=np.array([[1.61698e-04, 5.38995e-05], [1.54539e-04, 5.15129e-05], [1.49767e-04, 4.99222e-05],
                  [1.46031e-04, 4.86769e-05]]),
)


def load_igm(directory: str | Path | None) -> IGMCoefficients:
    """Read LAFcoeff.txt and DLAcoeff.txt from ``<directory>/igm`` (or the fallback rows)."""
    if directory is None:
        return _IGM_FALLBACK
    igm = Path(directory) / "igm"
    if not (igm / "LAFcoeff.txt").exists() or not (igm / "DLAcoeff.txt").exists():
        return _IGM_FALLBACK
    laf = np.loadtxt(igm / "LAFcoeff.txt")
    dla = np.loadtxt(igm / "DLAcoeff.txt")
    return IGMCoefficients(lam=laf[:, 1], laf=laf[:, 2:5], dla=dla[:, 2:4])


LYMAN_LIMIT = 911.8


def igm_transmission(z: float, wave_obs: np.ndarray, coeffs: IGMCoefficients) -> np.ndarray:
    """Mean IGM transmission exp(-tau) at observed wavelengths for a source at redshift ``z``.

    Inoue et al. (2014, MNRAS 442, 1805) eqs. 21-29: Lyman-series absorption by the Lyman-alpha forest
    (LAF) and by damped Lyman-alpha systems (DLA), plus the Lyman-continuum terms of both, the same
    model redrock applies to its QSO templates.
    """
    lobs = np.asarray(wave_obs, dtype=np.float64)
    tau = np.zeros_like(lobs)
    for lj, (a1, a2, a3), (d1, d2) in zip(coeffs.lam, coeffs.laf, coeffs.dla):
        inside = (lobs < lj * (1 + z)) & (lobs > lj)
        x = lobs / lj
        # LAF: three power laws in the absorber redshift, breaking at z = 1.2 and 4.7.
        tau += np.where(inside & (lobs < lj * 2.2), a1 * x**1.2, 0.0)
        tau += np.where(inside & (lobs >= lj * 2.2) & (lobs < lj * 5.7), a2 * x**3.7, 0.0)
        tau += np.where(inside & (lobs >= lj * 5.7), a3 * x**5.5, 0.0)
        # DLA: break at z = 2.
        tau += np.where(inside & (lobs < lj * 3.0), d1 * x**2, 0.0)
        tau += np.where(inside & (lobs >= lj * 3.0), d2 * x**3, 0.0)
    tau += _tau_lc_laf(z, lobs) + _tau_lc_dla(z, lobs)
    return np.exp(-tau)


def _tau_lc_laf(z: float, lobs: np.ndarray) -> np.ndarray:
    x = lobs / LYMAN_LIMIT
    out = np.zeros_like(lobs)
    below = lobs < LYMAN_LIMIT * (1 + z)
    if z < 1.2:
        out = 0.325 * (x**1.2 - (1 + z) ** -0.9 * x**2.1)
    elif z < 4.7:
        out = np.where(x < 2.2, 2.55e-2 * (1 + z) ** 1.6 * x**2.1 + 0.325 * x**1.2 - 0.250 * x**2.1,
                       2.55e-2 * ((1 + z) ** 1.6 * x**2.1 - x**3.7))
    else:
        out = np.where(x < 2.2, 5.22e-4 * (1 + z) ** 3.4 * x**2.1 + 0.325 * x**1.2 - 3.14e-2 * x**2.1,
                       np.where(x < 5.7, 5.22e-4 * (1 + z) ** 3.4 * x**2.1 + 0.218 * x**2.1 - 2.55e-2 * x**3.7,
                                5.22e-4 * ((1 + z) ** 3.4 * x**2.1 - x**5.5)))
    return np.where(below, np.maximum(out, 0.0), 0.0)


def _tau_lc_dla(z: float, lobs: np.ndarray) -> np.ndarray:
    x = lobs / LYMAN_LIMIT
    below = lobs < LYMAN_LIMIT * (1 + z)
    if z < 2.0:
        out = 0.211 * (1 + z) ** 2 - 7.66e-2 * (1 + z) ** 2.3 * x**-0.3 - 0.135 * x**2
    else:
        out = np.where(x < 3.0,
                       0.634 + 4.70e-2 * (1 + z) ** 3 - 1.78e-2 * (1 + z) ** 3.3 * x**-0.3 - 0.135 * x**2 - 0.291 * x**-0.3,
                       4.70e-2 * (1 + z) ** 3 - 1.78e-2 * (1 + z) ** 3.3 * x**-0.3 - 2.92e-2 * x**3)
    return np.where(below, np.maximum(out, 0.0), 0.0)
