"""The public names of `kasmina.replay`, each checked in a fresh interpreter.

A fresh interpreter, because inside the test session other modules have long
imported the submodules, which hides how the lazy names behave for a user.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("name", ["restore", "live_state", "reexecute"])
def test_lazy_names_import_in_a_fresh_interpreter(name: str) -> None:
    result = python(f"from kasmina.replay import {name}\nassert callable({name}), {name}\n")
    assert result.returncode == 0, result.stderr[-1500:]


def test_replay_restore_is_the_function_once_its_module_is_imported() -> None:
    result = python(
        "import kasmina.replay\n"
        "from kasmina.replay.live import check_live\n"
        "from kasmina.replay import restore\n"
        "assert callable(restore) and restore.__name__ == 'restore', restore\n"
        "assert callable(kasmina.replay.restore), kasmina.replay.restore\n"
    )
    assert result.returncode == 0, result.stderr[-1500:]


def test_the_fold_needs_no_torch(tmp_path: Path) -> None:
    result = python(
        "import sys\n"
        "from kasmina.ledger import Ledger\n"
        f"with Ledger.open('sqlite:///{tmp_path / 'x.db'}') as ledger:\n"
        "    run = ledger.start_run('no-torch', seed=1)\n"
        "    run.finish()\n"
        "    state = ledger.replay(run.run_id)\n"
        "    assert state.run.status == 'completed' and state.run.events == 2\n"
        "print('torch' in sys.modules)\n"
    )
    assert result.returncode == 0, result.stderr[-1500:]
    assert result.stdout.strip() == "False"
