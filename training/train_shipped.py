"""Train, calibrate, evaluate and package the shipped model (model/weights/default.*).

    python training/make_training_set.py --out work/trainset
    python training/train_shipped.py --data work/trainset --out work/train-fast --preset fast

``--data`` takes several directories, one per mock family (training/make_training_set.py --family F
writes the same sets for every family): their training and validation sets are pooled, the prior
strength is chosen on their pooled survey-mix test sets, and every report is given per directory too.

Steps: fit on the balanced mock training sets (paper's recipe and augmentation, schedule as given;
``--init-from`` fine-tunes) -> temperature on the validation sets (ECE before/after) -> prior
adjustment chosen on the survey-mix test set (the strength that maximises mean F1 per class at that
mix) -> reports on the balanced, the survey-mix and the log-uniform S/N test sets, by S/N bin and on
the known hard cases -> STAR recall on the real LAMOST stars (held out of every use, and all) ->
safetensors + model card with all of it. Prints the tables; writes report.json in --out. Pointed at a
finished --out, it only re-evaluates and re-packages. The recipe's steps are model/recipe.py's, shared
with ``lamost-classify train`` and training/ablation.py. ``--rescore MODEL`` trains nothing: it scores a
shipped model again on the test sets, as above, and rewrites its card (after a change to what the
network is fed, such as the masked pixels' interpolation, or to its prior strength: ``--prior-strength``). ``--ensemble A B ...`` trains nothing either:
it takes trained networks of one preset (the same recipe with other ``--seed``s) as one model, their
mean logits (model/ensemble.py), fits its temperature on the validation sets, chooses its prior strength
and reports as above, and ``--ship`` writes it as one weights file whose card names every member.
``--split MODEL`` writes every network of such a model as its own weights file in --out (``member0``, ...),
its card the member's training record, so that each can be fine-tuned (``--init-from``) and joined again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lamost_classify.contract import CLASS_NAMES
from lamost_classify.model.labelled import load_set


TRAIN_SETS = ("train", "train_analytic", "train_snr")
VAL_SETS = ("val", "val_snr")
TEST_SETS = ("test", "test_survey", "test_snr")


def load_sets(dirs: list[Path], names: tuple[str, ...] = TRAIN_SETS + VAL_SETS + TEST_SETS
              ) -> tuple[dict[str, tuple[np.ndarray, dict]], dict[str, dict[str, tuple[np.ndarray, dict]]]]:
    """The sets ``names`` of every directory, pooled by name (flux stacked, truth columns both tables have),
    and each directory's own sets."""
    per_dir = {str(d): {n: load_set(d, n) for n in names if (d / f"{n}_flux.npy").exists()} for d in dirs}
    pooled = {}
    for name in names:
        parts = [sets[name] for sets in per_dir.values() if name in sets]
        if not parts:
            continue
        keys = set.intersection(*(set(t) for _, t in parts))
        pooled[name] = (np.concatenate([np.asarray(f) for f, _ in parts]) if len(parts) > 1 else parts[0][0],
                        {k: sum((list(t[k]) for _, t in parts), []) for k in keys})
    return pooled, per_dir


def stacked(sets: dict[str, tuple[np.ndarray, dict]], names: list[str], column: str | None = None) -> np.ndarray:
    """The spectra of the sets ``names`` one after another, or their truth ``column``."""
    return np.concatenate([np.asarray(sets[n][0] if column is None else sets[n][1][column]) for n in names])


def real_stars(held_out_only: bool = True) -> dict[str, dict]:
    """Normalised real LAMOST stars, per directory: those kept out of noise donors and training, or all
    (the donors lent only their noise residuals to the mocks, never their stellar spectra)."""
    from lamost_classify.mocks.instrument import is_held_out
    from lamost_classify.pipeline import grid
    from lamost_classify.pipeline.readers import read_batch

    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lamost"
    out = {}
    for sub in ("dr10-stars-A", "releases", "dr2", "dr1"):
        files = sorted(str(p) for p in (root / sub).glob("spec-*") if is_held_out(p) or not held_out_only)
        spectra = [s for s in read_batch(files) if (s.meta.get("lamost_class") or "").upper() == "STAR"]
        if spectra:
            prepared = grid.prepare(spectra)
            out[sub] = {"flux": prepared.flux, "ivar": prepared.ivar, "pedestal": prepared.pedestal,
                        "snr": prepared.snr, "n": len(spectra)}
    return out


