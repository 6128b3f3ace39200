"""Classification metrics laid out like the paper's Tables 1 and 2 (section 5.1).

Per class: precision, recall and F1 and their mean over classes; the confusion matrix (rows = true
class, columns = prediction); precision re-weighted to a target class mix; and all of it again per
S/N bin; recall of galaxies and QSOs per redshift bin, and of each class by kind, when a mock truth
table is given. ``evaluate`` returns a plain dict (JSON-able), ``format_report`` prints it next to the
paper's numbers, ``save_report`` writes JSON and a PNG. ``format_redshift`` prints the redshift and
star type part (``redshift_metrics.evaluate_redshift``) that ``lamost-classify evaluate`` adds.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from lamost_classify.contract import CLASS_NAMES, SURVEY_PRIOR

# Table 1 of the paper: (precision, recall, F1) on its 89,877-spectrum validation set.
PAPER_TABLE1: dict[str, tuple[float, float, float]] = {
    "STAR": (0.9995, 0.9980, 0.9987),
    "GALAXY": (0.8593, 0.9731, 0.9127),
    "QSO": (0.9231, 0.9065, 0.9147),
    "mean": (0.9258, 0.9592, 0.9420),
}
# Table 3: mean (precision, recall, F1) and depth of each method.
PAPER_TABLE3: dict[str, tuple[int, float, float, float]] = {
    "fc4": (4, 0.4260, 0.2693, 0.3299),
    "plain_densenet": (36, 0.9013, 0.9294, 0.9151),
    "paper": (36, 0.9258, 0.9592, 0.9420),
}
# (label, low, high): low <= snr < high. Spectra without an S/N go to no bin.
SNR_BINS: tuple[tuple[str, float, float], ...] = (
    ("snr<5", -math.inf, 5.0), ("5-10", 5.0, 10.0), ("10-20", 10.0, 20.0), ("snr>20", 20.0, math.inf),
)

# Redshift bins (label, low, high), low <= z < high, per true class: recall only, a prediction has no z.
Z_BINS: dict[str, tuple[tuple[str, float, float], ...]] = {
    "GALAXY": (("z<0.1", -math.inf, 0.1), ("0.1-0.2", 0.1, 0.2), ("0.2-0.3", 0.2, 0.3), ("z>0.3", 0.3, math.inf)),
    "QSO": (("z<1", -math.inf, 1.0), ("1-2", 1.0, 2.0), ("2-3", 2.0, 3.0), ("z>3", 3.0, math.inf)),
}


def _subclass_is(pattern: str):
    return lambda t: np.array([re.match(pattern, str(v)) is not None for v in t["subclass"]])


def _template_is(pattern: str):
    return lambda t: np.array([re.match(pattern, str(v)) is not None for v in t["template"]])


def _column(t: Mapping[str, Sequence], key: str) -> np.ndarray:
    return np.asarray(t[key], dtype=np.float64)


# The cases that template fitters are known to confuse (docs/facts.md, "Known hard cases"): name ->
# (true class, which spectra of a mock truth table, with columns class, subclass, template, z, snr_g).
HARD_CASES: dict[str, tuple[str, Callable[[Mapping[str, Sequence]], np.ndarray]]] = {
    "K and M stars (vs passive galaxies)": ("STAR", _subclass_is(r"^[KM]\d")),
    "passive galaxies at z < 0.1 (vs K stars)":
        ("GALAXY", lambda t: _subclass_is("^PASSIVE$")(t) & (_column(t, "z") < 0.1)),
    "emission-line O/B stars (vs star-forming galaxies)": ("STAR", _template_is(r"^sdss-star:[OB][\w.]*e")),
    "star-forming galaxies at z < 0.1 (vs emission-line stars)":
        ("GALAXY", lambda t: _subclass_is("^STARFORMING$")(t) & (_column(t, "z") < 0.1)),
    "QSOs at z < 1, S/N < 10 (vs galaxies)":
        ("QSO", lambda t: (_column(t, "z") < 1.0) & (_column(t, "snr_g") < 10.0)),
}


def hard_cases(truth: Mapping[str, Sequence], y_pred: np.ndarray) -> dict[str, dict]:
    """Recall of each of ``HARD_CASES`` present in ``truth`` and what its misses were called."""
    classes = np.asarray(truth["class"])
    y_pred = np.asarray(y_pred)
    out = {}
    for name, (true_class, select) in HARD_CASES.items():
        inside = select(truth) & (classes == true_class)
        if inside.any():
            out[name] = {"class": true_class, **_recall_row(y_pred, inside, true_class)}
    return out


def _recall_row(y_pred: np.ndarray, inside: np.ndarray, true_class: str) -> dict:
    """n, recall and what they were called, of the rows ``inside`` (all of ``true_class``)."""
    called = np.bincount(y_pred[inside], minlength=len(CLASS_NAMES))
    return {"n": int(inside.sum()), "recall": float(called[CLASS_NAMES.index(true_class)] / inside.sum()),
            "called": dict(zip(CLASS_NAMES, called.tolist()))}


def recall_by_redshift(truth: Mapping[str, Sequence], y_pred: np.ndarray) -> dict[str, dict[str, dict]]:
    """{class: {z bin: n, recall, what they were called}} over ``Z_BINS``, from truth columns class and z."""
    classes = np.asarray(truth["class"])
    z = _column(truth, "z")
    y_pred = np.asarray(y_pred)
    out: dict[str, dict[str, dict]] = {}
    for true_class, bins in Z_BINS.items():
        for label, low, high in bins:
            inside = (classes == true_class) & (z >= low) & (z < high)
            if inside.any():
                out.setdefault(true_class, {})[label] = _recall_row(y_pred, inside, true_class)
    return out


def spectral_kind(true_class: str, subclass: str) -> str:
    """What ``recall_by_kind`` groups by: a star's MK letter (its subclass where it has none: WD, CV, C),
    a galaxy's or QSO's subclass (STARFORMING, PASSIVE, ...; BROADLINE, BAL)."""
    if true_class == "STAR":
        letter = re.match(r"^([OBAFGKML])\d", subclass)
        return letter.group(1) if letter else subclass
    return subclass


def recall_by_kind(truth: Mapping[str, Sequence], y_pred: np.ndarray) -> dict[str, dict[str, dict]]:
    """{class: {kind: n, recall, what they were called}}, kinds from the truth's class and subclass
    (``spectral_kind``): which kinds of an unseen family a model misses."""
    classes = np.asarray(truth["class"])
    kinds = np.array([spectral_kind(c, str(s)) for c, s in zip(classes, truth["subclass"])])
    y_pred = np.asarray(y_pred)
    out: dict[str, dict[str, dict]] = {}
    for true_class in CLASS_NAMES:
        of_class = classes == true_class
        for kind in sorted(set(kinds[of_class].tolist())):
            out.setdefault(true_class, {})[kind] = _recall_row(y_pred, of_class & (kinds == kind), true_class)
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(n_classes, n_classes)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


def _f1(precision: float, recall: float) -> float:
    if math.isnan(recall):
        return math.nan  # class absent: undefined
    if math.isnan(precision) or precision + recall == 0:
        return 0.0  # present but never (correctly) predicted
    return 2 * precision * recall / (precision + recall)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def scores_from_confusion(cm: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class plus their unweighted mean ('mean').

    Undefined values (precision of a class never predicted, recall of an absent class) are NaN and
    left out of the mean.
    """
    cm = np.asarray(cm, dtype=np.float64)
    names = CLASS_NAMES[: len(cm)]
    out: dict[str, dict[str, float]] = {}
    for c, name in enumerate(names):
        p = _ratio(cm[c, c], cm[:, c].sum())
        r = _ratio(cm[c, c], cm[c, :].sum())
        out[name] = {"precision": p, "recall": r, "f1": _f1(p, r), "support": int(cm[c, :].sum())}
    out["mean"] = {key: _nanmean([out[n][key] for n in names]) for key in ("precision", "recall", "f1")}
    out["mean"]["support"] = int(cm.sum())
    return out


