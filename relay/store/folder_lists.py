"""Queries on ``folder_lists``: the folders each account had at its last listing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.engine import now_ms
from relay.store.schema import folder_lists, imap_folders

__all__ = ["drop_imap_state", "get", "save"]


async def get(conn: AsyncConnection, account: str) -> dict[str, Any] | None:
    """The stored listing (path -> stored folder), or None before the first listing."""
    found = await conn.scalar(
        select(folder_lists.c.folders).where(folder_lists.c.account == account)
    )
    return dict(found) if found is not None else None


async def save(
    conn: AsyncConnection, account: str, folders: Mapping[str, Any], *, existed: bool
) -> None:
    """Store ``folders`` as the account's listing (``existed``: a row is there to update)."""
    values = {"folders": dict(folders), "listed_ms": now_ms()}
    if existed:
        await conn.execute(
            folder_lists.update().where(folder_lists.c.account == account).values(**values)
        )
    else:
        await conn.execute(folder_lists.insert().values(account=account, **values))


async def drop_imap_state(conn: AsyncConnection, account: str, paths: Sequence[str]) -> None:
    """Forget the sync state of folders that are gone (a folder created again under the same
    path starts afresh, with a new folder number)."""
    if paths:
        await conn.execute(
            delete(imap_folders).where(
                imap_folders.c.account == account, imap_folders.c.path.in_(list(paths))
            )
        )
