"""Several trained networks as one: the mean of their logits.

Networks trained alike from different seeds agree where their training data decide and disagree
where they do not, on spectra unlike any they saw; the mean of their logits (their probabilities
multiplied and renormalised) is less sure there than any one of them, and is calibrated afterwards
like a single network (one temperature on the mean). Deep ensembles: Lakshminarayanan et al. 2017.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LogitMean(nn.Module):
    """Logits (B, n_classes): the mean of every member's, for the same input."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.config = getattr(members[0], "config", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)
