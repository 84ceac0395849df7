"""Signed seals and anchors prove what the database alone cannot: a cut tail, a forged re-seal.

Anyone who can write the database can recompute every hash in it. These
attacks leave a ledger whose chains all verify; only a key the forger lacks,
or an anchor kept elsewhere, shows them.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import rawdb
from helpers import sample

from kasmina.cli import main
from kasmina.errors import SigningError
from kasmina.ledger import Ledger
from kasmina.signing import SIGNING_KEY_ENV, generate, load
from security.attacks import cli_error

RUN = "anchored"


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "signing.pem"
    generate(path)
    return path


@pytest.fixture
def public_key(key_path: Path) -> str:
    return key_path.with_name("signing.pem.pub").read_text().strip()


def _record(ledger: Ledger, run_id: str = RUN, *, samples: int = 4, finish: bool = True) -> None:
    run = ledger.start_run(run_id, seed=1, run_id=run_id)
    for n in range(samples):
        ledger.append([sample(run_id, "r0c0", epoch=n, n=n)])
    if finish:
        run.finish()


def _kinds(url: str, *args: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    code = main(["--db", url, "verify", *args])
    lines = capsys.readouterr().out.splitlines()
    kinds = [line.split()[1].rstrip(":") for line in lines if line.startswith("FAULT ")]
    assert code == (1 if kinds else 0), lines
    return kinds


def _anchor(url: str, path: Path, *run: str) -> None:
    assert main(["--db", url, "anchor", *run, "-o", str(path)]) == 0


def test_keygen_writes_a_private_key_only_its_owner_reads_and_refuses_to_replace_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "k.pem"
    assert main(["keygen", "-o", str(path)]) == 0
    out = capsys.readouterr().out
    public = path.with_name("k.pem.pub").read_text().strip()
    assert f"public key: {public}" in out and len(public) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load(path).public_hex == public
    line = cli_error(capsys, ["keygen", "-o", str(path)])
    assert line == f"error: {path} exists already; pass --force to replace the key in it"
    assert main(["keygen", "-o", str(path), "--force"]) == 0
    assert load(path).public_hex != public


def test_an_unusable_signing_key_refuses_the_append_and_records_nothing(
    ledger: Ledger, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    monkeypatch.setenv(SIGNING_KEY_ENV, str(bad))
    with pytest.raises(SigningError, match=rf"^{bad} is not an unencrypted PEM private key"):
        ledger.start_run(RUN, seed=1, run_id=RUN)
    assert ledger.runs() == []
    monkeypatch.delenv(SIGNING_KEY_ENV)
    ledger.start_run(RUN, seed=1, run_id=RUN).finish()
    assert ledger.verify(RUN).ok


def test_a_signed_seal_verifies_against_its_pinned_key(
    ledger: Ledger,
    db_url: str,
    key_path: Path,
    public_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(SIGNING_KEY_ENV, str(key_path))
    _record(ledger)
    assert _kinds(db_url, "--public-key", public_key, capsys=capsys) == []
    assert _kinds(db_url, "--public-key", str(key_path) + ".pub", capsys=capsys) == []


def test_a_run_cut_extended_and_sealed_again_without_the_key_is_a_fault(
    ledger: Ledger,
    db_url: str,
    key_path: Path,
    public_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(SIGNING_KEY_ENV, str(key_path))
    _record(ledger)
    rawdb.drop_triggers(db_url)
    rawdb.run(db_url, "DELETE FROM events WHERE event_type = 'RunFinished'")
    # The forger extends the run and seals it with kasmina itself: every hash is right.
    monkeypatch.delenv(SIGNING_KEY_ENV)
    with Ledger.open(db_url) as forger:
        forger.append([sample(RUN, "r0c0", epoch=9, n=9)])
        forger.finish_run(RUN, "completed")
    assert _kinds(db_url, capsys=capsys) == []  # the database alone cannot tell
    assert _kinds(db_url, "--public-key", public_key, capsys=capsys) == [
        "unsigned_seal",
        "unsigned_tail",
    ]
    # Sealed with a key of the forger's own: signed, but not by the pinned key.
    rawdb.run(db_url, "DELETE FROM events WHERE event_type = 'RunFinished'")
    with Ledger.open(db_url) as forger:
        forger.signing_key = generate(key_path.with_name("forger.pem"))
        forger.finish_run(RUN, "completed")
    assert _kinds(db_url, "--public-key", public_key, capsys=capsys) == [
        "untrusted_signature",
        "unsigned_tail",
    ]


def test_an_event_forged_onto_an_open_run_leaves_its_end_unsigned(
    ledger: Ledger,
    db_url: str,
    key_path: Path,
    public_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each append signs the run's last event, which in format 2 covers all before it."""
    monkeypatch.setenv(SIGNING_KEY_ENV, str(key_path))
    _record(ledger, finish=False)
    assert _kinds(db_url, "--public-key", public_key, capsys=capsys) == []
    [(signed,)] = rawdb.run(db_url, "SELECT MAX(position) FROM run_tips")
    monkeypatch.delenv(SIGNING_KEY_ENV)
    with Ledger.open(db_url) as forger:  # every hash right, but no key
        forger.append([sample(RUN, "r0c0", epoch=9, n=9)])
    assert _kinds(db_url, capsys=capsys) == []
    capsys.readouterr()
    assert main(["--db", db_url, "verify", "--public-key", public_key]) == 1
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("FAULT")]
    assert line.startswith("FAULT unsigned_tail: ")
    assert f"the events after position {signed}, the last one the pinned key signed" in line
    # The writer goes on, with its key: it never signs over an end it did not sign.
    monkeypatch.setenv(SIGNING_KEY_ENV, str(key_path))
    with Ledger.open(db_url) as writer:
        writer.append([sample(RUN, "r0c0", epoch=10, n=10)])
        writer.finish_run(RUN, "completed")
    assert _kinds(db_url, "--public-key", public_key, capsys=capsys) == ["unsigned_tail"]


