"""The audit log: one ``token_log`` row per write, send or delete made with an API token.

A row holds the token id, the route's path template (``/v1/account/{account}/submit``, never
the path with its values or a query string), the account, the HTTP status and the client
address; never a secret or a body. ``relay.store.tokens.log_page`` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import bindparam, delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.compiled import Statement
from relay.store.schema import token_log

__all__ = ["Entry", "append", "prune"]


class Entry(NamedTuple):
    """One row: its fields are the columns ``append`` writes, in that order."""

    token_id: str
    created_ms: int
    method: str
    route: str
    account: str | None
    status: int
    address: str | None


# Compiled once (relay.store.compiled): every write request with a token appends one.
_APPEND = Statement(
    lambda _: insert(token_log).values({c: bindparam(c) for c in Entry._fields}),
    columns=Entry._fields,
)


async def append(conn: AsyncConnection, entries: Sequence[Entry]) -> None:
    """Append ``entries`` with one statement (see ``relay.store.batched.Appends``)."""
    await _APPEND.many(conn, entries)


async def prune(conn: AsyncConnection, before_ms: int) -> int:
    """Delete entries older than ``before_ms``; return how many."""
    result = await conn.execute(delete(token_log).where(token_log.c.created_ms < before_ms))
    return int(result.rowcount or 0)
