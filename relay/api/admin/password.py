"""Where the admin password's hash is kept: the ``settings`` table, under a key that
``/v1/settings`` never reads or shows."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store import admin_sessions
from relay.store import settings as settings_store

__all__ = ["PASSWORD_SUBJECT", "clear_password", "set_password", "stored_password"]

_KEY = "adminPasswordHash"
# The subject of sessions signed in with the password (API token sessions: the token's id).
PASSWORD_SUBJECT = "admin-password"  # noqa: S105 (a name, not a password)


async def stored_password(conn: AsyncConnection) -> str | None:
    """The stored hash (relay.auth.passwords); None when no password is set."""
    value = await settings_store.get(conn, _KEY)
    return str(value) if value else None


async def set_password(conn: AsyncConnection, hashed: str) -> None:
    """Store a new hash; the sessions signed in with the old password end."""
    await settings_store.put(conn, _KEY, hashed)
    await admin_sessions.drop_subject(conn, PASSWORD_SUBJECT)


async def clear_password(conn: AsyncConnection) -> None:
    await settings_store.delete(conn, _KEY)
    await admin_sessions.drop_subject(conn, PASSWORD_SUBJECT)
