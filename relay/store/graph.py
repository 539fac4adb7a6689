"""Graph backend state: subscriptions, delta links and the raw notification queue.

Tables (revision 0006):

- ``graph_accounts``: one row per watched Graph account: the mode (``subscription`` or
  ``polling``), the subscription (id, expiry, encrypted ``clientState``) and the last error.
- ``graph_folders``: per watched folder the stored delta link and what the relay knows of
  the folder's messages (``{graph id: [uid, flags]}``), so that a change is reported once.
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
    "graph_notifications",
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
    Column("subscription_id", String(128), nullable=True, unique=True),
    Column("resource", Text, nullable=True),
    Column("expires_ms", BigInteger, nullable=True),
    # Encrypted: whoever knows it can post notifications that the relay acts on.
    Column("client_state", LargeBinary, nullable=True),
    Column("last_error", JSON, nullable=True),
    Column("updated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("account"),
)

graph_folders = Table(
    "graph_folders",
    metadata,
    Column("account", String(256), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("folder", String(256), nullable=False),
    Column("delta_link", Text, nullable=True),
    # {graph message id: [uid, [flags]]}; uids are assigned in arrival order.
    Column("messages", JSON, nullable=False),
    Column("uid_next", BigInteger, nullable=False),
    Column("synced_ms", BigInteger, nullable=True),
    Column("updated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("account", "folder"),
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


async def get_account(conn: AsyncConnection, account: str) -> RowMapping | None:
    """The Graph state of ``account``, if it was ever watched."""
    result = await conn.execute(select(graph_accounts).where(graph_accounts.c.account == account))
    return result.mappings().first()


async def by_subscriptions(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, RowMapping]:
    """Subscription id -> Graph state row, for the known ones of ``ids``."""
    if not ids:
        return {}
    result = await conn.execute(
        select(graph_accounts).where(graph_accounts.c.subscription_id.in_(sorted(set(ids))))
    )
    return {str(r["subscription_id"]): r for r in result.mappings()}


async def save_account(conn: AsyncConnection, account: str, values: dict[str, Any]) -> None:
    """Insert or update the Graph state of ``account`` (only the given columns change)."""
    values = {**values, "updated_ms": now_ms()}
    done = await conn.execute(
        graph_accounts.update().where(graph_accounts.c.account == account).values(**values)
    )
    if done.rowcount == 0:
        values.setdefault("mode", GraphMode.SUBSCRIPTION)
        await conn.execute(graph_accounts.insert().values(account=account, **values))


async def get_folder(conn: AsyncConnection, account: str, folder: str) -> RowMapping | None:
    """The delta state of one folder."""
    result = await conn.execute(
        select(graph_folders).where(
            graph_folders.c.account == account, graph_folders.c.folder == folder
        )
    )
    return result.mappings().first()


async def save_folder(
    conn: AsyncConnection,
    account: str,
    folder: str,
    *,
    delta_link: str | None,
    messages: dict[str, Any],
    uid_next: int,
) -> None:
    """Replace the delta state of one folder."""
    ms = now_ms()
    values = {
        "delta_link": delta_link,
        "messages": messages,
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
