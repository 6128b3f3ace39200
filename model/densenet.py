"""The paper's 1-D DenseNet (section 3, fig. 1), its presets and ``build_model``.

Data flow: stem convolution -> N+1 dense blocks with a transition after each but the last ->
pre-activation -> global average pooling -> fully connected -> logits over STAR, GALAXY, QSO.

Cross-scale reuse (fig. 2, "additional transition blocks between two transition blocks"). Average
pooling halves the length after every dense block, so the dense connections stop at each scale.
Our reading of fig. 2: the input of dense block k+1 (the output of transition k) also goes through
its own transition (pre-activation, 1x1 conv to ``cross_channels``, avg-pool by 2), skipping dense
block k+1 and transition k+1, and is concatenated to the output of transition k+1, i.e. to the input
of dense block k+2. With N transitions there are N-1 such paths; each runs beside the main path, so it
adds width but no depth, and features of one scale reach every later scale through the chain.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .baselines import FCConfig, FullyConnectedNet, plain_densenet_widths
from .blocks import (
    CrossScaleTransition, DenseBlock, MultiScaleConv, PreActivation, RedshiftHead, SqueezeExcitation1d, Transition,
)

# The redshift head's log-variance of log(1 + z) is held in this range: sigma from ~3e-4 (a third of a
# grid pixel) to 1 (more than the whole range of log(1 + z)); without a floor the Gaussian NLL of a
# near-exact guess runs to minus infinity.
LOG_VAR_RANGE = (-16.0, 0.0)


@dataclass(frozen=True)
class DenseNetConfig:
    """Every width and switch of a ``SpectralDenseNet``; a preset is one of these."""

    n_dense_blocks: int = 7  # N + 1 in the paper
    conv_blocks_per_dense: int = 2
    stem_channels: int = 32
    stem_kernel: int = 11
    stem_stride: int = 1
    growth_rate: int = 32  # feature maps each conv block adds
    branch_channels: int = 16  # feature maps per kernel size in a multi-scale conv
    kernel_sizes: tuple[int, ...] = (1, 11, 25, 41)
    compression: float = 0.5  # a transition keeps this fraction of its input channels
    se_reduction: int = 4  # SE hidden width = channels // se_reduction; 0 = no SE
    cross_scale: bool = True
    cross_channels: int = 16  # width of each extra cross-scale transition
    n_pixels: int = 2600
    n_classes: int = 3
    redshift_hidden: int = 0  # hidden width of the redshift head (blocks.RedshiftHead); 0 = no head
    # A second input channel holding each pixel's place on the grid, -1 (blue end) to 1 (red end), as
    # CoordConv (Liu et al. 2018). On the log-linear grid a redshift is a shift, and convolutions with global
    # pooling see a shift only through the spectrum's ends: this lets every layer see where a line is.
    wavelength_channel: bool = False


def dense_stages(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The dense blocks, transitions and cross-scale paths of ``net`` applied to the stem's output.

    Shared by ``SpectralDenseNet`` and its inference twin ``folding.FastDenseNet`` (channels on dim 1
    in both), so the two cannot drift apart.
    """
    n_transitions = len(net.transitions)
    for i, block in enumerate(net.dense_blocks):
        block_input = x
        x = block(x)
        if i < n_transitions:
            x = net.transitions[i](x)
            if net.config.cross_scale and i >= 1:
                # The input of this dense block skips to after transition i (fig. 2).
                x = torch.cat([x, net.cross_transitions[i - 1](block_input)], dim=1)
    return x


