"""Score a model on every real spectrum in ../shared: the validation galaxies and QSOs, and the real stars.

    python training/validate_real.py                     # the shipped model
    python training/validate_real.py --model runs/x/model.safetensors --json out.json

Prints one row per real galaxy/QSO (SDSS DR8+ ``spec-`` files, the LAMOST QSO; validation only: report on
them, never train or tune on them) with the published class and probabilities (target prior), the balanced
probabilities (what the spectrum alone says) and the reference class and z; then STAR recall on the real
LAMOST stars per directory, the stars kept out of noise donors and training (``is_held_out``) apart, and
each miss; then the same stars made fainter (``made_fainter``), published and balanced, where the prior's
strength decides most. Reads through the pipeline's own readers and grid, and publishes as a catalog run
would (``Classifier.predict_with_redshift``: the most probable class, but not a QSO without a QSO redshift or
a QSO's lines, nor a STAR with a galaxy's emission lines, nor a GALAXY with a carbon star's bands,
``published_class``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lamost_classify import CLASS_NAMES
from lamost_classify.contract import Flag

CLASS_RULE_FLAGS = (Flag.NO_QSO_REDSHIFT, Flag.NO_BROAD_LINE, Flag.GALAXY_LINES, Flag.CARBON_BANDS,
                    Flag.BROAD_H_ALPHA)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts beside it (validate_redshift)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VALIDATION_DIRS = ("sdss/galaxy", "sdss/qso", "lamost-qso")
STAR_DIRS = ("lamost/dr1", "lamost/dr2", "lamost/releases", "lamost/dr10-stars-A", "lamost-dr8-stars")
# The real stars are bright (median S/N ~70); these are the survey's faint end, where the prior decides.
FAINT_SNR = (2.5, 4.0, 6.0, 10.0)


def read_files(sub: str) -> list:
    """The spectra of the FITS files under ``SHARED / sub``, through the pipeline's own readers."""
    from lamost_classify.pipeline.readers import read_batch

    return read_batch(sorted(str(p) for p in (SHARED / sub).rglob("*") if p.is_file() and ".fit" in p.name))


def classify_spectra(classifier, spectra: list) -> list[dict]:
    """One dict per spectrum: reference class/subclass/z from its file, and the model's outputs."""
    from lamost_classify.pipeline import grid

    prepared = grid.prepare(spectra)
    probs, balanced, fit = classifier.predict_with_redshift(prepared.flux, prepared.ivar, prepared.pedestal)
    rows = []
    for i, s in enumerate(spectra):
        rows.append({
            "file": Path(s.source).name,
            "ref_class": (s.meta.get("lamost_class") or "").upper(),
            "ref_subclass": s.meta.get("lamost_subclass"),
            "ref_z": s.meta.get("lamost_z"),
            "snr_pixel": float(prepared.snr[i]),
            "flags": int(prepared.flags[i]),
            "class": CLASS_NAMES[fit.classes[i]] if fit.classes[i] >= 0 else None,  # the catalog's
            "class_rules": [f.name for f in CLASS_RULE_FLAGS if fit.flags[i] & f],  # why not the most probable
            "prob": [round(float(p), 4) for p in probs[i]],
            "class_balanced": CLASS_NAMES[int(np.argmax(balanced[i]))],
            "prob_balanced": [round(float(p), 4) for p in balanced[i]],
        })
    return rows


def made_fainter(spectrum, snr: float, target: float, rng: np.random.Generator):
    """``spectrum`` with its noise raised so that its S/N per pixel (``snr``: the catalog's ``snr_pixel``,
    ``grid.prepare``'s median over the grid) falls to ``target`` (a fainter one is returned as it is): Gaussian
    noise of variance (f^2 - 1) / ivar added in the file's own units, f = snr / target, and the ivar divided
    by f^2 (validate_redshift.py's ``degrade``, which makes the held-out stars fainter for their letters), so
    that the pipeline prepares it as it would a fainter file of the same star."""
    import dataclasses

    from validate_redshift import degrade

    flux, ivar = degrade(spectrum.flux[None, :], spectrum.ivar[None, :], np.array([max(snr / target, 1.0)]), rng)
    return dataclasses.replace(spectrum, flux=flux[0], ivar=ivar[0])


