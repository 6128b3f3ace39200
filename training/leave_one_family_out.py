"""The leave-one-family-out yardstick: train on some mock families, test on one the model never saw.

A model trained on one mock generator can score 0.99+ on that generator's test sets and still miss one
galaxy in six from an independent generator (docs/facts.md). So, for each family F in --data
(mocks/families.py; sets made by training/make_training_set.py into <data>/<family>/):

1. fit the preset (model/train.py, the shipped recipe's ``fit``) on the other families' ``lofo_train``;
2. temperature (model/calibration.py) and the strength of the survey prior on their ``lofo_val``: the
   strength (0 = none .. 1 = full Bayes) that maximises mean F1 with precision re-weighted to the survey
   mix, as train_shipped.py picks it on its survey-mix set (prior_strength_across_folds.py chooses it on
   the other folds' left-out families instead, afterwards);
3. score on F's ``lofo_test`` (the real files' S/N) and ``lofo_test_snr`` (log-uniform S/N 2-100), and on
   the other families' test sets for comparison: per class recall, precision and F1, balanced (the
   training prior) and at the survey mix (survey prior applied, precision re-weighted to 98.5 : 1.2 :
   0.3), by S/N bin and by redshift bin, against the paper's Table 1 and the goals below; and STAR recall
   on the real LAMOST stars when ../shared is there. Classes are published as the catalog publishes them:
   the most probable, but a QSO whose fit lies below QSO_MIN_Z or whose H-alpha is narrow only takes its
   next class, one with the Balmer series at rest is a STAR, a STAR with a galaxy's emission lines at
   one z >= 0.01 a GALAXY, and any other GALAXY with a carbon star's Swan band heads at rest a STAR
   (``published_class``; the test sets' ``_ivar.npy`` and ``_pedestal.npy`` feed the fit and the checks).

F's files are never opened before step 3 (``SetLoader.opened`` records every file, by fold and role).
``--seed A B ...`` trains one model per seed in step 1 and gives steps 2-3 their mean logits (an ensemble,
model/ensemble.py); ``--join DIR ...`` adds the networks earlier runs (their --out) trained for the same fold,
on the same families, so that two recipes' ensembles are scored as one. ``--model PATH`` skips 1-2 and
scores an existing model (its card's temperature and prior) on every family's test sets. Writes lofo.json
and lofo.md in --out, and each fold's model as fold-<F>-model.safetensors, its temperature and prior on its
card (validate_real.py --model takes it); each fold trains in <out>/fold-<F> (each member of an ensemble in
<out>/fold-<F>-seed<S>) and resumes from its checkpoint when rerun.

    python training/leave_one_family_out.py --data work/families --out work/lofo --epochs 8 --threads 2
    python training/leave_one_family_out.py --data work/families --out work/lofo-shipped --model default
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lamost_classify import CLASS_NAMES, SURVEY_PRIOR
from lamost_classify.contract import model_id
from lamost_classify.model.recipe import PRIOR_STRENGTHS, strength_prior

TRAIN, VAL, TEST, TEST_SNR = "lofo_train", "lofo_val", "lofo_test", "lofo_test_snr"
SETS = (TRAIN, VAL, TEST, TEST_SNR)
# The goals this yardstick is held to (issue 13).
STAR_RECALL_GOAL = 0.999
RECALL_GOAL_SNR5 = 0.97  # GALAXY and QSO recall at S/N >= 5
F1_AT_MIX_GOAL = 0.95  # GALAXY and QSO F1 at the survey mix


@dataclass
class SetLoader:
    """Loads <data>/<family>/<set>_flux.npy + _truth.parquet and records what was opened, and why."""

    data: Path
    opened: list[tuple[str, str, str, str]] = field(default_factory=list)  # (fold, role, family, set)
    fold: str = ""

    def load(self, family: str, name: str, role: str) -> tuple[np.ndarray, dict]:
        flux_path = self.data / family / f"{name}_flux.npy"
        truth_path = self.data / family / f"{name}_truth.parquet"
        if not flux_path.exists() or not truth_path.exists():
            raise SystemExit(f"{flux_path} or its truth table is missing: make it with "
                             f"python training/make_training_set.py --family {family} --out {self.data / family} "
                             f"--sets {name}")
        self.opened.append((self.fold, role, family, name))
        flux = np.load(flux_path, mmap_mode="r")
        truth = pq.read_table(truth_path).to_pydict()
        made_by = set(truth.get("family", ["(no family column)"]))
        if made_by != {family}:
            raise SystemExit(f"{truth_path} holds mocks of family {sorted(made_by)}, not {family!r}: "
                             f"it is in the wrong directory")
        if len(truth["label"]) != len(flux):
            raise SystemExit(f"{flux_path} has {len(flux)} spectra but its truth table {len(truth['label'])} rows")
        return flux, truth

    def noise(self, family: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(ivar, pedestal) of a test set already loaded: what the redshift fit of a published class needs."""
        paths = [self.data / family / f"{name}_{suffix}.npy" for suffix in ("ivar", "pedestal")]
        if not all(path.exists() for path in paths):
            raise SystemExit(f"{paths[0]} or {paths[1].name} is missing: the yardstick publishes classes as the "
                             f"catalog does, with a redshift fit; remake the set with python training/"
                             f"make_training_set.py --family {family} --out {self.data / family} --sets {name}")
        return np.load(paths[0], mmap_mode="r"), np.load(paths[1])

    def stack(self, families: list[str], name: str, role: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Spectra, labels and true redshifts of set ``name`` of every family in ``families``, in order."""
        parts = [training_arrays(*self.load(f, name, role)) for f in families]
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def training_arrays(flux: np.ndarray, truth: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spectra, labels, true redshifts) of one set, as ``fit`` takes them."""
    return np.asarray(flux), np.asarray(truth["label"], np.int64), np.asarray(truth["z"], np.float32)


def check_train_set(directory: Path, option: str, script: str) -> None:
    """One clear line unless ``directory`` holds a train set (what ``option`` takes, made by ``script``)."""
    if not (directory / "train_flux.npy").exists():
        raise SystemExit(f"{option} {directory} holds no train_flux.npy: make it with "
                         f"python training/{script} --out {directory}")


def check_real_stars(directory: Path) -> None:
    """One clear line unless ``directory`` is a make_real_star_set.py directory (a train set, all STAR)."""
    check_train_set(directory, "--real-stars", "make_real_star_set.py")
    labels = pq.read_table(directory / "train_truth.parquet", columns=["label"]).column("label").to_pylist()
    if set(labels) != {0}:
        raise SystemExit(f"{directory} holds other classes than STAR: not a make_real_star_set.py directory")


def families_in(data: Path, sets: tuple[str, ...] = SETS) -> list[str]:
    """Families with all of ``sets`` in ``data`` (a directory per family), sorted."""
    return sorted(d.name for d in data.iterdir() if d.is_dir() and all((d / f"{s}_flux.npy").exists() for s in sets))


def choose_prior_strength(probs: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, float]]:
    """The strength whose prior-adjusted predictions have the best mean F1 at the survey mix (precision
    re-weighted), and that mean F1 for every strength tried."""
    from lamost_classify.model.calibration import adjust_to_prior
    from lamost_classify.model.evaluate import confusion_matrix, reweighted_f1

    tried = {}
    for strength in PRIOR_STRENGTHS:
        cm = confusion_matrix(labels, adjust_to_prior(probs, strength_prior(strength)).argmax(1))
        tried[str(strength)] = float(np.nanmean(list(reweighted_f1(cm, SURVEY_PRIOR).values())))
    best = max(PRIOR_STRENGTHS, key=lambda s: tried[str(s)])
    return best, tried


