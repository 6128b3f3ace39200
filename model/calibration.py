"""From logits to probabilities a catalog user can trust.

1. Temperature scaling (Guo et al. 2017): probabilities = softmax(logits / T), with the one scalar T
   fitted on validation logits to minimise the negative log-likelihood. It changes confidence, never
   the ranking of classes.
2. Prior adjustment (Bayes): the network learnt on a 1:1:1 balanced set, so its probabilities carry a
   flat class prior; for the survey's real mix p'(c) is proportional to p(c) * target(c) / train(c).
3. Expected calibration error (ECE): how far confidence is from accuracy, to check 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# log T is searched in [log T_MIN, log T_MAX]: T < 0.05 or > 20 means something else is wrong.
T_MIN, T_MAX = 0.05, 20.0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), np.asarray(labels)]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, tol: float = 1e-4) -> float:
    """The T minimising ``nll(logits, labels, T)``, by golden-section search on log T.

    The NLL is convex in 1/T, hence unimodal in log T, so the search finds the global minimum.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on an empty set")
    f = lambda log_t: nll(logits, labels, float(np.exp(log_t)))  # noqa: E731
    lo, hi = np.log(T_MIN), np.log(T_MAX)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    return float(np.exp((lo + hi) / 2.0))


def adjust_to_prior(
    probs: np.ndarray, target_prior: Sequence[float], train_prior: Sequence[float] | None = None
) -> np.ndarray:
    """p'(c) = p(c) * target(c) / train(c), renormalised over classes. ``train_prior`` None = flat."""
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = probs.shape[1]
    target = np.asarray(target_prior, dtype=np.float64)
    train = np.full(n_classes, 1.0 / n_classes) if train_prior is None else np.asarray(train_prior, np.float64)
    if target.shape != (n_classes,) or train.shape != (n_classes,):
        raise ValueError(f"priors must have {n_classes} entries, got {target.tolist()} and {train.tolist()}")
    if (train <= 0).any() or (target < 0).any():
        raise ValueError("the training prior must be positive and the target prior non-negative")
    weighted = probs * (target / train)
    return weighted / weighted.sum(axis=1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: over ``n_bins`` equal-width confidence bins, the share-weighted |accuracy - confidence|."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)
