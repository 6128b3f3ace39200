"""Several trained networks as one: the mean of their logits.

Networks trained alike from different seeds agree where their training data decide and disagree
where they do not, on spectra unlike any they saw; the mean of their logits (their probabilities
multiplied and renormalised) is less sure there than any one of them, and is calibrated afterwards
like a single network (one temperature on the mean). Deep ensembles: Lakshminarayanan et al. 2017.

Saved as one weights file (every member's tensors under ``members.<i>.``) and one card that says how
many members it holds (``model/weights.py``); folded for inference into ``folding.FastEnsemble``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .densenet import LOG_VAR_RANGE


def mixed_redshift(heads: torch.Tensor) -> torch.Tensor:
    """The members' redshift head outputs (M, B, 2: log(1 + z), log-variance) as one (B, 2): the mean,
    and the variance of the equal mixture of their Gaussians, so that members that disagree widen it."""
    mean = heads[..., 0].mean(dim=0)
    variance = (heads[..., 1].clamp(*LOG_VAR_RANGE).exp() + (heads[..., 0] - mean).square()).mean(dim=0)
    return torch.stack([mean, variance.log()], dim=1)


class LogitMean(nn.Module):
    """Logits (B, n_classes): the mean of every member's, for the same input."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.config = getattr(members[0], "config", None)
        self.preset = getattr(members[0], "preset", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)

    def forward_with_redshift(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean logits, the members' redshift heads mixed: ``mixed_redshift``)."""
        outputs = [member.forward_with_redshift(x) for member in self.members]
        return (torch.stack([logits for logits, _ in outputs]).mean(dim=0),
                mixed_redshift(torch.stack([head for _, head in outputs])))
