"""Bad input to the command line: one `error:` line, exit 2, no traceback, nothing recorded.

Each case is fed to `kasmina.cli.main` in this process against every attacked
ledger (SQLite, PostgreSQL as superuser and as a non-superuser owner), which
also holds an unsealed run that would take the events if the input got through.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from kasmina.cli import main
from kasmina.ledger import Ledger
from security.attacks import cli_error, fingerprint

OPEN_RUN = "open"
GERMINATED = {
    "event_type": "SeedGerminated",
    "stream_id": "slot/a",
    "payload": {"slot_id": "a", "blueprint_id": "conv_small", "params": 10},
}


@pytest.fixture
def url(attacked_url: str) -> str:
    """The attacked ledger plus a run still open, so that an accepted line would be stored."""
    with Ledger.open(attacked_url) as ledger:
        ledger.start_run(name="open", seed=2, run_id=OPEN_RUN)
    return attacked_url


@pytest.fixture
def lines_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Input files live apart from the SQLite ledger, whose folder the fingerprint lists."""
    return tmp_path_factory.mktemp("lines")


def one_error(
    capsys: pytest.CaptureFixture[str], url: str, args: Sequence[str], *needles: str
) -> str:
    """Run the command, expecting a refusal; return its one line after checking it."""
    line = cli_error(capsys, ["--db", url, *args], unchanged=url)
    for needle in needles:
        assert needle in line, line
    return line


def write_lines(folder: Path, *items: object) -> str:
    path = folder / "events.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return str(path)


def append_file(path: str) -> list[str]:
    return ["append", OPEN_RUN, "--file", path]


@pytest.mark.parametrize(
    ("field", "value", "needles"),
    [
        ("epoch", "7", ("epoch", '"7"')),
        ("epoch", 7.0, ("epoch", "7.0")),
        ("epoch", True, ("epoch", "true")),
        ("epoch", -1, ("epoch", "-1")),
        ("epoch", 2**31, ("epoch", str(2**31))),
        ("seed_id", 42, ("seed_id", "42")),
        ("event_id", "not-a-uuid", ("event_id", "not-a-uuid")),
        ("version", 0, ("version", "0")),
        ("colour", "red", ("unknown key", "'colour'")),
        ("slot_id", "a", ("unknown key", "'slot_id'", "inside payload")),
    ],
)
def test_an_envelope_field_of_the_wrong_kind_is_refused_naming_line_and_field(
    capsys: pytest.CaptureFixture[str],
    url: str,
    lines_dir: Path,
    field: str,
    value: object,
    needles: tuple[str, ...],
) -> None:
    path = write_lines(lines_dir, GERMINATED, {**GERMINATED, field: value})
    one_error(capsys, url, append_file(path), "line 2", *needles)


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        ("RunFinished", {"status": "completed", "seal": {}}),
        (
            "RunStarted",
            {"name": "forged", "seed": 1, "kasmina_version": "0", "python_version": "3"},
        ),
    ],
)
@pytest.mark.parametrize("stream", ["slot/a", "run"])
def test_run_start_and_seal_cannot_be_appended(
    capsys: pytest.CaptureFixture[str],
    url: str,
    lines_dir: Path,
    event_type: str,
    payload: dict[str, object],
    stream: str,
) -> None:
    forged = {"event_type": event_type, "stream_id": stream, "payload": payload}
    path = write_lines(lines_dir, forged)
    one_error(capsys, url, append_file(path), "line 1", event_type, "cannot be appended")


def test_a_key_given_twice_is_refused(
    capsys: pytest.CaptureFixture[str], url: str, lines_dir: Path
) -> None:
    path = lines_dir / "twice.jsonl"
    path.write_text(json.dumps(GERMINATED)[:-1] + ', "epoch": 1, "epoch": 2}\n', encoding="utf-8")
    one_error(capsys, url, append_file(str(path)), "line 1", "'epoch' appears twice")


def test_invalid_utf8_in_the_file_is_refused(
    capsys: pytest.CaptureFixture[str], url: str, lines_dir: Path
) -> None:
    path = lines_dir / "latin1.jsonl"
    good = json.dumps(GERMINATED).encode()
    path.write_bytes(good + b"\n" + good.replace(b"conv_small", b"conv_\xe9") + b"\n")
    one_error(capsys, url, append_file(str(path)), "line 2", "not valid UTF-8", "0xe9")


