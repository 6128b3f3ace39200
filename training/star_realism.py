"""How like real LAMOST stars a mock family's stars are, band by band, per MK subtype.

    python training/star_realism.py [--families physical] [--types G5 K0 K3 K5 K7 M0] [--n 6000] [--seed 5]

Both sides are seen as the star letter classifier and the template fit see them (model/star_letter.py:
``star_letter_features``): moved to rest, the telluric bands left out, divided by a continuum fitted with
the absorption lines clipped away. Real: the LAMOST stars under ``--shared`` that are not held out, by
LAMOST's own SUBCLASS and Z (training/make_redshift_templates.py: ``lamost_stars``). Mock: each family's
stars of the same subtype, by the truth table, at S/N 100-200 and moved to rest by their true z.

Printed per subtype: for each band (rest wavelength), the median over the real stars of that band's mean
(16-84% range beside) and the mock median; the bands are the features that tell cool stars from old
stellar populations (Ca II H and K and the blanketed blue, the G band, MgH + Mg b, Na D, TiO).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lamost_classify.model.star_letter import FEATURE_BIN
from lamost_classify.pipeline.grid import LOG_WAVELENGTH

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_redshift_templates import SHARED_DATA, lamost_stars, rest_frame_letter_features  # noqa: E402
from validate_redshift import prepared_mocks  # noqa: E402

#: (name, rest lower, rest upper) in A
BANDS = (
    ("blue 3800-3900", 3800.0, 3900.0),
    ("Ca II K", 3924.0, 3946.0),
    ("Ca II H", 3960.0, 3980.0),
    ("4000-4100", 4000.0, 4100.0),
    ("4100-4280", 4100.0, 4280.0),
    ("G band", 4290.0, 4320.0),
    ("4400-4800", 4400.0, 4800.0),
    ("MgH + Mg b", 5000.0, 5300.0),
    ("Na D", 5880.0, 5900.0),
    ("6000-6500", 6000.0, 6500.0),
    ("TiO 7050-7150", 7050.0, 7150.0),
)
DEFAULT_TYPES = ("G2", "G5", "G8", "K0", "K1", "K3", "K4", "K5", "K7", "M0")


def band_means(flux: np.ndarray, ivar: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(B, len(BANDS)) mean continuum-divided flux per band of grid spectra (B, N) at redshifts z (B,);
    NaN where a band has no usable feature."""
    features, good = rest_frame_letter_features(flux, ivar, z)
    features = features.numpy()
    n = features.shape[1]
    whole_bin = good[:, : n * FEATURE_BIN].reshape(len(good), n, FEATURE_BIN).all(-1).numpy()
    wave = 10.0 ** LOG_WAVELENGTH[: n * FEATURE_BIN].reshape(n, FEATURE_BIN).mean(1)
    out = np.full((len(features), len(BANDS)), np.nan)
    for j, (_, lo, hi) in enumerate(BANDS):
        inside = (wave >= lo) & (wave < hi)
        use = whole_bin[:, inside]
        count = use.sum(1)
        total = np.where(use, features[:, inside], 0.0).sum(1)
        out[:, j] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def real_stars(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    """(subclass labels, band means) of the real LAMOST stars not held out."""
    stars = list(lamost_stars(shared))
    labels = np.array([label for label, *_ in stars])
    means = band_means(np.stack([s[2] for s in stars]), np.stack([s[3] for s in stars]),
                       np.array([s[1] for s in stars]))
    return labels, means


def mock_stars(family: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(truth subclass, band means) of ``n`` of ``family``'s stars at S/N 100-200."""
    flux, ivar, pedestal, truth = prepared_mocks(family, n, seed, (1.0, 0.0, 0.0), (100.0, 200.0), ("subclass", "z"))
    # with the pedestal the normalisation subtracted, as the real stars (``lamost_stars``) and the fit see a star
    return truth["subclass"].astype(str), band_means(flux + pedestal[:, None], ivar, truth["z"].astype(np.float64))


def compare(real: tuple[np.ndarray, np.ndarray], mocks: dict[str, tuple[np.ndarray, np.ndarray]],
            types: list[str]) -> dict:
    """Per subtype and band: the real stars' median and 16/84% and each family's median (None where no
    star of that subtype has the band)."""
    def stats(values: np.ndarray) -> dict:
        v = values[np.isfinite(values)]
        if not len(v):
            return {"n": 0}
        p16, p50, p84 = np.percentile(v, [16, 50, 84])
        return {"n": int(len(v)), "median": float(p50), "p16": float(p16), "p84": float(p84)}

    out: dict = {}
    for subtype in types:
        row: dict = {}
        for j, (band, *_) in enumerate(BANDS):
            row[band] = {"real": stats(real[1][real[0] == subtype, j])}
            for family, (labels, means) in mocks.items():
                row[band][family] = stats(means[labels == subtype, j])
        out[subtype] = row
    return out


def print_table(result: dict, families: list[str]) -> None:
    def cell(s: dict) -> str:
        return f"{s['median']:.3f}" if s.get("n") else "-"

    for subtype, row in result.items():
        n_real = max(s["real"].get("n", 0) for s in row.values())
        n_mock = {f: max(s[f].get("n", 0) for s in row.values()) for f in families}
        print(f"\n{subtype}: {n_real} real, " + ", ".join(f"{n_mock[f]} {f}" for f in families))
        print("| band | real median (16-84%) | " + " | ".join(families) + " |")
        print("| --- | --- |" + " --- |" * len(families))
        for band, s in row.items():
            real = s["real"]
            spread = f"{real['median']:.3f} ({real['p16']:.3f}-{real['p84']:.3f})" if real.get("n") else "-"
            print(f"| {band} | {spread} | " + " | ".join(cell(s[f]) for f in families) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", nargs="+", default=["physical"])
    p.add_argument("--types", nargs="+", default=list(DEFAULT_TYPES))
    p.add_argument("--n", type=int, default=6000, help="stars drawn per family (every type)")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--shared", type=Path, default=SHARED_DATA)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    real = real_stars(args.shared)
    if not len(real[0]):
        raise SystemExit(f"no LAMOST stars under {args.shared}: pass --shared DIR")
    mocks = {f: mock_stars(f, args.n, args.seed) for f in args.families}
    result = compare(real, mocks, args.types)
    print_table(result, args.families)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
