"""A star's MK letter as LAMOST gives it, from the line pattern of its continuum-normalised spectrum.

LAMOST's own pipeline types stars against templates made from LAMOST spectra, and its letter
boundaries (A/F, F/G, G/K) are those of its own spectra. The template fit (model/redshift.py) finds the
best single template; a linear classifier trained on the real LAMOST stars that are not held out
learns those boundaries from all of their members at once. It sees the spectrum moved to rest, the
telluric bands left out, averaged over ``FEATURE_BIN`` pixels and divided by a smooth continuum (so that
flux calibration and reddening do not count): ``star_letter_features``. ``LetterClassifier`` holds the
linear model (weights, standardisation and letters, stored with the redshift templates) and
``fit_letter_classifier`` trains it (training/make_redshift_templates.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

FEATURE_BIN = 4  # pixels averaged per feature (~420 km/s): 650 features
CONTINUUM_TERMS = 7  # Legendre terms of the continuum (degree 6), and the arm-join ramp
CONTINUUM_PASSES = 3  # fits, each dropping bins more than CLIP_SIGMA below the last (absorption lines)
CLIP_SIGMA = 1.5
SIGMA_FLOOR = 1e-4  # of the normalised flux: far below any real spectrum's scatter
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2)  # tried by cross-validation when training
MK_ORDER = "OBAFGKM"


def star_letter_features(flux: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
    """Features (B, N_PIXELS / FEATURE_BIN) float32 of rest-frame spectra (B, N) whose usable pixels are
    ``good`` (B, N) bool: the flux over a continuum, clipped to [0, 2], averaged over the usable pixels of
    each bin of ``FEATURE_BIN`` pixels (1 where none is). The continuum is fitted by least squares,
    absorption lines clipped away, to those bins' means of their usable pixels: a quarter of the sums of
    a fit to the pixels, for the same letters (bench/RESULTS.md)."""
    from .redshift import pair_index  # here: redshift.py imports this module

    p, products, p_pixels = (t.to(flux.device) for t in _binned_continuum_terms())
    index = pair_index(len(p)).to(flux.device)
    # 64 rows at a time: the passes' temporaries then stay in the CPU's cache
    return torch.cat([_features_chunk(flux[i:i + 64].float(), good[i:i + 64], p, products, index, p_pixels)
                      for i in range(0, len(flux), 64)])


@functools.cache
def _binned_continuum_terms() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The continuum's terms (Legendre and the arm-join ramp, as the star fit's multiplier) averaged over
    each feature bin (terms, bins), their products over ``upper_pairs`` (pairs, bins), and the terms at
    every pixel (terms, N), float32."""
    from .redshift import star_multiplier, upper_pairs

    poly = star_multiplier(CONTINUUM_TERMS)[0].float()
    binned = poly.reshape(len(poly), -1, FEATURE_BIN).mean(2)
    return binned, torch.stack([binned[j] * binned[k] for j, k in upper_pairs(len(poly))]), poly


def _features_chunk(f: torch.Tensor, good: torch.Tensor, p: torch.Tensor, products: torch.Tensor,
                    index: torch.Tensor, p_pixels: torch.Tensor) -> torch.Tensor:
    from .redshift import pixel_sums

    count = good.float().reshape(len(f), -1, FEATURE_BIN).sum(2)
    binned = torch.where(good, f, 0.0).reshape(len(f), -1, FEATURE_BIN).sum(2) / count.clamp_min(1.0)
    m = count > 0
    for done in range(1, CONTINUUM_PASSES + 1):
        mf = m.float()
        a = pixel_sums(mf, products).double()[:, index] + 1e-9 * torch.eye(len(p), dtype=torch.float64,
                                                                            device=f.device)
        b = pixel_sums(mf * binned, p).double()
        coeffs, info = torch.linalg.solve_ex(a, b)
        if bool(info.any()):  # singular to round-off (few good bins): least squares for those alone
            coeffs[info != 0] = torch.linalg.lstsq(a[info != 0], b[info != 0].unsqueeze(-1)).solution.squeeze(-1)
        if done == CONTINUUM_PASSES:
            break
        residual = binned - coeffs.float() @ p
        # floored: a noiseless spectrum's scatter is round-off, which would clip half its continuum
        sigma = ((residual.square() * mf).sum(1) / mf.sum(1).clamp_min(1.0)).sqrt().clamp_min(SIGMA_FLOOR)
        m = m & (residual > -CLIP_SIGMA * sigma[:, None])
    continuum = coeffs.float() @ p_pixels
    usable = good & (continuum.abs() > 1e-6)
    ratio = torch.where(usable, (f / continuum).clamp(0.0, 2.0), 0.0).reshape(len(f), -1, FEATURE_BIN).sum(2)
    # the mean of the usable pixels alone: counting masked ones as 1 made lines shallower where pixels are masked
    n_usable = usable.float().reshape(len(f), -1, FEATURE_BIN).sum(2)
    return torch.where(n_usable > 0, ratio / n_usable.clamp_min(1.0), 1.0)


