"""Is the template fit's chi2 evidence about the class that the network lacks? (issue 14, measured only)

    python training/redshift_class_evidence.py [--n 600]

For the real SDSS/LAMOST galaxies and QSOs, the real LAMOST stars and ``--n`` balanced mocks of each
family (S/N log-uniform 2-100, seed 51), fits every spectrum as STAR, GALAXY and QSO and compares the
class accuracy of: the network (survey prior), the network under the balanced prior, the lowest chi2
alone, and one combination: a row the network calls STAR whose balanced probability of GALAXY or QSO
exceeds ``t`` takes that class's fit when its chi2 is lower than the star's by more than 25. Prints
accuracy per class and the stars each rule loses. Nothing here changes the catalog.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from validate_redshift import SHARED, STAR_DIRS, prepared, sdss_truth  # noqa: E402

from lamost_classify import CLASS_NAMES  # noqa: E402


def combined(p: np.ndarray, pb: np.ndarray, chi2: np.ndarray, threshold: float) -> np.ndarray:
    pred = p.argmax(1).copy()
    candidate = (pred == 0) & (pb[:, 1:].max(1) > threshold)
    alt = 1 + chi2[:, 1:].argmin(1)
    better = chi2[np.arange(len(chi2)), alt] < chi2[:, 0] - 25.0
    pred[candidate & better] = alt[candidate & better]
    return pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600)
    args = parser.parse_args()
    from lamost_classify.mocks.families import FAMILIES, generate
    from lamost_classify.mocks.instrument import WAVELENGTH
    from lamost_classify.model.inference import Classifier
    from lamost_classify.model.redshift import RedshiftFitter
    from lamost_classify.pipeline.grid import prepare_arrays

    classifier, fitter = Classifier.load("default", device="cpu"), RedshiftFitter()
    sets = {}
    files = sorted(str(p) for sub in ("sdss/galaxy", "sdss/qso", "lamost-qso") for p in (SHARED / sub).glob("spec-*"))
    _, batch = prepared(files)
    sets["real galaxies+QSOs"] = (batch.flux, batch.ivar, np.array([CLASS_NAMES.index(sdss_truth(f)[0]) for f in files]))
    star_files = sorted(str(p) for sub in STAR_DIRS for p in (SHARED / sub).glob("spec-*"))
    spectra, batch = prepared(star_files)
    keep = [i for i, s in enumerate(spectra) if (s.meta.get("lamost_class") or "").upper() == "STAR" and batch.ivar[i].any()]
    sets["real stars"] = (batch.flux[keep], batch.ivar[keep], np.zeros(len(keep), int))
    for family in FAMILIES:
        flux, ivar, labels = [], [], []
        for chunk in generate(family, args.n, 51, class_mix=(1 / 3, 1 / 3, 1 / 3), snr_distribution="loguniform",
                              snr_range=(2.0, 100.0)):
            p = prepare_arrays(WAVELENGTH, chunk.flux, chunk.ivar, chunk.andmask)
            flux.append(p.flux)
            ivar.append(p.ivar)
            labels += [CLASS_NAMES.index(c) for c in chunk.truth["class"]]
        sets[f"mocks {family}"] = (np.concatenate(flux), np.concatenate(ivar), np.array(labels))
    for name, (flux, ivar, y) in sets.items():
        p, pb = classifier.predict_proba_and_balanced(flux)
        chi2 = np.stack([fitter.fit(flux, ivar, np.full(len(flux), c)).chi2 for c in range(3)], 1)
        rules = {"network": p.argmax(1), "balanced prior": pb.argmax(1), "chi2 alone": chi2.argmin(1),
                 **{f"combined t={t}": combined(p, pb, chi2, t) for t in (0.05, 0.5, 0.8)}}
        print(f"\n{name} (n={len(y)})")
        for rule, pred in rules.items():
            per = " ".join(f"{CLASS_NAMES[c]} {np.mean(pred[y == c] == c):.3f}" for c in range(3) if (y == c).any())
            print(f"  {rule:16s} accuracy {np.mean(pred == y):.3f}  {per}  stars lost {int(((y == 0) & (pred != 0)).sum())}")


if __name__ == "__main__":
    main()