def score_set(probs: np.ndarray, truth: dict, prior: list[float], rule_inputs: tuple[np.ndarray, ...]) -> dict:
    """evaluate() of one test set, balanced (as trained) and with ``prior`` applied, plus S/N >= 5 alone: the
    classes as the catalog publishes them (``published_class``; ``rule_inputs`` from ``scoring_inputs``)."""
    from lamost_classify.model.calibration import adjust_to_prior
    from lamost_classify.model.evaluate import evaluate
    from lamost_classify.model.inference import published_class

    labels = np.asarray(truth["label"], np.int64)
    snr = np.asarray(truth["snr_g"], np.float64)
    at_mix = published_class(adjust_to_prior(probs, prior), *rule_inputs)
    bright = snr >= 5.0
    return {
        "balanced": evaluate(labels, published_class(probs, *rule_inputs), snr, SURVEY_PRIOR, truth=truth),
        "survey_prior": evaluate(labels, at_mix, snr, SURVEY_PRIOR, truth=truth),
        "survey_prior_snr_ge_5": evaluate(labels[bright], at_mix[bright], snr[bright], SURVEY_PRIOR,
                                          truth={k: np.asarray(v)[bright] for k, v in truth.items()}),
    }


def scoring_inputs(loader: SetLoader, model, temperature: float, family: str, name: str,
                   role: str) -> tuple[np.ndarray, dict, tuple[np.ndarray, ...]]:
    """(balanced probabilities, truth, what the class rules read: ``Classifier.class_rule_inputs``) of one test
    set, for ``score_set`` at any survey prior's strength."""
    flux, truth = loader.load(family, name, role)
    probs = probabilities(model, flux, temperature)
    return probs, truth, fold_classifier(model, temperature).class_rule_inputs(probs, flux, *loader.noise(family, name))


