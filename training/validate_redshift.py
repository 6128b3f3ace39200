"""Redshift and spectral type on the real spectra in ../shared (validation only: nothing here is tuned).

    python training/validate_redshift.py [--model default] [--json out.json]

- ../shared/data/sdss/galaxy, sdss/qso (SDSS CLASS, SUBCLASS, Z in HDU 2) and lamost-qso (LAMOST's Z):
  the refinement's z against theirs, fitted with the true class's templates alone and as the catalog
  publishes it (the network's class, around its redshift proposal);
- every real LAMOST star (lamost-dr8-stars, lamost/dr10-stars-A, dr1, dr2, releases): the refinement's
  subclass letter against LAMOST's own SUBCLASS (the MK letter), with the type confusion, for the
  held-out 30% (``is_held_out``: never used for the LAMOST-derived star templates, the honest number)
  and for the rest (the templates' own stars) apart, and per letter; the median velocity difference
  from LAMOST's own at S/N > 30; the star fit's time; and the held-out stars' letters by their own S/N
  and with their S/N lowered to 20, 10 and 5 (``faint_star_letters``);
- with ``--mocks N``: N balanced mocks of each family (mocks/families.py), S/N log-uniform 2-100, seed 41
  (no training set's): redshift scores by class, S/N and z bin, fitted as the network's class and as the
  true one, and the star subclass letter against the template's type. The survey family is built from
  the same SDSS templates the fit uses (an optimistic check); eigen and physical are independent.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lamost_classify import CLASS_NAMES

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STAR_DIRS = ("lamost-dr8-stars", "lamost/dr10-stars-A", "lamost/dr1", "lamost/dr2", "lamost/releases")
FAINT_SNR = (20.0, 10.0, 5.0)
# A star's letter where the best template of another letter fits worse by at least this (`delta_chi2`):
# the README's cut for a subclass to trust, scored here on the held-out stars
SURE_LETTER_DELTA_CHI2 = 25.0
REAL_SNR_BINS = ((0.0, 20.0), (20.0, 50.0), (50.0, 100.0), (100.0, float("inf")))


def prepared(files: list[str]):
    from lamost_classify.pipeline import grid
    from lamost_classify.pipeline.readers import read_batch

    spectra = read_batch(files)
    return spectra, grid.prepare(spectra)


def sdss_truth(path: str) -> tuple[str, str, float]:
    from astropy.io import fits

    with fits.open(path) as h:
        if path.endswith((".fits.gz",)) or "lamost" in path:
            hdr = h[0].header
            return str(hdr.get("CLASS", "")).strip(), str(hdr.get("SUBCLASS", "")).strip(), float(hdr.get("Z", np.nan))
        row = h[2].data[0]
        return str(row["CLASS"]).strip(), str(row["SUBCLASS"]).strip(), float(row["Z"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--mocks", type=int, default=0, help="mocks per family to score (0: none)")
    args = parser.parse_args()
    from lamost_classify.model.inference import Classifier
    from lamost_classify.model.redshift import RedshiftFitter
    from lamost_classify.model.redshift_metrics import redshift_accuracy, star_type_confusion
    from lamost_classify.model.subclass import C_KMS

    classifier = Classifier.load(args.model, device="cpu")
    fitter = RedshiftFitter()
    report: dict = {}

    files = sorted(str(p) for sub in ("sdss/galaxy", "sdss/qso", "lamost-qso") for p in (SHARED / sub).glob("spec-*"))
    spectra, batch = prepared(files)
    truth = [sdss_truth(f) for f in files]
    true_class = np.array([CLASS_NAMES.index(c) for c, _, _ in truth])
    z_true = np.array([z for _, _, z in truth])
    t0 = time.perf_counter()
    as_true = fitter.fit(batch.flux, batch.ivar, true_class, pedestal=batch.pedestal)  # the templates alone
    true_seconds = time.perf_counter() - t0
    # What the catalog publishes: the network's class and the fit around its redshift proposal, one pass.
    t0 = time.perf_counter()
    probs, _, published = classifier.predict_with_redshift(batch.flux, batch.ivar, batch.pedestal)
    published_seconds = time.perf_counter() - t0
    net_class = published.classes  # the catalog's class (Classifier.predict_with_redshift)
    rows = []
    for label, classes, fit, seconds in (("true class", true_class, as_true, true_seconds),
                                         ("network class", net_class, published, published_seconds)):
        acc = redshift_accuracy(z_true, fit.z, true_class, classes)
        report[f"galaxy_qso_{label}"] = acc
        print(f"\nSDSS/LAMOST galaxies and QSOs, fitted as the {label} (n={len(files)}, {seconds:.2f} s):")
        print(json.dumps(acc["by_class"], indent=1, default=float))
        for i, f in enumerate(files):
            rows.append({"file": Path(f).name, "fit_as": label, "true": truth[i][0], "true_subclass": truth[i][1],
                         "z_true": z_true[i], "network": CLASS_NAMES[net_class[i]] if net_class[i] >= 0 else None,
                         "p": float(probs[i, net_class[i]]) if net_class[i] >= 0 else float("nan"),
                         "z": float(fit.z[i]), "z_err": float(fit.z_err[i]), "subclass": fit.subclass[i],
                         "delta_chi2": float(fit.delta_chi2[i]), "snr": float(batch.snr[i])})
    print(f"\n{'file':28s} {'fit as':13s} {'true':6s} {'subclass':12s} {'z_true':>7s} {'net':6s} {'z':>8s} "
          f"{'z_err':>8s} {'dz/(1+z)':>9s} {'subclass':12s} {'dchi2':>8s}")
    for r in rows:
        dz = abs(r["z"] - r["z_true"]) / (1 + r["z_true"])
        print(f"{r['file']:28s} {r['fit_as']:13s} {r['true']:6s} {r['true_subclass'][:12]:12s} {r['z_true']:7.4f} "
              f"{str(r['network']):6s} {r['z']:8.4f} {r['z_err']:8.5f} {dz:9.5f} {str(r['subclass']):12s} {r['delta_chi2']:8.1f}")
    report["galaxy_qso_rows"] = rows

    from lamost_classify.mocks.instrument import is_held_out

    star_rows = []
    star_seconds = 0.0
    held_out_spectra: list[tuple[np.ndarray, np.ndarray, float]] = []  # flux, ivar, pedestal of star_rows' held out
    for sub in STAR_DIRS:
        star_files = sorted(str(p) for p in (SHARED / sub).glob("spec-*"))
        spectra, batch = prepared(star_files)
        keep = [i for i, s in enumerate(spectra) if (s.meta.get("lamost_class") or "").upper() == "STAR"
                and batch.ivar[i].any()]
        if not keep:
            continue
        t0 = time.perf_counter()
        fit = fitter.fit(batch.flux[keep], batch.ivar[keep], np.zeros(len(keep), int), pedestal=batch.pedestal[keep])
        seconds = time.perf_counter() - t0
        star_seconds += seconds
        for j, i in enumerate(keep):
            star_rows.append({"dir": sub, "held_out": is_held_out(star_files[i]),
                              "lamost": str(spectra[i].meta.get("lamost_subclass") or ""),
                              "ours": fit.subclass[j], "z": float(fit.z[j]), "snr": float(batch.snr[i]),
                              "delta_chi2": float(fit.delta_chi2[j]),
                              "lamost_z": spectra[i].meta.get("lamost_z")})
            if star_rows[-1]["held_out"]:
                held_out_spectra.append((batch.flux[i], batch.ivar[i], batch.pedestal[i]))
        print(f"{sub}: {len(keep)} stars fitted in {seconds:.2f} s")
    per_dir = {}
    for sub in STAR_DIRS:
        rs = [r for r in star_rows if r["dir"] == sub]
        if rs:
            c = star_type_confusion([r["lamost"] for r in rs], [r["ours"] for r in rs])
            per_dir[sub] = {"n": c["n"], "letter_agreement": c["letter_agreement"]}
    report["stars_by_dir"] = per_dir
    print("\nReal LAMOST stars: subclass letter agreement with LAMOST's own")
    print(json.dumps(per_dir, indent=1))
    print(f"star fit: {star_seconds / max(len(star_rows), 1) * 1e3:.2f} ms per spectrum")
    # LAMOST's own radial velocity is the reference: the median difference from it at S/N > 30
    velocity = {}
    for key, rs in (("held_out", [r for r in star_rows if r["held_out"]]), ("all", star_rows)):
        dv = [abs(r["z"] - r["lamost_z"]) * C_KMS for r in rs
              if r["snr"] > 30 and r["lamost_z"] is not None and np.isfinite(r["lamost_z"]) and np.isfinite(r["z"])]
        velocity[key] = {"n": len(dv), "median_abs_dv_kms": float(np.median(dv)) if dv else float("nan")}
    report["star_velocity_vs_lamost"] = velocity
    print("velocity against LAMOST's at S/N > 30, median |dv|: " + ", ".join(
        f"{k} {v['median_abs_dv_kms']:.2f} km/s (n={v['n']})" for k, v in velocity.items()))
    for key, label, rs in (("stars_held_out", "held-out", [r for r in star_rows if r["held_out"]]),
                           ("stars_not_held_out", "not held out (the LAMOST templates' own stars)",
                            [r for r in star_rows if not r["held_out"]]),
                           ("stars", "all", star_rows)):
        c = star_type_confusion([r["lamost"] for r in rs], [r["ours"] for r in rs])
        report[key] = c
        print(f"\n{label}: n={c['n']} letter agreement {c['letter_agreement']:.3f}; per LAMOST letter: "
              + ", ".join(f"{a} {row[i] / sum(row):.2f} (n={sum(row)})" for i, (a, row)
                          in enumerate(zip(c["letters"], c["matrix"])) if sum(row)))
        print("confusion (rows LAMOST, columns ours):")
        print("      " + " ".join(f"{a:>5s}" for a in c["letters"]))
        for a, row in zip(c["letters"], c["matrix"]):
            print(f"{a:>5s} " + " ".join(f"{v:5d}" for v in row))
    by_snr = {}
    for low, high in REAL_SNR_BINS:
        rs = [r for r in star_rows if r["held_out"] and low <= r["snr"] < high]
        by_snr[f"{low:g}-{high:g}"] = {"n": len(rs), "letter_agreement": star_type_confusion(
            [r["lamost"] for r in rs], [r["ours"] for r in rs])["letter_agreement"] if rs else float("nan")}
    report["stars_held_out_by_snr"] = by_snr
    print("held-out stars by their own S/N, letter agreement: " + ", ".join(
        f"{k} {v['letter_agreement']:.3f} (n={v['n']})" for k, v in by_snr.items()))
    held = [r for r in star_rows if r["held_out"]]
    report["stars_held_out_sure"] = sure_letters([r["lamost"] for r in held], [r["ours"] for r in held],
                                                 [r["delta_chi2"] for r in held])
    print(f"held-out stars with delta_chi2 >= {SURE_LETTER_DELTA_CHI2:g}: letter agreement "
          f"{report['stars_held_out_sure']['letter_agreement']:.3f}, kept {report['stars_held_out_sure']['kept']:.3f}")
    report["stars_held_out_made_faint"] = faint_star_letters(fitter, held_out_spectra, held)
    if args.mocks:
        report["mocks"] = mock_scores(classifier, fitter, args.mocks)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))


def degrade(flux: np.ndarray, ivar: np.ndarray, factor: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(flux, ivar) of spectra (B, N) with their noise raised ``factor`` (B,) >= 1 times: Gaussian noise
    of variance (factor^2 - 1) / ivar added to each pixel with an ivar, and the ivar divided by factor^2."""
    factor = np.asarray(factor, np.float64)[:, None]
    sigma = np.sqrt(np.where(ivar > 0, (factor**2 - 1.0) / np.where(ivar > 0, ivar, 1.0), 0.0))
    return ((flux + rng.normal(size=flux.shape) * sigma).astype(np.float32),
            np.where(ivar > 0, ivar / factor**2, 0.0).astype(np.float32))


