"""The seed modules a slot can germinate, registered per host topology.

A topology names the shape of the features at a slot: ``"cnn"`` for
(batch, channels, height, width), ``"transformer"`` for (batch, steps,
channels), ``"tabular"`` for (batch, channels). Every seed maps a tensor to one
of exactly the same shape, so a slot can blend it into the host without
reshaping; `register_blueprint` adds a user's own. A seed is rebuilt from its recorded integer init
seed alone, which is why building forks the RNG: the weights then depend on that
integer and nothing else, and the training run's own random stream is not moved.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from types import MappingProxyType
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kasmina.errors import KasminaError

Topology = Literal["cnn", "transformer", "tabular"]
TOPOLOGIES: tuple[Topology, ...] = ("cnn", "transformer", "tabular")

_GROUP_CHOICES = (32, 16, 8, 4, 2, 1)
_MIN_CHANNELS_PER_GROUP = 16


class BlueprintError(KasminaError):
    """A blueprint that cannot be registered as asked."""


class UnknownBlueprint(KasminaError):
    def __init__(self, name: str, topology: str, known: list[str]) -> None:
        self.name = name
        self.topology = topology
        self.known = known
        names = ", ".join(known) if known else "none"
        super().__init__(f"unknown blueprint {name!r} for topology {topology!r}; known: {names}")


def group_count(channels: int) -> int:
    """GroupNorm groups for `channels`: wide groups keep the statistics stable.

    The largest choice leaving at least 16 channels per group; for narrow layers
    where none does, the largest choice that divides at all (1 always does).
    """
    divisors = [g for g in _GROUP_CHOICES if channels % g == 0]
    for groups in divisors:
        if channels // groups >= _MIN_CHANNELS_PER_GROUP:
            return groups
    return divisors[0]


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(group_count(channels), channels)


class _ConvSmall(nn.Module):
    """x + scale · ReLU(GN(1×1 conv)), identity at birth through a zero per-channel scale.

    esper zero-initialises the conv itself, but then GN's output is exactly 0,
    ReLU passes no gradient at 0, and the seed can never learn. Zeroing the
    scale after the ReLU keeps the identity at birth and lets gradient flow.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.norm = _group_norm(channels)
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * F.relu(self.norm(self.conv(x)))


class _ConvLight(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.norm = _group_norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.norm(self.conv(x)))


class _Depthwise(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            channels, channels, kernel_size=3, padding=1, groups=channels, bias=False
        )
        self.pointwise = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.norm = _group_norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.norm(self.pointwise(self.depthwise(x))))


class _MixedNorm(nn.Module):
    """A normalisation blended in by tanh(s); s starts at 0, so the seed starts as identity.

    The blend is written as x + w·(norm(x) − x) rather than a lerp so that w = 0
    returns x bit for bit.
    """

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.mix = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch.tanh(self.mix).to(x.dtype)
        normed: torch.Tensor = self.norm(x)
        return x + weight * (normed - x)


def _cnn_norm(channels: int) -> nn.Module:
    return _MixedNorm(_group_norm(channels))


def _transformer_norm(channels: int) -> nn.Module:
    return _MixedNorm(nn.LayerNorm(channels))


class _MLP(nn.Module):
    def __init__(self, channels: int, expansion: int = 4) -> None:
        super().__init__()
        self.up = nn.Linear(channels, expansion * channels)
        self.down = nn.Linear(expansion * channels, channels)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta: torch.Tensor = self.down(F.gelu(self.up(x)))
        return x + delta


