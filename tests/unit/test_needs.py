"""A tool the suite needs and the machine lacks: a skip on a laptop, a failure under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
USES_A_MISSING_TOOL = """
from needs import tool

def test_it():
    tool("kasmina-no-such-package", "kasmina-no-such-tool")
"""


def _outcome(tmp_path: Path, required: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_uses_tool.py").write_text(USES_A_MISSING_TOOL)
    env = {k: v for k, v in os.environ.items() if k != "KASMINA_REQUIRE_PG"}
    env["PYTHONPATH"] = str(TESTS)
    if required is not None:
        env["KASMINA_REQUIRE_PG"] = required
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rsf",
            "-p",
            "no:cacheprovider",
            "test_uses_tool.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_missing_tool_fails_under_kasmina_require_pg(tmp_path: Path) -> None:
    proc = _outcome(tmp_path, "1")
    assert proc.returncode == 1, proc.stdout
    assert "1 failed" in proc.stdout
    assert (
        "KASMINA_REQUIRE_PG=1 but no kasmina-no-such-tool on PATH (install the Debian "
        "package kasmina-no-such-package; .ci/run does)"
    ) in proc.stdout


@pytest.mark.parametrize("required", [None, "0"])
def test_a_missing_tool_skips_otherwise(tmp_path: Path, required: str | None) -> None:
    proc = _outcome(tmp_path, required)
    assert proc.returncode == 0, proc.stdout
    assert "1 skipped" in proc.stdout and "no kasmina-no-such-tool on PATH" in proc.stdout