def sure_letters(lamost: list[str], ours: list[str], delta_chi2: list[float]) -> dict:
    """Of stars with LAMOST's and our subclass, those whose ``delta_chi2`` is at least
    ``SURE_LETTER_DELTA_CHI2``: the share kept and their letter agreement."""
    from lamost_classify.model.redshift_metrics import star_type_confusion

    sure = np.asarray(delta_chi2) >= SURE_LETTER_DELTA_CHI2
    agreement = star_type_confusion([a for a, k in zip(lamost, sure) if k],
                                    [b for b, k in zip(ours, sure) if k])["letter_agreement"] if sure.any() else float("nan")
    return {"kept": float(sure.mean()) if len(sure) else float("nan"), "letter_agreement": agreement}


def faint_star_letters(fitter, spectra: list[tuple[np.ndarray, np.ndarray, float]], rows: list[dict]) -> dict:
    """Letter agreement with LAMOST's of the held-out real stars (``spectra``: flux, ivar and pedestal of the
    stars ``rows``, which hold LAMOST's type and the S/N) made as faint as ``FAINT_SNR`` (``degrade``,
    two noise draws each; a star already fainter stays as it is): most survey stars are fainter than
    these, whose LAMOST type from the bright spectrum is the truth. Only the noise changes, so this
    says how far noise alone moves the letters; real faint files differ in more (the real held-out
    stars by their own S/N are printed beside it), and a classifier trained on copies made this way
    would be graded on its own kind of noise (docs/redshift.md, "The star letters")."""
    from lamost_classify.model.redshift_metrics import star_type_confusion

    flux, ivar, pedestal = (np.stack(column) for column in zip(*spectra))
    lamost, snr = [r["lamost"] for r in rows], np.array([r["snr"] for r in rows])
    scores = {}
    for target in FAINT_SNR:
        ours, delta = [], []
        for seed in range(2):
            f, w = degrade(flux, ivar, np.maximum(snr / target, 1.0), np.random.default_rng(seed))
            fit = fitter.fit(f, w, np.zeros(len(f), int), pedestal=pedestal)
            ours += fit.subclass
            delta += list(fit.delta_chi2)
        scores[f"snr_{target:g}"] = star_type_confusion(lamost * 2, ours)["letter_agreement"]
        scores[f"snr_{target:g}_sure"] = sure_letters(lamost * 2, ours, delta)
    print("held-out stars made fainter, letter agreement: " + ", ".join(
        f"S/N {target:g} {scores[f'snr_{target:g}']:.3f}" for target in FAINT_SNR))
    print(f"  of them with delta_chi2 >= {SURE_LETTER_DELTA_CHI2:g}: " + ", ".join(
        f"S/N {target:g} {scores[f'snr_{target:g}_sure']['letter_agreement']:.3f} (kept "
        f"{scores[f'snr_{target:g}_sure']['kept']:.3f})" for target in FAINT_SNR))
    return scores


