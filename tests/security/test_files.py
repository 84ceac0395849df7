"""Attack: a symlink planted where `report -o`, `sql -o` or `export -o` writes its file.

Before: each command wrote through the predictable ``.NAME.partial`` beside
its output, following a symlink planted there, so any file the user could
write (a root-owned one, for root) was overwritten with the result. Now the
temporary file has a random name and is created with ``O_EXCL | O_NOFOLLOW``;
a link at the destination itself is replaced, never followed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from security.attacks import fingerprint, kasmina

SECRET = "precious: must never be overwritten\n"


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text(SECRET)
    victim.chmod(0o644)
    return victim


def _plant(folder: Path, name: str, victim: Path) -> list[Path]:
    """Links at the old predictable name and at names shaped like the new ones."""
    guesses = [
        f".{name}.partial",
        f".{name}.0000000000000000.partial",
        f".{name}.ffffffffffffffff.partial",
        f".{name}.tmp",
        f"{name}.partial",
    ]
    links = []
    for guess in guesses:
        link = folder / guess
        link.symlink_to(victim)
        links.append(link)
    return links


COMMANDS = {
    "report": lambda out: ["report", "victim", "-o", str(out / "run.html")],
    "sql": lambda out: [
        "sql",
        "SELECT run_id FROM runs",
        "--format",
        "csv",
        "-o",
        str(out / "runs.csv"),
    ],
    "export": lambda out: ["export", "victim", "--format", "csv", "-o", str(out)],
}
WRITES = {"report": "run.html", "sql": "runs.csv", "export": "events.csv"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_planted_partial_link_is_never_followed(
    attacked_url: str, tmp_path: Path, command: str
) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    links = _plant(out, WRITES[command], victim)
    before = fingerprint(attacked_url)
    proc = kasmina(attacked_url, *COMMANDS[command](out))
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == SECRET
    written = out / WRITES[command]
    assert written.is_file() and not written.is_symlink()
    assert "victim" in written.read_text()
    assert all(link.is_symlink() and link.resolve() == victim for link in links)
    assert not [p for p in out.iterdir() if p.name.endswith(".partial") and p not in links]
    assert fingerprint(attacked_url) == before


@pytest.mark.parametrize("command", ["report", "sql"])
def test_an_output_that_is_a_link_is_replaced_not_followed(
    attacked_url: str, tmp_path: Path, command: str
) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    link = out / WRITES[command]
    link.symlink_to(victim)
    before = fingerprint(attacked_url)
    proc = kasmina(attacked_url, *COMMANDS[command](out))
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == SECRET
    assert link.is_file() and not link.is_symlink()
    assert fingerprint(attacked_url) == before


def test_the_file_has_the_usual_mode_and_no_partial_is_left(tmp_path: Path) -> None:
    from kasmina.files import atomic_text

    umask = os.umask(0o022)
    try:
        target = tmp_path / "result.csv"
        with atomic_text(target) as dest:
            [partial] = [p for p in tmp_path.iterdir()]
            assert stat.S_IMODE(partial.lstat().st_mode) == 0o600  # private while written
            assert partial.name.startswith(".result.csv.") and partial.name.endswith(".partial")
            dest.write("a,b\n")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]
    finally:
        os.umask(umask)


def test_two_writers_get_different_temporary_names(tmp_path: Path) -> None:
    from kasmina.files import atomic_bytes

    target = tmp_path / "t.parquet"
    with atomic_bytes(target) as one, atomic_bytes(target) as two:
        one.write(b"1")
        two.write(b"2")
        assert len([p for p in tmp_path.iterdir() if p.name.endswith(".partial")]) == 2
    assert target.read_bytes() == b"1"  # the last one to finish replaced the other whole
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def _one_line(proc: object) -> str:
    import subprocess

    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    return str(line)


@pytest.mark.parametrize("command", ["report", "sql"])
def test_an_output_that_is_a_pipe_or_leads_to_one_is_refused_and_kept(
    attacked_url: str, tmp_path: Path, command: str
) -> None:
    """As root, ``-o /dev/null`` replaced the device with a plain file: a rename cannot
    write into a device, a pipe or a socket, so kasmina does not pretend to."""
    out = tmp_path / "out"
    out.mkdir()
    fifo = out / WRITES[command]
    os.mkfifo(fifo)
    line = _one_line(kasmina(attacked_url, *COMMANDS[command](out)))
    assert line == (
        f"error: cannot write {fifo}: it is not a regular file (a device, pipe or socket), "
        "which kasmina would replace; leave -o out to write to standard output"
    )
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    fifo.rename(out / "fifo")
    fifo.symlink_to(out / "fifo")  # as /dev/stdout is a link to a descriptor
    assert "is not a regular file" in _one_line(kasmina(attacked_url, *COMMANDS[command](out)))
    assert fifo.is_symlink() and stat.S_ISFIFO((out / "fifo").lstat().st_mode)
    assert sorted(p.name for p in out.iterdir()) == sorted(["fifo", WRITES[command]])


@pytest.mark.parametrize("target", ["", ".", "/"])
@pytest.mark.parametrize("command", ["report", "sql"])
def test_an_output_without_a_file_name_is_one_line(
    attacked_url: str, tmp_path: Path, command: str, target: str
) -> None:
    args = [
        a if a != str(tmp_path / WRITES[command]) else target for a in COMMANDS[command](tmp_path)
    ]
    line = _one_line(kasmina(attacked_url, *args))
    assert line.startswith("error: an output needs a file name, got "), line
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("ledger.db")]


@pytest.mark.parametrize("command", ["report", "sql"])
def test_an_output_in_a_missing_folder_names_the_folder(
    attacked_url: str, tmp_path: Path, command: str
) -> None:
    """Not the temporary file's name, which the user never gave."""
    missing = tmp_path / "no" / "such"
    line = _one_line(kasmina(attacked_url, *COMMANDS[command](missing)))
    assert line == (
        f"error: cannot write {missing / WRITES[command]}: folder {missing} does not exist"
    )
    assert not (tmp_path / "no").exists()


def test_an_export_onto_a_file_says_it_needs_a_folder(attacked_url: str, tmp_path: Path) -> None:
    target = tmp_path / "run.html"
    target.write_text(SECRET)
    line = _one_line(kasmina(attacked_url, "export", "victim", "-o", str(target)))
    assert line == f"error: cannot export into {target}: it is a file, not a folder"
    assert target.read_text() == SECRET
