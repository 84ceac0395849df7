"""`kasmina.determinism`: the rules set for a block and put back, what is in force, and
the lines that say which recorded fact differs.

Tests set the flags they start from; the `torch_flags` fixture puts torch's
process-wide flags back after each, since other tests in the process share them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator

import pytest
import torch

from kasmina.determinism import (
    CUBLAS_WORKSPACE_CONFIG,
    CUBLAS_WORKSPACE_DEFAULT,
    ENVIRONMENT_KEY,
    MACHINE_KEYS,
    TORCH_KEYS,
    deterministic,
    differences,
    recorded_settings,
    settings,
)
from kasmina.events import RunStarted

Flags = tuple[bool, bool, bool, bool]


def flags() -> Flags:
    cudnn = torch.backends.cudnn
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )


def set_flags(value: Flags) -> None:
    mode, warn_only, cudnn_deterministic, benchmark = value
    torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    torch.backends.cudnn.deterministic = cudnn_deterministic
    torch.backends.cudnn.benchmark = benchmark


@pytest.fixture(autouse=True)
def torch_flags(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No CUBLAS_WORKSPACE_CONFIG unless a test sets one; the process's flags put back after
    (tests set their own starting flags)."""
    monkeypatch.delenv(CUBLAS_WORKSPACE_CONFIG, raising=False)
    before = flags()
    yield
    set_flags(before)


def put_without_a_deterministic_kernel() -> None:
    torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))


# -- deterministic() -----------------------------------------------------------------


@pytest.mark.parametrize(
    "before",
    [(False, False, False, True), (True, True, True, False), (False, False, True, True)],
    ids=["all-off-benchmarking", "on-warn-only", "cudnn-only"],
)
def test_sets_every_rule_for_the_block_and_puts_each_back(before: Flags) -> None:
    set_flags(before)
    with deterministic() as inside:
        assert flags() == (True, False, True, False)
        assert os.environ[CUBLAS_WORKSPACE_CONFIG] == CUBLAS_WORKSPACE_DEFAULT == ":4096:8"
        assert inside == settings()
        assert inside["deterministic_algorithms"] is True
        assert inside["warn_only"] is False
        assert inside["cudnn_deterministic"] is True
        assert inside["cudnn_benchmark"] is False
        assert inside["cublas_workspace_config"] == ":4096:8"
    assert flags() == before
    assert CUBLAS_WORKSPACE_CONFIG not in os.environ


def test_a_users_own_workspace_config_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CUBLAS_WORKSPACE_CONFIG, ":16:8")
    with deterministic() as inside:
        assert os.environ[CUBLAS_WORKSPACE_CONFIG] == ":16:8"
        assert inside["cublas_workspace_config"] == ":16:8"
    assert os.environ[CUBLAS_WORKSPACE_CONFIG] == ":16:8"


def test_everything_is_put_back_when_the_block_raises() -> None:
    before = (False, False, False, True)
    set_flags(before)
    with pytest.raises(RuntimeError, match="put_ does not have a deterministic implementation"):
        with deterministic():
            put_without_a_deterministic_kernel()
    assert flags() == before
    assert CUBLAS_WORKSPACE_CONFIG not in os.environ
    put_without_a_deterministic_kernel()  # allowed again once the block is left


def test_warn_only_warns_where_the_default_raises() -> None:
    with deterministic(warn_only=True) as inside, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        put_without_a_deterministic_kernel()
    assert inside["warn_only"] is True
    assert any("deterministic implementation" in str(w.message) for w in caught)


def test_blocks_nest_and_each_restores_what_it_found() -> None:
    set_flags((False, False, False, True))
    with deterministic():
        with deterministic(warn_only=True):
            assert flags() == (True, True, True, False)
        assert flags() == (True, False, True, False)
        assert os.environ[CUBLAS_WORKSPACE_CONFIG] == CUBLAS_WORKSPACE_DEFAULT
    assert flags() == (False, False, False, True)
    assert CUBLAS_WORKSPACE_CONFIG not in os.environ


def test_disabled_changes_nothing_and_still_reports() -> None:
    set_flags((False, False, False, True))
    before = settings()
    with deterministic(enabled=False) as inside:
        assert inside == before == settings()
        assert flags() == (False, False, False, True)
        assert CUBLAS_WORKSPACE_CONFIG not in os.environ
        put_without_a_deterministic_kernel()
    assert settings() == before


# -- settings() ------------------------------------------------------------------------


def test_settings_has_every_key_and_is_json() -> None:
    now = settings()
    assert set(now) == (set(MACHINE_KEYS) - {"device"}) | set(TORCH_KEYS)
    assert set(settings("cuda:0")) == set(now) | {"device"}
    assert settings("cuda:0")["device"] == "cuda:0"
    assert json.loads(json.dumps(now, allow_nan=False)) == now


