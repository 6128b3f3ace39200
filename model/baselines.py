"""The comparison networks of the paper's Table 3, as presets of ``build_model``.

- ``fc4``: the "traditional neural network", four fully connected layers on the 2600 normalised fluxes.
- ``plain_densenet``: the unmodified DenseNet, i.e. ``SpectralDenseNet`` with the paper's three changes
  switched off: one kernel size (3, as in the original DenseNet) instead of four, no SE in the
  pre-activations, no extra cross-scale transitions. ``plain_densenet_widths`` turns any preset's
  widths into its plain twin for a like-for-like ablation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# The paper's three additions, switched off (applied on top of a SpectralDenseNet preset).
PLAIN_DENSENET_SWITCHES: dict[str, object] = {"kernel_sizes": (3,), "se_reduction": 0, "cross_scale": False}


def plain_densenet_widths(widths: dict[str, object]) -> dict[str, object]:
    """A SpectralDenseNet config (as a dict) made plain. The single kernel gets as many maps as all
    the scales had together, so the conv block's fusing 1x1 conv sees the same width."""
    branch = int(widths["branch_channels"]) * len(widths["kernel_sizes"])  # type: ignore[arg-type]
    return {**widths, **PLAIN_DENSENET_SWITCHES, "branch_channels": branch}


@dataclass(frozen=True)
class FCConfig:
    """Widths of the fully connected baseline."""

    hidden: tuple[int, ...] = (512, 256, 128)
    n_pixels: int = 2600
    n_classes: int = 3


class FullyConnectedNet(nn.Module):
    """Linear -> ReLU ... -> Linear: len(hidden) + 1 layers. Has no feature maps, hence no CAM."""

    def __init__(self, config: FCConfig) -> None:
        super().__init__()
        self.config = config
        widths = (config.n_pixels, *config.hidden)
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), nn.ReLU(inplace=True)]
        self.hidden = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], config.n_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(x.reshape(x.shape[0], -1)))
