"""How honest is ``z_err``, and the per-class floor that makes it so (``Z_ERR_FLOOR_KMS``, model/redshift.py).

    python training/calibrate_z_err.py [--n 900] [--seed 77] [--json out.json]

The chi2 curvature gives a formal error, which knows the noise and nothing of a template that is not
the object: a star template's own zero point, a galaxy's lines against the eigenspectra's, a QSO's broad
lines shifted from its systemic redshift. For each mock family (mocks/families.py; ``--n`` balanced
mocks at S/N log-uniform 5-100, a seed no training or validation set uses), every spectrum is fitted as
its true class; for those within the redshift tolerance (model/redshift_metrics.py), the pull is
dz / z_err. An honest 1-sigma has pulls of NMAD 1 (1.4826 x median absolute deviation: the tails are
catastrophic redshifts, scored elsewhere) and ~68% of them within +-1.

Printed per class (QSOs per redshift range, by the true z: their lines change with it) and family: the
scatter of dz / (1 + z), the formal error's median, its pulls; the floor (km/s, added in quadrature)
that takes that family's pulls to NMAD 1; the floor pooled over the families, and the rule's floor
(shipped): for galaxies, that of galaxies composed of the real LAMOST stars the networks train on
(make_composite_galaxy_set.py, as many as a family's; when ../shared is there), whose continua are real
spectra and scatter against the eigenspectra more than any mock family's; for stars and QSOs, which have
no such set, the mock families' pooled floor. Then each family's pulls with the shipped floor; and,
leave-one-family-out, each family's pulls with the floor the others give. The formal error is the shipped
``z_err`` with the shipped floor taken out again: z_err^2 = (1 + z)^2 (formal^2 + (floor / c)^2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lamost_classify import CLASS_NAMES  # noqa: E402
from lamost_classify.model.redshift_metrics import nmad  # noqa: E402
from lamost_classify.model.subclass import C_KMS  # noqa: E402


#: The galaxies composed of real stars, fitted beside the mock families (``fit_composites``).
REAL_COMPOSITE = "real-composite"


def floor_for_unit_pulls(dz: np.ndarray, formal: np.ndarray) -> float:
    """The floor f (in dz / (1 + z)) with nmad(dz / hypot(formal, f)) = 1, by bisection (0 when the
    formal error alone is already as wide)."""
    def excess(f: float) -> float:
        return nmad(dz / np.hypot(formal, f)) - 1.0

    lo, hi = 0.0, 0.01
    if excess(lo) <= 0:
        return 0.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def pull_scores(dz: np.ndarray, formal: np.ndarray, floor: float) -> dict:
    pull = dz / np.hypot(formal, floor)
    return {"pull_nmad": nmad(pull), "within_1_sigma": float(np.mean(np.abs(pull) < 1.0)) if len(pull) else float("nan")}


def fitted_within_tolerance(fitter, flux: np.ndarray, ivar: np.ndarray, pedestal: np.ndarray, cls: np.ndarray,
                            z_true: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per class: (dz / (1 + z), formal error / (1 + z), true z) of the spectra fitted as their true class
    within tolerance."""
    from lamost_classify.model.redshift import z_err_floor_kms
    from lamost_classify.model.redshift_metrics import TOLERANCE

    fit = fitter.fit(flux, ivar, cls, pedestal=pedestal)
    z, z_err = fit.z, fit.z_err
    dz = (z - z_true) / (1.0 + z_true)
    err = z_err / (1.0 + z)  # the shipped error in dz / (1 + z)
    out = {}
    for label, name in enumerate(CLASS_NAMES):
        keep = (cls == label) & np.isfinite(dz) & np.isfinite(err) & (np.abs(dz) < TOLERANCE[name])
        shipped = z_err_floor_kms(name, z[keep]) / C_KMS
        formal = np.sqrt(np.clip(err[keep] ** 2 - shipped**2, 0.0, None))
        out[name] = (dz[keep], formal, z_true[keep])
    return out


