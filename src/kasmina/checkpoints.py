"""A program's state at the end of an epoch, as bytes, and the program put back into it.

What a resumed run needs to go on as if it had never stopped: the model's
weights with every slot's state (a `SeedSlot` carries its `SlotState` in
``state_dict``, and rebuilds its seed from it on load), the optimizer's
state and param groups (the seeds' group included, parameters by name), the
random generators kasmina seeds (Python's, numpy's, torch's, CUDA's), and
any other object the program names that has ``state_dict`` and
``load_state_dict`` (a `SeedManager` and its policy, a scheduler), or is a
``torch.Generator`` or ``random.Random``.

The bytes are read back with ``torch.load(weights_only=True)``: a
checkpoint holds tensors and plain values, never code, so a file that was
tampered with cannot run anything on load.
"""

from __future__ import annotations

import io
import random
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from kasmina.errors import KasminaError

#: Bumped when the layout below changes; an older checkpoint is refused by name.
FORMAT = 1


class CheckpointError(KasminaError):
    """A checkpoint that cannot be taken, or cannot be put back into this program."""


def capture(
    model: nn.Module,
    optimizer: Optimizer | None,
    *,
    epoch: int,
    stateful: Mapping[str, object],
) -> bytes:
    """The checkpoint's bytes."""
    names = {id(p): name for name, p in model.named_parameters()}
    groups: list[list[str]] = []
    if optimizer is not None:
        for index, group in enumerate(optimizer.param_groups):
            missing = [p for p in group["params"] if id(p) not in names]
            if missing:
                raise CheckpointError(
                    f"param group {index} of the optimizer holds {len(missing)} tensors that "
                    f"are not parameters of {type(model).__name__}"
                )
            groups.append([names[id(p)] for p in group["params"]])
    state = {
        "format": FORMAT,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "groups": groups,
        "rng": _rng_state(),
        "stateful": {name: _state_of(name, obj) for name, obj in sorted(stateful.items())},
    }
    buffer = io.BytesIO()
    torch.save(_plain(state), buffer)
    return _reproducible(buffer.getvalue())