def reweighted_precision(cm: np.ndarray, target_prior: Sequence[float]) -> dict[str, float]:
    """Precision each class would have if the true classes came in ``target_prior`` proportions.

    Each confusion-matrix row is scaled by target share / observed share: recall is unchanged, but
    at the survey's 98.5:1.2:0.3 a small star -> galaxy rate weighs 80x more than in a balanced set.
    """
    cm = np.asarray(cm, dtype=np.float64)
    observed = cm.sum(axis=1) / max(cm.sum(), 1)
    target = np.asarray(target_prior, dtype=np.float64)
    scale = np.divide(target, observed, out=np.zeros_like(target), where=observed > 0)
    weighted = cm * scale[:, None]
    return {name: _ratio(weighted[c, c], weighted[:, c].sum()) for c, name in enumerate(CLASS_NAMES[: len(cm)])}


def reweighted_f1(cm: np.ndarray, target_prior: Sequence[float]) -> dict[str, float]:
    """F1 per class with precision re-weighted to ``target_prior`` (recall does not depend on the mix)."""
    precision = reweighted_precision(cm, target_prior)
    recall = scores_from_confusion(cm)
    return {name: _f1(precision[name], recall[name]["recall"]) for name in precision}


def evaluate(
    y_true: np.ndarray,
    predicted: np.ndarray,
    snr: np.ndarray | None = None,
    target_prior: Sequence[float] = SURVEY_PRIOR,
    truth: Mapping[str, Sequence] | None = None,
) -> dict:
    """The full report. ``predicted`` is class indices (B,) or probabilities (B, n_classes); ``truth``, a
    mock truth table (class, subclass, template, z, snr_g), adds the recall of ``HARD_CASES``, of
    galaxies and QSOs by redshift bin (``Z_BINS``) and of every class by kind (``recall_by_kind``)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    predicted = np.asarray(predicted)
    y_pred = predicted.argmax(axis=1) if predicted.ndim == 2 else predicted.astype(np.int64)
    if len(y_pred) != len(y_true):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    cm = confusion_matrix(y_true, y_pred)
    report = {
        "n": int(len(y_true)),
        "class_names": list(CLASS_NAMES),
        "scores": scores_from_confusion(cm),
        "confusion_matrix": cm.tolist(),
        "target_prior": list(target_prior),
        "reweighted_precision": reweighted_precision(cm, target_prior),
        "reweighted_f1": reweighted_f1(cm, target_prior),
        "by_snr": {},
    }
    if snr is not None:
        snr = np.asarray(snr, dtype=np.float64)
        for label, low, high in SNR_BINS:
            inside = (snr >= low) & (snr < high)
            if inside.any():
                bin_cm = confusion_matrix(y_true[inside], y_pred[inside])
                report["by_snr"][label] = {
                    "n": int(inside.sum()),
                    "scores": scores_from_confusion(bin_cm),
                    "confusion_matrix": bin_cm.tolist(),
                    "reweighted_precision": reweighted_precision(bin_cm, target_prior),
                    "reweighted_f1": reweighted_f1(bin_cm, target_prior),
                }
    if truth is not None:
        report["hard_cases"] = hard_cases(truth, y_pred)
        if "z" in truth and "class" in truth:
            report["by_redshift"] = recall_by_redshift(truth, y_pred)
        if "subclass" in truth and "class" in truth:
            report["by_kind"] = recall_by_kind(truth, y_pred)
    return report


# Row and column names as the paper's tables print them.
DISPLAY = {"STAR": "Star", "GALAXY": "Galaxy", "QSO": "Quasar", "mean": "Average"}


def _fmt(value: float) -> str:
    return "   -  " if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _recall_text(row: dict, true_class: str, width: int) -> str:
    """'n  recall  (what the misses were called)' of a ``_recall_row``."""
    misses = ", ".join(f"{n} {k}" for k, n in row["called"].items() if k != true_class and n)
    return f"{row['n']:>{width}d}  {_fmt(row['recall'])}" + (f"  ({misses})" if misses else "")


def format_report(report: dict, compare_paper: bool = True) -> str:
    """Tables 1 and 2 as text, the paper's Table 1 beside ours, then re-weighted precision and S/N bins."""
    s = report["scores"]
    lines = [f"Precision, recall and F1 ({report['n']} spectra)" + ("   [paper's Table 1 in brackets]" if compare_paper else "")]
    lines.append(f"{'':10s}{'Precision':>20s}{'Recall':>20s}{'F1-Score':>20s}{'Support':>10s}")
    for name in (*CLASS_NAMES, "mean"):
        row = f"{DISPLAY[name]:10s}"
        for k, key in enumerate(("precision", "recall", "f1")):
            paper = f" [{PAPER_TABLE1[name][k]:.4f}]" if compare_paper else ""
            row += f"{_fmt(s[name][key]) + paper:>20s}"
        lines.append(row + f"{s[name]['support']:>10d}")
    lines += ["", "Confusion matrix (rows: reference, columns: prediction)"]
    lines.append(f"{'':10s}" + "".join(f"{DISPLAY[n]:>10s}" for n in CLASS_NAMES))
    for name, row in zip(CLASS_NAMES, report["confusion_matrix"]):
        lines.append(f"{DISPLAY[name]:10s}" + "".join(f"{v:>10d}" for v in row))
    prior = ":".join(f"{100 * p:g}" for p in report["target_prior"])
    lines += ["", f"Precision re-weighted to a {prior} class mix: "
              + ", ".join(f"{n} {_fmt(v)}" for n, v in report["reweighted_precision"].items())]
    if "reweighted_f1" in report:  # reports saved before it existed lack it
        lines.append("F1 at that mix: " + ", ".join(f"{n} {_fmt(v)}" for n, v in report["reweighted_f1"].items()))
    if report["by_snr"]:
        lines += ["", "F1 by S/N bin"]
        lines.append(f"{'bin':10s}{'n':>8s}" + "".join(f"{DISPLAY[n]:>10s}" for n in (*CLASS_NAMES, "mean")))
        for label, b in report["by_snr"].items():
            lines.append(f"{label:10s}{b['n']:>8d}" + "".join(f"{_fmt(b['scores'][n]['f1']):>10s}" for n in (*CLASS_NAMES, "mean")))
        lines += ["", f"Precision re-weighted to the {prior} mix, by S/N bin"]
        lines.append(f"{'bin':10s}{'n':>8s}" + "".join(f"{DISPLAY[n]:>10s}" for n in CLASS_NAMES))
        for label, b in report["by_snr"].items():
            lines.append(f"{label:10s}{b['n']:>8d}"
                         + "".join(f"{_fmt(b['reweighted_precision'][n]):>10s}" for n in CLASS_NAMES))
    if report.get("by_redshift"):
        lines += ["", "Recall by redshift bin (what the misses were called)"]
        for true_class, bins in report["by_redshift"].items():
            lines += [f"{DISPLAY[true_class]:10s}{label:10s}{_recall_text(b, true_class, 8)}" for label, b in bins.items()]
    if report.get("by_kind"):
        lines += ["", "Recall by kind: the truth's subclass, stars by MK letter (what the misses were called)"]
        for true_class, kinds in report["by_kind"].items():
            lines += [f"{DISPLAY[true_class]:10s}{kind:16s}{_recall_text(b, true_class, 8)}" for kind, b in kinds.items()]
    if report.get("hard_cases"):
        lines += ["", "Known hard cases: recall (what the misses were called)"]
        lines += [f"{name:58s}{_recall_text(case, case['class'], 6)}" for name, case in report["hard_cases"].items()]
    return "\n".join(lines)


