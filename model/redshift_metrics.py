"""Redshift accuracy and star type agreement, the issue's measures (for ``evaluate`` and the reports).

- Redshift, per class: the fraction within |dz| / (1 + z) < 0.003 (galaxies) or < 0.01 (QSOs; stars are
  held to 0.001, 300 km/s), the NMAD of dz / (1 + z) (1.4826 x the median absolute deviation), and the
  catastrophic rate, |dz| / (1 + z) > 0.05 (another line taken for the one seen: 15,000 km/s and more).
  By true class, S/N bin and redshift bin.
- Stars: the MK letter of our subclass against a reference subclass (LAMOST's own, or the mock's
  template), its agreement and the confusion matrix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from lamost_classify.contract import CLASS_NAMES

TOLERANCE = {"STAR": 0.001, "GALAXY": 0.003, "QSO": 0.01}
CATASTROPHIC = 0.05
SNR_BINS = (0.0, 2.0, 5.0, 10.0, 20.0, np.inf)
Z_BINS = {"STAR": (-np.inf, np.inf), "GALAXY": (0.0, 0.1, 0.2, 0.3, 0.5, np.inf),
          "QSO": (0.0, 0.5, 1.0, 2.0, 3.0, np.inf)}
MK_LETTERS = "OBAFGKM"


def _scores(z_true: np.ndarray, z_pred: np.ndarray, tolerance: float) -> dict:
    dz = (z_pred - z_true) / (1.0 + z_true)
    fitted = np.isfinite(dz)
    n = len(dz)
    if n == 0:
        return {"n": 0}
    d = dz[fitted]
    nmad = float(1.4826 * np.median(np.abs(d - np.median(d)))) if len(d) else float("nan")
    # A spectrum without a redshift counts as a miss, not as absent.
    return {"n": n, "n_fitted": int(fitted.sum()), "within": float((np.abs(d) < tolerance).sum() / n),
            "tolerance": tolerance, "nmad": nmad, "catastrophic": float((np.abs(d) > CATASTROPHIC).sum() / n)}


def _bin_label(lo: float, hi: float) -> str:
    if not np.isfinite(lo):
        return "all"
    return f">= {lo:g}" if not np.isfinite(hi) else f"{lo:g}-{hi:g}"


def redshift_accuracy(z_true: Sequence[float], z_pred: Sequence[float], true_class: Sequence[int],
                      fitted_class: Sequence[int] | None = None, snr: Sequence[float] | None = None) -> dict:
    """The issue's redshift scores, by true class and within each by S/N and redshift bin.

    ``fitted_class``: the class whose templates gave ``z_pred`` (the network's); when given, each class
    also reports ``class_right``, the fraction fitted as its own class (a QSO fitted as a galaxy rarely
    gets a QSO's redshift).
    """
    z_true, z_pred = np.asarray(z_true, np.float64), np.asarray(z_pred, np.float64)
    true_class = np.asarray(true_class)
    snr = None if snr is None else np.asarray(snr, np.float64)
    out: dict = {"by_class": {}}
    for label, name in enumerate(CLASS_NAMES):
        members = true_class == label
        if not members.any():
            continue
        scores = _scores(z_true[members], z_pred[members], TOLERANCE[name])
        if fitted_class is not None:
            scores["class_right"] = float((np.asarray(fitted_class)[members] == label).mean())
        if snr is not None:
            scores["by_snr"] = {_bin_label(lo, hi): _scores(z_true[m], z_pred[m], TOLERANCE[name])
                                for lo, hi in zip(SNR_BINS[:-1], SNR_BINS[1:])
                                if (m := members & (snr >= lo) & (snr < hi)).any()}
        edges = Z_BINS[name]
        if len(edges) > 2:
            scores["by_z"] = {_bin_label(lo, hi): _scores(z_true[m], z_pred[m], TOLERANCE[name])
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
                    z: Sequence[float], subclass: Sequence[str | None], snr: Sequence[float] | None = None) -> dict:
    """Issue 14's part of an ``evaluate`` report, from a mock truth table (its ``z`` and ``subclass``),
    the true and published class indices, and the fit's ``z`` and ``subclass`` per spectrum:
    ``redshift`` (``redshift_accuracy``) and ``star_types`` (true stars published as stars: our letter
    against the template's type)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    stars = np.flatnonzero((labels == 0) & (predicted == 0))
    reference = np.asarray(truth["subclass"], dtype=object)
    return {"redshift": redshift_accuracy(np.asarray(truth["z"], np.float64), z, labels, predicted, snr),
            "star_types": star_type_confusion([reference[i] for i in stars], [subclass[i] for i in stars])}
