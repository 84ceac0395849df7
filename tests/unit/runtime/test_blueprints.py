from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kasmina.errors import KasminaError
from kasmina.runtime.blueprints import (
    BLUEPRINTS,
    Topology,
    UnknownBlueprint,
    blueprint_names,
    build_blueprint,
    group_count,
    param_count,
    param_digest,
)

ALL = sorted(BLUEPRINTS)
IDENTITY_AT_BIRTH = [
    ("cnn", "conv_small"),
    ("cnn", "norm"),
    ("transformer", "mlp"),
    ("transformer", "attention_lite"),
    ("transformer", "norm"),
]
RANDOM_INIT = [
    ("cnn", "conv_small"),
    ("cnn", "conv_light"),
    ("cnn", "depthwise"),
    ("transformer", "mlp"),
    ("transformer", "attention_lite"),
]
SEED_INDEPENDENT = [key for key in ALL if key not in RANDOM_INIT]


def sample(topology: Topology, channels: int, seed: int = 7) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (2, channels, 5, 6) if topology == "cnn" else (2, 7, channels)
    return torch.randn(shape, generator=gen)


def test_registry_names() -> None:
    assert blueprint_names("cnn") == ["conv_light", "conv_small", "depthwise", "norm"]
    assert blueprint_names("transformer") == ["attention_lite", "mlp", "norm"]
    for (topology, name), spec in BLUEPRINTS.items():
        assert (spec.topology, spec.name) == (topology, name)
        assert spec.description


@pytest.mark.parametrize("key", ALL, ids=lambda k: ":".join(k))
@pytest.mark.parametrize("channels", [1, 6, 12, 32])
def test_shape_is_kept(key: tuple[Topology, str], channels: int) -> None:
    topology, name = key
    seed = build_blueprint(name, channels, topology, init_seed=3)
    x = sample(topology, channels)
    out = seed(x)
    assert out.shape == x.shape
    assert out.dtype == x.dtype


@pytest.mark.parametrize("key", IDENTITY_AT_BIRTH, ids=lambda k: ":".join(k))
@pytest.mark.parametrize("channels", [6, 32])
def test_identity_at_birth(key: tuple[Topology, str], channels: int) -> None:
    topology, name = key
    x = sample(topology, channels)
    with torch.no_grad():
        out = build_blueprint(name, channels, topology, init_seed=11)(x)
    assert torch.equal(out, x)


@pytest.mark.parametrize("key", [("cnn", "conv_light"), ("cnn", "depthwise")])
def test_random_conv_seeds_are_not_identity(key: tuple[Topology, str]) -> None:
    topology, name = key
    x = sample(topology, 32)
    with torch.no_grad():
        out = build_blueprint(name, 32, topology)(x)
    assert not torch.equal(out, x)


@pytest.mark.parametrize(
    "key",
    [
        ("cnn", "conv_small"),
        ("cnn", "norm"),
        ("transformer", "mlp"),
        ("transformer", "attention_lite"),
        ("transformer", "norm"),
    ],
    ids=lambda k: ":".join(k),
)
def test_identity_seeds_still_receive_gradient(key: tuple[Topology, str]) -> None:
    topology, name = key
    seed = build_blueprint(name, 32, topology)
    seed(sample(topology, 32)).square().sum().backward()
    grads = [p.grad for p in seed.parameters() if p.grad is not None]
    assert any(float(g.abs().max()) > 0.0 for g in grads)


def test_norm_mix_follows_tanh() -> None:
    seed = build_blueprint("norm", 8, "transformer")
    mix = next(p for p in seed.parameters() if p.dim() == 0)
    with torch.no_grad():
        mix.fill_(0.5)
    x = sample("transformer", 8)
    w = math.tanh(0.5)
    expected = (1 - w) * x + w * torch.nn.functional.layer_norm(x, (8,))
    torch.testing.assert_close(seed(x), expected)


def test_attention_is_causal_four_head_attention() -> None:
    channels, heads = 8, 4
    seed = build_blueprint("attention_lite", channels, "transformer", init_seed=5)
    linears = [m for m in seed.modules() if isinstance(m, nn.Linear)]
    qkv = next(m for m in linears if m.out_features == 3 * channels)
    out = next(m for m in linears if m.out_features == channels)
    with torch.no_grad():
        nn.init.normal_(out.weight, generator=torch.Generator().manual_seed(1))
        nn.init.normal_(out.bias, generator=torch.Generator().manual_seed(2))
    x = sample("transformer", channels)
    batch, steps, _ = x.shape
    d = channels // heads
    q, k, v = (
        t.reshape(batch, steps, heads, d).transpose(1, 2)
        for t in (x @ qkv.weight.T + qkv.bias).split(channels, dim=-1)
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    future = torch.triu(torch.ones(steps, steps, dtype=torch.bool), diagonal=1)
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    merged = (weights @ v).transpose(1, 2).reshape(batch, steps, channels)
    expected = x + merged @ out.weight.T + out.bias
    with torch.no_grad():
        torch.testing.assert_close(seed(x), expected)
        changed = x.clone()
        changed[:, -1] += 1.0
        assert torch.equal(seed(changed)[:, :-1], seed(x)[:, :-1])


@pytest.mark.parametrize(("channels", "heads"), [(8, 4), (6, 1), (7, 1), (12, 4)])
def test_attention_heads(channels: int, heads: int) -> None:
    seed = build_blueprint("attention_lite", channels, "transformer")
    assert seed.heads == heads


@pytest.mark.parametrize(
    ("channels", "groups"),
    [
        (1, 1),
        (3, 1),
        (6, 2),
        (12, 4),
        (16, 1),
        (24, 1),
        (32, 2),
        (48, 2),
        (64, 4),
        (96, 4),
        (128, 8),
        (256, 16),
        (512, 32),
        (1024, 32),
    ],
)
def test_group_count(channels: int, groups: int) -> None:
    assert group_count(channels) == groups


@pytest.mark.parametrize("name", ["conv_small", "conv_light", "depthwise", "norm"])
@pytest.mark.parametrize(("channels", "groups"), [(12, 4), (64, 4)])
def test_cnn_seeds_use_group_norm_never_batch_norm(name: str, channels: int, groups: int) -> None:
    seed = build_blueprint(name, channels, "cnn")
    norms = [m for m in seed.modules() if isinstance(m, nn.GroupNorm)]
    assert [m.num_groups for m in norms] == [groups]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in seed.modules())