def _redshift_row(label: str, published: dict, as_true: dict | None) -> str:
    row = f"{label:22s}{published['n']:>6d}"
    for scores in (published, as_true):
        if scores is not None:
            row += f"{_fmt(scores['within']):>8s}{scores['nmad']:>10.5f}{_fmt(scores['catastrophic']):>10s}"
    return row


def format_redshift(section: dict) -> str:
    """The redshift scores by true class, S/N and z bin (fitted as the published class, and as the true
    one when the section has it), then the star type letter agreement and its confusion matrix."""
    from .redshift_metrics import CATASTROPHIC, TOLERANCE

    as_true = section.get("redshift_true_class", {}).get("by_class", {})
    tolerances = ", ".join(f"{DISPLAY[n].lower()} {t:g}" for n, t in TOLERANCE.items())
    lines = [f"Redshift by true class: within = share with |dz|/(1+z) below the class's tolerance ({tolerances});",
             f"NMAD of dz/(1+z); catastrophic: |dz|/(1+z) > {CATASTROPHIC:g}. Fitted with the templates of",
             (f"{'':28s}{'the published class':^28s}" + (f"{'the true class':^28s}" if as_true else "")).rstrip(),
             f"{'true class, bin':22s}{'n':>6s}" + f"{'within':>8s}{'NMAD':>10s}{'catastr.':>10s}" * (2 if as_true else 1)]
    for name, scores in section["redshift"]["by_class"].items():
        mine = as_true.get(name)
        lines.append(_redshift_row(f"{DISPLAY[name]} all", scores, mine))
        for kind, prefix in (("by_snr", "S/N"), ("by_z", "z")):
            for label, b in scores.get(kind, {}).items():
                lines.append(_redshift_row(f"  {prefix} {label}", b, mine[kind][label] if mine else None))
    right = ", ".join(f"{DISPLAY[n]} {_fmt(s['class_right'])}" for n, s in section["redshift"]["by_class"].items()
                      if "class_right" in s)
    if right:
        lines.append(f"Published as the true class (fitted with its templates): {right}")
    pulls = "; ".join(f"{DISPLAY[n]} {s['pull_nmad']:.2f}, {_fmt(s['within_z_err'])}"
                      for n, s in section["redshift"]["by_class"].items() if "pull_nmad" in s)
    if pulls:
        lines.append(f"z_err (published fits within tolerance): NMAD of dz/z_err and share within +-z_err, "
                     f"1 and 0.68 if honest: {pulls}")
    if section.get("n_without_true_z"):
        lines.append(f"{section['n_without_true_z']} spectra without a true z left out")
    cost = section.get("seconds_per_spectrum")
    if cost:
        lines.append(f"Cost per spectrum: network + fit {1e3 * cost['network_and_fit']:.2f} ms, "
                     f"fit as the true class {1e3 * cost['fit_as_true_class']:.2f} ms")
    types = section.get("star_types")
    if types is not None:
        other = section.get("star_types_true_class")
        lines += ["", f"Star types, MK letter against the truth's subclass: {_fmt(types['letter_agreement'])} agree "
                  f"(n={types['n']}, true stars published as STAR)"
                  + (f"; fitted as STAR: {_fmt(other['letter_agreement'])} (n={other['n']})" if other else "")]
        if types["n"]:
            lines.append(f"{'truth / ours':14s}" + "".join(f"{c:>6s}" for c in types["letters"]))
            for letter, row in zip(types["letters"], types["matrix"]):
                lines.append(f"{letter:14s}" + "".join(f"{v:>6d}" for v in row))
    return "\n".join(lines)


