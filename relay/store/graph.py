"""Graph backend state: subscriptions, delta links and the raw notification queue.

Tables (revisions 0006, 0007):

- ``graph_accounts``: one row per watched Graph account: the mode (``subscription`` or
  ``polling``) and the last error.
- ``graph_subscriptions``: one row per change subscription (one per watched folder): the
  folder it covers, its expiry and its encrypted ``clientState``.
- ``graph_folders``: per watched folder its path and special use, the stored delta link and
  the next uid.
- ``graph_messages``: every message the relay knows in the watched folders, by (immutable)
  Graph id: its folder, the uid the relay gave it there and its flags, so that a change is
  reported once. A catch-up reads and writes only the rows its changes name.
- ``graph_notifications``: notifications as Microsoft posted them, written before the 202;
  the account's watcher consumes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    delete,
    select,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.engine import now_ms
from relay.store.schema import Seq, metadata

__all__ = [
    "GraphMode",
    "graph_accounts",
    "graph_folders",
    "graph_messages",
    "graph_notifications",
    "graph_subscriptions",
]


class GraphMode:
    """Values of ``graph_accounts.mode``."""

    SUBSCRIPTION = "subscription"
    POLLING = "polling"


graph_accounts = Table(
    "graph_accounts",
    metadata,
    Column("account", String(256), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("last_error", JSON, nullable=True),
    Column("updated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("account"),
)

graph_subscriptions = Table(
    "graph_subscriptions",
    metadata,
    Column("subscription_id", String(128), nullable=False),
    Column("account", String(256), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    # The graph_folders key of the folder it covers.
    Column("folder", String(256), nullable=False),
    Column("resource", Text, nullable=False),
    # Graph's time (the relay corrects for a skewed clock).
    Column("expires_ms", BigInteger, nullable=False),
    # Encrypted: whoever knows it can post notifications that the relay acts on.
    Column("client_state", LargeBinary, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("subscription_id"),
    Index(None, "account"),
)

graph_folders = Table(
    "graph_folders",
    metadata,
    Column("account", String(256), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    # "inbox" for INBOX, Graph's folder id for the others.
    Column("folder", String(256), nullable=False),
    Column("path", Text, nullable=True),
    Column("special_use", String(32), nullable=True),
    Column("delta_link", Text, nullable=True),
    # uids are assigned in arrival order.
    Column("uid_next", BigInteger, nullable=False),
    Column("synced_ms", BigInteger, nullable=True),
    Column("updated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("account", "folder"),
)

graph_messages = Table(
    "graph_messages",
    metadata,
    Column("account", String(256), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("graph_id", String(512), nullable=False),
    Column("folder", String(256), nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("flags", JSON, nullable=False),
    PrimaryKeyConstraint("account", "graph_id"),
    Index(None, "account", "folder"),
)

graph_notifications = Table(
    "graph_notifications",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("account", String(256), nullable=False),
    Column("subscription_id", String(128), nullable=False),
    # created | updated | deleted, or the lifecycle event (missed, subscriptionRemoved, ...).
    Column("kind", String(64), nullable=False),
    Column("lifecycle", BigInteger, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Index(None, "account", "seq"),
)


# -- accounts ------------------------------------------------------------------------------


async def get_account(conn: AsyncConnection, account: str) -> RowMapping | None:
    """The Graph state of ``account``, if it was ever watched."""
    result = await conn.execute(select(graph_accounts).where(graph_accounts.c.account == account))
    return result.mappings().first()


async def save_account(conn: AsyncConnection, account: str, values: dict[str, Any]) -> None:
    """Insert or update the Graph state of ``account`` (only the given columns change)."""
    values = {**values, "updated_ms": now_ms()}
    done = await conn.execute(
        graph_accounts.update().where(graph_accounts.c.account == account).values(**values)
    )
    if done.rowcount == 0:
        values.setdefault("mode", GraphMode.SUBSCRIPTION)
        await conn.execute(graph_accounts.insert().values(account=account, **values))


# -- subscriptions -------------------------------------------------------------------------


async def subscriptions_of(conn: AsyncConnection, account: str) -> Sequence[RowMapping]:
    """The subscriptions of ``account``."""
    result = await conn.execute(
        select(graph_subscriptions)
        .where(graph_subscriptions.c.account == account)
        .order_by(graph_subscriptions.c.folder)
    )
    return result.mappings().all()


async def by_subscriptions(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, RowMapping]:
    """Subscription id -> subscription row, for the known ones of ``ids``."""
    if not ids:
        return {}
    result = await conn.execute(
        select(graph_subscriptions).where(
            graph_subscriptions.c.subscription_id.in_(sorted(set(ids)))
        )
    )
    return {str(r["subscription_id"]): r for r in result.mappings()}


async def add_subscription(
    conn: AsyncConnection,
    *,
    subscription_id: str,
    account: str,
    folder: str,
    resource: str,
    expires_ms: int,
    client_state: bytes,
) -> None:
    """Remember a subscription Graph accepted."""
    await conn.execute(
        graph_subscriptions.insert().values(
            subscription_id=subscription_id,
            account=account,
            folder=folder,
            resource=resource,
            expires_ms=expires_ms,
            client_state=client_state,
            updated_ms=now_ms(),
        )
    )


async def renew_subscription(conn: AsyncConnection, subscription_id: str, expires_ms: int) -> None:
    """Record a subscription's new expiry."""
    await conn.execute(
        graph_subscriptions.update()
        .where(graph_subscriptions.c.subscription_id == subscription_id)
        .values(expires_ms=expires_ms, updated_ms=now_ms())
    )