def score(model, temperature: float, sets: dict, per_dir: dict, prior_strength: float | None = None) -> dict:
    """The reports on the test sets (pooled ``sets`` and each directory's ``per_dir``): balanced, at the
    survey mix under each prior strength (the best mean F1's, or ``prior_strength``), log-uniform S/N, and
    STAR recall on the real LAMOST stars."""
    from lamost_classify.model.calibration import expected_calibration_error
    from lamost_classify.model.evaluate import evaluate, format_report
    from lamost_classify.model.recipe import choose_prior_strength, probabilities, strength_prior

    report: dict = {}
    test_x, test_truth = sets["test"]
    test_probs = probabilities(model, test_x, temperature)
    report["test_balanced"] = evaluate(np.asarray(test_truth["label"]), test_probs, np.asarray(test_truth["snr_g"]),
                                       truth=test_truth)
    report["test_ece"] = expected_calibration_error(test_probs, np.asarray(test_truth["label"]))
    print(format_report(report["test_balanced"]))

    # Prior adjustment at the survey mix: strength 0 (none) .. 1 (full Bayes to the survey prior).
    sx, struth = sets["test_survey"]
    strength, report["survey_by_prior_strength"] = choose_prior_strength(
        probabilities(model, sx, temperature), np.asarray(struth["label"]), np.asarray(struth["snr_g"]), truth=struth)
    for key, r in report["survey_by_prior_strength"].items():
        mean_f1 = float(np.mean([r["scores"][c]["f1"] for c in CLASS_NAMES]))
        print(f"prior strength {float(key):.2f}: mean F1 {mean_f1:.4f} " + " ".join(
            f"{c} P={r['scores'][c]['precision']:.4f} R={r['scores'][c]['recall']:.4f}" for c in CLASS_NAMES))
    if prior_strength is not None:
        if str(prior_strength) not in report["survey_by_prior_strength"]:
            raise SystemExit(f"--prior-strength {prior_strength}: give one of "
                             f"{', '.join(report['survey_by_prior_strength'])}")
        strength = prior_strength
    report["chosen_prior_strength"] = strength
    chosen_prior = strength_prior(strength)
    report["default_target_prior"] = chosen_prior
    print(format_report(report["survey_by_prior_strength"][str(strength)]))

    # Every class at every S/N (log-uniform 2-100), scored as the catalog labels them (survey prior):
    # recall per S/N bin, and precision re-weighted to the survey's mix, per bin.
    if "test_snr" in sets:
        nx, ntruth = sets["test_snr"]
        n_probs = probabilities(model, nx, temperature, chosen_prior)
        report["test_snr"] = evaluate(np.asarray(ntruth["label"]), n_probs, np.asarray(ntruth["snr_g"]), truth=ntruth)
        print("test_snr (balanced, log-uniform S/N 2-100, survey prior):")
        print(format_report(report["test_snr"], compare_paper=False))

    for key, held_out_only in (("real_held_out_star_recall", True), ("real_all_star_recall", False)):
        report[key] = {}
        for sub, r in real_stars(held_out_only).items():
            probs = probabilities(model, r["flux"], temperature, chosen_prior)
            recall = float((probs.argmax(1) == 0).mean())
            report[key][sub] = {"n": r["n"], "star_recall": recall}
            print(f"{key} {sub}: n={r['n']} STAR recall {recall:.4f}")

    if len(per_dir) > 1:  # each family on its own, as the catalog labels them (survey prior)
        report["per_directory"] = {}
        for d, dsets in per_dir.items():
            report["per_directory"][d] = {}
            for name in ("test_survey", "test_snr"):
                if name in dsets:
                    x, truth = dsets[name]
                    probs = probabilities(model, x, temperature, chosen_prior)
                    r = evaluate(np.asarray(truth["label"]), probs, np.asarray(truth["snr_g"]), truth=truth)
                    report["per_directory"][d][name] = r
                    print(f"{d} {name}: " + " ".join(f"{c} P={r['scores'][c]['precision']:.4f} "
                                                      f"R={r['scores'][c]['recall']:.4f}" for c in CLASS_NAMES))
    return report


