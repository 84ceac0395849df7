"""A transformer host trained with `kasmina run --device cuda` re-executes on the GPU.

Needs CUDA and skips cleanly without it (CI has no GPU); it runs on the GPU
machine. Each command is its own process, as a user runs them, so the
determinism settings `kasmina run` makes are in force from the process's
first CUDA call.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PROGRAM = Path(__file__).resolve().parents[2] / "gpu" / "transformer_program.py"
CLI = "import sys; from kasmina.cli import main; sys.exit(main())"


def kasmina(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", CLI, "--db", url, *args], capture_output=True, text=True
    )
    print(done.stdout, done.stderr)
    return done


def test_a_transformer_run_on_cuda_re_executes_there_with_no_divergence(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gpu.db'}"
    started = kasmina(url, "run", f"{PROGRAM}:main", "--device", "cuda", "--run-id", "gpu",
                      "--config", '{"epochs": 6}')  # fmt: skip
    assert started.returncode == 0, started.stderr
    verified = kasmina(url, "replay", "gpu", "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert " 0 divergences" in verified.stdout
