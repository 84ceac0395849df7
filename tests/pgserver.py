"""A throwaway PostgreSQL server from the machine's binaries, for tests and benchmarks.

PostgreSQL refuses to run as root, so when we are root the server runs as the
`postgres` OS user. It listens only on a unix socket in its own temp dir.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def find_bindir() -> Path | None:
    explicit = os.environ.get("KASMINA_PG_BINDIR")
    if explicit:
        return Path(explicit)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PgServer:
    bindir: Path
    base: Path
    port: int
    durable: bool = False

    @property
    def socket_dir(self) -> str:
        return str(self.base)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.base}&port={self.port}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host={self.base} port={self.port} user=postgres dbname={database}"

    def _as_owner(self, args: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return args

    def start(self) -> None:
        data = self.base / "data"
        subprocess.run(
            self._as_owner(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        options = f"-k {self.base} -c listen_addresses='' -p {self.port} -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(
            self._as_owner(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-l",
                    str(self.base / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        subprocess.run(
            self._as_owner(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.base / "data"),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ]
            ),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self.base, ignore_errors=True)


def start_server(*, durable: bool = False, port: int = 5439) -> PgServer:
    """Start a server; raise RuntimeError if the binaries are missing."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found")
    base = Path(tempfile.mkdtemp(prefix="kasmina-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    os.chmod(base, 0o700)
    server = PgServer(bindir, base, port, durable)
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        log = base / "server.log"
        detail = log.read_text() if log.exists() else (exc.stderr or b"").decode()
        server.stop()
        raise RuntimeError(f"PostgreSQL failed to start: {detail.strip()[-500:]}") from exc
    return server
