"""What every command shares: -h, --version, flags shown as flags, completion offered."""

from __future__ import annotations

from importlib import metadata

import pytest

from kasmina.cli import main


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"kasmina {metadata.version('kasmina')}\n"


@pytest.mark.parametrize("command", [[], ["runs"], ["history"], ["db", "upgrade"], ["sql"]])
def test_h_is_help_everywhere_and_flags_show_no_type(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per option, whatever runs the tests
    assert main([*command, "-h"]) == 0
    shown = capsys.readouterr().out
    [help_line] = [line for line in shown.splitlines() if "--help" in line]
    assert " -h " in help_line and "Show this" in help_line
    assert "<bool>" not in shown


def test_shell_completion_is_offered(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    assert "--install-completion" in shown and "--show-completion" in shown
