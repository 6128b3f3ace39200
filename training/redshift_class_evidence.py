"""Is the template fit's chi2 evidence about the class that the network lacks? (issue 14, measured only)

    python training/redshift_class_evidence.py [--n 600] [--lofo work/lofo-full]

Fits every spectrum as STAR, GALAXY and QSO on the same pixels (those that all three classes' best fits
miss by more than ``OUTLIER_SIGMA`` are left out for all: a cosmic ray; the galaxy/QSO reweighting is off,
so that no class's chi2 is counted on a looser scale than another's), and compares the class accuracy of:
the network (survey prior), the network under the balanced prior, the lowest chi2 alone, and one
combination: a row the network calls STAR whose balanced probability of GALAXY or QSO exceeds ``t`` takes
that class's fit when its chi2 is lower than the star's by more than 25. Sets: the real SDSS/LAMOST
galaxies and QSOs, the real LAMOST stars and ``--n`` balanced mocks of each family (S/N log-uniform 2-100,
seed 51) with the shipped model; with ``--lofo DIR`` (a ``leave_one_family_out.py`` output), also each
family with the fold model that never saw it (its temperature and prior), the honest test. Prints accuracy
per class and the stars each rule loses. ``--mix-n N`` adds, per family, N mocks at the survey's class mix
and the real files' S/N (seed 61), where a star lost weighs as it does in a survey: only the rows the rule
could change (called STAR, balanced GALAXY or QSO probability > 0.5) are fitted, and the rule is scored at
t = 0.5-0.95 by recall, stars lost and F1. Nothing here changes the catalog.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from validate_redshift import SHARED, STAR_DIRS, prepared, prepared_mocks, sdss_truth  # noqa: E402

from lamost_classify import CLASS_NAMES  # noqa: E402


def could_change(p: np.ndarray, pb: np.ndarray, threshold: float) -> np.ndarray:
    """(B,) the rows the rule may move: called STAR, with a balanced GALAXY or QSO probability > threshold."""
    return (p.argmax(1) == 0) & (pb[:, 1:].max(1) > threshold)


def combined(p: np.ndarray, pb: np.ndarray, chi2: np.ndarray, threshold: float) -> np.ndarray:
    pred = p.argmax(1).copy()
    candidate = could_change(p, pb, threshold)
    alt = 1 + chi2[:, 1:].argmin(1)
    better = chi2[np.arange(len(chi2)), alt] < chi2[:, 0] - 25.0
    pred[candidate & better] = alt[candidate & better]
    return pred


def same_pixel_chi2(fitter, flux: np.ndarray, ivar: np.ndarray, pedestal: np.ndarray) -> np.ndarray:
    """(B, 3) chi2 of each spectrum as STAR, GALAXY, QSO on the pixels that not all three classes' first
    best fits miss by more than OUTLIER_SIGMA, with the galaxy/QSO reweighting off; the stars with the
    ``pedestal`` the normalisation subtracted given back, as the fit does."""
    import torch

    from lamost_classify.model import redshift

    f, w = torch.from_numpy(flux.astype(np.float64)), torch.from_numpy(ivar.astype(np.float64))
    f_star = f + torch.from_numpy(pedestal.astype(np.float64))[:, None]
    stars = fitter.templates["STAR"]
    at_rest = fitter.star_at_rest
    star_model = []
    for i in range(0, len(f), 64):  # the best template at z = 0 with the full polynomial
        fi, wi = f_star[i:i + 64], w[i:i + 64]
        every = torch.arange(len(stars.subclass)).expand(len(fi), -1)
        t = at_rest[fitter._star_misfits(fi, wi, at_rest, every).sum(-1).argmin(1)]
        wt = wi.float() * t
        coeffs = fitter._star_coefficients((wt * t) @ fitter.star_pair_products.T,
                                           (wt * fi.float()) @ fitter.star_poly.float().T)
        star_model.append((t * (coeffs.float() @ fitter.star_poly.float())).double())
    missed = (f_star - torch.cat(star_model)) ** 2 * w > redshift.OUTLIER_SIGMA**2
    for name in ("GALAXY", "QSO"):
        model = []
        for i in range(0, len(f), redshift.SCAN_ROWS):
            _, coeffs, allowed = fitter._scan(name, f[i:i + redshift.SCAN_ROWS], w[i:i + redshift.SCAN_ROWS])
            model.append(fitter._model_at(name, coeffs, allowed.argmin(1)))
        missed &= (f - torch.cat(model)) ** 2 * w > redshift.OUTLIER_SIGMA**2
    clean = (w * ~missed).numpy()
    saved, redshift.OUTLIER_SIGMA = redshift.OUTLIER_SIGMA, float("inf")
    try:
        return np.stack([fitter.fit(flux, clean, np.full(len(flux), c), pedestal=pedestal).chi2 for c in range(3)], 1)
    finally:
        redshift.OUTLIER_SIGMA = saved


def mocks(family: str, n: int, survey_mix: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` mocks of ``family``: balanced at S/N log-uniform 2-100 (seed 51), or at the survey's class mix
    and the real files' S/N (seed 61)."""
    from lamost_classify import SURVEY_PRIOR

    flux, ivar, pedestal, truth = (
        prepared_mocks(family, n, 61, tuple(SURVEY_PRIOR), (2.0, 300.0), ("class",), snr_distribution="real")
        if survey_mix else prepared_mocks(family, n, 51, (1 / 3, 1 / 3, 1 / 3), (2.0, 100.0), ("class",)))
    return flux, ivar, pedestal, np.array([CLASS_NAMES.index(c) for c in truth["class"]])


