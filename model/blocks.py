"""The building blocks of the paper's 1-D DenseNet (section 3, figs. 1-5), one small module each.

Every convolution inside the network is preceded by its own pre-activation, BatchNorm -> SE -> ReLU
(section 3: "BN - SE - ReLU are connected in turn before every convolution layer"). The stem
convolution is the one exception: it reads the normalised spectrum itself, and a ReLU after a
1-channel BatchNorm would throw away half of the flux values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SqueezeExcitation1d(nn.Module):
    """Squeeze-and-excitation (fig. 5): global average -> FC -> ReLU -> FC -> sigmoid -> channel weights."""

    def __init__(self, channels: int, reduction: int = 4, min_hidden: int = 4) -> None:
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=2)
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(scale))))
        return x * scale.unsqueeze(2)


class PreActivation(nn.Sequential):
    """BatchNorm -> SE -> ReLU, put before a convolution. ``se_reduction=0`` leaves the SE out."""

    def __init__(self, channels: int, se_reduction: int = 4) -> None:
        layers: list[nn.Module] = [nn.BatchNorm1d(channels)]
        if se_reduction:
            layers.append(SqueezeExcitation1d(channels, se_reduction))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class MultiScaleConv(nn.Module):
    """Parallel convolutions of several kernel sizes on one pre-activated input, concatenated (fig. 4).

    Lines have unknown widths and positions, so each scale (1, 11, 25, 41 pixels in the paper) gets
    ``branch_channels`` feature maps. Padding keeps the length, so the branches line up pixel by pixel.
    """

    def __init__(
        self, in_channels: int, branch_channels: int, kernel_sizes: Sequence[int], se_reduction: int = 4
    ) -> None:
        super().__init__()
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel sizes must be odd so that the scales stay aligned, got {tuple(kernel_sizes)}")
        self.pre = PreActivation(in_channels, se_reduction)
        self.branches = nn.ModuleList(
            nn.Conv1d(in_channels, branch_channels, k, padding=k // 2, bias=False) for k in kernel_sizes
        )
        self.out_channels = branch_channels * len(kernel_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class ConvBlock(nn.Module):
    """One conv block (fig. 4): multi-scale convolutions, then pre-activation + a kernel-1 convolution
    fusing the scales into ``growth_rate`` new feature maps. Two convolution layers deep."""

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        branch_channels: int,
        kernel_sizes: Sequence[int],
        se_reduction: int = 4,
    ) -> None:
        super().__init__()
        self.multi_scale = MultiScaleConv(in_channels, branch_channels, kernel_sizes, se_reduction)
        self.fuse_pre = PreActivation(self.multi_scale.out_channels, se_reduction)
        self.fuse = nn.Conv1d(self.multi_scale.out_channels, growth_rate, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.fuse_pre(self.multi_scale(x)))


class DenseBlock(nn.Module):
    """Conv blocks densely connected (fig. 3): each sees the concatenation of the block's input and
    every earlier conv block's output; the block returns that whole concatenation."""

    def __init__(
        self,
        in_channels: int,
        n_conv_blocks: int,
        growth_rate: int,
        branch_channels: int,
        kernel_sizes: Sequence[int],
        se_reduction: int = 4,
    ) -> None:
        super().__init__()
        self.conv_blocks = nn.ModuleList(
            ConvBlock(in_channels + i * growth_rate, growth_rate, branch_channels, kernel_sizes, se_reduction)
            for i in range(n_conv_blocks)
        )
        self.out_channels = in_channels + n_conv_blocks * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for block in self.conv_blocks:
            features.append(block(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


class Transition(nn.Sequential):
    """Pre-activation + 1x1 convolution (fewer channels) + average pooling by 2 (fewer pixels)."""

    def __init__(self, in_channels: int, out_channels: int, se_reduction: int = 4) -> None:
        super().__init__(
            PreActivation(in_channels, se_reduction),
            nn.Conv1d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool1d(2),
        )
        self.out_channels = out_channels


class CrossScaleTransition(Transition):
    """The paper's extra transition between two transitions (fig. 2), see ``SpectralDenseNet``.

    The same layers as a Transition; its own type so that it is easy to tell apart: it runs beside
    the main path (a dense block and its transition), so it adds no depth to the network.
    """


class RedshiftHead(nn.Module):
    """log(1 + z) and its log-variance from the last feature maps (B, C, L'), as (B, 2).

    The maps are flattened, not pooled: a redshift is a shift along the spectrum, and global average
    pooling of translation-equivariant maps forgets exactly that. A 1x1 convolution first narrows the
    channels, so the head stays small whatever the preset's width.
    """

    def __init__(self, channels: int, length: int, hidden: int, reduced_channels: int = 16) -> None:
        super().__init__()
        self.reduce = nn.Conv1d(channels, reduced_channels, 1)
        self.fc1 = nn.Linear(reduced_channels * length, hidden)
        self.fc2 = nn.Linear(hidden, 2)
        # Start at z = 0 with sigma 1: a fresh head sends no large gradients into trained features.
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.reduce(maps)).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))