def test_settings_reflects_what_is_in_force() -> None:
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    benchmark = torch.backends.cudnn.benchmark
    try:
        torch.set_num_threads(1)
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
        now = settings("cpu")
    finally:
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.benchmark = benchmark
    assert now["num_threads"] == 1
    assert now["float32_matmul_precision"] == "high"
    assert now["cudnn_benchmark"] is True
    assert now["num_interop_threads"] == torch.get_num_interop_threads()
    assert now["cuda"] == torch.version.cuda
    assert now["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    if not torch.cuda.is_available():
        assert now["device_name"] is None and now["cudnn"] is None
    assert settings()["num_threads"] == threads


def test_without_torch_the_module_imports_and_reports_the_machine() -> None:
    """torch blocked in a fresh interpreter: settings() gives the machine's keys only."""
    code = """
import json, os, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from kasmina.determinism import deterministic, settings
os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
with deterministic() as inside:
    pass
print(json.dumps([sorted(settings("cpu")), inside["cublas_workspace_config"],
                  "CUBLAS_WORKSPACE_CONFIG" in os.environ]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    keys, inside, left_set = json.loads(done.stdout)
    assert keys == sorted(MACHINE_KEYS)
    assert inside == CUBLAS_WORKSPACE_DEFAULT
    assert left_set is False


# -- differences() ---------------------------------------------------------------------

CPU_RUN: dict[str, object] = {
    "cublas_workspace_config": ":4096:8",
    "cpu_model": "Intel(R) Xeon(R) Processor",
    "device": "cpu",
    "deterministic_algorithms": True,
    "warn_only": False,
    "fill_uninitialized_memory": True,
    "cudnn_deterministic": True,
    "cudnn_benchmark": False,
    "num_threads": 2,
    "num_interop_threads": 2,
    "float32_matmul_precision": "highest",
    "cuda_matmul_allow_tf32": False,
    "cudnn_allow_tf32": True,
    "cpu_capability": "AVX512",
    "mkl": "2024.2",
    "onednn": "3.12.0",
    "cuda": None,
    "cudnn": None,
    "device_name": None,
}
GPU_RUN = {**CPU_RUN, "device": "cuda", "device_name": "NVIDIA H200", "cuda": "12.8"}
GPU_RUN["cudnn"] = 91002


def test_equal_recordings_have_no_differences() -> None:
    assert differences(CPU_RUN, dict(CPU_RUN)) == []
    assert differences(GPU_RUN, dict(GPU_RUN)) == []
    assert differences(settings("cpu"), settings("cpu")) == []


@pytest.mark.parametrize(
    ("key", "now", "line"),
    [
        ("num_threads", 16, "recorded with 2 threads, re-executed with 16"),
        ("num_interop_threads", 8, "recorded with 2 inter-op threads, re-executed with 8"),
        (
            "deterministic_algorithms",
            False,
            "recorded with deterministic algorithms on, re-executed with them off",
        ),
        (
            "warn_only",
            True,
            "recorded with nondeterministic operations raising, re-executed with them only warning",
        ),
        (
            "fill_uninitialized_memory",
            False,
            "recorded with uninitialized memory filled, re-executed with it left as it was",
        ),
        (
            "cudnn_deterministic",
            False,
            "recorded with cudnn.deterministic on, re-executed with it off",
        ),
        ("cudnn_benchmark", True, "recorded with cudnn.benchmark off, re-executed with it on"),
        (
            "cublas_workspace_config",
            None,
            "recorded with CUBLAS_WORKSPACE_CONFIG ':4096:8', re-executed with it unset",
        ),
        (
            "float32_matmul_precision",
            "high",
            "recorded with float32 matmul precision 'highest', re-executed with 'high'",
        ),
        (
            "cuda_matmul_allow_tf32",
            True,
            "recorded with TF32 for CUDA matmuls off, re-executed with it on",
        ),
        (
            "cudnn_allow_tf32",
            False,
            "recorded with TF32 for cuDNN convolutions on, re-executed with it off",
        ),
        ("cpu_capability", "AVX2", "recorded with CPU kernels for AVX512, re-executed with AVX2"),
        (
            "cpu_model",
            "AMD EPYC 9654",
            "recorded on the CPU 'Intel(R) Xeon(R) Processor', re-executed on 'AMD EPYC 9654'",
        ),
        ("mkl", None, "recorded with MKL 2024.2, re-executed with none"),
        ("onednn", "3.5.3", "recorded with oneDNN 3.12.0, re-executed with 3.5.3"),
    ],
)
def test_each_differing_fact_gets_its_own_line(key: str, now: object, line: str) -> None:
    assert differences(GPU_RUN, {**GPU_RUN, key: now}) == [line]
    unknown_device = {k: v for k, v in CPU_RUN.items() if k != "device"}
    assert differences(unknown_device, {**unknown_device, key: now}) == [line]


CUDA_ONLY = [
    "cudnn_deterministic",
    "cudnn_benchmark",
    "cublas_workspace_config",
    "cuda_matmul_allow_tf32",
    "cudnn_allow_tf32",
]


@pytest.mark.parametrize("key", CUDA_ONLY)
def test_what_only_cuda_reads_is_not_compared_for_a_run_on_the_cpu(key: str) -> None:
    value = CPU_RUN[key]
    other = "other" if isinstance(value, str) or value is None else not value
    assert differences(CPU_RUN, {**CPU_RUN, key: other}) == []
    assert differences(CPU_RUN, {**CPU_RUN, key: other, "device": "cuda"}) != []


def test_the_device_line_names_the_gpu_and_its_cuda_stack() -> None:
    assert differences(GPU_RUN, CPU_RUN) == [
        "recorded on NVIDIA H200 (CUDA 12.8, cuDNN 91002), re-executed on cpu"
    ]
    newer = {**GPU_RUN, "device_name": "NVIDIA H100 80GB HBM3", "cuda": "13.0"}
    assert differences(GPU_RUN, newer) == [
        "recorded on NVIDIA H200 (CUDA 12.8, cuDNN 91002), "
        "re-executed on NVIDIA H100 80GB HBM3 (CUDA 13.0, cuDNN 91002)"
    ]


def test_gpu_facts_do_not_matter_to_a_run_on_the_cpu() -> None:
    on_a_gpu_machine = {**GPU_RUN, "device": "cpu"}
    assert differences(CPU_RUN, on_a_gpu_machine) == []


def test_several_differences_come_in_a_fixed_order() -> None:
    now = {**CPU_RUN, "onednn": "3.5.3", "num_threads": 1, "device": "cuda", "cuda": "12.8"}
    assert differences(CPU_RUN, now) == [
        "recorded on cpu, re-executed on a CUDA device (CUDA 12.8)",
        "recorded with 2 threads, re-executed with 1",
        "recorded with oneDNN 3.12.0, re-executed with 3.5.3",
    ]


def test_facts_missing_from_either_side_are_not_compared() -> None:
    assert differences({}, CPU_RUN) == []
    assert differences(CPU_RUN, {}) == []
    old = {"cuda": None, "cudnn": None, "device_name": None, "device": "cpu"}
    assert differences(old, CPU_RUN) == []
    assert differences({"num_threads": 4}, CPU_RUN) == [
        "recorded with 4 threads, re-executed with 2"
    ]


# -- recorded_settings() -----------------------------------------------------------------


def started(**fields: object) -> RunStarted:
    return RunStarted.model_validate(
        {"name": "r", "seed": 1, "kasmina_version": "0.1.0", "python_version": "3.11", **fields}
    )


def test_an_old_run_is_read_from_its_fields_and_flat_environment() -> None:
    old = started(
        num_threads=4,
        deterministic=True,
        environment={
            "cublas_workspace_config": None,
            "cuda": "12.8",
            "cuda_available": True,
            "cudnn": 91002,
            "device_name": "NVIDIA H200",
            "device": "cuda",
        },
    )
    then = recorded_settings(old)
    assert then["num_threads"] == 4 and then["deterministic_algorithms"] is True
    assert differences(then, CPU_RUN) == [
        "recorded on NVIDIA H200 (CUDA 12.8, cuDNN 91002), re-executed on cpu",
        "recorded with 4 threads, re-executed with 2",
        "recorded with CUBLAS_WORKSPACE_CONFIG unset, re-executed with it ':4096:8'",
    ]
    assert differences(recorded_settings(started()), CPU_RUN) == []


def test_a_new_run_is_read_from_its_determinism_record() -> None:
    set_flags((False, False, False, False))
    with deterministic() as inside:
        record = started(
            num_threads=inside["num_threads"],
            deterministic=True,
            environment={"device": "cpu", ENVIRONMENT_KEY: inside},
        )
    then = recorded_settings(record)
    assert then == {**inside, "device": "cpu"}
    assert differences(then, {**settings("cpu"), **inside}) == []
    assert differences(then, settings("cpu")) == [
        "recorded with deterministic algorithms on, re-executed with them off",
    ]
    assert differences(then, settings("cuda")) == [
        "recorded on cpu, re-executed on " + where_now(settings("cuda")),
        "recorded with deterministic algorithms on, re-executed with them off",
        "recorded with cudnn.deterministic on, re-executed with it off",
        "recorded with CUBLAS_WORKSPACE_CONFIG ':4096:8', re-executed with it unset",
    ]


def test_the_thread_count_the_run_used_wins_over_the_settings_taken_before_it_set_it() -> None:
    record = started(
        num_threads=1, environment={ENVIRONMENT_KEY: {**settings("cpu"), "num_threads": 2}}
    )
    assert recorded_settings(record)["num_threads"] == 1
    assert differences(recorded_settings(record), {**settings("cpu"), "num_threads": 1}) == []


def where_now(now: dict[str, object]) -> str:
    if now["device_name"] is None:
        return f"a CUDA device (CUDA {now['cuda']})" if now["cuda"] else "a CUDA device"
    return f"{now['device_name']} (CUDA {now['cuda']}, cuDNN {now['cudnn']})"