def _plain(value: Any) -> Any:
    """`value` rebuilt so that pickling it depends on its content, not on object identity.

    Pickle writes an object seen before as a reference to it: a key string
    shared by every parameter's state in a live optimizer is one object, and
    separate objects once loaded from a checkpoint. Every string interned and
    every container new, equal states give equal bytes.
    """
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, OrderedDict):  # a state_dict, with the versions `load_state_dict` reads
        ordered = OrderedDict((_plain(k), _plain(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            ordered._metadata = _plain(value._metadata)  # type: ignore[attr-defined]
        return ordered
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _reproducible(archive: bytes) -> bytes:
    """torch's archive written again without what differs from save to save.

    ``torch.save`` stamps each archive with a serialization id of its own, so
    the same state saved twice would have two digests. The same entries,
    stored in the same order with a fixed date, make the digest a function of
    the state alone: a resumed run and an uninterrupted one record the same.
    """
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(archive)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target,
    ):
        for info in source.infolist():
            if not info.filename.endswith("/.data/serialization_id"):
                entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
                target.writestr(entry, source.read(info))
    return out.getvalue()


def state_differences(recorded: bytes, replayed: bytes) -> list[str]:
    """Where two checkpoints differ, as paths into their state, the policies' own state aside.

    Re-execution replaces a run's policy with its recorded decisions, so a
    checkpoint it takes cannot hold the policy's own state (an RL policy's
    weights, a heuristic's generator) and its digest differs from the
    recorded one. Everything else (weights, optimizer, generators, the
    manager and the program's own objects) must be equal, tensor by tensor.
    """
    a, b = _read(recorded), _read(replayed)
    for state in (a, b):
        for value in state["stateful"].values():
            if isinstance(value, dict):
                value.pop("policy", None)
    found: list[str] = []
    _compare("", a, b, found)
    return found


def _compare(path: str, a: Any, b: Any, found: list[str]) -> None:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key in a and key in b:
                _compare(f"{path}/{key}", a[key], b[key], found)
            else:
                found.append(f"{path}/{key}")
        return
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _compare(f"{path}/{index}", x, y, found)
        return
    else:
        same = type(a) is type(b) and a == b
    if not same:
        found.append(path or "/")


def _read(data: bytes) -> dict[str, Any]:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file that is not a checkpoint
        raise CheckpointError(f"the checkpoint cannot be read: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"the checkpoint is not a kasmina checkpoint of format {FORMAT}")
    return state


def restore(
    data: bytes,
    model: nn.Module,
    optimizer: Optimizer | None,
    *,
    stateful: Mapping[str, object],
    partial: bool = False,
) -> int:
    """Put `model`, `optimizer`, the generators and `stateful` into the checkpoint; its epoch.

    A program going on from the checkpoint must take all of it back; with
    `partial` (looking at a run's weights) the optimizer and any of the
    named objects may be left out.
    """
    state = _read(data)
    saved = state["stateful"]
    if partial and set(stateful) <= set(saved):
        saved = {name: saved[name] for name in stateful}
    if sorted(saved) != sorted(stateful):
        raise CheckpointError(
            f"the checkpoint holds the state of {sorted(saved)}, and restore was given "
            f"{sorted(stateful)}: pass the same names to checkpoint and restore"
        )
    model.load_state_dict(state["model"])
    if (optimizer is None) != (state["optimizer"] is None) and not (partial and optimizer is None):
        have = "no optimizer" if optimizer is None else "an optimizer"
        raise CheckpointError(f"restore was given {have}, unlike the checkpoint")
    if optimizer is not None:
        _regroup(model, optimizer, state["groups"], state["optimizer"])
        optimizer.load_state_dict(state["optimizer"])
    for name, obj in sorted(stateful.items()):
        _load_state(name, obj, saved[name])
    _set_rng_state(state["rng"])
    return int(state["epoch"])


def _regroup(
    model: nn.Module, optimizer: Optimizer, groups: list[list[str]], saved: Mapping[str, Any]
) -> None:
    """Give the optimizer the checkpoint's param groups, parameters in the checkpoint's order.

    A seeds' group made while the run trained is made again here, with its
    recorded options, so the optimizer's state maps onto the same tensors.
    """
    params = dict(model.named_parameters())
    unknown = sorted({n for g in groups for n in g} - set(params))
    if unknown:
        raise CheckpointError(f"the checkpoint's optimizer holds parameters {unknown[:3]} "
                              f"that {type(model).__name__} does not have")  # fmt: skip
    current = optimizer.param_groups
    if len(current) > len(groups):
        raise CheckpointError(
            f"the optimizer has {len(current)} param groups, the checkpoint {len(groups)}"
        )
    for index, names in enumerate(groups):
        tensors = [params[n] for n in names]
        if index < len(current):
            current[index]["params"] = tensors
        else:
            options = {k: v for k, v in saved["param_groups"][index].items() if k != "params"}
            optimizer.add_param_group({"params": tensors, **options})


def _state_of(name: str, obj: object) -> object:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, random.Random):
        return obj.getstate()
    state_dict = getattr(obj, "state_dict", None)
    if callable(state_dict) and callable(getattr(obj, "load_state_dict", None)):
        return state_dict()
    raise CheckpointError(
        f"{name}={type(obj).__name__} has no state_dict/load_state_dict, and is not a "
        "torch.Generator or random.Random: kasmina cannot checkpoint it"
    )


def _load_state(name: str, obj: object, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif isinstance(obj, random.Random):
        obj.setstate(_as_tuple(state))
    else:
        _state_of(name, obj)  # the same refusal for an object that cannot take it
        obj.load_state_dict(state)  # type: ignore[attr-defined]


def _as_tuple(state: Any) -> Any:
    return tuple(_as_tuple(v) for v in state) if isinstance(state, list | tuple) else state


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        kind, keys, pos, has_gauss, gauss = numpy.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, gauss]
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    numpy = sys.modules.get("numpy")
    if numpy is not None and "numpy" in state:
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        numpy.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


__all__ = ["FORMAT", "CheckpointError", "capture", "restore"]