def fold_probabilities(lofo: Path, family: str, flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(survey-prior, balanced) probabilities of the fold model that left ``family`` out."""
    from leave_one_family_out import fold_model

    from lamost_classify.model.calibration import adjust_to_prior, softmax
    from lamost_classify.model.runtime import batched_logits
    from lamost_classify.model.weights import load_weights

    fold = json.loads((lofo / "lofo.json").read_text())["folds"][family]
    # The fold's weights file holds every member, joined ones too; records before it: the checkpoints.
    model = load_weights(lofo / fold["weights"])[0] if "weights" in fold else fold_model(lofo, family, fold.get("seeds"))
    balanced = softmax(batched_logits(model, flux.astype(np.float32)), fold["temperature"])
    return adjust_to_prior(balanced, fold["prior"]), balanced


def report(name: str, y: np.ndarray, p: np.ndarray, pb: np.ndarray, chi2: np.ndarray) -> None:
    rules = {"network": p.argmax(1), "balanced prior": pb.argmax(1), "chi2 alone": chi2.argmin(1),
             **{f"combined t={t}": combined(p, pb, chi2, t) for t in (0.05, 0.5, 0.8)}}
    print(f"\n{name} (n={len(y)})")
    for rule, pred in rules.items():
        per = " ".join(f"{CLASS_NAMES[c]} {np.mean(pred[y == c] == c):.3f}" for c in range(3) if (y == c).any())
        print(f"  {rule:16s} accuracy {np.mean(pred == y):.3f}  {per}  stars lost {int(((y == 0) & (pred != 0)).sum())}",
              flush=True)


MIX_THRESHOLDS = (0.5, 0.8, 0.9, 0.95)


def report_at_mix(name: str, fitter, flux: np.ndarray, ivar: np.ndarray, pedestal: np.ndarray, y: np.ndarray,
                  p: np.ndarray, pb: np.ndarray) -> None:
    """The rule on a survey-mix set: only the rows it could change are fitted (the rest keep the network's
    class whatever their chi2), then recall, stars lost and F1 per threshold."""
    from lamost_classify.model.evaluate import confusion_matrix, scores_from_confusion

    candidate = np.flatnonzero(could_change(p, pb, min(MIX_THRESHOLDS)))
    chi2 = np.full((len(y), 3), np.inf)
    if len(candidate):
        chi2[candidate] = same_pixel_chi2(fitter, flux[candidate], ivar[candidate], pedestal[candidate])
    print(f"\n{name} (n={len(y)}: " + ", ".join(f"{(y == c).sum()} {CLASS_NAMES[c]}" for c in range(3))
          + f"; {len(candidate)} rows the rule could change)")
    rules = {"network": p.argmax(1), **{f"combined t={t}": combined(p, pb, chi2, t) for t in MIX_THRESHOLDS}}
    for rule, q in rules.items():
        scores = scores_from_confusion(confusion_matrix(y, q))  # the set is at the mix: plain F1 is F1 there
        recall = " ".join(f"{c} {scores[c]['recall']:.4f}" for i, c in enumerate(CLASS_NAMES) if (y == i).any())
        print(f"  {rule:16s} recall {recall}  stars lost {int(((y == 0) & (q != 0)).sum())}  "
              f"F1 GALAXY {scores['GALAXY']['f1']:.3f} QSO {scores['QSO']['f1']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--lofo", type=Path, default=None, help="leave_one_family_out.py output with fold models")
    parser.add_argument("--mix-n", type=int, default=0, help="also N survey-mix mocks per family (0: none)")
    args = parser.parse_args()
    from lamost_classify.mocks.families import FAMILIES
    from lamost_classify.model.inference import Classifier
    from lamost_classify.model.redshift import RedshiftFitter

    classifier, fitter = Classifier.load("default", device="cpu"), RedshiftFitter()
    folds = json.loads((args.lofo / "lofo.json").read_text())["folds"] if args.lofo else {}
    sets = {}
    files = sorted(str(p) for sub in ("sdss/galaxy", "sdss/qso", "lamost-qso") for p in (SHARED / sub).glob("spec-*"))
    _, batch = prepared(files)
    sets["real galaxies+QSOs"] = (batch.flux, batch.ivar, batch.pedestal,
                                  np.array([CLASS_NAMES.index(sdss_truth(f)[0]) for f in files]))
    star_files = sorted(str(p) for sub in STAR_DIRS for p in (SHARED / sub).glob("spec-*"))
    spectra, batch = prepared(star_files)
    keep = [i for i, s in enumerate(spectra) if (s.meta.get("lamost_class") or "").upper() == "STAR" and batch.ivar[i].any()]
    sets["real stars"] = (batch.flux[keep], batch.ivar[keep], batch.pedestal[keep], np.zeros(len(keep), int))
    for family in FAMILIES:
        sets[f"mocks {family}"] = mocks(family, args.n)
    for name, (flux, ivar, pedestal, y) in sets.items():
        chi2 = same_pixel_chi2(fitter, flux, ivar, pedestal)
        report(name + ", shipped model", y, *classifier.predict_proba_and_balanced(flux), chi2)
        family = name.split()[1]
        if name.startswith("mocks ") and family in folds:
            report(name + f", the fold model that left {family} out", y, *fold_probabilities(args.lofo, family, flux), chi2)
    for family in FAMILIES if args.mix_n else ():
        flux, ivar, pedestal, y = mocks(family, args.mix_n, survey_mix=True)
        report_at_mix(f"mocks {family} at the survey mix, shipped model", fitter, flux, ivar, pedestal, y,
                      *classifier.predict_proba_and_balanced(flux))
        if family in folds:
            report_at_mix(f"mocks {family} at the survey mix, the fold model that left it out", fitter, flux, ivar,
                          pedestal, y,
                          *fold_probabilities(args.lofo, family, flux))


if __name__ == "__main__":
    main()