async def drop_subscriptions(conn: AsyncConnection, ids: Sequence[str]) -> None:
    """Forget subscriptions (deleted, expired or replaced)."""
    if ids:
        await conn.execute(
            delete(graph_subscriptions).where(graph_subscriptions.c.subscription_id.in_(list(ids)))
        )


# -- folders -------------------------------------------------------------------------------


async def folders_of(conn: AsyncConnection, account: str) -> dict[str, RowMapping]:
    """Folder key -> delta state, for every folder of ``account`` the relay watched."""
    result = await conn.execute(select(graph_folders).where(graph_folders.c.account == account))
    return {str(r["folder"]): r for r in result.mappings()}


async def folder_paths(conn: AsyncConnection, account: str) -> dict[str, RowMapping]:
    """Folder key -> ``{path, special_use}`` of every watched folder (no message lists)."""
    c = graph_folders.c
    result = await conn.execute(select(c.folder, c.path, c.special_use).where(c.account == account))
    return {str(r["folder"]): r for r in result.mappings()}


async def save_folder(
    conn: AsyncConnection,
    account: str,
    folder: str,
    *,
    path: str,
    special_use: str | None,
    delta_link: str | None,
    uid_next: int,
) -> None:
    """Replace the delta state of one folder."""
    ms = now_ms()
    values = {
        "path": path,
        "special_use": special_use,
        "delta_link": delta_link,
        "uid_next": uid_next,
        "synced_ms": ms,
        "updated_ms": ms,
    }
    done = await conn.execute(
        graph_folders.update()
        .where(graph_folders.c.account == account, graph_folders.c.folder == folder)
        .values(**values)
    )
    if done.rowcount == 0:
        await conn.execute(graph_folders.insert().values(account=account, folder=folder, **values))


async def drop_folders(conn: AsyncConnection, account: str, folders: Sequence[str]) -> None:
    """Forget the state of folders no longer watched, and what they held."""
    if folders:
        for table in (graph_folders, graph_messages):
            await conn.execute(
                delete(table).where(table.c.account == account, table.c.folder.in_(list(folders)))
            )


# -- messages ------------------------------------------------------------------------------

# Ids per query: well under every engine's bound-parameter limit.
_CHUNK = 500


async def known_messages(
    conn: AsyncConnection, account: str, ids: Sequence[str], folders: Sequence[str] = ()
) -> dict[str, tuple[str, int, list[str]]]:
    """Graph id -> (folder, uid, flags) for the known ones of ``ids`` and every message of
    ``folders``."""
    c = graph_messages.c
    out: dict[str, tuple[str, int, list[str]]] = {}
    wanted = sorted(set(ids))
    queries = [
        select(c.graph_id, c.folder, c.uid, c.flags).where(
            c.account == account, c.graph_id.in_(wanted[i : i + _CHUNK])
        )
        for i in range(0, len(wanted), _CHUNK)
    ]
    if folders:
        queries.append(
            select(c.graph_id, c.folder, c.uid, c.flags).where(
                c.account == account, c.folder.in_(list(folders))
            )
        )
    for query in queries:
        for row in await conn.execute(query):
            out[str(row[0])] = (str(row[1]), int(row[2]), list(row[3] or []))
    return out


async def save_messages(
    conn: AsyncConnection,
    account: str,
    upserts: dict[str, tuple[str, int, list[str]]],
    removed: Sequence[str],
) -> None:
    """Write the changed rows: ``upserts`` (id -> folder, uid, flags) and ``removed`` ids."""
    c = graph_messages.c
    gone = sorted({*removed, *upserts})
    for i in range(0, len(gone), _CHUNK):
        await conn.execute(
            delete(graph_messages).where(c.account == account, c.graph_id.in_(gone[i : i + _CHUNK]))
        )
    if upserts:
        await conn.execute(
            graph_messages.insert(),
            [
                {"account": account, "graph_id": k, "folder": f, "uid": u, "flags": flags}
                for k, (f, u, flags) in upserts.items()
            ],
        )


# -- notifications -------------------------------------------------------------------------


async def queue(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Store received notifications (``account, subscription_id, kind, lifecycle, payload``)."""
    if rows:
        ms = now_ms()
        await conn.execute(graph_notifications.insert(), [{**r, "received_ms": ms} for r in rows])


async def pending(conn: AsyncConnection, account: str, limit: int = 1000) -> Sequence[RowMapping]:
    """The oldest unprocessed notifications of ``account``."""
    result = await conn.execute(
        select(graph_notifications)
        .where(graph_notifications.c.account == account)
        .order_by(graph_notifications.c.seq)
        .limit(limit)
    )
    return result.mappings().all()


async def consume(conn: AsyncConnection, account: str, upto: int) -> None:
    """Forget the notifications of ``account`` up to sequence number ``upto``."""
    await conn.execute(
        delete(graph_notifications).where(
            graph_notifications.c.account == account, graph_notifications.c.seq <= upto
        )
    )


async def forget(conn: AsyncConnection, account: str) -> None:
    """Drop every stored notification of ``account`` (it was deleted)."""
    await conn.execute(delete(graph_notifications).where(graph_notifications.c.account == account))