def test_a_seal_altered_after_signing_is_a_fault(
    sqlite_url: str,
    key_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(SIGNING_KEY_ENV, str(key_path))
    with Ledger.open(sqlite_url) as ledger:
        _record(ledger)
    rawdb.drop_triggers(sqlite_url)
    [(position, text, prev, run_prev)] = rawdb.run(
        sqlite_url,
        "SELECT f.position, f.payload, f.prev_hash, p.hash FROM events f JOIN events p "
        "ON p.position = (SELECT MAX(position) FROM events WHERE position < f.position) "
        "WHERE f.event_type = 'RunFinished'",
    )
    payload = json.loads(str(text))
    payload["status"] = "failed"  # the signature covers the status too
    new_text = rawdb.payload_text(2, payload)
    [row] = rawdb.run(
        sqlite_url,
        "SELECT event_id, run_id, stream_id, version, event_type, schema_version, epoch, "
        "seed_id, recorded_at FROM events WHERE position = ?",
        (position,),
    )
    names = ("event_id", "run_id", "stream_id", "version", "event_type", "schema_version",
             "epoch", "seed_id", "recorded_at")  # fmt: skip
    digest = rawdb.forged_hash(
        2, prev_hash=str(prev), run_prev_hash=str(run_prev), payload_text=new_text,
        **dict(zip(names, row, strict=True)),
    )  # fmt: skip
    rawdb.run(
        sqlite_url,
        "UPDATE events SET payload = ?, hash = ? WHERE position = ?",
        (new_text, digest, position),
    )
    assert _kinds(sqlite_url, capsys=capsys) == ["bad_signature"]


def test_an_anchor_proves_a_cut_tail_of_an_open_run(
    ledger: Ledger, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(ledger, finish=False)
    anchor = tmp_path / "anchor.json"
    _anchor(db_url, anchor, RUN)
    rawdb.drop_triggers(db_url)
    last = rawdb.run(db_url, "SELECT MAX(position) FROM events")[0][0]
    rawdb.run(db_url, "DELETE FROM events WHERE position = ?", (last,))
    assert _kinds(db_url, capsys=capsys) == []  # an open run's tail: nothing seals it
    assert _kinds(db_url, "--anchor", str(anchor), capsys=capsys) == ["anchor_cut"]


def test_an_anchor_proves_a_forged_re_seal_and_a_deleted_run(
    ledger: Ledger, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(ledger, "earlier")
    _record(ledger)
    anchor = tmp_path / "anchor.json"
    _anchor(db_url, anchor)
    rawdb.drop_triggers(db_url)
    rawdb.run(db_url, f"DELETE FROM events WHERE run_id = '{RUN}' AND event_type = 'RunFinished'")
    with Ledger.open(db_url) as forger:
        forger.append([sample(RUN, "r0c0", epoch=9, n=9)])
        forger.finish_run(RUN, "completed")
    assert _kinds(db_url, capsys=capsys) == []
    assert _kinds(db_url, "--anchor", str(anchor), capsys=capsys) == ["anchor_mismatch"]
    # The last run deleted whole (and its format row): no chain after it to break.
    rawdb.run(db_url, f"DELETE FROM events WHERE run_id = '{RUN}'")
    rawdb.run(db_url, f"DELETE FROM ledger_runs WHERE run_id = '{RUN}'")
    assert _kinds(db_url, capsys=capsys) == []
    # One fault for the run, one for the ledger's chain of run starts.
    assert _kinds(db_url, "--anchor", str(anchor), capsys=capsys) == ["anchor_cut"] * 2


def test_a_ledger_that_only_grew_since_its_anchor_verifies_against_it(
    ledger: Ledger, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(ledger, "earlier")
    _record(ledger, finish=False)
    anchor = tmp_path / "anchor.json"
    _anchor(db_url, anchor)
    ledger.append([sample(RUN, "r0c0", epoch=9, n=9)])
    ledger.finish_run(RUN, "completed")
    _record(ledger, "later")
    assert _kinds(db_url, "--anchor", str(anchor), capsys=capsys) == []


def test_an_altered_or_unsigned_anchor_is_a_fault(
    ledger: Ledger,
    db_url: str,
    tmp_path: Path,
    key_path: Path,
    public_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _record(ledger)
    unsigned = tmp_path / "unsigned.json"
    _anchor(db_url, unsigned)
    assert _kinds(db_url, "--anchor", str(unsigned), capsys=capsys) == []
    pinned = ("--public-key", public_key)
    assert _kinds(db_url, "--anchor", str(unsigned), *pinned, capsys=capsys) == [
        "unsigned_seal",
        "unsigned_tail",
        "unsigned_anchor",
    ]
    monkeypatch.setenv(SIGNING_KEY_ENV, str(key_path))
    signed = tmp_path / "signed.json"
    _anchor(db_url, signed)
    body = json.loads(signed.read_text())
    assert body["signature"]["public_key"] == public_key
    body["runs"][RUN]["events"] += 1  # made to match a ledger with a forged extra event
    signed.write_text(json.dumps(body))
    assert "bad_anchor_signature" in _kinds(db_url, "--anchor", str(signed), capsys=capsys)


def test_a_file_that_is_no_anchor_is_one_error_line(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Ledger.open(sqlite_url) as ledger:
        _record(ledger)
    junk = tmp_path / "junk.json"
    junk.write_text('{"runs": 3}')
    line = cli_error(capsys, ["--db", sqlite_url, "verify", "--anchor", str(junk)])
    assert line.startswith(f"error: {junk} is not a kasmina anchor (")
    missing = tmp_path / "missing.json"
    line = cli_error(capsys, ["--db", sqlite_url, "verify", "--anchor", str(missing)])
    assert line == f"error: cannot read anchor {missing}: No such file or directory"