def prepared_mocks(family: str, n: int, seed: int, class_mix: tuple[float, float, float],
                   snr_range: tuple[float, float], truth_keys: tuple[str, ...],
                   snr_distribution: str = "loguniform") -> tuple[np.ndarray, ...]:
    """(flux, ivar, pedestal, truth) of ``n`` of ``family``'s mocks (S/N drawn by ``snr_distribution``,
    log-uniform or the real files', within ``snr_range``) as the pipeline prepares them: the flux as the
    network reads it, without the pedestal the normalisation subtracted (add it back to measure the
    spectrum itself, as the star fit does); ``truth`` holds the columns ``truth_keys``."""
    from lamost_classify.mocks.families import generate
    from lamost_classify.mocks.instrument import WAVELENGTH
    from lamost_classify.pipeline.grid import prepare_arrays

    flux, ivar, pedestal, truth = [], [], [], {key: [] for key in truth_keys}
    for chunk in generate(family, n, seed, class_mix=class_mix, snr_distribution=snr_distribution,
                          snr_range=snr_range):
        prepared = prepare_arrays(WAVELENGTH, chunk.flux, chunk.ivar, chunk.andmask)
        flux.append(prepared.flux)
        ivar.append(prepared.ivar)
        pedestal.append(prepared.pedestal)
        for key in truth:
            truth[key] += list(chunk.truth[key])
    return (np.concatenate(flux), np.concatenate(ivar), np.concatenate(pedestal),
            {key: np.asarray(value) for key, value in truth.items()})


