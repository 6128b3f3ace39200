"""Architecture: block shapes, dense concatenation, the paper's 36 layers, presets, init."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from model_fixtures import TINY, one_torch_thread  # noqa: F401

from lamost_classify.model.blocks import (
    ConvBlock, CrossScaleTransition, DenseBlock, MultiScaleConv, PreActivation, SqueezeExcitation1d, Transition,
)
from lamost_classify.model.densenet import (
    PRESETS, SpectralDenseNet, build_model, config_dict, count_flops, count_layers, count_parameters,
)


def test_squeeze_excitation_rescales_each_channel_by_a_weight_in_0_1():
    se = SqueezeExcitation1d(8, reduction=4)
    x = torch.rand(2, 8, 50) + 0.1
    y = se(x)
    ratio = y / x
    assert y.shape == x.shape
    # One weight per (sample, channel), constant along the spectrum, inside (0, 1).
    assert torch.allclose(ratio, ratio[:, :, :1].expand_as(ratio), atol=1e-6)
    assert ((ratio > 0) & (ratio < 1)).all()


def test_pre_activation_is_bn_se_relu_and_se_can_be_switched_off():
    layers = [type(m) for m in PreActivation(16, se_reduction=4)]
    assert layers == [torch.nn.BatchNorm1d, SqueezeExcitation1d, torch.nn.ReLU]
    assert [type(m) for m in PreActivation(16, se_reduction=0)] == [torch.nn.BatchNorm1d, torch.nn.ReLU]
    assert (PreActivation(16)(torch.randn(3, 16, 20)) >= 0).all()


def test_multi_scale_conv_runs_the_four_kernels_in_parallel_and_concatenates():
    conv = MultiScaleConv(6, branch_channels=5, kernel_sizes=(1, 11, 25, 41))
    assert [b.kernel_size[0] for b in conv.branches] == [1, 11, 25, 41]
    assert all(b.in_channels == 6 and b.out_channels == 5 for b in conv.branches)
    assert conv(torch.randn(2, 6, 300)).shape == (2, 20, 300)  # length kept: scales line up per pixel
    with pytest.raises(ValueError, match="odd"):
        MultiScaleConv(6, 5, (1, 10))


def test_conv_block_fuses_the_scales_into_growth_rate_maps_with_a_kernel_1_conv():
    block = ConvBlock(12, growth_rate=7, branch_channels=3, kernel_sizes=(1, 11, 25, 41))
    assert block.fuse.kernel_size == (1,) and block.fuse.in_channels == 12 and block.fuse.out_channels == 7
    assert isinstance(block.fuse_pre, PreActivation)
    assert block(torch.randn(2, 12, 100)).shape == (2, 7, 100)


def test_dense_block_concatenates_its_input_and_every_new_feature_map():
    block = DenseBlock(10, n_conv_blocks=2, growth_rate=6, branch_channels=2, kernel_sizes=(1, 3))
    assert [b.multi_scale.branches[0].in_channels for b in block.conv_blocks] == [10, 16]
    x = torch.randn(2, 10, 64)
    out = block.eval()(x)
    assert out.shape == (2, 22, 64) and block.out_channels == 22
    assert torch.equal(out[:, :10], x)  # the input passes through untouched
    first = block.conv_blocks[0](x)
    assert torch.allclose(out[:, 10:16], first, atol=1e-6)
    assert torch.allclose(out[:, 16:], block.conv_blocks[1](torch.cat([x, first], 1)), atol=1e-6)


def test_transition_reduces_channels_and_halves_the_length():
    t = Transition(20, 10)
    assert t(torch.randn(2, 20, 81)).shape == (2, 10, 40)
    assert isinstance(t[0], PreActivation) and t[1].kernel_size == (1,)


def test_paper_preset_has_36_layers_and_classifies_a_2600_pixel_spectrum():
    model = build_model("paper")
    assert count_layers(model) == 36  # 1 stem + 7 x 2 x 2 + 6 transitions + 1 FC
    assert len(model.dense_blocks) == 7 and len(model.transitions) == 6
    assert all(len(b.conv_blocks) == 2 for b in model.dense_blocks)
    assert [br.kernel_size[0] for br in model.dense_blocks[0].conv_blocks[0].multi_scale.branches] == [1, 11, 25, 41]
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 1, 2600)).shape == (2, 3)


def test_fast_preset_keeps_the_paper_block_structure():
    fast, paper = build_model("fast"), build_model("paper")
    assert count_layers(fast) == 36
    assert count_flops(fast) < count_flops(paper) / 20
    assert count_parameters(fast) < count_parameters(paper)
    with torch.no_grad():
        assert fast.eval()(torch.rand(3, 2600)).shape == (3, 3)  # (B, 2600) accepted as well


def test_cross_scale_transitions_join_the_input_of_the_block_after_next():
    model = build_model("fast", **{**TINY, "n_dense_blocks": 4})
    assert len(model.cross_transitions) == 2 and all(isinstance(c, CrossScaleTransition) for c in model.cross_transitions)
    # Dense block k+2 reads transition k+1's output plus the cross path from dense block k+1's input.
    for k, cross in enumerate(model.cross_transitions):
        assert cross[1].in_channels == model.dense_blocks[k + 1].conv_blocks[0].multi_scale.branches[0].in_channels
        expected = model.transitions[k + 1].out_channels + cross.out_channels
        assert model.dense_blocks[k + 2].conv_blocks[0].multi_scale.branches[0].in_channels == expected
    plain = build_model("fast", **{**TINY, "n_dense_blocks": 4, "cross_scale": False})
    assert len(plain.cross_transitions) == 0
    assert count_layers(plain) == count_layers(model)  # side paths add no depth
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 2600)).shape == plain.eval()(torch.rand(2, 2600)).shape == (2, 3)


def test_baseline_presets():
    fc4 = build_model("fc4")
    assert count_layers(fc4) == 4
    plain = build_model("plain_densenet")
    assert count_layers(plain) == 36
    assert plain.config.kernel_sizes == (3,) and plain.config.se_reduction == 0 and not plain.config.cross_scale
    assert not any(isinstance(m, SqueezeExcitation1d) for m in plain.modules())
    with torch.no_grad():
        assert fc4(torch.rand(2, 2600)).shape == (2, 3)


def test_conv_weights_are_he_uniform():
    model = build_model("fast", **TINY)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv1d):
            fan_in = m.in_channels * m.kernel_size[0]
            bound = math.sqrt(6.0 / fan_in)  # kaiming_uniform_ with gain sqrt(2)
            assert m.weight.abs().max() <= bound + 1e-6
            if m.weight.numel() >= 500:
                assert m.weight.abs().max() > 0.9 * bound


def test_build_model_overrides_and_errors():
    model = build_model("fast", growth_rate=12, kernel_sizes=[1, 5])
    assert isinstance(model, SpectralDenseNet) and model.config.growth_rate == 12
    assert config_dict(model)["kernel_sizes"] == [1, 5] and model.preset == "fast"
    with pytest.raises(TypeError, match="no field"):
        build_model("fast", growht_rate=12)
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("resnet")
    assert set(PRESETS) >= {"paper", "fast", "fc4", "plain_densenet"}


def emission_line_at(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """STAR: an emission line at pixels 900-1000; GALAXY: the same line at 1600-1700, as if redshifted;
    QSO: an absorption line at either place. Only a line's place tells STAR from GALAXY."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    flux = 0.45 + rng.normal(0.0, 0.03, (len(labels), 2600))
    red = (labels == 1) | ((labels == 2) & (rng.random(len(labels)) < 0.5))
    centre = np.where(red, rng.integers(1600, 1700, len(labels)), rng.integers(900, 1000, len(labels)))
    for row, (c, label) in enumerate(zip(centre, labels)):
        flux[row, c - 1:c + 2] += -0.35 if label == 2 else 0.35
    return np.clip(flux, 0.0, 1.0).astype(np.float32), labels


