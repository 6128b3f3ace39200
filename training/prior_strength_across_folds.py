"""The survey prior's strength chosen across folds: each fold at the strength its sibling folds' unseen
families say, never its own.

leave_one_family_out.py chooses a fold's strength on its training families' validation sets: spectra
like those its networks trained on, where the strengths from 0.25 up differ by a few spectra and the
choice says little about a family none of them saw (docs/families.md, "The prior's strength across folds"). Here each fold's
model (its fold-<F>-model.safetensors, temperature from its record) is scored on its own left-out family
at every strength (the five aims of the yardstick), and each fold is given the strength at which the
OTHER folds' models meet the most aims on theirs (ties: the weaker prior): nested cross-validation, no
fold's own left-out family choosing its strength. The strength at which all folds together meet the
most aims is the yardstick's word for a model trained on every family.

    python training/prior_strength_across_folds.py --data work/families-g6 survey=work/lofo-six-survey-g6 \
        eigen=work/lofo-six-eigen-g6 physical=work/lofo-six-physical-g6 [--json out.json]

Each FAMILY=DIR names a leave_one_family_out.py --out holding the fold that left FAMILY out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import leave_one_family_out as lofo  # noqa: E402

from lamost_classify.model.recipe import PRIOR_STRENGTHS, strength_prior  # noqa: E402


def aims_by_strength(loader: lofo.SetLoader, family: str, directory: Path) -> dict:
    """The fold that left ``family`` out, on ``family``'s test sets at every strength: its record's chosen
    strength, and per strength the five goals' values and how many are met."""
    from lamost_classify.model.weights import load_weights

    record = json.loads((directory / "lofo.json").read_text())["folds"][family]
    model, _ = load_weights(directory / record["weights"])
    loader.fold = family
    inputs = {name: lofo.scoring_inputs(loader, model, record["temperature"], family, name, "test")
              for name in (lofo.TEST, lofo.TEST_SNR)}
    rows = {}
    for strength in PRIOR_STRENGTHS:
        prior = strength_prior(strength)
        g = lofo.goals(*(lofo.score_set(probs, truth, prior, rule_inputs)
                         for probs, truth, rule_inputs in (inputs[lofo.TEST], inputs[lofo.TEST_SNR])))
        rows[strength] = {"values": {k: v["value"] for k, v in g.items()}, "met": sum(v["met"] for v in g.values())}
    return {"directory": str(directory), "validation_strength": record["prior_strength"], "by_strength": rows}


def best_strength(met: dict[float, float]) -> float:
    """The strength with the most aims met; of equals, the weakest prior."""
    return min(s for s, m in met.items() if m == max(met.values()))


def nested_strengths(met: dict[str, dict[float, int]]) -> dict[str, float]:
    """Per fold: the strength at which the other folds meet the most aims together (``met``: fold -> strength
    -> aims met on its own left-out family)."""
    if len(met) < 2:
        raise ValueError("a strength chosen on the other folds needs at least two folds")
    return {fold: best_strength({s: sum(met[o][s] for o in met if o != fold) for s in met[fold]}) for fold in met}


def markdown(folds: dict[str, dict], nested: dict[str, float], overall: float) -> str:
    names = list(next(iter(folds.values()))["by_strength"][PRIOR_STRENGTHS[0]]["values"])
    lines = ["| left out | strength | " + " | ".join(names) + " | aims met | chosen by |",
             "| --- | --- |" + " --- |" * (len(names) + 2)]
    for fold, f in folds.items():
        for s, row in f["by_strength"].items():
            by = [who for who, chosen in (("validation", f["validation_strength"]), ("the other folds", nested[fold]))
                  if chosen == s]
            lines.append(f"| {fold} | {s} | " + " | ".join(f"{v:.4f}" for v in row["values"].values())
                         + f" | {row['met']} | {', '.join(by)} |")
    total = {who: sum(f["by_strength"][s]["met"] for f, s in zip(folds.values(), chosen))
             for who, chosen in (("validation", [f["validation_strength"] for f in folds.values()]),
                                 ("the other folds", list(nested.values())))}
    lines += ["", f"Aims met, all folds: at the strengths validation chose {total['validation']}, at those the other "
              f"folds chose {total['the other folds']} (of {5 * len(folds)}). All folds together meet the most at "
              f"strength {overall}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("work/families"), help="one directory per family")
    p.add_argument("folds", nargs="+", help="FAMILY=DIR: the leave_one_family_out.py --out with that fold")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    from lamost_classify.model.runtime import set_threads

    set_threads(args.threads)
    pairs = [f.split("=", 1) for f in args.folds]
    if any(len(pair) != 2 for pair in pairs) or len({f for f, _ in pairs}) != len(pairs):
        raise SystemExit("give each fold once, as FAMILY=DIR")
    loader = lofo.SetLoader(args.data)
    try:
        folds = {family: aims_by_strength(loader, family, Path(d)) for family, d in pairs}
    except (OSError, KeyError) as exc:
        raise SystemExit(f"a fold's record, weights or test sets are missing: {exc!r}") from None
    met = {f: {s: r["met"] for s, r in v["by_strength"].items()} for f, v in folds.items()}
    try:
        nested = nested_strengths(met)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    overall = best_strength({s: sum(m[s] for m in met.values()) for s in PRIOR_STRENGTHS})
    print(markdown(folds, nested, overall))
    result = {"folds": folds, "nested_strength": nested, "all_folds_strength": overall}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
