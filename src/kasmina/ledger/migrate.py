"""Alembic, driven from Python: the only way kasmina creates or changes a schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kasmina.errors import LedgerError

if TYPE_CHECKING:
    from alembic.config import Config

#: The revision this code reads and writes. A test holds it equal to Alembic's
#: head, so it cannot drift; it is a constant so that opening a ledger does not
#: have to import Alembic.
HEAD_REVISION = "0005"


def migrations_dir() -> Path:
    """The migrations shipped in the wheel, or those of a source checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_migrations", here.parent.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise LedgerError("kasmina's migrations are missing from this installation")


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _engine_url(url: str) -> str:
    """SQLAlchemy needs the driver spelled out for PostgreSQL."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    _run(lambda cfg: command.upgrade(cfg, revision), url)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    _run(lambda cfg: command.downgrade(cfg, revision), url)


def check(url: str) -> None:
    """Raise if the models and the migrated database differ (``alembic check``)."""
    from alembic import command

    _run(lambda cfg: command.check(cfg), url)


def script_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _run(step: Callable[[Config], object], url: str) -> None:
    from sqlalchemy import create_engine, pool

    from kasmina.ledger.errors import translate

    engine = create_engine(_engine_url(url), poolclass=pool.NullPool)
    try:
        with translate(url), engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            step(cfg)
    finally:
        engine.dispose()