@dataclass
class LetterClassifier:
    """Softmax over ``letters`` of ``weight @ standardised(features) + bias``."""

    letters: list[str]
    weight: torch.Tensor  # (L, F)
    bias: torch.Tensor  # (L,)
    mean: torch.Tensor  # (F,)
    scale: torch.Tensor  # (F,)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Index into ``letters`` (B,) of each row's most probable letter."""
        x = (features.float() - self.mean) / self.scale
        return (x @ self.weight.T + self.bias).argmax(1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"STAR_letter_names": np.array(self.letters), "STAR_letter_weight": self.weight.numpy(),
                "STAR_letter_bias": self.bias.numpy(), "STAR_letter_mean": self.mean.numpy(),
                "STAR_letter_scale": self.scale.numpy()}

    @classmethod
    def from_arrays(cls, data) -> LetterClassifier:
        return cls([str(s) for s in data["STAR_letter_names"]], torch.from_numpy(data["STAR_letter_weight"]),
                   torch.from_numpy(data["STAR_letter_bias"]), torch.from_numpy(data["STAR_letter_mean"]),
                   torch.from_numpy(data["STAR_letter_scale"]))


def _train(x: torch.Tensor, y: torch.Tensor, n_letters: int, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of the softmax, each letter's stars weighed together as much as any other's:
    the real stars' mix of letters is what the data at hand hold (most are a DR10 A-star sample), not
    the survey's, and learnt as a prior it pulled F, G and K stars to the hotter, more numerous letter."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], n_letters)
    optimiser = torch.optim.LBFGS(linear.parameters(), max_iter=300)
    counts = torch.bincount(y, minlength=n_letters).float()
    letter_weight = torch.where(counts > 0, len(y) / (n_letters * counts.clamp_min(1.0)), 0.0)

    def closure():
        optimiser.zero_grad()
        loss = (torch.nn.functional.cross_entropy(linear(x), y, weight=letter_weight)
                + weight_decay * linear.weight.square().sum())
        loss.backward()
        return loss

    optimiser.step(closure)
    return linear.weight.detach().clone(), linear.bias.detach().clone()


def fit_letter_classifier(features: np.ndarray, letters: list[str], folds: int = 5) -> tuple[LetterClassifier, dict]:
    """A ``LetterClassifier`` trained on ``features`` (S, F) of stars with LAMOST's ``letters``; its weight
    decay is the one of ``WEIGHT_DECAYS`` with the best ``folds``-fold cross-validated agreement averaged
    over the letters (``cv_letter_agreement``, the mean of each letter's), which is returned with the
    others' and the plain agreement (``cv_agreement``)."""
    names = sorted(set(letters), key=MK_ORDER.index)
    y = torch.tensor([names.index(s) for s in letters])
    x = torch.from_numpy(np.asarray(features, np.float32))
    order = np.random.default_rng(0).permutation(len(y))
    agreement, per_letter = {}, {}
    for decay in WEIGHT_DECAYS:
        predicted = torch.empty_like(y)
        for part in np.array_split(order, folds):
            train = np.setdiff1d(order, part)
            mean, scale = x[train].mean(0), x[train].std(0) + 1e-6
            weight, bias = _train((x[train] - mean) / scale, y[train], len(names), decay)
            predicted[part] = ((x[part] - mean) / scale @ weight.T + bias).argmax(1)
        right = predicted == y
        agreement[decay] = float(right.float().mean())
        per_letter[decay] = float(np.mean([float(right[y == k].float().mean()) for k in range(len(names))]))
    best = max(per_letter, key=per_letter.get)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    weight, bias = _train((x - mean) / scale, y, len(names), best)
    return LetterClassifier(names, weight, bias, mean, scale), {"weight_decay": best, "cv_agreement": agreement,
                                                               "cv_letter_agreement": per_letter}