class _AttentionLite(nn.Module):
    """x + causal self-attention over B×T×C; the output projection starts at zero."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.heads = 4 if channels % 4 == 0 else 1
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, channels = x.shape
        head_dim = channels // self.heads
        qkv = self.qkv(x).view(batch, steps, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
        merged = attended.transpose(1, 2).reshape(batch, steps, channels)
        delta: torch.Tensor = self.out(merged)
        return x + delta


@dataclass(frozen=True)
class BlueprintSpec:
    name: str
    topology: Topology
    factory: Callable[[int], nn.Module]
    description: str


_BUILT_IN = (
    BlueprintSpec("conv_small", "cnn", _ConvSmall, "x + scale·ReLU(GN(1×1 conv)), scale zeroed"),
    BlueprintSpec("conv_light", "cnn", _ConvLight, "x + ReLU(GN(3×3 conv))"),
    BlueprintSpec("depthwise", "cnn", _Depthwise, "x + ReLU(GN(1×1 pointwise(3×3 depthwise)))"),
    BlueprintSpec("norm", "cnn", _cnn_norm, "GroupNorm mixed in by tanh(s), s starting at 0"),
    BlueprintSpec("mlp", "transformer", _MLP, "x + MLP, 4× expansion, GELU, output zeroed"),
    BlueprintSpec(
        "attention_lite",
        "transformer",
        _AttentionLite,
        "x + causal self-attention, 4 heads, output projection zeroed",
    ),
    BlueprintSpec(
        "norm", "transformer", _transformer_norm, "LayerNorm mixed in by tanh(s), s starting at 0"
    ),
    BlueprintSpec("mlp", "tabular", _MLP, "x + MLP, 4× expansion, GELU, output zeroed"),
    BlueprintSpec(
        "norm", "tabular", _transformer_norm, "LayerNorm mixed in by tanh(s), s starting at 0"
    ),
)

_REGISTRY: dict[tuple[Topology, str], BlueprintSpec] = {
    (spec.topology, spec.name): spec for spec in _BUILT_IN
}
#: Every blueprint, built-in and registered: a live, read-only view.
BLUEPRINTS: Mapping[tuple[Topology, str], BlueprintSpec] = MappingProxyType(_REGISTRY)


def register_blueprint(
    name: str,
    topology: Topology,
    factory: Callable[[int], nn.Module],
    description: str = "",
) -> BlueprintSpec:
    """Make `factory(channels)` germinable as `name` in slots of `topology`.

    The factory must build the same weights from the same torch seed (it is
    called under a fixed seed, from the recorded init seed), and return a
    module whose output has its input's shape. A process that replays or
    re-executes a run must register the same blueprints first. A name already
    taken for the topology is refused, so a run cannot silently change what a
    recorded blueprint id means.
    """
    if topology not in TOPOLOGIES:
        raise BlueprintError(
            f"unknown topology {topology!r} for blueprint {name!r}; known: {', '.join(TOPOLOGIES)}"
        )
    if not name or not name.replace("_", "").isalnum():
        raise BlueprintError(f"a blueprint name is letters, digits and _, got {name!r}")
    if (topology, name) in _REGISTRY:
        raise BlueprintError(f"blueprint {name!r} is already registered for topology {topology!r}")
    spec = BlueprintSpec(name, topology, factory, description)
    _REGISTRY[(topology, name)] = spec
    return spec


def blueprint_names(topology: Topology) -> list[str]:
    return sorted(name for top, name in BLUEPRINTS if top == topology)


_RNG_LOCK = threading.Lock()


def build_blueprint(
    name: str, channels: int, topology: Topology = "cnn", init_seed: int = 0
) -> nn.Module:
    """A fresh seed whose weights are a function of (name, channels, init_seed) alone."""
    spec = BLUEPRINTS.get((topology, name))
    if spec is None:
        raise UnknownBlueprint(name, topology, blueprint_names(topology))
    if channels < 1:
        raise ValueError(f"blueprint {name!r} needs at least 1 channel, got {channels}")
    # fork_rng reseeds the process-wide generator, so concurrent builds would
    # draw from each other's stream: one build at a time.
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return spec.factory(channels)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _named_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    return chain(module.named_parameters(), module.named_buffers())


def param_digest(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, to prove two seeds hold the same weights.

    Each field is length-prefixed so no two different modules can hash the same
    byte stream. The bytes are read through a uint8 view because numpy has no
    bfloat16.
    """
    return param_digests({"": module})[""]


def param_digests(modules: Mapping[str, nn.Module]) -> dict[str, str]:
    """`param_digest` of several modules, paying one device-to-host copy for all of them.

    Digesting every live seed each epoch is the costliest thing `SeedManager`
    does on a GPU: one ``.cpu()`` per tensor waits for the device each time,
    and SHA-256 of megabytes holds a core. So every tensor on a device is
    gathered into one flat byte buffer and copied once, and the modules are
    hashed side by side (hashlib releases the GIL for large buffers).
    """
    fields = {key: list(_named_tensors(module)) for key, module in modules.items()}
    raw = _host_bytes([t for named in fields.values() for _, t in named])
    views = iter(raw)
    jobs = {key: [(name, t, next(views)) for name, t in named] for key, named in fields.items()}
    if len(jobs) > 1 and sum(len(v) for *_, v in chain(*jobs.values())) >= _PARALLEL_BYTES:
        futures = {key: _hashers().submit(_sha256, job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}
    return {key: _sha256(job) for key, job in jobs.items()}


#: Below this many bytes in all, threads cost more than they save.
_PARALLEL_BYTES = 1 << 20
_POOL: list[ThreadPoolExecutor] = []


def _hashers() -> ThreadPoolExecutor:
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=4, thread_name_prefix="kasmina-digest"))
    return _POOL[0]


def _host_bytes(tensors: list[torch.Tensor]) -> list[memoryview]:
    """Each tensor's bytes on the host, in order; one copy per device for those not on the CPU."""
    out: list[memoryview | None] = [None] * len(tensors)
    on_device: dict[torch.device, list[int]] = {}
    for i, tensor in enumerate(tensors):
        if tensor.device.type == "cpu":
            out[i] = _bytes_of(tensor)
        else:
            on_device.setdefault(tensor.device, []).append(i)
    for indices in on_device.values():
        parts = [_flat_bytes(tensors[i]) for i in indices]
        flat = torch.cat(parts).cpu().numpy().data
        at = 0
        for i, part in zip(indices, parts, strict=True):
            out[i] = flat[at : at + part.numel()]
            at += part.numel()
    return [view for view in out if view is not None]


def _flat_bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    return _flat_bytes(tensor).numpy().data


def _sha256(fields: list[tuple[str, torch.Tensor, memoryview]]) -> str:
    digest = hashlib.sha256()
    for name, tensor, raw in fields:
        header = (name, str(tensor.dtype), str(tuple(tensor.shape)))
        parts: tuple[bytes | memoryview, ...] = (*(part.encode() for part in header), raw)
        for field in parts:
            digest.update(len(field).to_bytes(8, "big"))
            digest.update(field)
    return digest.hexdigest()


__all__ = [
    "BLUEPRINTS",
    "TOPOLOGIES",
    "BlueprintError",
    "BlueprintSpec",
    "Topology",
    "UnknownBlueprint",
    "blueprint_names",
    "build_blueprint",
    "group_count",
    "param_count",
    "param_digest",
    "param_digests",
    "register_blueprint",
]