def card_metrics(report: dict) -> dict:
    """The scores a model card keeps, from a training ``report`` (``score``'s plus the training's own)."""
    strength = report["chosen_prior_strength"]
    metrics = {k: report[k] for k in ("best_epoch", "best_val_loss", "val_ece_before", "val_ece_after",
                                      "test_ece", "chosen_prior_strength", "default_target_prior",
                                      "real_held_out_star_recall", "real_all_star_recall")}
    metrics["test_balanced"] = report["test_balanced"]["scores"]
    metrics["test_survey"] = report["survey_by_prior_strength"][str(strength)]["scores"]
    metrics["test_survey_by_snr"] = {k: v["scores"] for k, v in
                                     report["survey_by_prior_strength"][str(strength)]["by_snr"].items()}
    metrics["hard_cases_survey"] = report["survey_by_prior_strength"][str(strength)]["hard_cases"]
    if "test_snr" in report:
        metrics["test_snr_by_snr"] = {k: {"n": v["n"], "scores": v["scores"],
                                          "reweighted_precision": v["reweighted_precision"]}
                                      for k, v in report["test_snr"]["by_snr"].items()}
        metrics["hard_cases_test_snr"] = report["test_snr"]["hard_cases"]
    return metrics


def rescore(args: argparse.Namespace) -> None:
    """``--rescore``: the model's card gets this code's input normalisation and ``score``'s reports (its
    training's own entries kept) at its card's prior strength or ``--prior-strength``, and a note of when,
    on what and from which strength; the weights are not touched."""
    import datetime

    from lamost_classify.model.weights import (card_path, load_weights, normalisation_card, read_card, resolve_weights,
                                               write_card)

    path = resolve_weights(args.rescore)
    card = read_card(path)
    strength_before = card["metrics"]["chosen_prior_strength"]
    strength = strength_before if args.prior_strength is None else args.prior_strength
    note = {"date": datetime.date.today().isoformat(), "normalisation_before": card.get("normalisation"),
            "prior_strength_before": strength_before, "prior_strength": strength,
            "data": [str(d) for d in args.data], "data_sha256": _hash_dirs(args.data)}
    card["normalisation"] = normalisation_card()
    write_card(path, card)  # first, so that the model loads under this code's normalisation
    model, _ = load_weights(path)
    sets, per_dir = load_sets(args.data, TEST_SETS)
    report = score(model, card["temperature"], sets, per_dir, strength)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    kept = {k: card["metrics"][k] for k in ("best_epoch", "best_val_loss", "val_ece_before", "val_ece_after")}
    card["metrics"] = card_metrics({**report, **kept})
    card.setdefault("rescored", []).append(note)
    write_card(path, card)
    print(f"rescored {card_path(path)}")


def records_from_fold_card(card: dict, n_members: int) -> list[dict]:
    """Member records for a model joined without its members' cards (a leave-one-family-out fold's): the
    fold's record, its per-member lists (seeds, best epochs) cut to each member's own entry."""
    per_member = {"seeds": "seed", "best_epochs": "best_epoch"}
    records = []
    for i in range(n_members):
        training = {k: v for k, v in card["training"].items() if k not in per_member}
        for many, one in per_member.items():
            if len(card["training"].get(many) or []) == n_members:
                training[one] = card["training"][many][i]
        records.append({"name": f"{card['name']}-member{i}", "weights_sha256": None, "training": training})
    return records


def split(args: argparse.Namespace) -> None:
    """``--split``: every member of an ensemble as its own weights + card, its training record kept and the
    ensemble it came from named in it (the member's own weights file may be gone; these tensors are its)."""
    from lamost_classify.model.ensemble import LogitMean
    from lamost_classify.model.weights import load_weights, save_weights

    model, card = load_weights(args.split)
    if not isinstance(model, LogitMean):
        raise SystemExit(f"--split {args.split}: one network already; fine-tune it with --init-from")
    records = card["training"].get("members") or records_from_fold_card(card, len(model.members))
    overrides = card.get("member_overrides") or [card.get("overrides")] * len(model.members)
    for i, (net, record) in enumerate(zip(model.members, records, strict=True)):
        origin = {"name": card["name"], "weights_sha256": card["weights_sha256"], "member": i,
                  "member_weights_sha256": record["weights_sha256"]}
        training = {**record["training"], "split_from": origin}
        path = save_weights(net, args.out / f"member{i}", name=record["name"], overrides=overrides[i],
                            training=training)
        print(f"member {i}: {path}")