@pytest.mark.parametrize("wavelength_channel", [False, True])
def test_the_wavelength_channel_lets_the_network_tell_where_a_line_is(wavelength_channel, tmp_path):
    """Convolutions and global pooling see a line's shape, not its place (far from the spectrum's
    ends): without the channel STAR and GALAXY stay a coin toss, with it the network learns them."""
    from lamost_classify.model.train import TrainConfig, fit

    x, y = emission_line_at(64, seed=1)
    vx, vy = emission_line_at(32, seed=2)
    tx, ty = emission_line_at(100, seed=3)
    config = TrainConfig(preset="fast", model_overrides={**TINY, "wavelength_channel": wavelength_channel},
                         epochs=20, lr=0.01, lr_milestones=(14,), batch_size=32, per_class=64, augment=False,
                         precise_bn_batches=10, num_threads=1, progress=False, log_epochs=False)
    model = fit(x, y, vx, vy, config, tmp_path).model.eval()
    assert model.stem.in_channels == (2 if wavelength_channel else 1)
    assert "wavelength" not in model.state_dict()  # the grid, not a weight: older weights still load
    with torch.no_grad():
        predicted = model(torch.from_numpy(tx)).argmax(1).numpy()
    star_or_galaxy = ty < 2
    told_apart = (predicted[star_or_galaxy] == ty[star_or_galaxy]).mean()
    assert (predicted[~star_or_galaxy] == 2).mean() > 0.9  # a line's sign either way
    if wavelength_channel:
        assert told_apart > 0.9
    else:
        assert told_apart < 0.7
