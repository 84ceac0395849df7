"""README and docs examples are executed, so they cannot rot.

Every Python block, and every ``kasmina`` line of an ``sh`` block, is run in
the order of the page, twice in one folder; a command must exit 0, unless
its comment says ``# exits N``; ``NAME=value`` words before ``kasmina`` set
the environment of that one command, as a shell would.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = str(Path(sys.executable).with_name("kasmina"))
#: A command line of an sh block: `kasmina ...`, maybe after NAME=value environment settings.
COMMAND = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*=\S* )*kasmina ")
#: A comment ``# exits N`` on a command line: the page shows it failing with status N.
EXITS = re.compile(r"\bexits (\d+)")


def blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


def write_files(path: Path, folder: Path) -> None:
    """Blocks fenced as ```python file=NAME are files the page's commands use."""
    for name, text in re.findall(r"```python file=([\w.-]+)\n(.*?)```", path.read_text(), re.S):
        (folder / name).write_text(text)


def _docs_with(lang: str) -> list[Path]:
    return [p for p in DOCS if blocks(p, lang)]


def run_page(path: Path, folder: Path) -> None:
    """Every example of the page in the order a reader meets it: each Python block,
    and each command of an sh block, where it stands on the page."""
    write_files(path, folder)
    for lang, code in re.findall(r"```(python|sh)\n(.*?)```", path.read_text(), flags=re.S):
        if lang == "python":
            proc = subprocess.run(
                [sys.executable, "-c", code],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, f"{path.name}:\n{proc.stderr}"
            continue
        for line in code.splitlines():
            if COMMAND.match(line):
                run_command(path, folder, line)


def run_command(path: Path, folder: Path, line: str) -> None:
    text, _, comment = line.partition(" #")
    words = shlex.split(text)
    env = dict(os.environ)
    while words[0] != "kasmina":  # NAME=value before the command, as a shell reads it
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    argv = words
    expected = int(m.group(1)) if (m := EXITS.search(comment)) else 0
    proc = subprocess.run(
        [BIN, *argv[1:]], cwd=folder, capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == expected, f"{path.name}: {line}\n{proc.stderr}"
    if expected:
        return  # a failure the page shows on purpose: its output is on stderr
    if "-o" in argv:  # a file is the output; stdout stays clean for pipes
        written = folder / argv[argv.index("-o") + 1]
        assert written.stat().st_size > 0, line
    else:
        assert proc.stdout.strip(), line


@pytest.mark.parametrize(
    "path", sorted({*_docs_with("python"), *_docs_with("sh")}), ids=lambda p: p.name
)
def test_examples_run_and_run_again(path: Path, tmp_path: Path) -> None:
    """A reader who runs a page's examples twice in one folder (the second time after
    an edit, say) finds every one working again: no run id the first time took, no
    name that now names two runs, no file refused because it exists."""
    run_page(path, tmp_path)
    run_page(path, tmp_path)


@pytest.mark.parametrize("path", _docs_with("sh"), ids=lambda p: p.name)
def test_every_page_with_commands_runs_some(path: Path) -> None:
    assert any(COMMAND.match(line) for block in blocks(path, "sh") for line in block.splitlines())