def combine(args: argparse.Namespace) -> None:
    """``--ensemble``: the members' mean logits as one model, calibrated, scored and shipped like a trained one."""
    from lamost_classify.model.calibration import expected_calibration_error, fit_temperature, softmax
    from lamost_classify.model.ensemble import LogitMean
    from lamost_classify.model.recipe import logits_of
    from lamost_classify.model.weights import load_weights, save_weights

    loaded = [load_weights(m) for m in args.ensemble]
    cards = [card for _, card in loaded]
    # Members with and without the wavelength channel mix (the card keeps each one's overrides); no other
    # difference does: one preset, one input, one redshift head.
    if len({json.dumps([c["preset"], {k: v for k, v in c["config"].items() if k != "wavelength_channel"}],
                       sort_keys=True) for c in cards}) > 1:
        raise SystemExit("--ensemble: the members are not the same network (their cards' presets or configs differ "
                         "beyond the wavelength channel)")
    if any(c.get("members", 1) != 1 for c in cards):
        raise SystemExit("--ensemble: a member is itself an ensemble; give its networks one by one")
    if len({c["weights_sha256"] for c in cards}) < len(cards):
        raise SystemExit("--ensemble: a member is given twice (the same weights)")
    model = LogitMean([net for net, _ in loaded]).eval()
    sets, per_dir = load_sets(args.data)
    val_names = [n for n in VAL_SETS if n in sets]
    val_x, val_y = stacked(sets, val_names), stacked(sets, val_names, "label")
    logits = logits_of(model, val_x)
    temperature = fit_temperature(logits, val_y)
    report: dict = {"members": [c["name"] + "@" + c["weights_sha256"][:12] for c in cards],
                    "best_epoch": [c["metrics"].get("best_epoch") for c in cards],
                    "best_val_loss": [c["metrics"].get("best_val_loss") for c in cards], "temperature": temperature,
                    "val_ece_before": expected_calibration_error(softmax(logits), val_y),
                    "val_ece_after": expected_calibration_error(softmax(logits, temperature), val_y)}
    print(f"{len(cards)} members, temperature {temperature:.3f} (validation ECE {report['val_ece_before']:.4f} -> "
          f"{report['val_ece_after']:.4f})")
    report.update(score(model, temperature, sets, per_dir, args.prior_strength))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    if args.ship:
        training = {"members": [{k: c[k] for k in ("name", "weights_sha256", "training")} for c in cards],
                    "families": sorted({f for c in cards for f in c["training"].get("families", [])}),
                    "sets": {d: {n: len(dsets[n][0]) for n in dsets} for d, dsets in per_dir.items()},
                    "recipe": " ".join(sys.argv), "data_sha256": _hash_dirs(args.data)}
        path = save_weights(model, args.ship, name=args.name or f"{model.preset}-default",
                            overrides=cards[0].get("overrides"), training=training, metrics=card_metrics(report),
                            temperature=temperature)
        print(f"shipped {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, nargs="+", default=None,
                   help="set directories, one per mock family (all but --split need them)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", default="fast")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--milestones", default="10,30,50", help="lr /10 after these epochs ('' for none)")
    p.add_argument("--average-from", type=int, default=0,
                   help="TrainConfig.average_from: keep the mean weights of epochs N..--epochs (0: the best epoch)")
    p.add_argument("--per-class", type=int, default=None)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--artefacts", type=float, default=0.0, help="TrainConfig.artefact_fraction (0: the paper's recipe)")
    p.add_argument("--tilts", type=float, default=0.0, help="TrainConfig.tilt_fraction (0: the paper's recipe)")
    p.add_argument("--arm-losses", type=float, default=0.0,
                   help="TrainConfig.arm_loss_fraction: share given an arm's end without data (0: the paper's recipe)")
    p.add_argument("--init-from", default=None, help="fine-tune these weights (name or path)")
    p.add_argument("--redshift-weight", type=float, default=0.0,
                   help="TrainConfig.redshift_weight: train the redshift head with the class (0: no head)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0,
                   help="TrainConfig.seed: initial weights and draws (another seed, another member for --ensemble)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (1 is fastest on a shared, loaded machine)")
    p.add_argument("--ship", type=Path, default=None, help="write the weights + card here (e.g. model/weights/default)")
    p.add_argument("--name", default=None)
    p.add_argument("--prior-strength", type=float, default=None,
                   help="the survey prior's strength for the card (0..1; default: the one with the best mean F1 on "
                        "the survey-mix mocks, which barely tells 0.75 from 1). 1 is full Bayes to the survey mix; "
                        "the shipped model's 0.75 is the one its recipe's leave-one-family-out folds name "
                        "(training/prior_strength_across_folds.py)")
    p.add_argument("--rescore", default=None, metavar="MODEL",
                   help="no training: score this shipped model (a name or a weights path) on the test sets of --data "
                        "with its card's temperature and prior strength (or --prior-strength), and write the scores, "
                        "that strength and this code's input normalisation into its card (after a change to what the "
                        "network is fed, or to the strength)")
    p.add_argument("--ensemble", nargs="+", default=None, metavar="MODEL",
                   help="no training: these trained networks (names or weights paths; one preset, other seeds) as one "
                        "model, their mean logits, calibrated and scored on --data and shipped with --ship")
    p.add_argument("--split", default=None, metavar="MODEL",
                   help="no training: write every network of the ensemble MODEL as its own weights + card in --out "
                        "(member0, member1, ...), to be fine-tuned one by one with --init-from")
    args = p.parse_args()

    if args.split:
        split(args)
        return
    if not args.data:
        p.error("--data is required")
    if args.rescore:
        rescore(args)
        return
    if args.ensemble:
        combine(args)
        return

    from lamost_classify.model.recipe import fit_calibrated
    from lamost_classify.model.train import TrainConfig
    from lamost_classify.model.weights import save_weights

    sets, per_dir = load_sets(args.data)
    train_names = [n for n in TRAIN_SETS if n in sets]
    train_x, train_y = stacked(sets, train_names), stacked(sets, train_names, "label")
    val_names = [n for n in VAL_SETS if n in sets]
    val_x, val_y = stacked(sets, val_names), stacked(sets, val_names, "label")
    config = TrainConfig(preset=args.preset, epochs=args.epochs, lr_milestones=tuple(int(m) for m in args.milestones.split(",") if m),
                         per_class=args.per_class, batch_size=args.batch_size, device=args.device,
                         num_threads=args.threads, lr=args.lr, artefact_fraction=args.artefacts,
                         tilt_fraction=args.tilts, arm_loss_fraction=args.arm_losses, init_from=args.init_from,
                         redshift_weight=args.redshift_weight, average_from=args.average_from, seed=args.seed)
    train_z, val_z = stacked(sets, train_names, "z"), stacked(sets, val_names, "z")
    try:
        calibrated = fit_calibrated(train_x, train_y, val_x, val_y, config, args.out, train_z=train_z, val_z=val_z)
    except ValueError as exc:  # e.g. --out holds a checkpoint of other settings or data
        raise SystemExit(str(exc)) from None
    model, result, temperature = calibrated.model, calibrated.result, calibrated.temperature

    report: dict = {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                    "train_counts": {c: int((train_y == i).sum()) for i, c in enumerate(CLASS_NAMES)}}
    report["temperature"] = temperature
    report["val_ece_before"] = calibrated.calibration["ece_before"]
    report["val_ece_after"] = calibrated.calibration["ece_after"]

    report.update(score(model, temperature, sets, per_dir, args.prior_strength))

    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    if args.ship:
        training = {"sets": {d: {n: len(dsets[n][0]) for n in dsets} for d, dsets in per_dir.items()},
                    "families": sorted({f for n in train_names for f in sets[n][1].get("family", ["survey"])}),
                    "recipe": " ".join(sys.argv),
                    "config": {k: v for k, v in config.__dict__.items() if k != "progress"},
                    "data_sha256": _hash_dirs(args.data)}
        if args.init_from:  # the whole chain of recipes stays on the card
            from lamost_classify.model.weights import read_card, resolve_weights

            base = read_card(resolve_weights(args.init_from))
            training["fine_tuned_from"] = {k: base[k] for k in ("name", "weights_sha256", "training")}
        metrics = card_metrics(report)
        path = save_weights(model.cpu(), args.ship, name=args.name or f"{args.preset}-default",
                            training=training, metrics=metrics, temperature=temperature)
        print(f"shipped {path}")


def _hash_dirs(dirs: list[Path]) -> str:
    import hashlib

    h = hashlib.sha256()
    for data in dirs:
        for f in sorted(data.glob("*_truth.parquet")):
            h.update(f.read_bytes())
    return h.hexdigest()


if __name__ == "__main__":
    main()