def fit_mocks(n: int, seed: int) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Per family and class: ``fitted_within_tolerance`` of ``n`` balanced mocks."""
    from validate_redshift import prepared_mocks

    from lamost_classify.mocks.families import FAMILIES
    from lamost_classify.model.redshift import RedshiftFitter

    fitter = RedshiftFitter()
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for family in FAMILIES:
        flux, ivar, pedestal, truth = prepared_mocks(family, n, seed, (1 / 3, 1 / 3, 1 / 3), (5.0, 100.0), ("class", "z"))
        cls = np.array([CLASS_NAMES.index(c) for c in truth["class"]])
        out[family] = fitted_within_tolerance(fitter, flux, ivar, pedestal, cls, np.asarray(truth["z"], np.float64))
    return out


def fit_composites(n: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``fitted_within_tolerance`` of ``n`` galaxies composed of the real stars the networks train on
    (make_composite_galaxy_set.py; the held-out stars' composites stay a test). Galaxies only: the stars
    beside them carry z 0, not their own radial velocities, so they are left out (no rows for STAR or QSO)."""
    from make_composite_galaxy_set import make, read_components
    from make_real_star_set import star_files

    from lamost_classify.model.redshift import RedshiftFitter

    prepared, truth = make(read_components(star_files(held_out=False)), n, seed, (0.01, 0.15), (5.0, 100.0))
    labels = np.array(truth["label"])
    galaxy = labels == CLASS_NAMES.index("GALAXY")
    z_true = np.asarray(truth["z"], np.float64)
    return fitted_within_tolerance(RedshiftFitter(), prepared.flux[galaxy], prepared.ivar[galaxy],
                                   prepared.pedestal[galaxy], labels[galaxy], z_true[galaxy])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=900, help="mocks per family (balanced)")
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--json", help="write the scores here")
    args = parser.parse_args()
    from lamost_classify.model.redshift import Z_ERR_FLOOR_KMS

    fits = fit_mocks(args.n, args.seed)
    from make_real_star_set import SHARED

    if SHARED.is_dir():  # galaxies composed of real stars: as many as a family's
        fits[REAL_COMPOSITE] = fit_composites(args.n // len(CLASS_NAMES), args.seed)
    else:
        print(f"{SHARED} is absent: mock families only, no galaxies composed of real stars")
    families = list(fits)
    report: dict = {"n": args.n, "seed": args.seed, "shipped_floor_kms": Z_ERR_FLOOR_KMS, "classes": {}}
    print("| class, true z | family | n | NMAD of dz/(1+z), km/s | median formal error, km/s | pulls' NMAD, formal "
          "| floor for NMAD 1, km/s | pulls' NMAD, shipped floor | within 1 sigma, shipped floor "
          "| left out: the others' floor, km/s | pulls' NMAD with it |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in CLASS_NAMES:
        report["classes"][name] = []
        lower = -np.inf
        for upper, shipped_kms in Z_ERR_FLOOR_KMS[name]:
            # this floor's redshift range, by the true z
            part = {f: tuple(a[(fits[f][name][2] >= lower) & (fits[f][name][2] < upper)] for a in fits[f][name][:2])
                    for f in families}
            label = name if len(Z_ERR_FLOOR_KMS[name]) == 1 else f"{name} z {max(lower, 0):g}-{upper:g}"
            pooled = floor_for_unit_pulls(*(np.concatenate([part[f][i] for f in families]) for i in (0, 1)))
            # The rule: real spectra's own floor where the class has them, else the mock families' pooled.
            real = REAL_COMPOSITE in part and len(part[REAL_COMPOSITE][0]) > 0
            rule = floor_for_unit_pulls(*part[REAL_COMPOSITE]) if real else pooled
            entry = {"z_range": [lower, upper], "shipped_floor_kms": shipped_kms, "pooled_floor_kms": pooled * C_KMS,
                     "rule_floor_kms": rule * C_KMS,
                     "families": {}}
            for family in families:
                dz, formal = part[family]
                if not len(dz):  # the composites have galaxies only
                    continue
                others = [f for f in families if f != family]
                left_out = floor_for_unit_pulls(*(np.concatenate([part[f][i] for f in others]) for i in (0, 1)))
                scores = {"n": len(dz), "nmad_kms": nmad(dz) * C_KMS,
                          "median_formal_kms": float(np.median(formal)) * C_KMS if len(dz) else float("nan"),
                          "formal": pull_scores(dz, formal, 0.0), "own_floor_kms": floor_for_unit_pulls(dz, formal) * C_KMS,
                          "shipped": pull_scores(dz, formal, shipped_kms / C_KMS), "others_floor_kms": left_out * C_KMS,
                          "others": pull_scores(dz, formal, left_out)}
                entry["families"][family] = scores
                print(f"| {label} | {family} | {scores['n']} | {scores['nmad_kms']:.1f} | {scores['median_formal_kms']:.1f} "
                      f"| {scores['formal']['pull_nmad']:.2f} | {scores['own_floor_kms']:.1f} "
                      f"| {scores['shipped']['pull_nmad']:.2f} | {scores['shipped']['within_1_sigma']:.2f} "
                      f"| {scores['others_floor_kms']:.1f} | {scores['others']['pull_nmad']:.2f} |")
            print(f"| {label} | pooled: floor {pooled * C_KMS:.1f} km/s; the rule's: {rule * C_KMS:.1f} km/s"
                  f"{' (real composites)' if real else ''} (shipped {shipped_kms:g}) | | | | | | | | | |")
            report["classes"][name].append(entry)
            lower = upper
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1, default=float)


if __name__ == "__main__":
    main()
