"""The accounts queued messages are sent as: read once per claimed batch, not per message.

:func:`load` reads the rows of a batch's accounts (and the delegation roots of shared
mailboxes) in one transaction; :func:`smtp_server` and :func:`sent_copy` read settings out
of those rows without I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.send.sentcopy import MODES, SentCopy
from relay.store import accounts as accounts_store
from relay.store.schema import accounts


@dataclass(frozen=True, slots=True)
class Sender:
    """An account's row and the row of the account whose credentials it uses."""

    row: RowMapping
    root: RowMapping


@dataclass(frozen=True, slots=True)
class Missing:
    """Why an account cannot send (it or its delegation root was deleted)."""

    reason: str


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where an account's SMTP server is and whether it logs in with XOAUTH2."""

    host: str
    port: int
    secure: bool
    verify: bool
    oauth: bool
    auth: dict[str, Any]


def section(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


async def load(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, Sender | Missing]:
    """Every account of ``ids`` as a :class:`Sender`, or :class:`Missing` with the reason."""
    wanted = sorted(set(ids))
    found = await conn.execute(select(accounts).where(accounts.c.id.in_(wanted)))
    rows = {str(r["id"]): r for r in found.mappings()}
    out: dict[str, Sender | Missing] = {}
    for account in wanted:
        row = rows.get(account)
        if row is None:
            out[account] = Missing(f"account {account!r} no longer exists")
            continue
        root: RowMapping | None = row
        if row["delegated_account"] is not None:
            chain = await accounts_store.delegation_chain(conn, account)
            root = await accounts_store.get(conn, chain[-1]) if len(chain) > 1 else row
        if root is None:
            out[account] = Missing(f"delegated account {chain[-1]!r} no longer exists")
        else:
            out[account] = Sender(row, root)
    return out


def sent_copy(row: Mapping[Any, Any]) -> SentCopy:
    """The account's ``sentCopy`` mode (``provider`` unless set)."""
    mode = section(row["config"]).get("sentCopy")
    return mode if mode in MODES else "provider"


def account_copy(row: Mapping[Any, Any]) -> bool | None:
    """The account's EmailEngine ``copy`` setting (None: not set)."""
    value = section(row["config"]).get("copy")
    return value if isinstance(value, bool) else None


def smtp_server(row: Mapping[Any, Any], root: Mapping[Any, Any]) -> SmtpServer:
    """The account's SMTP settings, else its delegation root's (Microsoft 365 by default)."""
    smtp = section(section(row["config"]).get("smtp")) or section(
        section(root["config"]).get("smtp")
    )
    oauth = (
        row["delegated_account"] is not None
        or root["oauth2_app"] is not None
        or bool(section(root["config"]).get("oauth2"))
    )
    return SmtpServer(
        host=str(smtp.get("host") or "smtp.office365.com"),
        port=int(smtp.get("port") or 587),
        secure=bool(smtp.get("secure", False)),
        verify=bool(section(smtp.get("tls")).get("rejectUnauthorized", True)),
        oauth=oauth,
        auth=section(smtp.get("auth")),
    )
