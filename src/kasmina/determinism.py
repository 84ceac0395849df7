"""Determinism: the settings that make a run repeat bit for bit, and a record of them.

What kasmina promises. A program re-executed with the same code, config and
recorded seeds, on the same torch build, the same kind of processor and the
same thread count, inside `deterministic`, produces the same events and the
same parameter digests, bit for bit. On CPU that holds with no further care:
PyTorch's CPU kernels split work across a fixed number of threads in a fixed
way. On CUDA it holds for one GPU model (one architecture and number of
multiprocessors) with one CUDA and cuDNN version, because `deterministic`
makes every operation that has a deterministic implementation use it, turns
cuDNN's benchmarking off, and makes the operations that have none raise
instead of silently varying.

What it cannot promise. Anything that changes how a sum is split or which
kernel runs changes the last bits, and training turns last bits into
different decisions: another thread count, another torch, MKL or oneDNN
build, another processor instruction set (AVX2 against AVX-512), another GPU
model, CUDA or cuDNN version, or TF32 switched on for float32 matrix products
or convolutions. TF32 is repeatable on one GPU but not comparable with
hardware that lacks it, so `deterministic` records it and leaves it alone.
Those facts are recorded by `settings` and compared by `differences`, so a
re-execution that cannot be bitwise says why before it compares.

The settings are process-wide (torch's flags and an environment variable):
`deterministic` sets them for the duration of a ``with`` block and puts each
back afterwards; it is not a per-thread switch.

``CUBLAS_WORKSPACE_CONFIG`` is read when a cuBLAS workspace is first made
(the first CUDA matrix product of the process), so `deterministic` must be
entered before that: set after it, the variable changes nothing for the
handles that exist. Recent PyTorch gives every stream its own workspace and
no longer insists on the variable; older releases raise on some CUDA matrix
products in deterministic mode without it. Setting it costs a little GPU
memory and is harmless either way.

This module imports without torch: it reads torch from `sys.modules`, and
only `deterministic` imports it (when it is installed).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kasmina.canonical import Json
    from kasmina.events import RunStarted

#: The environment variable cuBLAS reads for its workspace, and the value set when unset.
CUBLAS_WORKSPACE_CONFIG = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_WORKSPACE_DEFAULT = ":4096:8"

#: Where `RunStarted.environment` holds `settings()`.
ENVIRONMENT_KEY = "determinism"

#: The keys `settings` gives without torch loaded (``device`` only when named).
MACHINE_KEYS = ("cublas_workspace_config", "cpu_model", "device")

#: The keys it adds once torch is imported.
TORCH_KEYS = (
    "deterministic_algorithms",
    "warn_only",
    "fill_uninitialized_memory",
    "cudnn_deterministic",
    "cudnn_benchmark",
    "num_threads",
    "num_interop_threads",
    "float32_matmul_precision",
    "cuda_matmul_allow_tf32",
    "cudnn_allow_tf32",
    "cpu_capability",
    "mkl",
    "onednn",
    "cuda",
    "cudnn",
    "device_name",
)


@contextmanager
def deterministic(
    enabled: bool = True, *, warn_only: bool = False, device: str | None = None
) -> Iterator[dict[str, Json]]:
    """PyTorch's determinism rules for the block; yields `settings(device)` as in force inside.

    Sets ``torch.use_deterministic_algorithms(True, warn_only=warn_only)``
    (by default an operation with no deterministic implementation raises),
    ``torch.backends.cudnn.deterministic = True``,
    ``torch.backends.cudnn.benchmark = False`` and, when it is unset,
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (a value of the user's own is left
    alone). Every one is put back on the way out, also when the block raises.
    With ``enabled=False`` it changes nothing and only reports.
    """
    if not enabled:
        yield settings(device)
        return
    set_variable = CUBLAS_WORKSPACE_CONFIG not in os.environ
    if set_variable:
        os.environ[CUBLAS_WORKSPACE_CONFIG] = CUBLAS_WORKSPACE_DEFAULT
    try:
        torch = _import_torch()
        if torch is None:
            yield settings(device)
            return
        cudnn = torch.backends.cudnn
        saved = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            cudnn.deterministic,
            cudnn.benchmark,
        )
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
        cudnn.deterministic, cudnn.benchmark = True, False
        try:
            yield settings(device)
        finally:
            mode, only_warn, cudnn.deterministic, cudnn.benchmark = saved
            torch.use_deterministic_algorithms(mode, warn_only=only_warn)
    finally:
        if set_variable:
            os.environ.pop(CUBLAS_WORKSPACE_CONFIG, None)


def settings(device: str | None = None) -> dict[str, Json]:
    """What is in force now, as JSON: what `RunStarted.environment` records under "determinism".

    `device` is the device the run computes on ("cpu", "cuda", "cuda:1"); it
    is recorded as given, names the GPU that ``device_name`` describes, and
    is left out when not given. Without torch imported only the machine's
    facts are given (`MACHINE_KEYS`); torch's (`TORCH_KEYS`) follow once it
    is, with None for what this build or machine lacks (no GPU, no MKL).
    """
    out: dict[str, Json] = {
        "cublas_workspace_config": os.environ.get(CUBLAS_WORKSPACE_CONFIG),
        "cpu_model": _cpu_model(),
    }
    if device is not None:
        out["device"] = device
    torch = sys.modules.get("torch")
    if torch is None:
        return out
    gpu = bool(torch.cuda.is_available())
    libraries = torch.__config__.show()
    out |= {
        "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
        "warn_only": bool(torch.is_deterministic_algorithms_warn_only_enabled()),
        "fill_uninitialized_memory": _fill_uninitialized_memory(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "num_threads": int(torch.get_num_threads()),
        "num_interop_threads": int(torch.get_num_interop_threads()),
        "float32_matmul_precision": str(torch.get_float32_matmul_precision()),
        "cuda_matmul_allow_tf32": _flag(lambda: torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": _flag(lambda: torch.backends.cudnn.allow_tf32),
        "cpu_capability": _cpu_capability(torch),
        "mkl": _version(r"Math Kernel Library Version ([\w.]+)", libraries),
        "onednn": _version(r"MKL-DNN v([\w.]+)", libraries),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if gpu else None,
        "device_name": torch.cuda.get_device_name(_gpu_index(device)) if gpu else None,
    }
    return out


def recorded_settings(started: RunStarted) -> dict[str, object]:
    """What a `RunStarted` recorded, in `settings()`'s keys, for `differences`.

    Runs recorded before `settings` existed hold some of these facts
    elsewhere (the thread count and the deterministic flag as fields, CUDA
    and the device flat in ``environment``); they are read from there, and
    what no run of that age recorded is simply missing.
    """
    environment = dict(started.environment)
    nested = environment.pop(ENVIRONMENT_KEY, None)
    out: dict[str, object] = dict(environment)
    if isinstance(nested, Mapping):
        out |= nested
    # The fields say what the run used; the settings were taken before it set its threads.
    if started.num_threads is not None:
        out["num_threads"] = started.num_threads
    if started.deterministic is not None:
        out["deterministic_algorithms"] = started.deterministic
    return out


def differences(recorded: Mapping[str, object], now: Mapping[str, object]) -> list[str]:
    """One line for each recorded fact that differs now, in a fixed order; [] when none does.

    A fact missing from either side (a run recorded before kasmina kept it,
    torch not loaded) is not compared. The device line compares where the
    computation ran: "cpu", or the GPU with its CUDA and cuDNN versions.
    When both sides are known to have run off CUDA, the facts that only
    CUDA reads (cuDNN's and cuBLAS's settings, TF32) are not compared.
    """
    lines = []
    where_then, where_now = _where(recorded), _where(now)
    known = where_then is not None and where_now is not None
    if known and where_then != where_now:
        lines.append(f"recorded on {where_then}, re-executed on {where_now}")
    off_cuda = known and not (_on_cuda(recorded) or _on_cuda(now))
    for key, template in _LINES.items():
        if off_cuda and key in _CUDA_ONLY:
            continue
        if key in recorded and key in now and recorded[key] != now[key]:
            then, here = _word(key, recorded[key]), _word(key, now[key])
            lines.append(template.format(then=then, now=here))
    return lines


#: How each fact reads when it differs, in the order the lines are given.
_LINES: dict[str, str] = {
    "num_threads": "recorded with {then} threads, re-executed with {now}",
    "num_interop_threads": "recorded with {then} inter-op threads, re-executed with {now}",
    "deterministic_algorithms": (
        "recorded with deterministic algorithms {then}, re-executed with them {now}"
    ),
    "warn_only": ("recorded with nondeterministic operations {then}, re-executed with them {now}"),
    "fill_uninitialized_memory": (
        "recorded with uninitialized memory {then}, re-executed with it {now}"
    ),
    "cudnn_deterministic": "recorded with cudnn.deterministic {then}, re-executed with it {now}",
    "cudnn_benchmark": "recorded with cudnn.benchmark {then}, re-executed with it {now}",
    "cublas_workspace_config": (
        "recorded with CUBLAS_WORKSPACE_CONFIG {then}, re-executed with it {now}"
    ),
    "float32_matmul_precision": (
        "recorded with float32 matmul precision {then}, re-executed with {now}"
    ),
    "cuda_matmul_allow_tf32": (
        "recorded with TF32 for CUDA matmuls {then}, re-executed with it {now}"
    ),
    "cudnn_allow_tf32": (
        "recorded with TF32 for cuDNN convolutions {then}, re-executed with it {now}"
    ),
    "cpu_capability": "recorded with CPU kernels for {then}, re-executed with {now}",
    "cpu_model": "recorded on the CPU {then}, re-executed on {now}",
    "mkl": "recorded with MKL {then}, re-executed with {now}",
    "onednn": "recorded with oneDNN {then}, re-executed with {now}",
}

#: Facts that change nothing unless the run computes on CUDA.
_CUDA_ONLY = frozenset(
    {
        "cudnn_deterministic",
        "cudnn_benchmark",
        "cublas_workspace_config",
        "cuda_matmul_allow_tf32",
        "cudnn_allow_tf32",
    }
)

#: Words for a boolean fact, where "on"/"off" would not read.
_BOOLEAN_WORDS: dict[str, tuple[str, str]] = {
    "warn_only": ("only warning", "raising"),
    "fill_uninitialized_memory": ("filled", "left as it was"),
}


#: Facts whose values are quoted: free text rather than a name or a number.
_QUOTED = frozenset({"cublas_workspace_config", "cpu_model", "float32_matmul_precision"})


def _word(key: str, value: object) -> str:
    if isinstance(value, bool):
        yes, no = _BOOLEAN_WORDS.get(key, ("on", "off"))
        return yes if value else no
    if value is None:
        return "unset" if key == "cublas_workspace_config" else "none"
    if isinstance(value, str) and key in _QUOTED:
        return repr(value)
    return str(value)


def _on_cuda(facts: Mapping[str, object]) -> bool:
    device = facts.get("device")
    return isinstance(device, str) and device.startswith("cuda")


def _where(facts: Mapping[str, object]) -> str | None:
    """ "cpu", or the GPU with its CUDA and cuDNN versions; None when the device is unknown."""
    device = facts.get("device")
    if not isinstance(device, str):
        return None
    if not _on_cuda(facts):
        return device
    name = facts.get("device_name") or "a CUDA device"
    versions = [f"{label} {facts[key]}" for key, label in _GPU_STACK if facts.get(key)]
    return f"{name} ({', '.join(versions)})" if versions else str(name)


_GPU_STACK = (("cuda", "CUDA"), ("cudnn", "cuDNN"))


def _import_torch() -> ModuleType | None:
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


def _gpu_index(device: str | None) -> int:
    if device and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return 0


def _flag(read: Callable[[], object]) -> bool | None:
    """A legacy TF32 flag; None where this torch refuses to say (its newer precision API in use)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(read())
    except (AttributeError, RuntimeError):
        return None


def _fill_uninitialized_memory() -> bool | None:
    try:
        module = importlib.import_module("torch.utils.deterministic")
    except ImportError:
        return None
    value = getattr(module, "fill_uninitialized_memory", None)
    return None if value is None else bool(value)


def _cpu_capability(torch: ModuleType) -> str | None:
    cpu = getattr(torch.backends, "cpu", None)
    read = getattr(cpu, "get_cpu_capability", None)
    return None if read is None else str(read())


def _version(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text)
    return match.group(1) if match else None


@cache
def _cpu_model() -> str | None:
    """The processor's model name (Linux); None where the system does not say."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"^(?:model name|Model|Hardware)\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


__all__ = [
    "CUBLAS_WORKSPACE_CONFIG",
    "CUBLAS_WORKSPACE_DEFAULT",
    "ENVIRONMENT_KEY",
    "MACHINE_KEYS",
    "TORCH_KEYS",
    "deterministic",
    "differences",
    "recorded_settings",
    "settings",
]
