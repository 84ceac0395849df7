from __future__ import annotations

import math
import re
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from kasmina.errors import KasminaError, SlotError
from kasmina.gates import QualityGates
from kasmina.runtime.blueprints import (
    BLUEPRINTS,
    BlueprintError,
    Topology,
    UnknownBlueprint,
    blueprint_names,
    build_blueprint,
    group_count,
    param_count,
    param_digest,
    param_digests,
    register_blueprint,
)
from kasmina.runtime.slot import SeedSlot
from kasmina.stages import SeedStage

ALL = sorted(BLUEPRINTS)
IDENTITY_AT_BIRTH = [
    ("cnn", "conv_small"),
    ("cnn", "norm"),
    ("transformer", "mlp"),
    ("transformer", "attention_lite"),
    ("transformer", "norm"),
    ("tabular", "mlp"),
    ("tabular", "norm"),
]
RANDOM_INIT = [
    ("cnn", "conv_small"),
    ("cnn", "conv_light"),
    ("cnn", "depthwise"),
    ("transformer", "mlp"),
    ("transformer", "attention_lite"),
    ("tabular", "mlp"),
]
SEED_INDEPENDENT = [key for key in ALL if key not in RANDOM_INIT]


def sample(topology: Topology, channels: int, seed: int = 7) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shapes = {"cnn": (2, channels, 5, 6), "transformer": (2, 7, channels), "tabular": (2, channels)}
    shape = shapes[topology]
    return torch.randn(shape, generator=gen)


def test_registry_names() -> None:
    assert blueprint_names("cnn") == ["conv_light", "conv_small", "depthwise", "norm"]
    assert blueprint_names("transformer") == ["attention_lite", "mlp", "norm"]
    assert blueprint_names("tabular") == ["mlp", "norm"]
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


def test_param_digests_of_several_modules_are_each_ones_own() -> None:
    # Over a megabyte in all, so the modules are hashed on threads side by side.
    modules = {f"s{i}": build_blueprint("attention_lite", 192, "transformer", i) for i in range(3)}
    assert sum(p.numel() * p.element_size() for m in modules.values() for p in m.parameters()) > (
        1 << 20
    )
    digests = param_digests(modules)
    assert digests == {k: param_digest(m) for k, m in modules.items()}
    assert len(set(digests.values())) == 3
    small = {"a": build_blueprint("norm", 4), "b": build_blueprint("conv_light", 4)}
    assert param_digests(small) == {k: param_digest(m) for k, m in small.items()}
    assert param_digests({}) == {}


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


# -- hosts of every shape, and blueprints of the user's own ---------------------------


class _Gain(nn.Module):
    """A user's seed: x + w·x, w starting at 0."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w * x


class _Only8x8(nn.Module):
    """A user's CNN seed that works only on 8×8 feature maps."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mix = nn.Linear(64, 64)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x + self.mix(x.reshape(b, c, h * w)).reshape(b, c, h, w)


@pytest.fixture
def registered() -> Iterator[list[tuple[Topology, str]]]:
    """Blueprints a test registers are removed afterwards, so tests do not see each other's."""
    from kasmina.runtime import blueprints

    added: list[tuple[Topology, str]] = []
    yield added
    for key in added:
        blueprints._REGISTRY.pop(key, None)


def test_a_registered_blueprint_germinates_and_rebuilds_bit_identically(
    registered: list[tuple[Topology, str]],
) -> None:
    spec = register_blueprint("gain", "tabular", _Gain, "x + w·x")
    registered.append(("tabular", "gain"))
    assert BLUEPRINTS[("tabular", "gain")] is spec and "gain" in blueprint_names("tabular")
    slot = SeedSlot("t0", 5, topology="tabular")
    slot.germinate("gain", "s1", init_seed=4)
    x = torch.randn(3, 5)
    assert torch.equal(slot(x), x)  # identity at birth, whatever the alpha
    assert slot.seed is not None
    assert param_digest(slot.seed) == param_digest(build_blueprint("gain", 5, "tabular", 4))


@pytest.mark.parametrize(
    ("name", "topology", "message"),
    [
        ("conv_small", "cnn", "already registered for topology 'cnn'"),
        ("gain", "graph", "unknown topology 'graph'"),
        ("bad name", "cnn", "letters, digits and _"),
        ("", "cnn", "letters, digits and _"),
    ],
)
def test_a_bad_registration_is_refused_in_one_line(name: str, topology: str, message: str) -> None:
    before = dict(BLUEPRINTS)
    with pytest.raises(BlueprintError, match=re.escape(message)) as info:
        register_blueprint(name, topology, _Gain)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert dict(BLUEPRINTS) == before


def test_mlp_germinates_on_tabular_features_and_trains() -> None:
    slot = SeedSlot("t0", 6, topology="tabular", gates=QualityGates(permissive=True))
    x = torch.randn(4, 6)
    assert slot(x) is x
    slot.germinate("mlp", "s1", init_seed=2)
    assert slot.advance_stage(SeedStage.TRAINING).passed
    assert slot.seed is not None
    out = slot(x)  # TRAINING: the host's features exactly, the seed on the gradient path
    assert torch.equal(out, x)
    out.square().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in slot.seed.parameters())


def test_the_probe_follows_the_features_the_host_gave() -> None:
    """attention_lite needs (batch, steps, channels): on (batch, channels) it is refused."""
    slot = SeedSlot("t0", 8, topology="transformer")
    assert slot(torch.randn(4, 8)).shape == (4, 8)  # the host's features: 2-D
    before = slot.state
    with pytest.raises(SlotError) as info:
        slot.germinate("attention_lite", "s1")
    line = str(info.value)
    assert "\n" not in line
    assert "'attention_lite' cannot run on features of shape (2, 8) in slot 't0'" in line
    assert slot.state is before and slot.seed is None
    slot.germinate("mlp", "s2")  # a blueprint that fits those features is fine
    assert slot.stage is SeedStage.GERMINATED


def test_a_cnn_probe_takes_the_hosts_spatial_size(registered: list[tuple[Topology, str]]) -> None:
    register_blueprint("only8x8", "cnn", _Only8x8)
    registered.append(("cnn", "only8x8"))
    unseen = SeedSlot("c0", 4)
    with pytest.raises(SlotError, match=r"shape \(1, 4, 32, 32\)"):
        unseen.germinate("only8x8", "s1")  # no features seen: the default 32×32 probe
    slot = SeedSlot("c1", 4)
    slot(torch.randn(3, 4, 8, 8))
    slot.germinate("only8x8", "s1")
    assert slot.stage is SeedStage.GERMINATED
