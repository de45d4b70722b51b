"""Tests of the U-Net (``diffdeblur.unet``): shapes, layout of the presets, conditioning, gradients.

Most checks use the CPU-sized ``tiny`` preset. The large presets (36-102M parameters) are built
once each for a single batch-1 forward at 64 px plus one at 5x9; their layout is inspected on the
``meta`` device, which allocates nothing and draws no random numbers. Every network whose values
matter is initialised from a seeded ``torch.Generator``, never from the global random state.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffdeblur.config import VARIANTS, unet_variant
from diffdeblur.unet import (
    AttentionBlock,
    Downsample,
    ResBlock,
    UNet,
    Upsample,
    count_parameters,
    group_count,
    timestep_embedding,
)
from restorer_support import network_inputs, perturb_zero_layers
from torch import nn

BIG = [name for name in VARIANTS if name != "tiny"]

# One PyTorch thread (the conftest fixture): on a small machine shared with other jobs, two
# intra-op threads wait for each other and make these tests several times slower.
pytestmark = pytest.mark.usefixtures("single_thread")


def _net(config, seed: int = 0, perturb: bool = True) -> UNet:
    """A network drawn from ``seed``; with ``perturb`` its zero-initialised layers are not zero.

    At initialisation the output convolution and the last layer of every residual branch are
    zero, so the output is exactly 0 (or the input, with a global skip) whatever t is; tests of
    what the network computes need those layers non-zero.
    """
    generator = torch.Generator().manual_seed(seed)
    net = UNet(config, generator=generator)
    if perturb:
        perturb_zero_layers(net, generator, 0.05)
    return net.eval()


def _meta(config) -> UNet:
    with torch.device("meta"):
        return UNet(config)


def _attention(part: nn.Module) -> list[AttentionBlock]:
    return [m for m in part.modules() if isinstance(m, AttentionBlock)]


# --------------------------------------------------------------------------------------------
# helpers


def test_count_parameters():
    layer = nn.Linear(3, 4)
    assert count_parameters(layer) == 16
    layer.bias.requires_grad_(False)
    assert count_parameters(layer, trainable_only=True) == 12


@pytest.mark.parametrize(
    ("channels", "groups"), [(128, 32), (256, 32), (192, 32), (64, 16), (32, 8), (6, 1), (3, 1)]
)
def test_group_count(channels, groups):
    assert group_count(channels) == groups
    assert channels % group_count(channels) == 0


def test_timestep_embedding():
    t = torch.tensor([0, 1, 999])
    embedding = timestep_embedding(t, 8)
    assert embedding.shape == (3, 8) and embedding.dtype == torch.float32
    torch.testing.assert_close(embedding[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    # The first frequency is 1 rad per timestep.
    assert embedding[1, 0].item() == pytest.approx(math.cos(1.0))
    assert timestep_embedding(t, 7).shape == (3, 7)
    torch.testing.assert_close(timestep_embedding(t.float(), 8), embedding)


# --------------------------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize(("height", "width"), [(64, 64), (37, 53), (5, 9), (1, 1), (1, 7)])
def test_tiny_shapes_any_size(height, width):
    config = VARIANTS["tiny"]
    net = _net(config)
    x, t = network_inputs(2, config.in_channels, height, width)
    with torch.no_grad():
        out = net(x, t)
    assert out.shape == (2, config.out_channels, height, width)
    assert torch.isfinite(out).all()
    assert out.abs().max() > 0


@pytest.mark.parametrize("name", BIG)
def test_big_variant_shapes(name):
    config = VARIANTS[name]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = UNet(config).eval()
    for height, width in ((64, 64), (5, 9)):
        x, t = network_inputs(1, config.in_channels, height, width)
        with torch.no_grad():
            out = net(x, t)
        assert out.shape == (1, config.out_channels, height, width)
        assert torch.isfinite(out).all()


def test_padding_reflects_or_replicates():
    net = _meta(VARIANTS["tiny"])  # downsampling 4
    x = torch.arange(5 * 9, dtype=torch.float32).reshape(1, 1, 5, 9)
    padded = net._pad(x)
    assert padded.shape == (1, 1, 8, 12)
    torch.testing.assert_close(padded[..., :5, :9], x)
    torch.testing.assert_close(padded[..., 5, :9], x[..., 3, :])  # reflection, edge not repeated
    torch.testing.assert_close(padded[..., :5, 9], x[..., :, 7])
    # A height of 1 cannot be reflected: that axis is replicated, the other still reflected.
    row = torch.arange(7, dtype=torch.float32).reshape(1, 1, 1, 7)
    padded = net._pad(row)
    assert padded.shape == (1, 1, 4, 8)
    torch.testing.assert_close(padded[..., 3, :7], row[..., 0, :])
    assert padded[0, 0, 0, 7].item() == 5.0
    assert net._pad(torch.zeros(1, 1, 8, 4)).shape == (1, 1, 8, 4)


def test_samples_are_independent_of_the_batch():
    config = VARIANTS["tiny"]
    net = _net(config)
    x, t = network_inputs(3, config.in_channels, 16, 24)
    with torch.no_grad():
        together = net(x, t)
        alone = net(x[1:2], t[1:2])
    torch.testing.assert_close(alone, together[1:2], rtol=1e-4, atol=1e-5)


def test_scalar_timestep_broadcasts_and_bad_shapes_raise():
    config = VARIANTS["tiny"]
    net = _net(config)
    x, _ = network_inputs(2, config.in_channels, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.tensor(7)), net(x, torch.tensor([7, 7])))
    with pytest.raises(ValueError, match="t must have shape"):
        net(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="x must have shape"):
        net(x[:, :3], torch.tensor([1, 2]))


# --------------------------------------------------------------------------------------------
# layout of the presets


@pytest.mark.parametrize("name", list(VARIANTS))
def test_attention_at_the_configured_factors(name):
    config = VARIANTS[name]
    net = _meta(config)
    levels = len(config.channel_mult)
    encoder = _attention(net.encoder)
    decoder = _attention(net.decoder)
    middle = _attention(net.middle)
    assert {a.factor for a in encoder} == set(config.attention_factors)
    assert {a.factor for a in decoder} == set(config.attention_factors)
    for factor in config.attention_factors:
        assert sum(a.factor == factor for a in encoder) == config.num_res_blocks
        assert sum(a.factor == factor for a in decoder) == config.num_res_blocks + 1
    assert [a.factor for a in middle] == [2 ** (levels - 1)]


def test_attention_factors_of_the_thesis_presets():
    # "Attention at 16x16" for 64 px patches; "at 32, 16 and 8 px".
    assert {a.factor for a in _attention(_meta(VARIANTS["base"]).encoder)} == {4}
    assert {a.factor for a in _attention(_meta(VARIANTS["multires"]).encoder)} == {2, 4, 8}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_attention_heads(name):
    config = VARIANTS[name]
    blocks = _attention(_meta(config))
    for block in blocks:
        if config.head_channels > 0:
            assert block.heads == block.channels // config.head_channels
        else:
            assert block.heads == config.num_heads
    if name in ("multihead", "improved"):
        heads = {b.channels: b.heads for b in blocks}
        assert all(h == c // 64 and h > 1 for c, h in heads.items())


@pytest.mark.parametrize("name", list(VARIANTS))
def test_time_conditioning_and_resampling_layout(name):
    config = VARIANTS[name]
    net = _meta(config)
    blocks = [m for m in net.modules() if isinstance(m, ResBlock)]
    width = 2 if config.scale_shift_norm else 1
    assert all(b.emb_proj.out_features == width * b.out_channels for b in blocks)
    assert all(b.emb_proj.in_features == 4 * config.base_channels for b in blocks)
    resampling = [b.resample for b in blocks if b.resample]
    plain = [m for m in net.modules() if isinstance(m, Downsample | Upsample)]
    between = len(config.channel_mult) - 1
    if config.resblock_updown:
        assert sorted(resampling) == ["down"] * between + ["up"] * between and not plain
    else:
        assert not resampling and len(plain) == 2 * between
    decoder_blocks = sum(isinstance(m, ResBlock) and not m.resample for m in net.decoder.modules())
    assert decoder_blocks == len(config.channel_mult) * (config.num_res_blocks + 1)


def test_tiny_is_cpu_sized():
    assert 1_000_000 <= count_parameters(_meta(VARIANTS["tiny"])) <= 2_000_000


def test_base_matches_ho_et_al():
    # Ho et al.'s CIFAR-10 network (the same layout with 3 input channels) has 35.7M parameters.
    assert count_parameters(_meta(unet_variant("base", in_channels=3))) == pytest.approx(
        35.7e6, rel=0.01
    )


# --------------------------------------------------------------------------------------------
# behaviour


def test_output_is_zero_at_initialisation_and_global_skip_returns_input():
    x, t = network_inputs(2, 6, 13, 10)
    with torch.no_grad():
        assert (_net(VARIANTS["tiny"], perturb=False)(x, t) == 0).all()
        net = _net(unet_variant("tiny", global_skip=True), perturb=False)
        torch.testing.assert_close(net(x, t), x[:, :3], rtol=0, atol=0)
        net = _net(unet_variant("tiny", in_channels=3, global_skip=True), perturb=False)
        torch.testing.assert_close(net(x[:, :3], t), x[:, :3], rtol=0, atol=0)


@pytest.mark.parametrize("scale_shift_norm", [True, False])
def test_output_depends_on_t(scale_shift_norm):
    config = unet_variant("tiny", scale_shift_norm=scale_shift_norm)
    net = _net(config)
    x, _ = network_inputs(1, config.in_channels, 16, 16)
    with torch.no_grad():
        early, late = net(x, torch.tensor([0])), net(x, torch.tensor([500]))
        torch.testing.assert_close(net(x, torch.tensor([0])), early)
        torch.testing.assert_close(net(x, torch.tensor([500.0])), late)
    assert (early - late).abs().max() > 1e-3


def test_init_from_generator_is_reproducible():
    config = VARIANTS["tiny"]
    first = UNet(config, generator=torch.Generator().manual_seed(3)).state_dict()
    again = UNet(config, generator=torch.Generator().manual_seed(3)).state_dict()
    other = UNet(config, generator=torch.Generator().manual_seed(4)).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["encoder.0.0.weight"], other["encoder.0.0.weight"])
    assert (first["out.2.weight"] == 0).all()


def test_init_from_generator_leaves_the_global_random_state_alone():
    before = torch.random.get_rng_state()
    UNet(VARIANTS["tiny"], generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_gradients_flow_to_every_parameter():
    config = VARIANTS["tiny"]
    net = _net(config).train()
    x, t = network_inputs(2, config.in_channels, 16, 16)
    loss = net(x, t).square().mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_zero_initialised_network_can_start_learning():
    config = VARIANTS["tiny"]
    net = _net(config, perturb=False).train()
    x, t = network_inputs(2, config.in_channels, 8, 8)
    torch.nn.functional.mse_loss(net(x, t), x[:, :3]).backward()
    assert net.out[2].weight.grad.abs().max() > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"attention_factors": (16,)}, "not downsampling factors"),
        ({"head_channels": 48}, "do not divide"),
        ({"num_heads": 3, "head_channels": 0}, "do not divide"),
        ({"in_channels": 2, "global_skip": True}, "global skip"),
    ],
)
def test_invalid_configurations_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        _meta(unet_variant("tiny", **overrides))