class SpectralDenseNet(nn.Module):
    def __init__(self, config: DenseNetConfig) -> None:
        super().__init__()
        self.config = c = config
        self.stem = nn.Conv1d(2 if c.wavelength_channel else 1, c.stem_channels, c.stem_kernel,
                              stride=c.stem_stride, padding=c.stem_kernel // 2, bias=False)
        # Not in the state dict: it is the grid, not a weight.
        self.register_buffer("wavelength", torch.linspace(-1.0, 1.0, c.n_pixels).view(1, 1, -1)
                             if c.wavelength_channel else None, persistent=False)
        self.dense_blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        self.cross_transitions = nn.ModuleList()
        block_args = (c.conv_blocks_per_dense, c.growth_rate, c.branch_channels, c.kernel_sizes, c.se_reduction)
        channels = c.stem_channels
        for i in range(c.n_dense_blocks):
            block = DenseBlock(channels, *block_args)
            self.dense_blocks.append(block)
            if i == c.n_dense_blocks - 1:
                channels = block.out_channels
                break
            transition = Transition(block.out_channels, max(1, int(block.out_channels * c.compression)),
                                    c.se_reduction)
            self.transitions.append(transition)
            next_channels = transition.out_channels
            if c.cross_scale and i >= 1:
                # The input of this dense block came out of transition i-1: it skips to after transition i.
                cross = CrossScaleTransition(channels, c.cross_channels, c.se_reduction)
                self.cross_transitions.append(cross)
                next_channels += cross.out_channels
            channels = next_channels
        self.final_pre = PreActivation(channels, c.se_reduction)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.classifier = nn.Linear(channels, c.n_classes)
        self.n_features = channels
        self.redshift = None
        if c.redshift_hidden:
            self.eval()  # a probe pass to learn the maps' length, which must not move BatchNorm statistics
            with torch.no_grad():
                length = self.features(torch.zeros(1, c.n_pixels)).shape[2]
            self.train()
            self.redshift = RedshiftHead(channels, length, c.redshift_hidden)

        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")  # He uniform (section 4.3)
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature maps before global pooling, (B, n_features, L'): what CAM weighs."""
        if x.ndim == 2:
            x = x.unsqueeze(1)
        if self.wavelength is not None:
            x = torch.cat([x, self.wavelength.expand(x.shape[0], -1, -1)], dim=1)
        return self.final_pre(dense_stages(self, self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    def forward_with_redshift(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, n_classes), redshift head output (B, 2): log(1+z), log-variance) from one pass."""
        if self.redshift is None:
            raise ValueError("this network has no redshift head (config redshift_hidden = 0)")
        maps = self.features(x)
        return self.classifier(torch.flatten(self.pool(maps), 1)), self.redshift(maps)


def redshift_estimate(head_output: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z, z_err) float32 from the redshift head's (B, 2) output; z_err is the 1-sigma of z, propagated
    from the head's sigma in log(1 + z)."""
    out = torch.as_tensor(head_output, dtype=torch.float32)
    log1pz, log_var = out[:, 0], out[:, 1].clamp(*LOG_VAR_RANGE)
    z = torch.expm1(log1pz)
    return z.numpy(), ((1.0 + z) * torch.exp(0.5 * log_var)).numpy()


# Width choices.
# paper: the paper gives the depth (N = 6: 7 dense blocks x 2 conv blocks, 36 layers), the kernel
#   sizes and the block layout, but no widths. We take DenseNet-BC's habits: growth rate 32,
#   compression 0.5, a stem of 32 maps; 16 maps per kernel size so that the four scales together
#   (64) are 2x the growth rate, as DenseNet-BC's bottleneck is 4x; SE reduction 4 (channels are
#   few, Hu et al.'s 16 would leave 2-6 hidden units); 16 maps per cross-scale path (half a growth
#   step: it carries a summary of the earlier scale, not a new scale). Full resolution stem (stride
#   1): the 2600-pixel grid is already only 1.5 native pixels per pixel, narrow lines span 2-4.
#   A GPU net (``model-info`` prints each preset's parameters and FLOPs).
# fast: the same block structure and depth (7 dense blocks, 36 layers) on a quarter of the pixels:
#   a stride-4 stem (kernel 11, overlapping windows) and kernels scaled with it, (1, 3, 7, 11) at
#   stride 4 span about (1, 12, 28, 44) grid pixels, the paper's (1, 11, 25, 41). Half the widths
#   (stem 16, growth 16, 8 per scale, 8 per cross path). On a CPU large kernels do fewer FLOP/s than
#   kernels <= 13 (bench/RESULTS.md), so shrinking the kernels with the stride pays twice.
PRESETS: dict[str, DenseNetConfig | FCConfig] = {
    "paper": DenseNetConfig(),
    "fast": DenseNetConfig(
        stem_channels=16, stem_stride=4, growth_rate=16, branch_channels=8, kernel_sizes=(1, 3, 7, 11),
        cross_channels=8,
    ),
    "fc4": FCConfig(hidden=(512, 256, 128)),
}
PRESETS["plain_densenet"] = DenseNetConfig(**plain_densenet_widths(dataclasses.asdict(PRESETS["paper"])))


def build_model(preset: str, **overrides: object) -> nn.Module:
    """The network of a preset, with any of its config fields overridden (``build_model('fast',
    growth_rate=24)``). The model carries ``.preset`` and ``.config`` (the full resolved config)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[preset]
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"preset {preset!r} has no field(s) {unknown}; its fields are {sorted(fields)}")
    if "kernel_sizes" in overrides:
        overrides["kernel_sizes"] = tuple(overrides["kernel_sizes"])  # JSON gives lists
    if "hidden" in overrides:
        overrides["hidden"] = tuple(overrides["hidden"])
    config = dataclasses.replace(base, **overrides)
    model: nn.Module = SpectralDenseNet(config) if isinstance(config, DenseNetConfig) else FullyConnectedNet(config)
    model.preset = preset
    return model


def config_dict(model: nn.Module) -> dict[str, object]:
    """The model's full config as plain JSON-able values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(model.config).items()}


def count_layers(module: nn.Module) -> int:
    """Depth the paper's way: convolution and fully connected layers along the main path.

    The parallel kernels of a multi-scale conv are one layer (they sit side by side); the SE's two
    small FCs and the cross-scale transitions are side paths and add no depth. So ``paper`` counts
    1 stem + 7 dense blocks x 2 conv blocks x 2 convs + 6 transitions + 1 FC = 36, as the paper's
    Table 3, and ``fc4`` counts 4. The redshift head is a second output beside the classifier: no depth.
    """
    if isinstance(module, MultiScaleConv):
        return 1
    if isinstance(module, (SqueezeExcitation1d, CrossScaleTransition, RedshiftHead)):
        return 0
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        return 1
    return sum(count_layers(child) for child in module.children())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, n_pixels: int = 2600) -> int:
    """Forward FLOPs for one spectrum (a multiply-add counts 2), from torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 1, n_pixels))
    model.train(was_training)
    return counter.get_total_flops()
