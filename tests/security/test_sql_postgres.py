"""`kasmina sql` on PostgreSQL is read-only whoever connects: a superuser, an owner, an analyst.

Every hostile statement goes through the real command (`kasmina.cli.main`) against
a sealed run, on a database migrated by the superuser and on one owned and
migrated by a non-superuser; each must be refused with one line and leave the
fingerprint (rows, triggers, roles, verify) exactly as it was. Files the
server could write are aimed at a folder the server's OS user may write to,
and a control shows that a superuser's own COPY lands there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import rawdb
from helpers import default_sigint, sample
from pgserver import PgServer

from kasmina.cli import main
from kasmina.ledger import Ledger, migrate
from security.attacks import OWNER_ROLE, cli_error, fingerprint, owner_url, record_small_run

ONE_STATEMENT = "one statement per call"
ONLY_QUERY = "runs only a query"
DENIED = "permission denied"
NO_SWITCH = "within security-definer function"
READ_FILE = "query_to_xml('select pg_read_file(''/etc/passwd'')', true, false, '')"


@dataclass(frozen=True)
class Victim:
    url: str  # as the database's own role: the superuser, or the owner
    admin: str  # as the superuser, for setting up and for controls
    database: str
    role: str  # the role of `url`
    drop: Path  # a folder the server's OS user can write to

    def events(self) -> int:
        [(count,)] = rawdb.run(self.admin, "SELECT count(*) FROM events")
        return int(count)  # type: ignore[call-overload]


_made = iter(range(1_000_000))


@pytest.fixture(scope="module")
def drop_dir() -> Iterator[Path]:
    """Outside pytest's private temp root, which the server's OS user cannot enter."""
    folder = Path(tempfile.mkdtemp(prefix="kasmina-drop-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module", params=["postgres", "postgres-owner"])
def victim(
    request: pytest.FixtureRequest, pg_server: PgServer, owner_role: str, drop_dir: Path
) -> Victim:
    name = f"sqlpg{os.getpid()}_{next(_made)}"
    owned = request.param == "postgres-owner"
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}" + (f" OWNER {owner_role}" if owned else ""))
    url = owner_url(pg_server, name) if owned else pg_server.url(name)
    migrate.upgrade(url)
    record_small_run(url)
    admin = pg_server.url(name)
    if rawdb.run(admin, "SELECT 1 FROM pg_available_extensions WHERE name = 'dblink'"):
        rawdb.run(admin, "CREATE EXTENSION dblink")
    return Victim(url, admin, name, owner_role if owned else "postgres", drop_dir)


def refused(capsys: pytest.CaptureFixture[str], victim: Victim, statement: str, *args: str) -> str:
    """Run `kasmina sql`, expecting one error line and no change; return the line."""
    line = cli_error(capsys, ["--db", victim.url, "sql", *args, statement], unchanged=victim.url)
    assert list(victim.drop.iterdir()) == [], "the server wrote a file"
    assert not rawdb.run(victim.admin, "SELECT 1 FROM pg_largeobject_metadata")
    return line


def _connstr(victim: Victim, user: str) -> str:
    url = victim.url
    host = url.split("host=", 1)[1].split("&", 1)[0]
    port = url.split("port=", 1)[1].split("&", 1)[0]
    return f"dbname={victim.database} user={user} host={host} port={port}"


HOSTILE: list[tuple[str, str]] = [
    # breaking out of the transaction with a simple-protocol string
    *(
        (
            f"SELECT 1; {end}; DROP TRIGGER events_immutable ON events; DELETE FROM events",
            ONE_STATEMENT,
        )
        for end in ("COMMIT", "ROLLBACK", "END")
    ),
    (f"SELECT 1; ALTER ROLE {OWNER_ROLE} SUPERUSER", ONE_STATEMENT),
    ("COMMIT", ONLY_QUERY),
    ("ROLLBACK", ONLY_QUERY),
    ("END", ONLY_QUERY),
    (f"ALTER ROLE {OWNER_ROLE} SUPERUSER", ONLY_QUERY),
    # writes and DDL
    ("DELETE FROM events", ONLY_QUERY),
    ("UPDATE events SET epoch = 1", ONLY_QUERY),
    ("TRUNCATE events", ONLY_QUERY),
    ("DROP TRIGGER events_immutable ON events", ONLY_QUERY),
    ("ALTER TABLE events DISABLE TRIGGER ALL", ONLY_QUERY),
    ("CREATE TABLE stolen AS SELECT * FROM events", ONLY_QUERY),
    ("SELECT * INTO stolen FROM events", ONLY_QUERY),
    ("WITH gone AS (DELETE FROM events RETURNING *) SELECT count(*) FROM gone", ONLY_QUERY),
    (
        "WITH added AS (INSERT INTO events (event_id) VALUES ('x') RETURNING 1) "
        "SELECT * FROM added",
        ONLY_QUERY,
    ),
    ("SELECT * FROM events FOR UPDATE", "read-only"),
    ("CREATE EXTENSION IF NOT EXISTS adminpack", ONLY_QUERY),
    # files, programs, server functions
    ("COPY (SELECT * FROM events) TO '{drop}/copy.csv'", ONLY_QUERY),
    ("COPY events TO PROGRAM 'touch {drop}/program'", ONLY_QUERY),
    ("SELECT pg_read_file('/etc/passwd')", DENIED),
    ("SELECT lo_export(lo_from_bytea(0, 'stolen'), '{drop}/lo')", DENIED),
    ("SELECT lo_import('/etc/passwd')", DENIED),
    ("SELECT pg_ls_dir('.')", DENIED),
    ("SELECT pg_reload_conf()", DENIED),
    ("SELECT pg_rotate_logfile()", DENIED),
    ("SELECT set_config('session_replication_role', 'replica', false)", DENIED),
    # switching back to the session user, then running a query string as it
    ("SELECT set_config('role', session_user, false)", NO_SWITCH),
    ("SELECT set_config('role', 'postgres', true)", "role"),
    (f"SELECT set_config('role', 'postgres', true), {READ_FILE}", "role"),
    (f"SELECT set_config('role', session_user, true), {READ_FILE}", NO_SWITCH),
    (f"SELECT set_config('session_authorization', 'postgres', true), {READ_FILE}", "session"),
    (
        "SELECT query_to_xml('select set_config(''role'', session_user, true), "
        "pg_read_file(''/etc/passwd'')', true, false, '')",
        "refused",
    ),
    (
        "SELECT query_to_xml_and_xmlschema('select pg_read_file(''/etc/passwd'')', "
        "true, false, '')",
        DENIED,
    ),
    (
        "SELECT * FROM ts_stat('select set_config(''role'', session_user, true)::tsvector')",
        NO_SWITCH,
    ),
    (f"SELECT U&\"set\\005fconfig\"('role', session_user, true), {READ_FILE}", NO_SWITCH),
    (
        "SELECT count(*) FROM events WHERE event_id = query_to_xml("
        "'select set_config(''role'', session_user, true)', true, false, '')::text",
        NO_SWITCH,
    ),
    ("RESET ROLE", ONLY_QUERY),
    ("SET ROLE postgres", ONLY_QUERY),
    ("SET SESSION AUTHORIZATION postgres", ONLY_QUERY),
    ("SET LOCAL ROLE NONE", ONLY_QUERY),
    ("SELECT 1; RESET ROLE; DELETE FROM events", ONE_STATEMENT),
    # another session through dblink, which would not be read-only
    (
        "SELECT * FROM dblink_exec('{dsn}', 'ALTER ROLE " + OWNER_ROLE + " SUPERUSER')",
        "",
    ),
    (
        "SELECT set_config('role', session_user, true), "
        "dblink_exec('{dsn}', 'ALTER ROLE " + OWNER_ROLE + " SUPERUSER')",
        "",
    ),
    # statements that hold things, wait, or change the session
    ("DO $$ BEGIN DELETE FROM events; END $$", ONLY_QUERY),
    ("CALL kasmina_nothing()", ONLY_QUERY),
    ("LISTEN kasmina", ONLY_QUERY),
    ("NOTIFY kasmina, 'x'", ONLY_QUERY),
    ("LOCK TABLE events IN ACCESS EXCLUSIVE MODE", ONLY_QUERY),
    ("PREPARE wipe AS DELETE FROM events", ONLY_QUERY),
    ("EXECUTE wipe", ONLY_QUERY),
    ("SET statement_timeout = 0", ONLY_QUERY),
    ("VACUUM events", ONLY_QUERY),
    ("SELECT nextval('ledger_events_position_seq')", "refused"),
    ("SELECT setval('ledger_events_position_seq', 1)", "refused"),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM events", ONLY_QUERY),
]


@pytest.mark.parametrize(("statement", "needle"), HOSTILE, ids=[s for s, _ in HOSTILE])
def test_hostile_statement_is_refused(
    capsys: pytest.CaptureFixture[str], victim: Victim, statement: str, needle: str
) -> None:
    dsn = _connstr(victim, "postgres").replace("'", "''")
    text = statement.replace("{drop}", str(victim.drop)).replace("{dsn}", dsn)
    line = refused(capsys, victim, text)
    assert needle in line


def test_the_drop_folder_takes_a_superusers_copy(victim: Victim) -> None:
    """The control for the file attacks: outside `kasmina sql`, the same COPY lands."""
    target = victim.drop / "control.csv"
    rawdb.run(victim.admin, f"COPY (SELECT 1) TO '{target}'")
    try:
        assert target.exists()
    finally:
        target.unlink()


def test_dblink_really_opens_a_superuser_session(victim: Victim) -> None:
    """The control for the dblink attacks: as the session user, dblink reaches a superuser."""
    if not rawdb.run(victim.admin, "SELECT 1 FROM pg_extension WHERE extname = 'dblink'"):
        pytest.skip("no dblink in this server's contrib")
    dsn = _connstr(victim, "postgres")
    rows = rawdb.run(
        victim.admin, "SELECT * FROM dblink(?, 'SELECT current_user::text') AS t(u text)", (dsn,)
    )
    assert rows == [("postgres",)]


def test_no_backend_is_terminated(capsys: pytest.CaptureFixture[str], victim: Victim) -> None:
    """A connection of the database's own role, as a writer's would be, survives both signals."""
    with psycopg.connect(_connstr(victim, victim.role)) as other:
        target = other.info.backend_pid
        for function in ("pg_terminate_backend", "pg_cancel_backend"):
            line = refused(capsys, victim, f"SELECT {function}({target})")
            assert "refused" in line
        assert other.execute("SELECT 1").fetchone() == (1,)


def test_an_advisory_lock_taken_by_sql_is_gone_when_it_returns(
    capsys: pytest.CaptureFixture[str], victim: Victim
) -> None:
    locks = "SELECT objid FROM pg_locks WHERE locktype = 'advisory' ORDER BY 1"
    with Ledger.open(victim.url) as ledger:
        run = ledger.start_run(name="locked", seed=3, run_id=f"locked{next(_made)}")
        held = rawdb.run(victim.admin, locks)  # the writer's own hold on its run
        key = f"hashtextextended('{run.run_id}', 0)"
        assert (
            main(
                [
                    "--db",
                    victim.url,
                    "sql",
                    f"SELECT pg_advisory_lock({key})::text, pg_advisory_xact_lock({key})::text",
                ]
            )
            == 0
        )
        assert rawdb.run(victim.admin, locks) == held
        assert ledger.append([sample(run.run_id, n=0)]).appended == 1


def test_a_long_query_is_cut_by_the_timeout(
    capsys: pytest.CaptureFixture[str], victim: Victim
) -> None:
    line = refused(capsys, victim, "SELECT pg_sleep(120)::text", "--timeout", "1")
    assert "1 s timeout" in line
    line = refused(
        capsys,
        victim,
        "SELECT set_config('statement_timeout', '0', false), pg_sleep(120)::text",
        "--timeout",
        "1",
    )
    assert "1 s timeout" in line


def test_the_query_runs_as_the_reader_and_legit_queries_work(
    capsys: pytest.CaptureFixture[str], victim: Victim
) -> None:
    with Ledger.open(victim.url) as ledger:
        columns, rows = ledger.sql(
            "SELECT current_user, count(*) AS n FROM events JOIN runs USING (run_id)"
        )
        assert columns == ["current_user", "n"]
        assert list(rows) == [("kasmina_reader", victim.events())]
        columns, rows = ledger.sql("SELECT g, g AS g FROM generate_series(1, 4321) AS g")
        assert columns == ["g", "g"]
        assert sum(1 for _ in rows) == 4321  # several batches of the server-side cursor
        columns, rows = ledger.sql("SELECT '%s' AS pct, payload FROM events LIMIT 1")
        assert columns == ["pct", "payload"]
        assert isinstance(next(rows)[1], dict)


# -- the reader role and its migration ------------------------------------------------


def test_the_reader_holds_select_on_every_relation_and_nothing_more(victim: Victim) -> None:
    relations = rawdb.run(
        victim.admin,
        "SELECT c.relname, has_table_privilege('kasmina_reader', c.oid, 'SELECT'), "
        "has_table_privilege('kasmina_reader', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, "
        "REFERENCES, TRIGGER') FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
        "AND c.relkind IN ('r', 'v', 'm', 'p')",
    )
    assert {name for name, _, _ in relations} >= {"events", "snapshots", "runs", "seed_timeline"}
    assert [name for name, select, _ in relations if not select] == []
    assert [name for name, _, write in relations if write] == []
    [(create, superuser, login)] = rawdb.run(
        victim.admin,
        "SELECT has_schema_privilege('kasmina_reader', 'public', 'CREATE'), rolsuper, "
        "rolcanlogin FROM pg_roles WHERE rolname = 'kasmina_reader'",
    )
    assert (create, superuser, login) == (False, False, False)
    [(owner, definer)] = rawdb.run(
        victim.admin,
        "SELECT pg_get_userbyid(proowner), prosecdef FROM pg_proc "
        "WHERE oid = 'kasmina_reader_rows(text)'::regprocedure",
    )
    assert (owner, definer) == ("kasmina_reader", True)


def test_migration_0007_downgrades_and_upgrades_again(pg_url: str) -> None:
    record_small_run(pg_url, ledger_format=1)  # as 0007's kasmina wrote it
    migrate.downgrade(pg_url, "0006")
    assert rawdb.run(pg_url, "SELECT to_regprocedure('kasmina_reader_rows(text)')") == [(None,)]
    [(select,)] = rawdb.run(
        pg_url, "SELECT has_table_privilege('kasmina_reader', 'events', 'SELECT')"
    )
    assert select is False
    migrate.upgrade(pg_url)
    with Ledger.open(pg_url) as ledger:
        assert list(ledger.sql("SELECT count(*) FROM events")[1]) == [(7,)]


def test_a_database_without_the_reader_function_says_upgrade(
    capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    rawdb.run(pg_url, "DROP FUNCTION kasmina_reader_rows(text)")
    capsys.readouterr()
    assert main(["--db", pg_url, "sql", "SELECT 1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kasmina db upgrade" in err[0], err


def test_a_shadow_function_that_is_not_a_security_definer_is_refused(
    capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    rawdb.run(pg_url, "DROP FUNCTION kasmina_reader_rows(text)")
    rawdb.run(
        pg_url,
        "CREATE FUNCTION kasmina_reader_rows(q text) RETURNS SETOF record "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY EXECUTE q; END $$",
    )
    capsys.readouterr()
    assert main(["--db", pg_url, "sql", "SELECT set_config('role', 'postgres', true)"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "security-definer" in err[0], err


def test_an_owner_that_may_not_grant_the_role_is_told_what_an_admin_must_do(
    pg_server: PgServer,
) -> None:
    role = f"plain{os.getpid()}_{next(_made)}"
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEROLE")
        conn.execute(f"CREATE DATABASE {role} OWNER {role}")
    url = f"postgresql+psycopg://{role}@/{role}?host={pg_server.base}&port={pg_server.port}"
    capture = subprocess.run(
        [sys.executable, "-m", "kasmina.cli", "--db", url, "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in capture.stderr.splitlines() if line.strip()]
    assert capture.returncode == 2, capture
    assert len(lines) == 1 and f"GRANT kasmina_reader TO {role}" in lines[0], capture.stderr


# -- kasmina db grant-reader -----------------------------------------------------------


def _cli(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()], captured.out


@pytest.fixture
def analyst(pg_server: PgServer) -> Iterator[str]:
    role = f'analyst{os.getpid()}_{next(_made)}";DROP/**/ROLE/**/postgres;--'
    quoted = '"' + role.replace('"', '""') + '"'
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {quoted} LOGIN")
    yield role


def test_grant_reader_lets_an_analyst_read_and_nothing_more(
    capsys: pytest.CaptureFixture[str], victim: Victim, analyst: str, pg_server: PgServer
) -> None:
    from urllib.parse import quote

    as_analyst = (
        f"postgresql+psycopg://{quote(analyst, safe='')}@/{victim.database}"
        f"?host={pg_server.base}&port={pg_server.port}"
    )
    quoted = '"' + analyst.replace('"', '""') + '"'
    rawdb.run(victim.admin, f"GRANT SELECT ON alembic_version, events TO {quoted}")  # may open
    code, err, _ = _cli(["--db", as_analyst, "sql", "SELECT count(*) FROM events"], capsys)
    assert code == 2 and len(err) == 1 and "kasmina db grant-reader" in err[0], err
    rawdb.run(victim.admin, f"REVOKE SELECT ON alembic_version, events FROM {quoted}")
    before = fingerprint(victim.url)
    code, err, out = _cli(["--db", victim.url, "db", "grant-reader", analyst], capsys)
    assert (code, err) == (0, []) and out.strip() == f"granted kasmina_reader to {analyst}"
    assert fingerprint(victim.url).rows == before.rows
    code, err, out = _cli(
        ["--db", as_analyst, "sql", "--format", "csv", "SELECT count(*) AS n FROM events"], capsys
    )
    assert (code, err) == (0, []) and out.split() == ["n", str(victim.events())]
    for statement in (
        "DELETE FROM events",
        "SELECT pg_read_file('/etc/passwd')",
        f"SELECT set_config('role', session_user, true), {READ_FILE}",
    ):
        code, err, _ = _cli(["--db", as_analyst, "sql", statement], capsys)
        assert code == 2 and len(err) == 1 and "refused" in err[0], err
    assert fingerprint(victim.url).rows == before.rows


def test_grant_reader_refuses_an_unknown_role_and_sqlite(
    capsys: pytest.CaptureFixture[str], victim: Victim, tmp_path: Path
) -> None:
    before = fingerprint(victim.url)
    hostile = 'nobody"; ALTER ROLE ' + OWNER_ROLE + " SUPERUSER; --"
    code, err, _ = _cli(["--db", victim.url, "db", "grant-reader", hostile], capsys)
    assert code == 2 and len(err) == 1 and "no role" in err[0], err
    assert fingerprint(victim.url) == before
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    record_small_run(ledger)
    code, err, _ = _cli(["--db", ledger, "db", "grant-reader", "analyst"], capsys)
    assert code == 2 and len(err) == 1 and "PostgreSQL" in err[0], err


# -- interrupted and killed clients ----------------------------------------------------


def _running(victim: Victim) -> list[tuple[object, ...]]:
    return rawdb.run(
        victim.admin,
        "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
        "AND datname = current_database() AND pid <> pg_backend_pid()",
    )


def _wait_for(condition: Callable[[], object], what: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def _start_long_query(victim: Victim) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kasmina.cli",
            "--db",
            victim.url,
            "sql",
            "--timeout",
            "300",
            "SELECT pg_sleep(300)::text",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    _wait_for(lambda: _running(victim) or proc.poll() is not None, "the query to start")
    assert proc.poll() is None, proc.communicate()
    return proc


def test_ctrl_c_cancels_the_server_query_and_exits_130(victim: Victim) -> None:
    proc = _start_long_query(victim)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 130, stderr
    assert len(lines) == 1 and "interrupted" in lines[0], stderr
    _wait_for(lambda: not _running(victim), "the server to drop the query")


def test_a_killed_client_s_query_is_cancelled_by_the_server(victim: Victim) -> None:
    proc = _start_long_query(victim)
    proc.kill()
    proc.communicate(timeout=60)
    _wait_for(lambda: not _running(victim), "the server to notice the client is gone")


#: Functions the owner plants under pg_catalog's names; each records who called it.
_TROJANS = (
    "CREATE TABLE public.trojan_calls (who text)",
    "GRANT INSERT ON public.trojan_calls TO PUBLIC",
    *(
        f"""CREATE FUNCTION public.{name}({args}) RETURNS {returns} LANGUAGE plpgsql AS $f$
        BEGIN
          INSERT INTO public.trojan_calls VALUES (current_user);
          RETURN pg_catalog.{name}({call});
        END $f$"""
        for name, args, returns, call in (
            ("set_config", "text, text, boolean", "text", "$1, $2, $3"),
            ("to_regclass", "text", "regclass", "$1"),
            ("to_regprocedure", "text", "regprocedure", "$1"),
        )
    ),
)


def test_an_owners_search_path_cannot_run_its_functions_in_another_login(
    pg_server: PgServer, owner_pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The owner named public before pg_catalog for the whole database and shadowed the
    functions kasmina calls by bare name: a superuser's `kasmina sql "SELECT 1"` or `runs`
    ran the owner's code as the superuser (a COPY TO PROGRAM away from a shell)."""
    record_small_run(owner_pg_url)
    database = owner_pg_url.split("@/", 1)[1].split("?", 1)[0]
    for statement in _TROJANS:
        rawdb.run(owner_pg_url, statement)
    rawdb.run(owner_pg_url, f"ALTER DATABASE {database} SET search_path = public, pg_catalog")
    superuser = pg_server.url(database)
    for args in (["sql", "SELECT 1"], ["runs"], ["verify"], ["db", "upgrade"]):
        capsys.readouterr()
        assert main(["--db", superuser, *args]) == 0, capsys.readouterr().err
    assert rawdb.run(superuser, "SELECT who FROM public.trojan_calls") == []
    rawdb.run(owner_pg_url, "SELECT set_config('application_name', 'control', false)")
    assert rawdb.run(superuser, "SELECT who FROM public.trojan_calls") == [(OWNER_ROLE,)]


def test_a_write_inside_a_query_string_is_refused_not_called_unreachable(
    capsys: pytest.CaptureFixture[str], victim: Victim
) -> None:
    """The server refused it (a view takes no DELETE), and the line said the server could
    not be reached: an error with a state other than a connection's is the query's."""
    line = refused(
        capsys, victim, "SELECT query_to_xml('DELETE FROM events RETURNING 1', true, false, '')"
    )
    assert "cannot reach" not in line
    assert line.startswith("error: PostgreSQL: ") or "read-only" in line, line