def fold_classifier(model, temperature: float):
    """``model`` as the catalog runs it, for the fits and line checks ``published_class`` reads (no prior: the
    scorer applies its own)."""
    from lamost_classify.model.inference import Classifier

    return Classifier(model, {"temperature": temperature}, str(next(model.parameters()).device),
                      target_prior=None, precision="fp32")


def goals(test: dict, test_snr: dict) -> dict[str, dict]:
    """Each goal: the value measured, the bar and whether it is met. STAR recall and F1 at the mix on
    ``lofo_test`` (the real files' S/N), recall at S/N >= 5 on ``lofo_test_snr`` (enough faint spectra)."""
    out = {"STAR recall": (test["survey_prior"]["scores"]["STAR"]["recall"], STAR_RECALL_GOAL)}
    for c in ("GALAXY", "QSO"):
        out[f"{c} recall at S/N >= 5"] = (test_snr["survey_prior_snr_ge_5"]["scores"][c]["recall"], RECALL_GOAL_SNR5)
        out[f"{c} F1 at the survey mix"] = (test["survey_prior"]["reweighted_f1"][c], F1_AT_MIX_GOAL)
    return {k: {"value": v, "goal": g, "met": bool(v >= g)} for k, (v, g) in out.items()}


def probabilities(model, flux: np.ndarray, temperature: float) -> np.ndarray:
    from lamost_classify.model.calibration import softmax
    from lamost_classify.model.runtime import batched_logits

    return softmax(batched_logits(model, np.asarray(flux), next(model.parameters()).device, 512), temperature)