def format_table3(rows: dict[str, dict[str, float]]) -> str:
    """The paper's Table 3: mean precision, recall and F1 per method, ours beside the paper's."""
    lines = ["Mean precision, recall and F1 per method   [paper's Table 3 in brackets]",
             f"{'method':16s}{'Precision':>20s}{'Recall':>20s}{'F1-Score':>20s}"]
    for method, mean in rows.items():
        paper = PAPER_TABLE3.get("paper" if method not in PAPER_TABLE3 else method)
        row = f"{method:16s}"
        for k, key in enumerate(("precision", "recall", "f1")):
            row += f"{_fmt(mean[key]) + f' [{paper[k + 1]:.4f}]':>20s}"
        lines.append(row)
    return "\n".join(lines)


def _jsonable(obj: object) -> object:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def save_report(report: dict, out_dir: str | Path, stem: str = "evaluation") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.png`` (confusion matrix + F1 per S/N bin) into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(_jsonable(report), indent=2))

    cm = np.asarray(report["confusion_matrix"], dtype=np.float64)
    row_share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, (ax_cm, ax_snr) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax_cm.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax_cm.text(j, i, f"{int(cm[i, j])}\n{row_share[i, j]:.1%}", ha="center", va="center",
                       color="white" if row_share[i, j] > 0.5 else "black", fontsize=9)
    ax_cm.set_xticks(range(len(cm)), CLASS_NAMES)
    ax_cm.set_yticks(range(len(cm)), CLASS_NAMES)
    ax_cm.set_xlabel("prediction")
    ax_cm.set_ylabel("reference")
    ax_cm.set_title("Confusion matrix (colour: share of the row)")

    bins = list(report["by_snr"])
    width = 0.8 / len(CLASS_NAMES)
    for k, name in enumerate(CLASS_NAMES):
        f1 = [report["by_snr"][b]["scores"][name]["f1"] for b in bins]
        ax_snr.bar(np.arange(len(bins)) + (k - 1) * width, np.nan_to_num(f1), width, label=name)
    ax_snr.set_xticks(range(len(bins)), [f"{b}\n(n={report['by_snr'][b]['n']})" for b in bins])
    ax_snr.set_ylim(0, 1.05)
    ax_snr.set_ylabel("F1")
    ax_snr.set_title("F1 per S/N bin" if bins else "F1 per S/N bin (no S/N given)")
    ax_snr.legend(loc="lower right")
    fig.tight_layout()
    png_path = out_dir / f"{stem}.png"
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return json_path, png_path
