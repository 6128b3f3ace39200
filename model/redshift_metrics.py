"""Redshift accuracy and star type agreement, the issue's measures (for ``evaluate`` and the reports).

- Redshift, per class: the fraction within |dz| / (1 + z) < 0.003 (galaxies) or < 0.01 (QSOs; stars are
  held to 0.001, 300 km/s), the NMAD of dz / (1 + z) (1.4826 x the median absolute deviation), and the
  catastrophic rate, |dz| / (1 + z) > 0.05 (another line taken for the one seen: 15,000 km/s and more).
  By true class, S/N bin and redshift bin; given the fit's z_err, also the pulls dz / z_err over the
  redshifts within tolerance (their NMAD and the share within +-1: 1 and 0.68 for an honest error).
- Stars: the MK letter of our subclass against a reference subclass (LAMOST's own, or the mock's
  template), its agreement and the confusion matrix.

``evaluate_redshift`` runs the fits on a labelled set for ``lamost-classify evaluate``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from lamost_classify.contract import CLASS_NAMES

if TYPE_CHECKING:
    from .inference import Classifier
    from .labelled import LabelledSet

TOLERANCE = {"STAR": 0.001, "GALAXY": 0.003, "QSO": 0.01}
CATASTROPHIC = 0.05
SNR_BINS = (0.0, 2.0, 5.0, 10.0, 20.0, np.inf)
Z_BINS = {"STAR": (-np.inf, np.inf), "GALAXY": (0.0, 0.1, 0.2, 0.3, 0.5, np.inf),
          "QSO": (0.0, 0.5, 1.0, 2.0, 3.0, np.inf)}
MK_LETTERS = "OBAFGKM"
FIT_CHUNK = 512  # spectra fitted at a time: bounds the fit's float64 copies of flux and ivar


def nmad(x: np.ndarray) -> float:
    """1.4826 x the median absolute deviation (NaN for no values): a sigma that the tails do not move."""
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if len(x) else float("nan")


def _scores(z_true: np.ndarray, z_pred: np.ndarray, tolerance: float, z_err: np.ndarray | None = None) -> dict:
    dz = (z_pred - z_true) / (1.0 + z_true)
    fitted = np.isfinite(dz)
    n = len(dz)
    if n == 0:
        return {"n": 0}
    d = dz[fitted]
    # A spectrum without a redshift counts as a miss, not as absent.
    out = {"n": n, "n_fitted": int(fitted.sum()), "within": float((np.abs(d) < tolerance).sum() / n),
           "tolerance": tolerance, "nmad": nmad(d), "catastrophic": float((np.abs(d) > CATASTROPHIC).sum() / n)}
    if z_err is not None:
        # How honest z_err is, over the redshifts within tolerance (the rest are misses, not errors):
        # pulls dz / z_err of NMAD 1 and ~68% within +-1 for an honest 1-sigma.
        kept = fitted & (np.abs(dz) < tolerance) & np.isfinite(z_err) & (z_err > 0)
        pull = (z_pred - z_true)[kept] / z_err[kept]
        out["pull_nmad"] = nmad(pull)
        out["within_z_err"] = float(np.mean(np.abs(pull) < 1.0)) if len(pull) else float("nan")
    return out


def _part(x: np.ndarray | None, m: np.ndarray) -> np.ndarray | None:
    return None if x is None else x[m]


def _bin_label(lo: float, hi: float) -> str:
    if not np.isfinite(lo):
        return "all"
    return f">= {lo:g}" if not np.isfinite(hi) else f"{lo:g}-{hi:g}"


def redshift_accuracy(z_true: Sequence[float], z_pred: Sequence[float], true_class: Sequence[int],
                      fitted_class: Sequence[int] | None = None, snr: Sequence[float] | None = None,
                      z_err: Sequence[float] | None = None) -> dict:
    """The issue's redshift scores, by true class and within each by S/N and redshift bin.

    ``fitted_class``: the class whose templates gave ``z_pred`` (the network's); when given, each class
    also reports ``class_right``, the fraction fitted as its own class (a QSO fitted as a galaxy rarely
    gets a QSO's redshift). ``z_err``: the fit's errors; each score then has ``pull_nmad`` and
    ``within_z_err`` (``_scores``).
    """
    z_true, z_pred = np.asarray(z_true, np.float64), np.asarray(z_pred, np.float64)
    err = None if z_err is None else np.asarray(z_err, np.float64)
    true_class = np.asarray(true_class)
    snr = None if snr is None else np.asarray(snr, np.float64)
    out: dict = {"by_class": {}}
    for label, name in enumerate(CLASS_NAMES):
        members = true_class == label
        if not members.any():
            continue
        scores = _scores(z_true[members], z_pred[members], TOLERANCE[name], _part(err, members))
        if fitted_class is not None:
            scores["class_right"] = float((np.asarray(fitted_class)[members] == label).mean())
        if snr is not None:
            scores["by_snr"] = {_bin_label(lo, hi): _scores(z_true[m], z_pred[m], TOLERANCE[name], _part(err, m))
                                for lo, hi in zip(SNR_BINS[:-1], SNR_BINS[1:])
                                if (m := members & (snr >= lo) & (snr < hi)).any()}
        edges = Z_BINS[name]
        if len(edges) > 2:
            scores["by_z"] = {_bin_label(lo, hi): _scores(z_true[m], z_pred[m], TOLERANCE[name], _part(err, m))
                              for lo, hi in zip(edges[:-1], edges[1:])
                              if (m := members & (z_true >= lo) & (z_true < hi)).any()}
        out["by_class"][name] = scores
    return out


def mk_letter(subclass: str | None) -> str | None:
    """The MK letter of a subclass ('G5' -> 'G', 'dM5' -> 'M', 'A7V' -> 'A'), or the special type
    ('WD', 'CV', 'C' carbon, 'L'); None when there is none ('Non', '')."""
    if not subclass:
        return None
    text = str(subclass).strip()
    if text in ("WD", "CV", "C", "L", "Carbon"):
        return "C" if text == "Carbon" else text
    m = re.match(r"^(?:sd|d|g)?:?([OBAFGKM])", text)
    return m.group(1) if m else None


def star_type_confusion(reference: Sequence[str | None], ours: Sequence[str | None]) -> dict:
    """Letter agreement of ``ours`` with ``reference`` over the stars whose reference has a letter, and
    the confusion matrix (rows reference, columns ours) over the letters seen."""
    ref = [mk_letter(r) for r in reference]
    mine = [mk_letter(o) for o in ours]
    pairs = [(r, m) for r, m in zip(ref, mine) if r is not None]
    seen = set(r for r, _ in pairs) | set(m or "none" for _, m in pairs)
    letters = [c for c in MK_LETTERS if c in seen] + sorted(seen - set(MK_LETTERS))
    index = {c: i for i, c in enumerate(letters)}
    matrix = np.zeros((len(letters), len(letters)), int)
    for r, m in pairs:
        matrix[index[r], index[m or "none"]] += 1
    agree = sum(r == m for r, m in pairs)
    return {"n": len(pairs), "letter_agreement": agree / len(pairs) if pairs else float("nan"),
            "letters": letters, "matrix": matrix.tolist()}


def redshift_report(truth: Mapping[str, Sequence], labels: Sequence[int], predicted: Sequence[int],
                    z: Sequence[float], subclass: Sequence[str | None], snr: Sequence[float] | None = None,
                    z_true_class: Sequence[float] | None = None,
                    subclass_true_class: Sequence[str | None] | None = None,
                    z_err: Sequence[float] | None = None, z_err_true_class: Sequence[float] | None = None) -> dict:
    """Issue 14's part of an ``evaluate`` report, from a truth table (its ``z``, and ``subclass`` when
    it has one), the true and published class indices, and the fit's ``z`` and ``subclass`` per spectrum:
    ``redshift`` (``redshift_accuracy``) and ``star_types`` (true stars published as stars: our letter
    against the reference type). ``z_true_class`` / ``subclass_true_class``, the fit with the true
    class's templates, add ``redshift_true_class`` and ``star_types_true_class`` (every true star);
    ``z_err`` / ``z_err_true_class``, those fits' errors, the pulls (``redshift_accuracy``)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    z_true = np.asarray(truth["z"], np.float64)
    report = {"redshift": redshift_accuracy(z_true, z, labels, predicted, snr, z_err)}
    if z_true_class is not None:
        report["redshift_true_class"] = redshift_accuracy(z_true, z_true_class, labels, None, snr, z_err_true_class)
    if "subclass" in truth:
        reference = np.asarray(truth["subclass"], dtype=object)
        stars = np.flatnonzero((labels == 0) & (predicted == 0))
        report["star_types"] = star_type_confusion([reference[i] for i in stars], [subclass[i] for i in stars])
        if subclass_true_class is not None:
            stars = np.flatnonzero(labels == 0)
            report["star_types_true_class"] = star_type_confusion([reference[i] for i in stars],
                                                                  [subclass_true_class[i] for i in stars])
    return report


def redshift_skip_reason(truth: Mapping[str, Sequence], has_ivar: bool) -> str | None:
    """Why ``evaluate_redshift`` cannot run on a labelled set, in one line; None when it can."""
    if "z" not in truth:
        return "the truth has no 'z' column"
    if not has_ivar:
        return ("the labelled spectra have no inverse variance (FITS files and raw Parquet spectra have one; "
                "a flux_norm table needs an 'ivar_norm' column)")
    if not np.isfinite(np.asarray(truth["z"], np.float64)).any():
        return "the truth's 'z' column is empty"
    return None


def evaluate_redshift(classifier: Classifier, labelled: LabelledSet, truth: Mapping[str, Sequence]) -> dict:
    """The redshift part of ``evaluate`` (``redshift_report``) over the usable spectra whose truth has a
    ``z``: fitted as the class ``classifier`` publishes (``predict_with_redshift``, what the catalog
    gives) and as the true class; with the seconds per spectrum each took and the spectra left out."""
    from .redshift import RedshiftFitter

    z_true = np.array([np.nan if v is None else v for v in truth["z"]], np.float64)
    index = np.flatnonzero(np.isfinite(z_true))
    fitter = RedshiftFitter(device=classifier.device)
    published, z, z_err, subclass, z_as_true, z_err_as_true, subclass_as_true = [], [], [], [], [], [], []
    seconds = {"network_and_fit": 0.0, "fit_as_true_class": 0.0}
    for start in range(0, len(index), FIT_CHUNK):
        chunk = index[start:start + FIT_CHUNK]
        flux, ivar, pedestal = labelled.spectra(chunk), labelled.inverse_variances(chunk), labelled.pedestals(chunk)
        t0 = time.perf_counter()
        probs, _, fit = classifier.predict_with_redshift(flux, ivar, pedestal)
        t1 = time.perf_counter()
        as_true = fitter.fit(flux, ivar, labelled.labels[chunk], pedestal=pedestal)
        seconds["network_and_fit"] += t1 - t0
        seconds["fit_as_true_class"] += time.perf_counter() - t1
        published.append(fit.classes)
        z.append(fit.z), z_err.append(fit.z_err)
        z_as_true.append(as_true.z), z_err_as_true.append(as_true.z_err)
        subclass += fit.subclass
        subclass_as_true += as_true.subclass
    snr = labelled.snr[index]
    chosen = {k: [v[i] for i in index] for k, v in truth.items() if k in ("z", "subclass")}
    chosen["z"] = z_true[index]
    report = redshift_report(chosen, labelled.labels[index], np.concatenate(published), np.concatenate(z), subclass,
                             snr if np.isfinite(snr).any() else None, np.concatenate(z_as_true), subclass_as_true,
                             np.concatenate(z_err), np.concatenate(z_err_as_true))
    report["n_without_true_z"] = int(len(z_true) - len(index))
    report["seconds_per_spectrum"] = {k: v / len(index) for k, v in seconds.items()}
    return report
