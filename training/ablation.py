"""The paper's Table 3 on our mocks: fc4 ("traditional NN"), a plain 1-D DenseNet (one kernel size, no SE,
no cross-scale transitions) and ours, at the size of a preset, same data, same recipe (model/recipe.py:
fit, then the temperature on the validation set; the scores are of the labels, which the temperature
does not change).

    python training/ablation.py --data work/trainset --out work/ablation --per-class 4000 --epochs 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lamost_classify.model.labelled import load_set


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", default="fast")
    p.add_argument("--per-class", type=int, default=4000, help="training spectra per class (first ones)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--milestones", default="2,3")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()

    from lamost_classify.model.evaluate import evaluate, format_table3
    from lamost_classify.model.recipe import fit_calibrated, probabilities
    from lamost_classify.model.train import TrainConfig, ablation_configs

    def load(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        flux, truth = load_set(args.data, name)
        return flux, np.asarray(truth["label"]), np.asarray(truth["snr_g"])

    train_x, train_y, _ = load("train")
    keep = np.concatenate([np.flatnonzero(train_y == c)[: args.per_class] for c in range(3)])
    train_x, train_y = np.asarray(train_x[np.sort(keep)]), train_y[np.sort(keep)]
    val_x, val_y, _ = load("val")
    test_x, test_y, test_snr = load("test")
    base = TrainConfig(preset=args.preset, epochs=args.epochs, num_threads=args.threads,
                       lr_milestones=tuple(int(m) for m in args.milestones.split(",")))
    rows, reports = {}, {}
    for label, config in ablation_configs(base).items():
        calibrated = fit_calibrated(train_x, train_y, val_x, val_y, config, args.out / label)
        report = evaluate(test_y, probabilities(calibrated.model, test_x, calibrated.temperature), test_snr)
        reports[label] = report
        rows[label] = report["scores"]["mean"] | {"layers": _layers(calibrated.model)}
        print(label, rows[label], flush=True)
    print(format_table3(rows))
    (args.out / "ablation.json").write_text(json.dumps({"rows": rows, "reports": reports}, indent=1, default=float))


def _layers(model) -> int:
    from lamost_classify.model.densenet import count_layers

    return count_layers(model)


if __name__ == "__main__":
    main()
