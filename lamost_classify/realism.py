"""How real do the mocks look? Checks of mock A stars against real LAMOST A stars.

* :func:`discriminator_auc`: the sharpest check. A small 1-D CNN learns to tell real A stars from mock
  A stars of matched S/N, both normalised as the pipeline normalises them
  (``pipeline.grid.prepare_arrays(...).flux``); its ROC AUC on spectra it did not train on says how
  distinguishable they are (0.5 = not at all). Its gradient saliency says *where* it tells them apart.
* :func:`distribution_checks`: two-sample Kolmogorov-Smirnov tests of S/N, flux range (max/median of
  the valid native pixels) and masked-pixel fraction.

Real A stars: ``dr10-stars-A`` files whose LAMOST SUBCLASS starts with 'A'. The discriminator trains on
the non-held-out ones and is evaluated on the held-out ones (:func:`instrument.is_held_out`), which never
served as noise donors. Needs torch and scipy (the test extra).

It judges the mocks through the pipeline's own preparation, so it sits above both ``mocks`` and
``pipeline`` (``mocks`` imports nothing of ``pipeline``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .contract import NATIVE_WAVELENGTH, WAVELENGTH
from .mocks import instrument
from .mocks.instrument import _read_real, is_held_out
from .mocks.simulate import MockChunk, Simulator, simulate
from .pipeline.grid import prepare_arrays


@dataclass
class SpectraSet:
    flux: np.ndarray  # (n, 3909)
    ivar: np.ndarray
    andmask: np.ndarray
    snr_g: np.ndarray
    names: list[str]


def real_a_stars(lamost_dir: str | Path, held_out: bool) -> SpectraSet:
    """Real dr10-stars-A spectra of SUBCLASS A*, either the held-out ones or the others."""
    rows, names, snr = [], [], []
    for p in instrument.real_files(lamost_dir, ("dr10-stars-A",)):
        if is_held_out(p) != held_out:
            continue
        r = _read_real(p)
        if r is None or not r["subclass"].startswith("A") or not np.isfinite(r["snr"][1]):
            continue
        rows.append(r)
        names.append(p.name)
        snr.append(r["snr"][1])
    return SpectraSet(flux=np.stack([r["flux"] for r in rows]).astype(np.float32),
                      ivar=np.stack([r["ivar"] for r in rows]).astype(np.float32),
                      andmask=np.stack([r["andmask"] for r in rows]).astype(np.int32),
                      snr_g=np.array(snr, np.float64), names=names)


def mock_a_stars(n: int, seed: int, snr_g: np.ndarray, simulator: Simulator | None = None, **kwargs) -> SpectraSet:
    """``n`` mock A stars whose snr_g is resampled from ``snr_g`` (matched S/N)."""
    sim = simulator or Simulator(class_mix=(1, 0, 0), star_types=("A",), snr_distribution=np.asarray(snr_g), **kwargs)
    sim.snr_distribution = np.asarray(snr_g, dtype=np.float64)
    chunk = MockChunk.concat(list(simulate(n, seed, simulator=sim, chunk_size=max(n, 1))))
    return SpectraSet(flux=chunk.flux, ivar=chunk.ivar, andmask=chunk.andmask,
                      snr_g=chunk.truth["snr_g"].astype(np.float64), names=list(chunk.truth["template"]))


def prepared(s: SpectraSet) -> np.ndarray:
    """The network's view: the pipeline's resampling + min-max normalisation (2600 pixels)."""
    return prepare_arrays(NATIVE_WAVELENGTH, s.flux, s.ivar, s.andmask).flux


# --------------------------------------------------------------------------------------------------
# the discriminator


def _discriminator(seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    # Four strided conv layers (receptive field ~100 input pixels), global average pooling, a linear
    # read-out: enough to see line shapes, noise texture, masks and the continuum shape.
    return nn.Sequential(
        nn.Conv1d(1, 16, 7, stride=2, padding=3), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Conv1d(16, 32, 7, stride=2, padding=3), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Conv1d(32, 32, 7, stride=2, padding=3), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Conv1d(32, 64, 7, stride=2, padding=3), nn.BatchNorm1d(64), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, 1),
    )


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties averaged)."""
    from scipy.stats import rankdata

    score, label = np.asarray(score, dtype=np.float64), np.asarray(label).astype(bool)
    ranks = rankdata(score)
    n_pos, n_neg = label.sum(), (~label).sum()
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class DiscriminatorResult:
    auc: float  # on the evaluation spectra
    train_auc: float
    saliency: np.ndarray  # (2600,) mean |d logit / d input| over the evaluation spectra
    n_train: int
    n_eval: int