@functools.cache
def _real_stars(held_out_only: bool) -> dict[str, dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_shipped import real_stars

    return real_stars(held_out_only=held_out_only)


def real_star_recall(model, temperature: float, prior: list[float], held_out_only: bool = False) -> dict[str, dict]:
    """STAR recall on the real LAMOST stars at hand (../shared), per directory: every one, or only those
    held out of training (for a fold that trained on the others), the class published as the catalog does
    (``score_set``'s); {} without ../shared."""
    from lamost_classify.model.calibration import adjust_to_prior
    from lamost_classify.model.inference import published_class

    out = {}
    classifier = fold_classifier(model, temperature)
    for sub, r in _real_stars(held_out_only).items():
        probs = probabilities(model, r["flux"], temperature)
        rule_inputs = classifier.class_rule_inputs(probs, r["flux"], r["ivar"], r["pedestal"])
        called = published_class(adjust_to_prior(probs, prior), *rule_inputs)
        out[sub] = {"n": r["n"], "star_recall": float((called == 0).mean())}
    return out


def score_families(loader: SetLoader, model, temperature: float, prior: list[float], families: list[str],
                   role: str) -> dict[str, dict]:
    out = {}
    for family in families:
        out[family] = {}
        for name in (TEST, TEST_SNR):
            probs, truth, rule_inputs = scoring_inputs(loader, model, temperature, family, name, role)
            out[family][name] = score_set(probs, truth, prior, rule_inputs)
        out[family]["goals"] = goals(out[family][TEST], out[family][TEST_SNR])
    return out


def fold_directory(out_dir: Path, left_out: str, seed: int, n_seeds: int) -> Path:
    """Where a fold model trains: fold-<F>, or fold-<F>-seed<S> for each member of an ensemble."""
    return out_dir / (f"fold-{left_out}" if n_seeds == 1 else f"fold-{left_out}-seed{seed}")


def fold_model(out_dir: Path, left_out: str, seeds: list[int] | None = None):
    """A trained fold's model, from its checkpoints' best epochs: one network, or an ensemble's members as
    their mean logits. ``seeds``: the fold record's (lofo.json); records before ensembles had one."""
    import torch

    from lamost_classify.model.densenet import build_model
    from lamost_classify.model.ensemble import LogitMean

    seeds = seeds or [0]
    members = []
    for seed in seeds:
        checkpoint = torch.load(fold_directory(out_dir, left_out, seed, len(seeds)) / "checkpoint.pt",
                                map_location="cpu", weights_only=False)
        member = build_model(checkpoint["config"]["preset"], **checkpoint["model_config"])
        member.load_state_dict(checkpoint["best"]["model"])
        members.append(member.eval())
    return members[0] if len(members) == 1 else LogitMean(members).eval()


def save_fold_weights(model, out_dir: Path, fold: dict) -> Path:
    """The fold's model (one network, or the members as one) as <out>/fold-<F>-model.safetensors with a card
    carrying its temperature and its prior as ``default_target_prior``, so that every tool that takes a
    model (``validate_real.py --model``, ``lamost-classify run --model``) reads it as the fold scored it."""
    from lamost_classify.model.weights import save_weights

    return save_weights(model, out_dir / f"fold-{fold['left_out']}-model.safetensors",
                        name=f"lofo-fold-{fold['left_out']}", temperature=fold["temperature"],
                        training={k: fold[k] for k in ("left_out", "trained_on", "train_n", "seeds", "best_epochs",
                                                       "joined")},
                        metrics={"default_target_prior": fold["prior"], "chosen_prior_strength": fold["prior_strength"]})


def joined_members(join: list[Path], left_out: str, others: list[str]) -> list:
    """The networks an earlier run (each of ``join``: a leave_one_family_out.py --out) trained for this
    fold, refused unless they were trained on exactly ``others``: a member that saw the family left out
    would make the fold's scores a lie."""
    members = []
    for directory in join:
        try:
            record = json.loads((directory / "lofo.json").read_text())["folds"][left_out]
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            raise SystemExit(f"--join {directory}: no finished fold leaving out {left_out} there ({exc!r})") from None
        if record.get("joined"):
            raise SystemExit(f"--join {directory}: that run joined {record['joined']} itself; join those instead")
        if sorted(record["trained_on"]) != sorted(others):
            raise SystemExit(f"--join {directory}: its {left_out} fold trained on {record['trained_on']}, this one "
                             f"on {others}")
        model = fold_model(directory, left_out, record["seeds"])
        members += list(getattr(model, "members", [model]))
    return members


def run_fold(loader: SetLoader, left_out: str, families: list[str], configs: list, out_dir: Path,
             train_sets: tuple[str, ...] = (TRAIN,), real_stars: Path | None = None,
             composites: Path | None = None, join: list[Path] = ()) -> dict:
    """Train without ``left_out``, calibrate without it, then test on it (and on the families trained on).
    One model per config (they differ in seed); more than one are scored as one, their mean logits, and
    so are the members of ``join`` (``joined_members``) with them.
    ``real_stars``: a directory made by make_real_star_set.py whose stars every fold also trains on, as
    the shipped model does; they are no mock family, so no fold leaves them out. ``composites``: a
    make_composite_galaxy_set.py directory (galaxies composed of those real stars, and the stars), alike."""
    from lamost_classify.model.calibration import fit_temperature, softmax
    from lamost_classify.model.ensemble import LogitMean
    from lamost_classify.model.labelled import load_set
    from lamost_classify.model.runtime import batched_logits
    from lamost_classify.model.train import fit

    others = [f for f in families if f != left_out]
    joined = joined_members(list(join), left_out, others)  # before hours of training, not after
    loader.fold = left_out
    parts = [loader.stack(others, name, "train") for name in train_sets]
    for role, directory in (("real", real_stars), ("real-composite", composites)):
        if directory is not None:
            loader.opened.append((left_out, "train", role, str(directory)))
            parts.append(training_arrays(*load_set(directory, "train")))
    train_x, train_y, train_z = (np.concatenate([p[i] for p in parts]) for i in range(3))
    del parts
    val_x, val_y, val_z = loader.stack(others, VAL, "calibrate")
    started = time.time()
    results = []
    for config in configs:
        try:
            results.append(fit(train_x, train_y, val_x, val_y, config,
                               fold_directory(out_dir, left_out, config.seed, len(configs)), train_z, val_z))
        except ValueError as exc:  # the fold's directory holds a checkpoint of other settings or data
            raise SystemExit(str(exc)) from None
    networks = [r.model for r in results] + joined
    model = networks[0] if len(networks) == 1 else LogitMean(networks)
    val_logits = batched_logits(model, val_x, next(model.parameters()).device, 512)
    temperature = fit_temperature(val_logits, val_y)
    strength, tried = choose_prior_strength(softmax(val_logits, temperature), val_y)
    prior = strength_prior(strength)
    fold = {"left_out": left_out, "trained_on": others, "train_n": len(train_y), "val_n": len(val_y),
            "seeds": [c.seed for c in configs], "best_epochs": [r.best_epoch for r in results],
            "joined": [str(d) for d in join],
            "train_seconds": time.time() - started, "temperature": temperature, "prior_strength": strength,
            "val_mean_f1_at_mix_by_strength": tried, "prior": prior}
    fold["weights"] = save_fold_weights(model, out_dir, fold).name
    fold["unseen"] = score_families(loader, model, temperature, prior, [left_out], "test")[left_out]
    fold["seen"] = score_families(loader, model, temperature, prior, others, "test seen")
    # Composites are made of the real stars not held out too, so either way only the held-out ones are news.
    fold["real_stars"] = real_star_recall(model, temperature, prior,
                                          held_out_only=real_stars is not None or composites is not None)
    return fold


# ---------------------------------------------------------------------------------------------- tables

def _f(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


def _recall_table(title: str, group: str, by_class: dict[str, dict[str, dict]]) -> list[str]:
    """A titled markdown table of ``evaluate``'s ``by_redshift`` or ``by_kind``: per class and group, n,
    recall and what they were called."""
    lines = ["", title, "", f"| class | {group} | n | recall | called STAR / GALAXY / QSO |",
             "| --- | --- | --- | --- | --- |"]
    for c, groups in by_class.items():
        for label, b in groups.items():
            lines.append(f"| {c} | {label} | {b['n']} | {_f(b['recall'])} | "
                         + " / ".join(str(b["called"][k]) for k in CLASS_NAMES) + " |")
    return lines


def markdown(result: dict) -> str:
    """Every fold's tables in markdown: goals, per class (balanced and at the mix, the paper beside),
    by S/N bin and by redshift bin (log-uniform S/N set, survey prior)."""
    from lamost_classify.model.evaluate import PAPER_TABLE1

    rows = result["rows"]
    goal_names = list(next(iter(rows.values()))["scores"]["goals"])
    lines = [f"# {result['title']}", "", result["what"], "",
             "| tested on | " + " | ".join(goal_names) + " |", "| --- |" + " --- |" * len(goal_names)]
    for name, row in rows.items():
        g = row["scores"]["goals"]
        lines.append(f"| {name} | " + " | ".join(f"{_f(g[k]['value'])} {'met' if g[k]['met'] else '**not met**'}"
                                                for k in goal_names) + " |")
    lines += ["", "Goals: " + ", ".join(f"{k} >= {v['goal']}" for k, v in next(iter(rows.values()))["scores"]["goals"].items()), ""]
    for name, row in rows.items():
        test, snr_set = row["scores"][TEST], row["scores"][TEST_SNR]
        lines += [f"## {name}", ""] + ([row["note"], ""] if row.get("note") else []) + [
                  f"Per class on {TEST} ({test['balanced']['n']} spectra). As trained (flat prior): on the balanced "
                  "set, and with precision re-weighted to the survey mix 98.5 : 1.2 : 0.3. Survey prior: the prior "
                  "applied to the probabilities (as the catalog does), precision re-weighted to the mix. "
                  "Paper: Table 1 (real LAMOST, survey mix).", "",
                  "| class | recall | precision | F1 | precision at mix | F1 at mix | recall, survey prior "
                  "| precision at mix, survey prior | F1 at mix, survey prior | paper P / R / F1 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in CLASS_NAMES:
            flat, b, m = test["balanced"], test["balanced"]["scores"][c], test["survey_prior"]
            paper = " / ".join(f"{v:.4f}" for v in PAPER_TABLE1[c])
            lines.append(f"| {c} | {_f(b['recall'])} | {_f(b['precision'])} | {_f(b['f1'])} | "
                         f"{_f(flat['reweighted_precision'][c])} | {_f(flat['reweighted_f1'][c])} | "
                         f"{_f(m['scores'][c]['recall'])} | {_f(m['reweighted_precision'][c])} | "
                         f"{_f(m['reweighted_f1'][c])} | {paper} |")
        by_snr = snr_set["survey_prior"]["by_snr"]
        lines += ["", f"By S/N (g) on {TEST_SNR} (log-uniform S/N 2-100), survey prior: recall, and precision "
                  "re-weighted to the mix", "",
                  "| S/N | n | STAR recall | GALAXY recall | QSO recall | GALAXY precision at mix | QSO precision at mix |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for label, b in by_snr.items():
            lines.append(f"| {label} | {b['n']} | " + " | ".join(_f(b["scores"][c]["recall"]) for c in CLASS_NAMES)
                         + f" | {_f(b['reweighted_precision']['GALAXY'])} | {_f(b['reweighted_precision']['QSO'])} |")
        lines += _recall_table(f"By redshift on {TEST_SNR}, survey prior: recall (what the misses were called)",
                               "z", snr_set["survey_prior"].get("by_redshift", {}))
        lines += _recall_table(f"By kind on {TEST_SNR} at S/N >= 5 (the truth's subclass, stars by MK letter), "
                               "survey prior: recall (what the misses were called)",
                               "kind", snr_set["survey_prior_snr_ge_5"].get("by_kind", {}))
        if row.get("real_stars"):
            lines += ["", "Real LAMOST stars called STAR (survey prior): " + ", ".join(
                f"{k} {v['star_recall']:.4f} of {v['n']}" for k, v in row["real_stars"].items())]
        lines.append("")
    return "\n".join(lines)


def write(result: dict, out: Path) -> None:
    from lamost_classify.model.evaluate import _jsonable

    out.mkdir(parents=True, exist_ok=True)
    (out / "lofo.json").write_text(json.dumps(_jsonable(result), indent=1, default=float))
    (out / "lofo.md").write_text(markdown(result))
    print(f"wrote {out / 'lofo.json'} and {out / 'lofo.md'}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("work/families"), help="one directory per family")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--families", nargs="*", default=None, help="the families to use (default: every one in --data)")
    p.add_argument("--leave-out", nargs="*", default=None, help="folds to run (default: every family)")
    p.add_argument("--model", default=None, help="score this trained model on every family instead of training")
    p.add_argument("--preset", default="fast")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--milestones", default="4,6", help="lr /10 after these epochs ('' for none)")
    p.add_argument("--average-from", type=int, default=0,
                   help="TrainConfig.average_from: keep the mean weights of epochs N..--epochs (0: the best epoch)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="TrainConfig.weight_decay: Adam's L2 penalty on every weight (0: off)")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="TrainConfig.label_smoothing: train towards (1 - eps) on the class, eps/3 on each (0: off)")
    p.add_argument("--per-class", type=int, default=None, help="spectra per class per epoch (default: median class size)")
    p.add_argument("--train-sets", nargs="+", default=[TRAIN],
                   help=f"the training families' sets to train on (default {TRAIN}; the shipped recipe's: train train_snr)")
    p.add_argument("--real-stars", type=Path, default=None,
                   help="also train every fold on this make_real_star_set.py directory (real stars are then "
                        "scored on the held-out ones only)")
    p.add_argument("--composites", type=Path, default=None,
                   help="also train every fold on this make_composite_galaxy_set.py directory (galaxies composed "
                        "of the real stars not held out, and those stars; real stars are then scored held out only)")
    p.add_argument("--artefacts", type=float, default=0.0, help="TrainConfig.artefact_fraction (train_shipped.py's)")
    p.add_argument("--tilts", type=float, default=0.0, help="TrainConfig.tilt_fraction (train_shipped.py's)")
    p.add_argument("--arm-losses", type=float, default=0.0, help="TrainConfig.arm_loss_fraction (train_shipped.py's)")
    p.add_argument("--init-from", default=None,
                   help="fine-tune these weights (a path) instead of training from scratch: weights that never "
                        "saw the family left out, so one --leave-out (e.g. a fold's own model, exported)")
    p.add_argument("--redshift-weight", type=float, default=0.0,
                   help="train a redshift head with the class, as train_shipped.py's (0: no head)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--wavelength-channel", action="store_true",
                   help="DenseNetConfig.wavelength_channel: give the network each pixel's place on the grid")
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="TrainConfig.seed: a fold's initial weights and draws; several train one model per seed "
                        "and score their mean logits (an ensemble)")
    p.add_argument("--join", type=Path, nargs="+", default=[],
                   help="earlier runs' --out: each fold's networks trained there join this run's as one model "
                        "(mean logits), e.g. two recipes' ensembles scored as one")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    if not args.data.is_dir():
        raise SystemExit(f"--data {args.data} is not a directory: make the sets first (training/make_training_set.py)")
    families = args.families or families_in(args.data, (TEST, TEST_SNR) if args.model else SETS)
    loader = SetLoader(args.data)
    if args.model:
        from lamost_classify.model.inference import card_target_prior
        from lamost_classify.model.weights import load_weights
        from lamost_classify.model.runtime import resolve_device, set_threads

        set_threads(args.threads)
        model, card = load_weights(args.model, resolve_device(args.device))
        temperature = float(card.get("temperature", 1.0))
        prior = list(card_target_prior(card))
        loader.fold = "model"
        scores = score_families(loader, model, temperature, prior, families, "test")
        stars = real_star_recall(model, temperature, prior)
        name = model_id(card)
        result = {"title": f"{name} on every mock family", "model": name, "temperature": temperature, "prior": prior,
                  "what": f"Model {name} (temperature {temperature:.3f}, prior {', '.join(f'{v:.4g}' for v in prior)} "
                          "from its card) on each family's test sets; no training.",
                  "rows": {f: {"scores": scores[f], "real_stars": stars} for f in families}}
        write(result, args.out)
        return result

    if len(families) < 2:
        raise SystemExit(f"leave-one-family-out needs at least 2 families in {args.data}; found {families}")
    if args.real_stars:
        check_real_stars(args.real_stars)
    if args.composites:
        check_train_set(args.composites, "--composites", "make_composite_galaxy_set.py")
    if args.init_from and len(args.leave_out or families) != 1:
        # Weights fit to two families would have seen the third left out of another fold.
        raise SystemExit("--init-from: the weights must never have seen the family left out, so give one --leave-out")
    from lamost_classify.model.train import TrainConfig

    config = TrainConfig(preset=args.preset, epochs=args.epochs, lr=args.lr, per_class=args.per_class,
                         lr_milestones=tuple(int(m) for m in args.milestones.split(",") if m),
                         batch_size=args.batch_size, num_threads=args.threads, device=args.device, progress=False,
                         artefact_fraction=args.artefacts, tilt_fraction=args.tilts,
                         arm_loss_fraction=args.arm_losses, init_from=args.init_from,
                         redshift_weight=args.redshift_weight, average_from=args.average_from,
                         weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, seed=args.seed[0],
                         model_overrides={"wavelength_channel": True} if args.wavelength_channel else {})
    configs = [dataclasses.replace(config, seed=seed) for seed in dict.fromkeys(args.seed)]
    folds = {}
    for left_out in args.leave_out or families:
        if left_out not in families:
            raise SystemExit(f"--leave-out {left_out}: not among the families {families}")
        print(f"fold: leave out {left_out}, train on {[f for f in families if f != left_out]}", flush=True)
        folds[left_out] = run_fold(loader, left_out, families, configs, args.out, tuple(args.train_sets),
                                   args.real_stars, args.composites, args.join)
        g = folds[left_out]["unseen"]["goals"]
        print(f"  {left_out}: " + ", ".join(f"{k} {v['value']:.4f}" for k, v in g.items()), flush=True)
    result = {"title": "Leave one mock family out",
              "what": f"Preset {args.preset}" + (" with the wavelength channel" if args.wavelength_channel else "")
                      + f" on the sets {', '.join(args.train_sets)}"
                      + (f" and the real stars of {args.real_stars}" if args.real_stars else "")
                      + (f" and the composite galaxies of {args.composites}" if args.composites else "")
                      + (" (real stars scored: held out only)" if args.real_stars or args.composites else "")
                      + f", artefact fraction "
                      f"{args.artefacts}, tilt fraction {args.tilts}, arm-loss fraction {args.arm_losses}, "
                      + (f"fine-tuned from {args.init_from}, " if args.init_from else "")
                      + f"redshift head weight {args.redshift_weight}, {args.epochs} epochs "
                      f"(lr {args.lr}, /10 after {args.milestones or 'none'}), "
                      + (f"weights of epochs {args.average_from}-{args.epochs} averaged, " if args.average_from else "")
                      + (f"weight decay {args.weight_decay}, " if args.weight_decay else "")
                      + (f"label smoothing {args.label_smoothing}, " if args.label_smoothing else "")
                      + (f"seed {configs[0].seed}, " if len(configs) == 1 else
                         f"an ensemble of {len(configs)} (mean logits), seeds {', '.join(str(c.seed) for c in configs)}, ")
                      + (f"joined by the networks of {', '.join(str(d) for d in args.join)} (mean logits of all), "
                         if args.join else "")
                      + f"per class per epoch {args.per_class or 'median class size'}; temperature and prior "
                      "strength on the training families' validation sets. Each row: the family left out.",
              "config": {k: v for k, v in config.__dict__.items()}, "folds": folds,
              "rows": {f: {"scores": fold["unseen"], "real_stars": fold["real_stars"],
                           "note": f"Trained on {', '.join(fold['trained_on'])} ({fold['train_n']} spectra, best epoch "
                                   f"{', '.join(str(e) for e in fold['best_epochs'])}); temperature {fold['temperature']:.3f}, prior strength "
                                   f"{fold['prior_strength']}. Seen families' {TEST} mean F1 at the mix: " + ", ".join(
                                       f"{s} {np.nanmean(list(v[TEST]['survey_prior']['reweighted_f1'].values())):.4f}"
                                       for s, v in fold["seen"].items()) + "."}
                       for f, fold in folds.items()},
              "opened": loader.opened}
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
