"""The trained network rewritten for inference speed: same outputs, fewer and faster kernels.

``fold(model)`` turns a trained ``SpectralDenseNet`` into a ``FastDenseNet`` that computes the same
logits (to float rounding) from the same (B, 2600) input. Each change below was kept because it
measured faster (bench/infer.py; the numbers are in bench/RESULTS.md, "The fast path's design"):

- Layout: every activation is (B, C, 1, L) in channels-last memory, and every Conv1d a Conv2d with a
  (1, k) kernel. oneDNN's convolutions read NWC without reordering; on NCW they reorder the input and
  output of every call, which costs more than the arithmetic.
- BatchNorm is pre-activation here (BN -> SE -> ReLU -> conv), so it cannot go into the conv after it.
  Where one conv feeds one BN (a multi-scale conv and the pre-activation of its fusing conv), the BN
  goes into that conv's weights and bias. Everywhere else (inputs that are dense concatenations, read
  by several BNs) the BN stays, as a fixed per-channel affine; SE's first FC absorbs it, so SE reads
  the raw channel means, and its positive channel weights s are applied after the ReLU:
  relu(BN(x) * s) = relu(BN(x)) * s, three in-place passes and no (B, C, L) temporaries.
- A transition's average pooling comes before its 1x1 conv (both linear, per pixel and per channel:
  they commute), which halves the conv's work.
- Multi-scale branches narrower than a 16-float AVX-512 vector are grouped in pairs (or more) of
  neighbouring kernel sizes, each group one convolution with the smaller kernel zero-padded (``fast``,
  8 maps per kernel: (1, 3) and (7, 11)): more multiply-adds, yet faster than four half-empty
  convolutions or one padded to the largest kernel. Branches of 16 maps or more (``paper``) stay apart.

``precision='bf16'`` or ``'fp16'`` casts the folded network to bfloat16 (AVX-512 BF16, or AMX, on a CPU;
tensor cores on a GPU) or float16 (tensor cores; emulated, slowly, on a CPU), except the stem convolution
that reads the flux; pooling, the classifier and the logits stay float32. float16 has 3 more mantissa
bits than bfloat16 and 8x smaller rounding, so it moves probabilities less (bench/RESULTS.md). Its
range (65,504) is ample here: the input is min-max normalised to [0, 1], and a row whose logits still
come out non-finite is redone in float32 (``fastpath.FastPath``).

How a folded network is run (device, precision, back-end, batch size) is ``fastpath.py``'s business.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import ConvBlock, CrossScaleTransition, DenseBlock, MultiScaleConv, PreActivation, Transition
from .densenet import SpectralDenseNet, dense_stages
from .ensemble import LogitMean, mixed_redshift

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Fewest output maps per multi-scale convolution when nothing else is asked for: the floats in one
# AVX-512 register (narrower branches are grouped).
DEFAULT_GROUP_WIDTH = 16


def bn_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BatchNorm as y = scale * x + shift, per channel."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias.detach() - bn.running_mean * scale


def conv2d_from(conv: nn.Conv1d, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> nn.Conv2d:
    """A Conv2d with a (1, k) kernel doing ``conv``'s work on (B, C, 1, L) (optionally other weights)."""
    weight = conv.weight.detach() if weight is None else weight
    out_channels, in_channels, k = weight.shape
    conv2d = nn.Conv2d(in_channels, out_channels, (1, k), stride=(1, conv.stride[0]), padding=(0, k // 2),
                       bias=bias is not None)
    conv2d.weight.data.copy_(weight.unsqueeze(2))
    if bias is not None:
        conv2d.bias.data.copy_(bias)
    return conv2d


class FastPreActivation(nn.Module):
    """BN -> SE -> ReLU as s * relu(scale * x + shift): the same, as SE's weights s are positive.

    The BN runs as a fixed per-channel affine (torch's native BatchNorm kernel, which reads
    channels-last bfloat16 without a copy); SE reads the raw channel means, the BN folded into its
    first FC. ``bn_folded=True``: the BN already went into the conv before (SE and ReLU are left).
    """

    def __init__(self, pre: PreActivation, bn_folded: bool = False) -> None:
        super().__init__()
        bn, se = pre[0], (pre[1] if len(pre) == 3 else None)
        channels = bn.num_features
        scale, shift = (torch.ones(channels), torch.zeros(channels)) if bn_folded else bn_affine(bn)
        self.bn_folded = bn_folded
        self.register_buffer("scale", scale.clone())
        self.register_buffer("shift", shift.clone())
        # F.batch_norm with mean 0, variance 1 and eps 0 is the affine alone.
        self.register_buffer("zeros", torch.zeros(channels))
        self.register_buffer("ones", torch.ones(channels))
        self.fc1 = self.fc2 = None
        if se is not None:
            # mean(scale * x + shift) = scale * mean(x) + shift, so fc1 can read mean(x) directly.
            self.fc1 = nn.Linear(channels, se.fc1.out_features)
            self.fc1.weight.data.copy_(se.fc1.weight.detach() * scale)
            self.fc1.bias.data.copy_(se.fc1.bias.detach() + se.fc1.weight.detach() @ shift)
            self.fc2 = copy.deepcopy(se.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = None
        if self.fc1 is not None:
            # sum / L rather than mean: torch's bfloat16 mean copies the input to float32 first.
            mean = x.sum(dim=(2, 3)) / x.shape[3]
            s = torch.sigmoid(self.fc2(torch.relu(self.fc1(mean))))[:, :, None, None]
        if self.bn_folded:
            y = x.relu_()  # x is the output of the conv this BN went into, read by nothing else
        else:
            y = F.batch_norm(x, self.zeros, self.ones, self.scale, self.shift, False, 0.0, 0.0).relu_()
        return y if s is None else y.mul_(s)


class FastMultiScaleConv(nn.Module):
    """``MultiScaleConv`` with the BatchNorm that reads its output (``next_bn``) folded in, and its
    branches grouped so that each convolution has at least ``group_width`` output maps: neighbouring
    kernel sizes share one convolution, the smaller kernels zero-padded to the group's largest."""

    def __init__(self, block: MultiScaleConv, next_bn: nn.BatchNorm1d, group_width: int = DEFAULT_GROUP_WIDTH) -> None:
        super().__init__()
        self.pre = FastPreActivation(block.pre)
        scale, shift = bn_affine(next_bn)
        width = block.branches[0].out_channels
        per_group = -(-group_width // width)
        convs = []
        for start in range(0, len(block.branches), per_group):
            group = list(block.branches[start:start + per_group])
            k_max = max(b.kernel_size[0] for b in group)
            kernel = torch.cat([F.pad(b.weight.detach(), ((k_max - b.kernel_size[0]) // 2,) * 2) for b in group])
            maps = slice(start * width, (start + len(group)) * width)
            convs.append(conv2d_from(group[-1], kernel * scale[maps].view(-1, 1, 1), shift[maps]))
        self.branches = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        if len(self.branches) == 1:
            return self.branches[0](x)
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class FastConvBlock(nn.Module):
    def __init__(self, block: ConvBlock, group_width: int = DEFAULT_GROUP_WIDTH) -> None:
        super().__init__()
        self.multi_scale = FastMultiScaleConv(block.multi_scale, block.fuse_pre[0], group_width)
        self.fuse_pre = FastPreActivation(block.fuse_pre, bn_folded=True)
        self.fuse = conv2d_from(block.fuse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.fuse_pre(self.multi_scale(x)))


class FastDenseBlock(nn.Module):
    def __init__(self, block: DenseBlock, group_width: int = DEFAULT_GROUP_WIDTH) -> None:
        super().__init__()
        self.conv_blocks = nn.ModuleList(FastConvBlock(b, group_width) for b in block.conv_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for block in self.conv_blocks:
            features.append(block(torch.cat(features, dim=1) if len(features) > 1 else x))
        return torch.cat(features, dim=1)


class FastTransition(nn.Module):
    """Pre-activation -> average pooling by 2 -> 1x1 conv (pooling first: half the conv's pixels)."""

    def __init__(self, transition: Transition | CrossScaleTransition) -> None:
        super().__init__()
        self.pre = FastPreActivation(transition[0])
        self.conv = conv2d_from(transition[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.avg_pool2d(self.pre(x), (1, 2)))


class FastDenseNet(nn.Module):
    """``SpectralDenseNet`` for inference only (see the module docstring); same ``features``/``classifier``
    contract, so CAMs work on it too. Built by ``fold``."""

    def __init__(self, model: SpectralDenseNet, dtype: torch.dtype = torch.float32, group_width: int = DEFAULT_GROUP_WIDTH) -> None:
        super().__init__()
        self.config = model.config
        self.preset = getattr(model, "preset", None)
        stem_weight = model.stem.weight.detach()
        self.stem = conv2d_from(model.stem, stem_weight[:, :1])
        # The grid channel is the same for every spectrum, so its share of the stem is one constant map.
        self.register_buffer("stem_wavelength", None if model.wavelength is None else F.conv1d(
            model.wavelength, stem_weight[:, 1:], stride=model.stem.stride, padding=model.stem.padding,
        ).unsqueeze(2))
        self.dense_blocks = nn.ModuleList(FastDenseBlock(b, group_width) for b in model.dense_blocks)
        self.transitions = nn.ModuleList(FastTransition(t) for t in model.transitions)
        self.cross_transitions = nn.ModuleList(FastTransition(t) for t in model.cross_transitions)
        self.final_pre = FastPreActivation(model.final_pre)
        self.classifier = nn.Linear(model.classifier.in_features, model.classifier.out_features)
        self.classifier.load_state_dict(model.classifier.state_dict())
        # The redshift head (when trained) stays float32, as the classifier: it reads the maps once more.
        self.redshift = None if model.redshift is None else copy.deepcopy(model.redshift)
        self.n_features = model.n_features
        self.dtype = dtype
        self.eval().requires_grad_(False)
        self.memory_format = torch.channels_last
        self.to(memory_format=self.memory_format)
        if dtype != torch.float32:
            for name, module in self.named_children():
                if name not in ("stem", "classifier", "redshift"):
                    module.to(dtype)

    def _maps(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(1)
        # (B, 1, L) -> (B, 1, 1, L): with one input channel, NCHW and channels-last are the same bytes.
        x = x.float().unsqueeze(2).contiguous(memory_format=self.memory_format)
        # The stem stays float32: bfloat16's 8-bit mantissa would round the flux itself (0.4% steps),
        # and the stem is under 1% of the FLOPs.
        stem = self.stem(x)
        if self.stem_wavelength is not None:
            stem = stem + self.stem_wavelength
        return self.final_pre(dense_stages(self, stem.to(self.dtype)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature maps before global pooling, (B, n_features, L') float32, as the reference's."""
        return self._maps(x).squeeze(2).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes); with a redshift head, followed by its two outputs (B, n_classes + 2)."""
        maps = self._maps(x)
        logits = self.classifier(maps.mean(dim=(2, 3), dtype=torch.float32))
        if self.redshift is None:
            return logits
        return torch.cat([logits, self.redshift(maps.squeeze(2).float())], dim=1)


class FastEnsemble(nn.Module):
    """A ``LogitMean`` of DenseNets for inference: every member folded, with the same ``features`` /
    ``classifier`` contract as one network, so that CAMs and the pipeline take it alike.

    ``features`` are the members' maps side by side and ``classifier`` their classifiers side by side,
    weights divided by the number of members and biases averaged: its logits are the members' mean
    exactly, and the CAM of the mean is the mean of the members' CAMs. With redshift heads, their
    outputs follow the logits, mixed (``ensemble.mixed_redshift``).
    """

    def __init__(self, members: list[FastDenseNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.config, self.preset = members[0].config, members[0].preset
        self.n_features = sum(m.n_features for m in members)
        heads = [m.classifier for m in members]
        self.classifier = nn.Linear(self.n_features, heads[0].out_features)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.cat([h.weight for h in heads], dim=1) / len(heads))
            self.classifier.bias.copy_(torch.stack([h.bias for h in heads]).mean(dim=0))
        self.with_redshift = all(m.redshift is not None for m in members)
        self.eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.features(x) for m in self.members], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [m._maps(x) for m in self.members]
        logits = self.classifier(torch.cat([mp.mean(dim=(2, 3), dtype=torch.float32) for mp in maps], dim=1))
        if not self.with_redshift:
            return logits
        heads = torch.stack([m.redshift(mp.squeeze(2).float()) for m, mp in zip(self.members, maps)])
        return torch.cat([logits, mixed_redshift(heads)], dim=1)


def fold(model: nn.Module, precision: str = "fp32", group_width: int = DEFAULT_GROUP_WIDTH) -> nn.Module:
    """The inference-speed twin of a trained ``model`` (its eval-mode outputs, to rounding), on the CPU.

    A ``SpectralDenseNet`` becomes a ``FastDenseNet``, an ensemble of them a ``FastEnsemble``; other
    networks (the ``fc4`` baseline) are only cast to the precision. ``model`` itself is not changed.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if isinstance(model, LogitMean) and all(isinstance(m, SpectralDenseNet) for m in model.members):
        return FastEnsemble([fold(m, precision, group_width) for m in model.members])
    if isinstance(model, SpectralDenseNet):
        # Folding reads the weights on the CPU; a copy, as Module.cpu() would move the caller's model.
        reference = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()
        with torch.no_grad():
            return FastDenseNet(reference, dtype, group_width)
    twin = copy.deepcopy(model).cpu().eval().requires_grad_(False)
    return twin if dtype == torch.float32 else _CastInput(twin.to(dtype), dtype)


class _CastInput(nn.Module):
    """A network run in ``dtype`` that takes and returns float32."""

    def __init__(self, net: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.net, self.dtype = net, dtype
        self.config = getattr(net, "config", None)
        self.preset = getattr(net, "preset", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.dtype)).float()