def faint_star_recall(classifier, stars: list, draws: int = 8) -> dict[str, dict[str, float]]:
    """STAR recall, published and balanced, of the real ``stars`` made as faint as each of ``FAINT_SNR``
    (``draws`` noise draws each)."""
    from lamost_classify.pipeline import grid

    snr = grid.prepare(stars).snr
    out = {}
    for target in FAINT_SNR:
        published = balanced = n = 0
        for seed in range(draws):
            rng = np.random.default_rng(seed)
            prepared = grid.prepare([made_fainter(s, float(v), target, rng) for s, v in zip(stars, snr)])
            _, probs_balanced, fit = classifier.predict_with_redshift(prepared.flux, prepared.ivar,
                                                                       prepared.pedestal)
            published += int((fit.classes == 0).sum())
            balanced += int((probs_balanced.argmax(1) == 0).sum())
            n += len(stars)
        out[f"{target:g}"] = {"n": n, "published": published / n, "balanced": balanced / n}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a .safetensors path (default: the shipped model)")
    p.add_argument("--json", type=Path, default=None, help="write every row and the summary here")
    args = p.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"validate_real: {SHARED} not found: the real spectra live in ../shared/data")

    from lamost_classify.mocks.instrument import is_held_out
    from lamost_classify.model.inference import Classifier

    classifier = Classifier.load(args.model, device="cpu", precision="fp32")
    print(f"model {classifier.name}")
    report: dict[str, object] = {"model": classifier.name}

    validation = [dict(r, set=sub) for sub in VALIDATION_DIRS for r in classify_spectra(classifier, read_files(sub))]
    print("\n| set | file | reference (SDSS/LAMOST) | z | S/N | class (published) | p star/gal/qso | "
          "class (balanced prior) | p balanced |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in validation:
        ref = r["ref_class"] + (f" {r['ref_subclass']}" if r["ref_subclass"] else "")
        z = "" if r["ref_z"] is None else f"{r['ref_z']:.3f}"
        published = r["class"] + "".join(f" ({name})" for name in r["class_rules"])
        print(f"| {r['set']} | {r['file']} | {ref} | {z} | {r['snr_pixel']:.1f} | {published} | "
              f"{'/'.join(f'{x:.2f}' for x in r['prob'])} | {r['class_balanced']} | "
              f"{'/'.join(f'{x:.2f}' for x in r['prob_balanced'])} |")
    right = sum(r["class"] == r["ref_class"] for r in validation)
    right_balanced = sum(r["class_balanced"] == r["ref_class"] for r in validation)
    print(f"\nreal galaxies and QSOs right: {right}/{len(validation)} published, "
          f"{right_balanced}/{len(validation)} under the balanced prior")
    report["validation"] = validation
    report["validation_right"] = right
    report["validation_right_balanced"] = right_balanced

    print("\n| stars | n | STAR | recall | held out: n | STAR | misses |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    totals = {"n": 0, "star": 0, "held_n": 0, "held_star": 0}
    stars, star_spectra = {}, []
    for sub in STAR_DIRS:
        spectra = read_files(sub)
        star_spectra += [s for s in spectra if (s.meta.get("lamost_class") or "").upper() == "STAR"]
        rows = [r for r in classify_spectra(classifier, spectra) if r["ref_class"] == "STAR"]
        if not rows:
            continue
        held = [r for r in rows if is_held_out(r["file"])]
        kept = sum(r["class"] == "STAR" for r in rows)
        held_kept = sum(r["class"] == "STAR" for r in held)
        misses = [f"{r['file']} ({r['ref_subclass']}, S/N {r['snr_pixel']:.0f}: {r['class']} "
                  + (f"{r['prob'][CLASS_NAMES.index(r['class'])]:.2f})" if r["class"] else "unusable)")
                  for r in rows if r["class"] != "STAR"]
        print(f"| {sub} | {len(rows)} | {kept} | {kept / len(rows):.4f} | {len(held)} | {held_kept} | "
              f"{'; '.join(misses)} |")
        stars[sub] = {"n": len(rows), "star": kept, "held_n": len(held), "held_star": held_kept, "misses": misses}
        for k, v in zip(totals, (len(rows), kept, len(held), held_kept)):
            totals[k] += v
    print(f"| all | {totals['n']} | {totals['star']} | {totals['star'] / max(totals['n'], 1):.4f} | "
          f"{totals['held_n']} | {totals['held_star']} | |")
    report["stars"] = stars
    report["stars_total"] = totals

    faint = faint_star_recall(classifier, star_spectra)
    print("\n| the real stars made as faint as S/N per pixel (`snr_pixel`) | spectra (8 noise draws) | STAR, published "
          "| STAR, balanced |")
    print("| --- | --- | --- | --- |")
    for target, r in faint.items():
        print(f"| {target} | {r['n']} | {r['published']:.4f} | {r['balanced']:.4f} |")
    report["stars_made_fainter"] = faint
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