def mock_scores(classifier, fitter, n: int) -> dict:
    from lamost_classify.mocks.families import FAMILIES
    from lamost_classify.model.redshift_metrics import redshift_accuracy, star_type_confusion

    out = {}
    for family in FAMILIES:
        flux, ivar, pedestal, truth = prepared_mocks(family, n, 41, (1 / 3, 1 / 3, 1 / 3), (2.0, 100.0),
                                                     ("class", "z", "subclass", "snr_g"))
        true_class = np.array([CLASS_NAMES.index(c) for c in truth["class"]])
        z_true, snr = np.array(truth["z"], np.float64), np.array(truth["snr_g"], np.float64)
        t0 = time.perf_counter()
        probs, balanced, fit = classifier.predict_with_redshift(flux, ivar, pedestal)
        seconds = time.perf_counter() - t0
        as_true = fitter.fit(flux, ivar, true_class, pedestal=pedestal)
        stars = true_class == 0
        out[family] = {
            "n": len(flux), "seconds_network_and_fit": seconds,
            "network_class": redshift_accuracy(z_true, fit.z, true_class, fit.classes, snr),
            # z_balanced: what a sample selected on prob_*_balanced (README) gets
            "balanced_class": redshift_accuracy(z_true, fit.z_balanced, true_class, balanced.argmax(1), snr),
            "true_class": redshift_accuracy(z_true, as_true.z, true_class, true_class, snr),
            "star_types_true_class": star_type_confusion(list(np.array(truth["subclass"])[stars]),
                                                         [as_true.subclass[i] for i in np.flatnonzero(stars)]),
        }
        print(f"\nmocks, family {family} (n={len(flux)}, network + fit {seconds:.1f} s):")
        for label in ("network_class", "balanced_class", "true_class"):
            for name, sc in out[family][label]["by_class"].items():
                print(f"  fitted as {label:13s} {name:6s} n={sc['n']:4d} within={sc['within']:.3f} "
                      f"nmad={sc['nmad']:.5f} catastrophic={sc['catastrophic']:.3f} "
                      f"class right={sc.get('class_right', 1):.3f}")
        c = out[family]["star_types_true_class"]
        print(f"  star letter vs template type: n={c['n']} agreement {c['letter_agreement']:.3f}")
    return out


if __name__ == "__main__":
    main()
