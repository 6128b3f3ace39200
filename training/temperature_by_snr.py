"""Does the shipped model's calibration depend on S/N? The temperature that best fits each S/N bin's logits.

    python training/temperature_by_snr.py [--n 3000] [--model default]

Per mock family (mocks/families.py), ``--n`` mocks at a balanced mix, S/N log-uniform 2-100, seed 41: the
negative-log-likelihood-optimal temperature of the network's logits (model/calibration.py) in each S/N bin,
against the card's one temperature. Where nearly every mock of a bin is right, the fit runs to its bound
(``calibration.T_MIN``).
"""

from __future__ import annotations

import argparse

import numpy as np

SNR_BINS = ((2.0, 3.5), (3.5, 5.0), (5.0, 10.0), (10.0, 30.0), (30.0, 101.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    from lamost_classify import CLASS_NAMES
    from lamost_classify.mocks.families import FAMILIES, generate
    from lamost_classify.mocks.instrument import WAVELENGTH
    from lamost_classify.model.calibration import fit_temperature
    from lamost_classify.model.inference import Classifier
    from lamost_classify.pipeline.grid import prepare_arrays

    model = Classifier.load(args.model)
    print(f"{model.name}: the card's temperature {model.temperature:.3f}")
    for family in FAMILIES:
        logits, labels, snr = [], [], []
        for chunk in generate(family, args.n, 41, class_mix=(1 / 3, 1 / 3, 1 / 3), snr_distribution="loguniform",
                              snr_range=(2.0, 100.0)):
            logits.append(model.logits(prepare_arrays(WAVELENGTH, chunk.flux, chunk.ivar, chunk.andmask).flux))
            labels += [CLASS_NAMES.index(c) for c in chunk.truth["class"]]
            snr += list(chunk.truth["snr_g"])
        logits, labels, snr = np.concatenate(logits).astype(np.float64), np.array(labels), np.array(snr)
        print(f"{family}: all {fit_temperature(logits, labels):.3f}; " + ", ".join(
            f"S/N {lo:g}-{hi:g} {fit_temperature(logits[m], labels[m]):.3f} (n={m.sum()})"
            for lo, hi in SNR_BINS for m in [(snr >= lo) & (snr < hi)]))


if __name__ == "__main__":
    main()