@pytest.mark.parametrize("key", ALL, ids=lambda k: ":".join(k))
def test_same_init_seed_is_bit_identical(key: tuple[Topology, str]) -> None:
    topology, name = key
    torch.manual_seed(1)
    first = build_blueprint(name, 12, topology, init_seed=42)
    torch.manual_seed(2)
    second = build_blueprint(name, 12, topology, init_seed=42)
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert param_digest(first) == param_digest(second)


@pytest.mark.parametrize("key", RANDOM_INIT, ids=lambda k: ":".join(k))
def test_different_init_seed_changes_random_weights(key: tuple[Topology, str]) -> None:
    topology, name = key
    first = build_blueprint(name, 12, topology, init_seed=0)
    second = build_blueprint(name, 12, topology, init_seed=1)
    assert param_digest(first) != param_digest(second)


@pytest.mark.parametrize("key", SEED_INDEPENDENT, ids=lambda k: ":".join(k))
def test_deterministic_init_ignores_the_seed(key: tuple[Topology, str]) -> None:
    topology, name = key
    first = build_blueprint(name, 12, topology, init_seed=0)
    second = build_blueprint(name, 12, topology, init_seed=1)
    assert param_digest(first) == param_digest(second)


@pytest.mark.parametrize("key", RANDOM_INIT, ids=lambda k: ":".join(k))
def test_building_leaves_global_rng_alone(key: tuple[Topology, str]) -> None:
    topology, name = key
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    build_blueprint(name, 16, topology, init_seed=99)
    assert torch.equal(torch.get_rng_state(), before)
    drawn = torch.rand(4)
    torch.manual_seed(1234)
    assert torch.equal(drawn, torch.rand(4))


def test_unknown_blueprint() -> None:
    with pytest.raises(UnknownBlueprint) as info:
        build_blueprint("mlp", 8, "cnn")
    message = str(info.value)
    assert "'mlp'" in message and "'cnn'" in message
    for name in ("conv_light", "conv_small", "depthwise", "norm"):
        assert name in message
    assert isinstance(info.value, KasminaError)
    assert info.value.known == blueprint_names("cnn")


def test_unknown_blueprint_in_transformer() -> None:
    with pytest.raises(UnknownBlueprint, match="'nope'.*'transformer'.*attention_lite"):
        build_blueprint("nope", 8, "transformer")


@pytest.mark.parametrize("channels", [0, -3])
def test_channels_must_be_positive(channels: int) -> None:
    with pytest.raises(ValueError, match="at least 1 channel"):
        build_blueprint("conv_small", channels)


def test_param_count() -> None:
    assert param_count(build_blueprint("conv_small", 8)) == 8 * 8 + 2 * 8 + 8
    assert param_count(build_blueprint("mlp", 8, "transformer")) == (8 * 32 + 32) + (32 * 8 + 8)
    assert param_count(build_blueprint("norm", 8, "transformer")) == 1 + 2 * 8
    seed = build_blueprint("depthwise", 8)
    assert param_count(seed) == 8 * 9 + 8 * 8 + 2 * 8
    for p in seed.parameters():
        p.requires_grad_(False)
    assert param_count(seed) == 0


def test_param_digest_sees_every_change() -> None:
    seed = build_blueprint("conv_light", 8)
    digest = param_digest(seed)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert param_digest(build_blueprint("conv_light", 8)) == digest
    with torch.no_grad():
        next(seed.parameters()).view(-1)[5] += 1e-6
    assert param_digest(seed) != digest
    assert param_digest(build_blueprint("conv_light", 8).double()) != digest


def test_param_digest_covers_buffers_names_and_shapes() -> None:
    first = nn.Module()
    first.register_buffer("steps", torch.zeros(4))
    second = nn.Module()
    second.register_buffer("steps", torch.zeros(4))
    assert param_digest(first) == param_digest(second)
    second.steps[0] = 1.0
    assert param_digest(first) != param_digest(second)
    renamed = nn.Module()
    renamed.register_buffer("count", torch.zeros(4))
    assert param_digest(renamed) != param_digest(first)
    reshaped = nn.Module()
    reshaped.register_buffer("steps", torch.zeros(2, 2))
    assert param_digest(reshaped) != param_digest(first)


def test_param_digest_handles_bfloat16() -> None:
    seed = build_blueprint("mlp", 4, "transformer").to(torch.bfloat16)
    assert param_digest(seed) == param_digest(build_blueprint("mlp", 4, "transformer").bfloat16())
