"""Queries on ``imap_folders``: the sync state of every watched IMAP folder.

A listener writes its folder's new state in the same transaction as the events it derived
from it (:func:`save`), so after a crash the stored state and the stored events always agree.
:func:`save` is a compare-and-set on ``version``: a writer that lost a race (another node
took the account over) changes nothing and must reload.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.errors import StoreError
from relay.store import dialect
from relay.store.compiled import Statement, any_of
from relay.store.engine import now_ms
from relay.store.schema import imap_folders

_ENSURE_ATTEMPTS = 5


async def get(conn: AsyncConnection, account: str, path: str) -> RowMapping | None:
    """The row of one folder."""
    result = await conn.execute(
        select(imap_folders).where(imap_folders.c.account == account, imap_folders.c.path == path)
    )
    return result.mappings().first()


async def for_account(conn: AsyncConnection, account: str) -> Sequence[RowMapping]:
    """Every folder row of ``account``, by folder number."""
    result = await conn.execute(
        select(imap_folders)
        .where(imap_folders.c.account == account)
        .order_by(imap_folders.c.folder_no)
    )
    return result.mappings().all()


async def ensure(
    conn: AsyncConnection, account: str, path: str, special_use: str | None
) -> RowMapping:
    """The folder's row, created (with the account's next folder number) if missing.

    Two creators racing for one number are resolved by the unique constraint: the loser's
    insert does nothing and it tries the next number.
    """
    for _ in range(_ENSURE_ATTEMPTS):
        row = await get(conn, account, path)
        if row is not None:
            if special_use and row["special_use"] != special_use:
                await conn.execute(
                    imap_folders.update()
                    .where(imap_folders.c.account == account, imap_folders.c.path == path)
                    .values(special_use=special_use)
                )
                row = await get(conn, account, path)
                assert row is not None
            return row
        highest = await conn.scalar(
            select(func.max(imap_folders.c.folder_no)).where(imap_folders.c.account == account)
        )
        ms = now_ms()
        await conn.execute(
            dialect.insert(conn, imap_folders)
            .values(
                account=account,
                path=path,
                folder_no=int(highest or 0) + 1,
                special_use=special_use,
                uids="",
                flags={},
                version=0,
                created_ms=ms,
                updated_ms=ms,
            )
            .on_conflict_do_nothing()
        )
    raise StoreError(f"could not create the folder row of {account}/{path}")


async def ensure_many(
    conn: AsyncConnection, account: str, folders: Mapping[str, str | None]
) -> dict[str, RowMapping]:
    """The rows of ``folders`` (path -> special use), each created if missing (see
    :func:`ensure`), in one transaction: an account's new folders cost one commit."""
    return {path: await ensure(conn, account, path, use) for path, use in folders.items()}


async def save(
    conn: AsyncConnection,
    account: str,
    path: str,
    *,
    version: int,
    values: Mapping[str, Any],
    synced: bool = False,
) -> bool:
    """Store ``values`` if the row still has ``version``; bump it. False: someone else wrote."""
    ms = now_ms()
    extra: dict[str, Any] = {"synced_ms": ms} if synced else {}
    result = await conn.execute(
        imap_folders.update()
        .where(
            imap_folders.c.account == account,
            imap_folders.c.path == path,
            imap_folders.c.version == version,
        )
        .values(**values, **extra, version=version + 1, updated_ms=ms)
    )
    return result.rowcount == 1


@dataclass(frozen=True, slots=True)
class Save:
    """One folder's new state for :func:`save_many` (the arguments of :func:`save`)."""

    account: str
    path: str
    version: int
    values: Mapping[str, Any]
    synced: bool = False


def _stored_versions(dialect: str) -> Select[Any]:
    query = select(imap_folders.c.account, imap_folders.c.path, imap_folders.c.version).where(
        any_of(imap_folders.c.account, "accounts", dialect)
    )
    # By account (one list parameter), then the wanted paths are picked by the caller.
    return query.with_for_update() if dialect == "postgresql" else query


_STORED_VERSIONS = Statement(_stored_versions, lists=["accounts"])

# Keys of the update's row: the folder and the version it must still have.
_KEYS = ("b_account", "b_path", "b_version", "ms")


# One compiled update per shape of values (the listeners write a handful of shapes).
@functools.cache
def _update(names: tuple[str, ...], synced: bool) -> Statement:
    """The compare-and-set update of the folders whose new values are ``names``."""
    values: dict[str, Any] = {name: bindparam(f"v_{name}") for name in names}
    values.update(version=bindparam("b_version") + 1, updated_ms=bindparam("ms"))
    if synced:
        values["synced_ms"] = bindparam("ms")
    statement = (
        imap_folders.update()
        .where(
            imap_folders.c.account == bindparam("b_account"),
            imap_folders.c.path == bindparam("b_path"),
            imap_folders.c.version == bindparam("b_version"),
        )
        .values(values)
    )
    return Statement(lambda _: statement, columns=[f"v_{n}" for n in names] + list(_KEYS))


def _driver_value(name: str, value: Any) -> Any:
    """A value as the driver takes it: ``flags`` is a JSON column (text for either driver)."""
    return json.dumps(value) if name == "flags" else value


async def save_many(conn: AsyncConnection, saves: Sequence[Save]) -> list[bool]:
    """:func:`save` for many folders at once; True where saved, False where the row no
    longer had the expected version (nothing written for that folder).

    The stored versions are read first (locked ``FOR UPDATE`` on PostgreSQL; on SQLite the
    write transaction already excludes every other writer), then the folders that still
    match are updated with one statement per shape of values (``executemany``): a group of
    listener commits costs two round trips, not one per folder. The update keeps the version
    condition, so the compare-and-set holds even if the read were stale. Both are compiled
    statements (relay.store.compiled): a group of listener commits is a shared write, and
    each statement through SQLAlchemy cost it a hand-over to SQLite's thread and the
    processing of every row's values.
    """
    if not saves:
        return []
    accounts = sorted({s.account for s in saves})
    stored = {
        (str(account), str(path)): int(version)
        for account, path, version in await _STORED_VERSIONS.rows(conn, accounts=accounts)
    }
    ms = now_ms()
    outcome: list[bool] = []
    shapes: dict[tuple[tuple[str, ...], bool], list[tuple[Any, ...]]] = {}
    claimed: set[tuple[str, str]] = set()
    for s in saves:
        key = (s.account, s.path)
        ok = stored.get(key) == s.version and key not in claimed
        outcome.append(ok)
        if not ok:
            continue
        # The same folder twice in one call: only the first save matches its version.
        claimed.add(key)
        names = tuple(sorted(s.values))
        row = tuple(_driver_value(name, s.values[name]) for name in names)
        shapes.setdefault((names, s.synced), []).append((*row, s.account, s.path, s.version, ms))
    for (names, synced), rows in shapes.items():
        await _update(names, synced).many(conn, rows)
    return outcome
