"""Tests of the NAFNet-style backbone (``diffdeblur.nafnet``): shapes, identity at
initialisation, reproducible initialisation, gradients, bfloat16 autocast and a tiny overfit.

The networks are small (8-16 base channels) so that every test runs in well under a second, bar
the overfit; every network whose values matter is drawn from a seeded ``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from diffdeblur.config import UNetConfig
from diffdeblur.nafnet import ChannelScale, LayerNorm2d, NAFBlock, NAFNet, simple_gate
from diffdeblur.unet import count_parameters
from restorer_support import network_inputs, perturb_zero_layers
from torch import nn

pytestmark = pytest.mark.usefixtures("single_thread")

# Three levels (downsampling 4), so padding and both resampling layers are exercised.
SMALL = UNetConfig(
    backbone="nafnet",
    base_channels=8,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    dropout=0.0,
    attention_factors=(),
)
# The size suggested for CPU experiments.
SUGGESTED = UNetConfig(
    backbone="nafnet",
    base_channels=32,
    channel_mult=(1, 2, 4),
    num_res_blocks=2,
    dropout=0.0,
    attention_factors=(),
)


def _config(**overrides) -> UNetConfig:
    return replace(SMALL, **overrides)


def _net(config: UNetConfig = SMALL, seed: int = 0, perturb: bool = True) -> NAFNet:
    """A network drawn from ``seed``; with ``perturb`` its zero-initialised layers are not zero.

    At initialisation the output convolution, the time projections and the residual scales are
    zero, so the output is exactly 0 whatever x and t are; tests of what the network computes
    need those layers non-zero.
    """
    generator = torch.Generator().manual_seed(seed)
    net = NAFNet(config, generator=generator)
    if perturb:
        perturb_zero_layers(net, generator, 0.2)
    return net.eval()


# --------------------------------------------------------------------------------------------
# layers


def test_layer_norm_normalises_each_pixel_over_channels():
    norm = LayerNorm2d(5)
    x = 3.0 + 2.0 * torch.randn(2, 5, 4, 3, generator=torch.Generator().manual_seed(0))
    out = norm(x)
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(2, 4, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.var(dim=1, unbiased=False), torch.ones(2, 4, 3), atol=1e-4, rtol=0
    )
    with torch.no_grad():
        norm.weight.fill_(2.0)
        norm.bias.fill_(0.5)
    torch.testing.assert_close(norm(x), 2.0 * out + 0.5)
    assert norm(x.bfloat16()).dtype == torch.bfloat16


def test_simple_gate_and_channel_scale():
    x = torch.arange(2 * 4 * 1 * 1, dtype=torch.float32).reshape(2, 4, 1, 1)
    torch.testing.assert_close(simple_gate(x), x[:, :2] * x[:, 2:])
    scale = ChannelScale(4)
    with torch.no_grad():
        scale.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1, 1))
    torch.testing.assert_close(scale(torch.ones(1, 4, 2, 2))[0, :, 0, 0], torch.arange(1.0, 5.0))


def test_block_is_the_identity_at_initialisation_and_uses_t_once_perturbed():
    block = NAFBlock(8, 16)
    x = torch.randn(2, 8, 5, 7, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(block(x, emb), x)
        for module in (block.beta, block.gamma, block.emb_proj):
            for p in module.parameters():
                p.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(2))
        out = block(x, emb)
        assert out.shape == x.shape and (out - x).abs().max() > 1e-3
        assert (block(x, -emb) - out).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------
# layout and size


def test_layout_follows_the_configuration():
    with torch.device("meta"):
        net = NAFNet(SUGGESTED)
    blocks = [m for m in net.modules() if isinstance(m, NAFBlock)]
    levels = len(SUGGESTED.channel_mult)
    assert len(blocks) == (2 * levels + 1) * SUGGESTED.num_res_blocks
    widths = [32 * m for m in SUGGESTED.channel_mult]
    assert [stage[0].channels for stage in net.encoders] == widths
    assert [stage[0].channels for stage in net.decoders] == widths
    assert [b.channels for b in net.middle] == [widths[-1]] * SUGGESTED.num_res_blocks
    assert all(b.emb_proj.in_features == 4 * SUGGESTED.base_channels for b in blocks)
    assert len(net.downs) == len(net.ups) == levels - 1
    assert not any(isinstance(m, nn.MultiheadAttention | nn.GroupNorm) for m in net.modules())


def test_suggested_configuration_is_cpu_sized():
    with torch.device("meta"):
        assert 1_000_000 <= count_parameters(NAFNet(SUGGESTED)) <= 2_000_000


# --------------------------------------------------------------------------------------------
# forward contract


@pytest.mark.parametrize(("height", "width"), [(37, 53), (5, 3), (1, 1), (1, 7), (16, 16)])
def test_shapes_any_size(height, width):
    net = _net()
    x, t = network_inputs(2, SMALL.in_channels, height, width)
    with torch.no_grad():
        out = net(x, t)
    assert out.shape == (2, SMALL.out_channels, height, width)
    assert torch.isfinite(out).all()
    assert out.abs().max() > 0


def test_scalar_timestep_broadcasts_and_bad_shapes_raise():
    net = _net()
    x, _ = network_inputs(2, SMALL.in_channels, 8, 8)
    with torch.no_grad():
        expected = net(x, torch.tensor([7, 7]))
        torch.testing.assert_close(net(x, torch.tensor(7)), expected)
        torch.testing.assert_close(net(x, 7), expected)
        torch.testing.assert_close(net(x, 7.0), expected)
        # The regression parametrisation always passes t = 0.
        assert torch.isfinite(net(x, 0)).all()
    with pytest.raises(ValueError, match="t must have shape"):
        net(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="x must have shape"):
        net(x[:, :3], torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="x must have shape"):
        net(x[0], 0)


def test_output_depends_on_t():
    net = _net()
    x, _ = network_inputs(1, SMALL.in_channels, 16, 16)
    with torch.no_grad():
        early, late = net(x, torch.tensor([0])), net(x, torch.tensor([500]))
    assert (early - late).abs().max() > 1e-3


def test_samples_are_independent_of_the_batch():
    net = _net()
    x, t = network_inputs(3, SMALL.in_channels, 12, 20)
    with torch.no_grad():
        together = net(x, t)
        alone = net(x[1:2], t[1:2])
    torch.testing.assert_close(alone, together[1:2], rtol=1e-4, atol=1e-5)


def test_output_is_zero_at_initialisation_and_global_skip_returns_input():
    x, t = network_inputs(2, 6, 13, 10)
    with torch.no_grad():
        assert (_net(perturb=False)(x, t) == 0).all()
        net = _net(_config(global_skip=True), perturb=False)
        torch.testing.assert_close(net(x, t), x[:, :3], rtol=0, atol=0)
        net = _net(_config(in_channels=3, global_skip=True), perturb=False)
        torch.testing.assert_close(net(x[:, :3], t), x[:, :3], rtol=0, atol=0)
        # Once trained (here: perturbed) the global skip still adds exactly the input.
        plain, skip = _net(seed=5), _net(_config(global_skip=True), seed=5)
        torch.testing.assert_close(skip(x, t), plain(x, t) + x[:, :3])


def test_global_skip_needs_enough_input_channels():
    with pytest.raises(ValueError, match="global skip"):
        NAFNet(_config(in_channels=2, global_skip=True))


# --------------------------------------------------------------------------------------------
# initialisation and training


def test_init_from_generator_is_reproducible_and_leaves_the_global_state_alone():
    before = torch.random.get_rng_state()
    first = NAFNet(SMALL, generator=torch.Generator().manual_seed(3)).state_dict()
    again = NAFNet(SMALL, generator=torch.Generator().manual_seed(3)).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    other = NAFNet(SMALL, generator=torch.Generator().manual_seed(4)).state_dict()
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["intro.weight"], other["intro.weight"])
    assert (first["ending.weight"] == 0).all() and (first["ending.bias"] == 0).all()
    assert (first["encoders.0.0.beta.weight"] == 0).all()
    assert (first["encoders.0.0.emb_proj.weight"] == 0).all()
    assert (first["encoders.0.0.norm1.weight"] == 1).all()


def test_gradients_flow_to_every_parameter():
    net = _net(_config(dropout=0.1)).train()
    x, t = network_inputs(2, SMALL.in_channels, 16, 16)
    loss = (net(x, t) - x[:, :3]).square().mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_runs_under_bfloat16_autocast():
    net = _net()
    x, t = network_inputs(2, SMALL.in_channels, 13, 18)
    with torch.no_grad():
        reference = net(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, t)
    assert out.shape == reference.shape and torch.isfinite(out).all()
    # bfloat16 keeps ~3 significant digits: close to, but not equal to, float32.
    error = (out.float() - reference).abs().max() / reference.abs().max()
    assert 0 < error < 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net.train()(x, 0).float().square().mean().backward()
    assert torch.isfinite(net.intro.weight.grad).all() and net.intro.weight.grad.abs().max() > 0


def test_overfits_a_fixed_pair():
    # From the exact initialisation (zero output, identity blocks), as training starts; one
    # level (3 blocks) keeps the 200 steps to a few seconds on one thread.
    config = _config(in_channels=3, channel_mult=(1,))
    net = _net(config, perturb=False).train()
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 16, 16, generator=generator)
    # A target the network must compute from x: a blur of the input plus a colour mix.
    kernel = torch.full((3, 1, 3, 3), 1.0 / 9.0)
    target = torch.nn.functional.conv2d(x, kernel, padding=1, groups=3).roll(1, dims=1) + 0.3
    # Fused: the per-parameter loop of the default Adam would double the time of this test.
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3, fused=True)
    first = torch.nn.functional.mse_loss(net(x, 0), target).item()
    for _ in range(200):
        optimiser.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x, 0), target)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        last = torch.nn.functional.mse_loss(net(x, 0), target).item()
    assert last < first / 10, (first, last)