@pytest.mark.parametrize("depth", [65, 5000])
def test_json_nested_too_deep_is_refused(
    capsys: pytest.CaptureFixture[str], url: str, lines_dir: Path, depth: int
) -> None:
    nested = "[" * depth + "]" * depth
    line = json.dumps(GERMINATED)[:-1] + f', "deep": {nested}}}\n'
    path = lines_dir / "deep.jsonl"
    path.write_text(line, encoding="utf-8")
    one_error(capsys, url, append_file(str(path)), "line 1", "deeper than 64 levels")


def test_an_integer_of_thousands_of_digits_is_refused(
    capsys: pytest.CaptureFixture[str], url: str, lines_dir: Path
) -> None:
    """Past Python's limit on reading an integer (4,300 digits) json raised ValueError."""
    line = json.dumps(GERMINATED)[:-1] + f', "params": 1{"0" * 4400}}}\n'
    path = lines_dir / "digits.jsonl"
    path.write_text(line, encoding="utf-8")
    one_error(capsys, url, append_file(str(path)), "line 1", "not valid JSON here")


def test_a_payload_option_nested_too_deep_is_refused(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    args = ["append", OPEN_RUN, "--type", "SeedGerminated", "--stream", "slot/a"]
    one_error(capsys, url, [*args, "--payload", "[" * 5000 + "]" * 5000], "--payload", "deeper")


def test_the_options_are_checked_like_a_line(capsys: pytest.CaptureFixture[str], url: str) -> None:
    args = ["append", OPEN_RUN, "--type", "SeedGerminated", "--stream", "slot/a"]
    payload = json.dumps(GERMINATED["payload"])
    one_error(capsys, url, [*args, "--payload", payload, "--event-id", "x"], "event_id")
    one_error(capsys, url, [*args, "--payload", payload, "--epoch", str(2**40)], "epoch")


def test_a_file_that_cannot_be_read_is_one_line(
    capsys: pytest.CaptureFixture[str], url: str, lines_dir: Path
) -> None:
    one_error(capsys, url, append_file(str(lines_dir / "missing.jsonl")), "missing.jsonl")


@pytest.mark.parametrize(
    "args",
    [
        ["--at-position", "1e20"],
        ["--at-position", "99999999999999999999"],
        ["--at-position", "-1"],
        ["--at-epoch", "99999999999999999999"],
        ["--snapshot-every", "0"],
    ],
)
def test_replay_with_an_out_of_range_cut_is_one_line(
    capsys: pytest.CaptureFixture[str], url: str, args: list[str]
) -> None:
    one_error(capsys, url, ["replay", "victim", *args], args[0])


def test_a_usage_error_is_one_line_and_help_still_works(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    one_error(capsys, url, ["no-such-command"], "no-such-command")
    one_error(capsys, url, ["replay"], "RUN")
    assert main(["replay", "--help"]) == 0
    assert "--at-position" in capsys.readouterr().out


def test_a_valid_file_with_fixed_ids_is_appended_once_however_often_it_is_sent(
    capsys: pytest.CaptureFixture[str], url: str, lines_dir: Path
) -> None:
    """The counterpart of the refusals: what the checks let through is stored, and a retry of
    a file that names its event ids (any UUID spelling) is a no-op."""
    ids = [uuid.uuid4() for _ in range(3)]
    items = [{**GERMINATED, "event_id": str(i), "epoch": 3, "seed_id": "s1"} for i in ids]
    path = write_lines(lines_dir, *items)
    assert main(["--db", url, *append_file(path)]) == 0
    assert "appended 3 event(s), skipped 0" in capsys.readouterr().out
    after_first = fingerprint(url)
    retry = write_lines(
        lines_dir, *[{**item, "event_id": str(item["event_id"]).upper()} for item in items]
    )
    assert main(["--db", url, *append_file(retry)]) == 0
    assert "appended 0 event(s), skipped 3" in capsys.readouterr().out
    assert fingerprint(url) == after_first
    with Ledger.open(url) as ledger:
        stored = [e for e in ledger.read(OPEN_RUN) if e.stream_id == "slot/a"]
    assert [(e.event_id, e.epoch, e.seed_id) for e in stored] == [(str(i), 3, "s1") for i in ids]


def test_a_retried_file_with_one_changed_event_is_refused(
    capsys: pytest.CaptureFixture[str], url: str, lines_dir: Path
) -> None:
    first = {**GERMINATED, "event_id": str(uuid.uuid4()), "epoch": 3}
    assert main(["--db", url, *append_file(write_lines(lines_dir, first))]) == 0
    changed = {**first, "epoch": 4}
    fresh = {**GERMINATED, "event_id": str(uuid.uuid4())}
    path = write_lines(lines_dir, fresh, changed)
    one_error(capsys, url, append_file(path), first["event_id"], "epoch", "nothing from this batch")
