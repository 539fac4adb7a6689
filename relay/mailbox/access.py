"""Which :class:`~relay.mailbox.model.Mailbox` an account is read through.

:class:`Mailboxes` is what the API and the webhook content fetch hold: ``open(account)``
reads the account and returns its IMAP or Graph backend. An account that has no mailbox
(a send-only account: an ``smtp`` block and no ``imap`` one, or ``imap.disabled``) cannot
be read: :class:`~relay.mailbox.model.NotOffered`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from relay.errors import NotFound
from relay.mailbox.imap import ImapMailbox
from relay.mailbox.model import Mailbox, NotOffered
from relay.mailbox.pool import ImapPool
from relay.store import Store
from relay.store import accounts as accounts_store
from relay.store import folders as folders_store

__all__ = ["GraphFactory", "Mailboxes", "send_only"]

# (account, account row) -> the Graph backend of that account.
GraphFactory = Callable[[str, Mapping[Any, Any]], Mailbox]


def send_only(row: Mapping[Any, Any], *, unwatched: bool = False) -> bool:
    """Whether an account only sends: ``imap.disabled`` (unless ``unwatched``), or SMTP
    settings and no IMAP/OAuth2."""
    config = row["config"] if isinstance(row["config"], dict) else {}
    imap = config.get("imap")
    if isinstance(imap, dict) and imap.get("disabled") and not unwatched:
        return True
    oauth = row["oauth2_app"] or row["delegated_account"] or config.get("oauth2")
    return not imap and not oauth and bool(config.get("smtp"))


class Mailboxes:
    """Opens the mailbox backend of an account (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        pool: ImapPool,
        *,
        chunk_bytes: int,
        graph: GraphFactory | None = None,
    ) -> None:
        self.store = store
        self.pool = pool
        self._chunk = chunk_bytes
        self._graph = graph

    async def open(
        self, account: str, row: Mapping[Any, Any] | None = None, *, unwatched: bool = False
    ) -> Mailbox:
        """The backend of ``account``; NotFound for an unknown account.

        ``unwatched`` opens the mailbox of an account whose ``imap.disabled`` says not to
        watch it (sending tidies its Sent folder all the same).
        """
        folders = None
        if row is None:
            async with self.store.read() as conn:
                row = await accounts_store.get(conn, account)
                if row is not None and row["backend"] != "graph":
                    # Ids name folders by number: read them in the same go.
                    folders = await folders_store.for_account(conn, account)
        if row is None:
            raise NotFound("Account record was not found for requested ID", field="account")
        if send_only(row, unwatched=unwatched):
            raise NotOffered(f"account {account!r} is send-only: it has no mailbox to read")
        if row["backend"] == "graph":
            if self._graph is None:
                raise NotOffered("Microsoft Graph accounts are not read on this node")
            return self._graph(account, row)
        return ImapMailbox(account, self.store, self.pool, chunk_bytes=self._chunk, folders=folders)

    async def close(self) -> None:
        """Close the IMAP connections."""
        await self.pool.close()
