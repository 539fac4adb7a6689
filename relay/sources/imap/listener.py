"""One IMAP IDLE listener per real-time folder: INBOX, and the account's ``subconnections``.

Life of a :class:`FolderListener` (one task, one connection; the connection loop is
:class:`~relay.sources.imap.connection.KeptConnection`)::

    connect -> log in -> ENABLE QRESYNC -> SELECT
      -> sync against the stored folder state -> IDLE
      -> on EXISTS / EXPUNGE / VANISHED / FETCH: DONE -> incremental sync -> IDLE again
      -> every ``idle_restart`` s: DONE (unanswered in ``done_timeout`` s = dead) -> IDLE

How a sync diffs the server against the stored state, so that nothing is missed or
reported twice, is :mod:`relay.sources.imap.sync`. Live notifications are only triggers for
those queries. The account's other folders are watched by its poller
(:mod:`relay.sources.imap.poller`), which also LISTs the folders.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from relay.imap.client import ImapClient
from relay.imap.errors import ImapConnectionError
from relay.imap.parse import Update
from relay.mailbox.credentials import Credentials
from relay.sources.imap.connection import (
    Backoff,
    KeptConnection,
    ListenerContext,
    Report,
    StateReport,
)
from relay.sources.imap.sync import INBOX, INBOX_SPECIAL_USE, FolderSync, Session
from relay.store.schema import AccountState

__all__ = [
    "INBOX",
    "INBOX_SPECIAL_USE",
    "Backoff",
    "FolderListener",
    "ListenerContext",
    "StateReport",
]

# Without IDLE the listener polls with NOOP this often (at most).
_POLL_INTERVAL = 60.0


class FolderListener(KeptConnection):
    """Watches one folder of one account with IDLE until stopped (see the module docstring)."""

    name = "imap idle"

    def __init__(
        self,
        ctx: ListenerContext,
        account: str,
        path: str,
        special_use: str | None,
        *,
        report: Report,
        primary: bool = False,
        notify_from: datetime | None = None,
        account_row: Mapping[Any, Any] | None = None,
        folder_row: Mapping[Any, Any] | None = None,
    ) -> None:
        """``notify_from`` (timezone-aware) is the account's ``notifyFrom``; ``primary``
        marks the folder whose first baseline is the account's ``accountInitialized``."""
        super().__init__(ctx, account, path, report=report, account_row=account_row)
        self.special_use = special_use
        self.primary = primary
        self.folder = FolderSync(
            ctx.store,
            ctx.sink,
            account,
            path,
            special_use,
            primary=primary,
            notify_from=notify_from,
            folder_row=folder_row,
        )

    def _closed(self) -> None:
        self.folder.forget()

    def _on_update(self, update: Update) -> None:
        if self.folder.on_update(update):
            self._wake.set()

    async def _session(self, client: ImapClient, creds: Credentials, connected: list[bool]) -> None:
        session = Session(client)
        if session.qresync:
            await client.enable("QRESYNC")
        await self.folder.load()
        self._sync = False
        await self.folder.select_and_sync(session)
        connected[0] = True
        self._report(AccountState.CONNECTED, user=creds.user)
        await self._listen(session)

    async def _listen(self, session: Session) -> None:
        client = session.client
        closed = asyncio.ensure_future(client.wait_closed())
        closed.add_done_callback(lambda _: self._wake.set())
        idle = "IDLE" in client.capabilities
        limit = (
            self.ctx.settings.idle_restart
            if idle
            else min(self.ctx.settings.idle_restart, _POLL_INTERVAL)
        )
        try:
            while True:
                self._wake.clear()
                if self._reconnect:
                    return
                if client.closed:
                    raise client.error or ImapConnectionError("connection closed")
                if self._sync:
                    self._sync = False
                    await self.folder.select_and_sync(session)
                    continue
                if self.folder.pending():
                    await self.folder.incremental(session)
                    continue
                if idle:
                    await client.idle_start()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(limit):
                        await self._wake.wait()
                if client.closed:
                    raise client.error or ImapConnectionError("connection closed")
                if idle:
                    await client.idle_done()
                else:
                    # Like DONE, an unanswered NOOP means the connection is dead.
                    async with asyncio.timeout(self.ctx.settings.done_timeout):
                        await client.noop()
        finally:
            closed.cancel()
