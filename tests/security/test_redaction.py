"""Attack: read a password off the screen (or a CI log) from an error message.

Before: `redact` masked only ``user:PASSWORD@``, so a ``?password=`` query
parameter was printed whole in every "cannot reach" message, and any text a
driver wrote (psycopg can quote the conninfo) went out unfiltered. Now every
error line is scrubbed of the URL's passwords (as written, decoded and
encoded) and of anything shaped like a URL's or a conninfo's password.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pgserver import PgServer

from kasmina.cli import main
from kasmina.errors import KasminaError
from kasmina.ledger import Ledger

PASSWORD = "Hunter2Secret"


def urls(server: PgServer) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each URL, and the strings of it that may never be printed."""
    sock = f"host={server.base}&port={server.port}"
    return {
        "no-such-role": (f"postgresql+psycopg://nobody:{PASSWORD}@/postgres?{sock}", (PASSWORD,)),
        "no-such-database": (f"postgresql+psycopg://postgres:{PASSWORD}@/nodb?{sock}", (PASSWORD,)),
        "unreachable": (f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/db", (PASSWORD,)),
        "query-parameter": (
            f"postgresql+psycopg://u@/db?host=127.0.0.1&port=1&password={PASSWORD}",
            (PASSWORD,),
        ),
        "encoded": (
            "postgresql+psycopg://u:p%40ss%2F" + PASSWORD + "@127.0.0.1:1/db",
            ("p@ss/" + PASSWORD, "p%40ss%2F" + PASSWORD),
        ),
        "at-sign": (
            f"postgresql+psycopg://u:p@ss/w?rd#{PASSWORD}@127.0.0.1:1/db",
            (f"p@ss/w?rd#{PASSWORD}", PASSWORD),
        ),
        "bad-port": (f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:abc/db", (PASSWORD,)),
        "bad-option": (
            f"postgresql+psycopg://u@/db?host=127.0.0.1&port=1&sslmode=bogus&password={PASSWORD}",
            (PASSWORD,),
        ),
    }


CASES = (
    "no-such-role",
    "no-such-database",
    "unreachable",
    "query-parameter",
    "encoded",
    "at-sign",
    "bad-port",
    "bad-option",
)
COMMANDS = {
    "runs": ["runs"],
    "verify": ["verify"],
    "sql": ["sql", "SELECT 1"],
    "history": ["history", "r1"],
    "db-current": ["db", "current"],
    "export": ["export", "r1", "-o", "{tmp}/out"],
    "report": ["report", "r1", "-o", "{tmp}/r.html"],
    "append": ["append", "r1", "--type", "EpochCompleted", "--payload", "{}", "--stream", "run"],
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_error_line_shows_the_password(
    pg_server: PgServer,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    case: str,
    command: str,
) -> None:
    url, secrets = urls(pg_server)[case]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in COMMANDS[command]]
    code = main(["--db", url, *argv])
    out, err = capfd.readouterr()
    assert code == 2, err
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for secret in secrets:
        assert secret not in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("case", CASES)
def test_the_python_api_raises_without_the_password(pg_server: PgServer, case: str) -> None:
    url, secrets = urls(pg_server)[case]
    with pytest.raises(KasminaError) as info:
        Ledger.open(url).runs()
    for secret in secrets:
        assert secret not in str(info.value)


def test_scrub_masks_conninfo_and_other_urls_in_driver_text() -> None:
    from kasmina.ledger.errors import redact, scrub

    text = (
        'missing "=" after "password=\'a b\' x" in connection info string; '
        "password=plain&host=h; see postgresql://bob:pw123@db/x"
    )
    cleaned = scrub(text, "sqlite:///ledger.db")
    assert "a b" not in cleaned and "plain" not in cleaned and "pw123" not in cleaned
    assert cleaned.count("***") == 3
    assert redact("postgresql+psycopg://me@db/kasmina") == "postgresql+psycopg://me@db/kasmina"
    assert redact("sqlite:///a@b:c.db") == "sqlite:///a@b:c.db"
