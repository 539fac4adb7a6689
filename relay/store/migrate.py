"""Apply Alembic migrations in-process (``relay migrate`` and every ``relay serve`` start)."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from relay.store.engine import Store

_SCRIPTS = Path(__file__).parent / "migrations"
# Several nodes may start at once against one PostgreSQL database: one migrates, the others wait.
_PG_LOCK_KEY = 0x6D61696C72656C  # "mailrel"


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    command.upgrade(_config(connection), "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def migrate(store: Store) -> None:
    """Bring the schema to the newest revision.

    A store already there is left alone without running Alembic's environment (which loads
    every migration script anew: most of a start-up's time on a small store).
    """
    if await current_revision(store) == head_revision():
        return
    async with store.write() as conn:
        await conn.run_sync(_upgrade)


async def current_revision(store: Store) -> str | None:
    async with store.read() as conn:
        return await conn.run_sync(_current)


@functools.cache
def head_revision() -> str | None:
    """The newest revision shipped with this version."""
    return ScriptDirectory.from_config(_config()).get_current_head()