def discriminator_auc(real_train: np.ndarray, mock_train: np.ndarray, real_eval: np.ndarray, mock_eval: np.ndarray,
                      epochs: int = 12, seed: int = 0, batch: int = 64, threads: int = 2) -> DiscriminatorResult:
    """Train the CNN on prepared (n, 2600) real (label 1) vs mock (label 0) spectra; AUC on the eval sets."""
    import torch

    torch.set_num_threads(threads)
    x_train = torch.tensor(np.concatenate([real_train, mock_train])[:, None, :], dtype=torch.float32)
    y_train = torch.tensor(np.r_[np.ones(len(real_train)), np.zeros(len(mock_train))], dtype=torch.float32)
    x_eval = torch.tensor(np.concatenate([real_eval, mock_eval])[:, None, :], dtype=torch.float32)
    y_eval = np.r_[np.ones(len(real_eval)), np.zeros(len(mock_eval))]
    net = _discriminator(seed)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x_train), generator=gen).split(batch):
            opt.zero_grad()
            loss_fn(net(x_train[idx]).squeeze(1), y_train[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        s_eval = net(x_eval).squeeze(1).numpy()
        s_train = net(x_train).squeeze(1).numpy()
    xe = x_eval.clone().requires_grad_(True)
    net(xe).sum().backward()
    saliency = xe.grad.abs().mean(dim=(0, 1)).numpy()
    return DiscriminatorResult(auc=roc_auc(s_eval, y_eval), train_auc=roc_auc(s_train, y_train.numpy()),
                               saliency=saliency, n_train=len(x_train), n_eval=len(x_eval))


def saliency_regions(saliency: np.ndarray, top: int = 8, width_a: float = 50.0) -> list[tuple[float, float]]:
    """The ``top`` wavelength windows (centre A, share of total saliency) where the discriminator looks most."""
    edges = np.arange(WAVELENGTH[0], WAVELENGTH[-1] + width_a, width_a)
    which = np.digitize(WAVELENGTH, edges) - 1
    share = np.bincount(which, weights=saliency, minlength=len(edges)) / saliency.sum()
    order = np.argsort(share)[::-1][:top]
    return [(float(edges[i] + width_a / 2), float(share[i])) for i in order]


# --------------------------------------------------------------------------------------------------
# distribution checks


def flux_range(s: SpectraSet) -> np.ndarray:
    """max / median of the valid native pixels (ivar > 0, andmask == 0) per spectrum."""
    valid = (s.ivar > 0) & (s.andmask == 0) & np.isfinite(s.flux)
    f = np.where(valid, s.flux, np.nan)
    return np.nanmax(f, axis=1) / np.nanmedian(f, axis=1)


def masked_fraction(s: SpectraSet) -> np.ndarray:
    """Share of native pixels with ivar == 0 or andmask != 0."""
    return ((s.ivar <= 0) | (s.andmask != 0)).mean(axis=1)


KS_ALPHA = 0.01  #: a distribution "matches" when the two-sample KS test does not reject at this level


def distribution_checks(real: SpectraSet, mock: SpectraSet) -> dict[str, tuple[float, float]]:
    """{quantity: (KS statistic, p-value)} for snr_g, flux range and masked fraction."""
    from scipy.stats import ks_2samp

    out = {}
    for name, fn in (("snr_g", lambda s: s.snr_g), ("flux_range", flux_range), ("masked_fraction", masked_fraction)):
        a, b = fn(real), fn(mock)
        r = ks_2samp(a[np.isfinite(a)], b[np.isfinite(b)])
        out[name] = (float(r.statistic), float(r.pvalue))
    return out


def run_round(lamost_dir: str | Path, seed: int = 0, epochs: int = 12, simulator_kwargs: dict | None = None) -> dict:
    """One realism round: real A stars (train: non-held-out, eval: held-out) vs matched mocks."""
    real_tr, real_ev = real_a_stars(lamost_dir, held_out=False), real_a_stars(lamost_dir, held_out=True)
    kwargs = dict(simulator_kwargs or {})
    kwargs.setdefault("star_types", ("A",))
    sim = Simulator(class_mix=(1, 0, 0), snr_distribution=real_tr.snr_g, **kwargs)
    mock_tr = mock_a_stars(len(real_tr.flux), seed, real_tr.snr_g, simulator=sim)
    mock_ev = mock_a_stars(len(real_ev.flux), seed + 1, real_ev.snr_g, simulator=sim)
    res = discriminator_auc(prepared(real_tr), prepared(mock_tr), prepared(real_ev), prepared(mock_ev), epochs=epochs, seed=seed)
    return {"auc": res.auc, "train_auc": res.train_auc, "regions": saliency_regions(res.saliency),
            "saliency": res.saliency, "ks": distribution_checks(real_ev, mock_ev),
            "n_real_train": len(real_tr.flux), "n_real_eval": len(real_ev.flux)}


TEST_AUC_BOUND = 0.86  #: what tests/test_mocks_realism.py asserts (4 epochs, seed 0); see docs/realism.md


# --------------------------------------------------------------------------------------------------
# any mock family (mocks/families.py) against real A stars or real stars of every type

#: Real LAMOST stars of every type: every directory of ../shared/data/lamost (all are STAR). Not
#: lamost-dr8-stars: family "eigen" builds its stars from those spectra.
REAL_STAR_SUBDIRS = ("dr10-stars-A", "releases", "dr2", "dr1")
REFERENCES = ("A", "stars")


def real_stars(lamost_dir: str | Path, held_out: bool, reference: str = "A") -> SpectraSet:
    """Real reference spectra: A stars (``real_a_stars``) or every real star with a g-band S/N."""
    if reference == "A":
        return real_a_stars(lamost_dir, held_out)
    if reference != "stars":
        raise ValueError(f"reference must be one of {REFERENCES}, not {reference!r}")
    rows, names = [], []
    for p in instrument.real_files(lamost_dir, REAL_STAR_SUBDIRS):
        r = _read_real(p) if is_held_out(p) == held_out else None
        if r is not None and np.isfinite(r["snr"][1]):
            rows.append(r)
            names.append(p.name)
    return SpectraSet(flux=np.stack([r["flux"] for r in rows]).astype(np.float32),
                      ivar=np.stack([r["ivar"] for r in rows]).astype(np.float32),
                      andmask=np.stack([r["andmask"] for r in rows]).astype(np.int32),
                      snr_g=np.array([r["snr"][1] for r in rows], np.float64), names=names)


def subset(s: SpectraSet, rows: np.ndarray) -> SpectraSet:
    return SpectraSet(s.flux[rows], s.ivar[rows], s.andmask[rows], s.snr_g[rows], [s.names[i] for i in rows])


def family_stars(family: str, n: int, seed: int, snr_range: tuple[float, float], subclass_prefix: str = "",
                 max_draw: int | None = None) -> SpectraSet:
    """Up to ``n`` stars of ``family`` whose subclass starts with ``subclass_prefix``, S/N log-uniform over
    ``snr_range``, drawn in order until ``n`` are found or ``max_draw`` (default 40 n) mocks were made."""
    from .mocks.families import generate

    found: list[MockChunk] = []
    have = 0
    for chunk in generate(family, max_draw or 40 * n, seed, class_mix=(1.0, 0.0, 0.0), snr_distribution="loguniform",
                          snr_range=snr_range, chunk_size=256):
        keep = np.flatnonzero((chunk.truth["class"] == "STAR")
                              & np.char.startswith(chunk.truth["subclass"].astype(str), subclass_prefix))
        found += [chunk.slice(int(i), int(i) + 1) for i in keep]
        have += len(keep)
        if have >= n:
            break
    if not found:
        raise ValueError(f"family {family!r} made no star of subclass {subclass_prefix!r}*")
    c = MockChunk.concat(found[:n])
    return SpectraSet(flux=c.flux, ivar=c.ivar, andmask=c.andmask, snr_g=c.truth["snr_g"].astype(np.float64),
                      names=list(c.truth["template"]))


def match_snr(pool: SpectraSet, target_snr: np.ndarray, used: np.ndarray) -> SpectraSet:
    """For each target S/N, the unused pool spectrum closest in log S/N (marked used): S/N-matched mocks."""
    log_pool = np.log(np.maximum(pool.snr_g, 0.1))
    rows = []
    for t in np.log(np.maximum(np.asarray(target_snr, np.float64), 0.1)):
        gap = np.where(used, np.inf, np.abs(log_pool - t))
        i = int(np.argmin(gap))
        if not np.isfinite(gap[i]):
            raise ValueError("the mock pool is smaller than the spectra to match")
        used[i] = True
        rows.append(i)
    return subset(pool, np.array(rows))


def family_round(family: str, lamost_dir: str | Path, reference: str = "A", seed: int = 0, epochs: int = 12,
                 max_real: int = 300) -> dict:
    """The discriminator round of ``run_round`` for any family: up to ``max_real`` real reference stars
    (train: not held out, eval: held out) against the family's stars (of type A for reference 'A'), each
    matched in g-band S/N to one real star."""
    rng = np.random.default_rng(seed)
    real = {}
    for held_out in (False, True):
        s = real_stars(lamost_dir, held_out, reference)
        real[held_out] = subset(s, np.sort(rng.permutation(len(s.flux))[:max_real]))
    n = len(real[False].flux) + len(real[True].flux)
    all_snr = np.r_[real[False].snr_g, real[True].snr_g]
    snr_range = (float(max(np.min(all_snr), 1.0)), float(np.max(all_snr)))
    pool = family_stars(family, 2 * n, seed, snr_range, "A" if reference == "A" else "")
    if len(pool.flux) < n:
        raise ValueError(f"family {family!r}: only {len(pool.flux)} mock stars for {n} real ones")
    used = np.zeros(len(pool.flux), bool)
    mock_tr, mock_ev = match_snr(pool, real[False].snr_g, used), match_snr(pool, real[True].snr_g, used)
    res = discriminator_auc(prepared(real[False]), prepared(mock_tr), prepared(real[True]), prepared(mock_ev),
                            epochs=epochs, seed=seed)
    return {"family": family, "reference": reference, "auc": res.auc, "train_auc": res.train_auc,
            "regions": saliency_regions(res.saliency), "ks": distribution_checks(real[True], mock_ev),
            "n_real_train": len(real[False].flux), "n_real_eval": len(real[True].flux),
            "snr_match_median_dex": float(np.median(np.abs(np.log10(mock_ev.snr_g / real[True].snr_g))))}


def main(argv: list[str] | None = None) -> None:
    """``python -m lamost_classify.realism [LAMOST_DIR] [EPOCHS]``: one realism round, printed.
    ``--family F`` (repeatable) runs ``family_round`` per family and reference instead; ``--figure-dir``
    draws each family's fig. 8-style figure there too."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("lamost_dir", nargs="?", default=None, help="directory holding dr10-stars-A/")
    parser.add_argument("epochs", nargs="?", type=int, default=12)
    parser.add_argument("--family", action="append", default=[], help="mock family (mocks/families.py)")
    parser.add_argument("--reference", nargs="*", default=list(REFERENCES), choices=REFERENCES)
    parser.add_argument("--max-real", type=int, default=300, help="real stars per split (train, eval)")
    parser.add_argument("--figure-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    lamost_dir = args.lamost_dir or instrument.default_lamost_dir()
    if lamost_dir is None:
        raise SystemExit("no real LAMOST files: give the directory holding dr10-stars-A/")
    for family in args.family:
        if args.figure_dir:
            from .mock_figures import family_figure

            print(f"{family}: figure {family_figure(family, args.figure_dir / f'family_{family}_fig8.png', lamost_dir=lamost_dir)}")
        for reference in args.reference:
            r = family_round(family, lamost_dir, reference, epochs=args.epochs, max_real=args.max_real)
            print(f"{family} vs real {'A stars' if reference == 'A' else 'stars'}: discriminator AUC {r['auc']:.3f} "
                  f"(train {r['train_auc']:.3f}); real {r['n_real_train']} train, {r['n_real_eval']} eval (held out); "
                  f"S/N matched within {r['snr_match_median_dex']:.3f} dex (median); KS flux range D "
                  f"{r['ks']['flux_range'][0]:.3f}, masked fraction D {r['ks']['masked_fraction'][0]:.3f}; "
                  "looks at " + ", ".join(f"{c:.0f}" for c, _ in r["regions"][:4]) + " A", flush=True)
    if args.family:
        return
    r = run_round(lamost_dir, epochs=args.epochs)
    print(f"discriminator AUC {r['auc']:.3f} (train {r['train_auc']:.3f}); real A stars: "
          f"{r['n_real_train']} train (not held out), {r['n_real_eval']} eval (held out)")
    print("where it looks (window centre A: share of saliency):",
          ", ".join(f"{c:.0f}: {s:.3f}" for c, s in r["regions"]))
    for k, (stat, p) in r["ks"].items():
        print(f"KS {k}: D = {stat:.3f}, p = {p:.3g}")


if __name__ == "__main__":
    main()
