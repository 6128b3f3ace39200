"""Completeness and purity of the README's galaxy and QSO selections, at the survey's class mix.

The catalog's ``class`` is chosen for purity at the mix; the README tells users who want completeness
to select on the balanced probabilities instead. This measures what each of those selections gives:
completeness (the share of the class's spectra selected) and purity at the survey mix 98.5 : 1.2 : 0.3
(each true class's selected share weighted by its share of the mix, as ``evaluate.reweighted_precision``
does for a label). The sets of every --data directory are pooled: the "all" column takes the sets at the
real files' S/N (``test``, ``test_survey``: the catalog's S/N distribution), the S/N (g) bins take every
set (``test_snr`` adds faint and bright spectra). Purity at the mix hangs on how many of the ~10^5 stars
a selection takes, so each cell says that count too. Mocks only: the real spectra in ../shared are too
few to give a purity at a 98.5% star mix.

    python training/selection_purity.py --data work/trainset work/families/eigen work/families/physical \\
        --sets test test_survey test_snr --json work/selection.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lamost_classify import CLASS_NAMES, SURVEY_PRIOR

GALAXY, QSO = CLASS_NAMES.index("GALAXY"), CLASS_NAMES.index("QSO")
REAL_SNR_SETS = ("test", "test_survey")  # made at the real files' S/N distribution (make_training_set.py)
SNR_EDGES = (("all", 0.0, np.inf), ("snr<5", 0.0, 5.0), ("5-10", 5.0, 10.0), ("10-20", 10.0, 20.0),
             ("snr>20", 20.0, np.inf))

Selection = Callable[[dict[str, np.ndarray]], np.ndarray]


def _selections(c: int) -> dict[str, Selection]:
    """The README's selections of class ``c``, over the catalog's columns (name -> mask)."""
    name = CLASS_NAMES[c].lower()
    return {
        f"class = '{CLASS_NAMES[c]}'": lambda r: r["class"] == c,
        f"prob_{name}_balanced > 0.5": lambda r: r["balanced"][:, c] > 0.5,
        f"prob_{name}_balanced > 0.9": lambda r: r["balanced"][:, c] > 0.9,
        f"(class = '{CLASS_NAMES[c]}' OR prob_{name}_balanced > 0.5) AND snr_g > 5":
            lambda r: ((r["class"] == c) | (r["balanced"][:, c] > 0.5)) & (r["snr_g"] > 5),
    }


def selection_scores(selected: np.ndarray, label: np.ndarray, c: int,
                     mix: tuple[float, ...] = SURVEY_PRIOR) -> dict[str, float]:
    """Completeness of class ``c`` and its purity if the classes came in ``mix`` proportions."""
    rate = np.array([selected[label == k].mean() if (label == k).any() else np.nan for k in range(len(mix))])
    weighted = np.asarray(mix) * rate
    purity = float(weighted[c] / np.nansum(weighted)) if np.nansum(weighted) > 0 else float("nan")
    return {"completeness": float(rate[c]), "purity_at_mix": purity, "n_class": int((label == c).sum()),
            "n_stars": int((label == 0).sum()), "stars_selected": int(selected[label == 0].sum())}


def measure(rows: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """class -> selection -> S/N bin -> scores; "all" on the real-S/N sets' rows alone."""
    out: dict = {}
    for c in (GALAXY, QSO):
        out[CLASS_NAMES[c]] = {}
        for title, select in _selections(c).items():
            chosen = select(rows)
            out[CLASS_NAMES[c]][title] = {}
            for label, lo, hi in SNR_EDGES:
                keep = (rows["snr_g"] >= lo) & (rows["snr_g"] < hi) & (rows["real_snr"] if label == "all" else True)
                if keep.any():
                    out[CLASS_NAMES[c]][title][label] = selection_scores(chosen[keep], rows["label"][keep], c)
    return out


def catalog_columns(classifier, flux: np.ndarray, truth: dict) -> dict[str, np.ndarray]:
    """The columns a selection reads, as the catalog would hold them, for one set."""
    probs, balanced = [], []
    for start in range(0, len(flux), 2048):
        p, b = classifier.predict_proba_and_balanced(np.asarray(flux[start:start + 2048], np.float32))
        probs.append(p)
        balanced.append(b)
    probs, balanced = np.concatenate(probs), np.concatenate(balanced)
    return {"class": probs.argmax(1), "balanced": balanced, "label": np.asarray(truth["label"], np.int64),
            "snr_g": np.asarray(truth["snr_g"], np.float64)}


def markdown(result: dict) -> str:
    lines = []
    for cls, by_sel in result["scores"].items():
        first = next(iter(by_sel.values()))
        bins = list(first)
        lines += [f"{cls}: completeness / purity at the survey mix (stars selected of stars); {result['what']}", "",
                  "| selection | " + " | ".join(f"{b} ({first[b]['n_class']} {cls.lower()}, {first[b]['n_stars']} stars)"
                                                for b in bins) + " |", "| --- |" + " --- |" * len(bins)]
        for title, scores in by_sel.items():
            lines.append(f"| `{title}` | " + " | ".join(
                f"{scores[b]['completeness']:.3f} / {scores[b]['purity_at_mix']:.3f} ({scores[b]['stars_selected']})"
                if scores[b]["n_class"] else "-" for b in bins) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, nargs="+", required=True, help="set directories, pooled")
    p.add_argument("--sets", nargs="+", default=["test", "test_survey", "test_snr"])
    p.add_argument("--model", default=None, help="weights (default: the shipped model, its card's prior)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from lamost_classify.model.inference import Classifier

    classifier = Classifier.load(args.model, device="cpu")
    parts = []
    for name in args.sets:
        for d in args.data:
            flux = np.load(d / f"{name}_flux.npy", mmap_mode="r")
            part = catalog_columns(classifier, flux, pq.read_table(d / f"{name}_truth.parquet").to_pydict())
            part["real_snr"] = np.full(len(flux), name in REAL_SNR_SETS)
            parts.append(part)
    rows = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    what = (f"model {classifier.name}; sets {', '.join(args.sets)} of {', '.join(str(d) for d in args.data)} "
            f"pooled ({len(rows['label'])} mocks); 'all' on {', '.join(REAL_SNR_SETS)} only")
    result = {"model": classifier.name, "mix": list(SURVEY_PRIOR), "what": what, "scores": measure(rows)}
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
