"""One IMAP IDLE listener per real-time folder: INBOX, and the account's ``subconnections``.

Life of a :class:`FolderListener` (one task, one connection; the connection loop is
:class:`~relay.sources.imap.connection.KeptConnection`)::

    connect -> log in -> ENABLE QRESYNC -> SELECT
      -> sync against the stored folder state -> IDLE
      -> on EXISTS / EXPUNGE / VANISHED / FETCH: DONE -> incremental sync -> IDLE again
         (new mail only: DONE and its UID FETCH in one write)
      -> every ``idle_restart`` s: DONE (unanswered in ``done_timeout`` s = dead) -> IDLE
      -> ``push_check`` s after the last push, sync or check: DONE and one command that
         finds a change the server did not push (:mod:`relay.sources.imap.pushcheck`)
         -> incremental sync if it found one -> IDLE again

How a sync diffs the server against the stored state, so that nothing is missed or
reported twice, is :mod:`relay.sources.imap.sync`. Live notifications are only triggers for
those queries. The account's other folders are watched by its poller
(:mod:`relay.sources.imap.poller`), which also LISTs the folders: INBOX's listener runs a
poller round between two IDLEs every ``imap.poll_interval`` s (and on a sync request), then
SELECTs INBOX again and catches up with what happened meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
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
from relay.sources.imap.poller import FolderPoller
from relay.sources.imap.pushcheck import Plan, plan
from relay.sources.imap.sync import INBOX, INBOX_SPECIAL_USE, FolderSync, Session
from relay.store.leases import Lease
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
        poller: FolderPoller | None = None,
        lease: Lease | None = None,
    ) -> None:
        """``notify_from`` (timezone-aware) is the account's ``notifyFrom``; ``primary``
        marks the folder whose first baseline is the account's ``accountInitialized``;
        ``poller`` (INBOX's listener) polls the account's other folders between IDLEs."""
        super().__init__(ctx, account, path, report=report, account_row=account_row)
        self.special_use = special_use
        self.primary = primary
        self.poller = poller
        self.folder = FolderSync(
            ctx.store,
            ctx.sink,
            account,
            path,
            special_use,
            primary=primary,
            notify_from=notify_from,
            folder_row=folder_row,
            lease=lease,
        )
        # When this connection last showed the folder current (a push, a sync, a push
        # check), monotonic: the next push check is due imap.push_check s after.
        self._seen = 0.0

    def _closed(self) -> None:
        self.folder.forget()
        if self.poller is not None:
            self.poller.forget()

    def _on_update(self, update: Update) -> None:
        client = self._client
        if client is not None and client.selected != self.path:
            return  # about a folder the poller has selected: its sync reads it anyway
        if self.folder.on_update(update):
            # Pushes arrive: no need to ask whether one went missing.
            self._seen = time.monotonic()
            self._wake.set()

    async def _session(self, client: ImapClient, creds: Credentials, connected: list[bool]) -> None:
        session = Session(client)
        if session.qresync and "QRESYNC" not in client.enabled:
            await client.enable("QRESYNC")
        await self.folder.load()
        self._sync = False
        await self.folder.select_and_sync(session)
        self._seen = time.monotonic()
        connected[0] = True
        self._report(AccountState.CONNECTED, user=creds.user)
        await self._listen(session)

    async def _check(self, session: Session, *, idling: bool = False) -> None:
        """The push check; what it finds is stored, or left as a trigger for the sync."""
        found = await self.folder.check(session, idling=idling)
        self._seen = time.monotonic()
        self.ctx.push_checked(found)
        if found:
            self._log.info("push check found a change the server did not push")

    def _plan(self, next_round: float) -> Plan:
        return plan(
            time.monotonic(),
            seen=self._seen,
            interval=self.ctx.settings.push_check,
            round_at=next_round if self.poller is not None else None,
        )

    async def _listen(self, session: Session) -> None:
        client = session.client
        unwatch = client.on_close(self._wake.set)
        idle = "IDLE" in client.capabilities
        limit = (
            self.ctx.settings.idle_restart
            if idle
            else min(self.ctx.settings.idle_restart, _POLL_INTERVAL)
        )
        next_round = time.monotonic()
        try:
            while True:
                self._wake.clear()
                if self._reconnect:
                    return
                if client.closed:
                    raise client.error or ImapConnectionError("connection closed")
                todo = self._plan(next_round)
                if todo.check:
                    # Before the round: the round would leave INBOX when another folder
                    # changed, and the check reads the selected folder.
                    await self._check(session)
                if self._sync or todo.round:
                    force, self._sync = self._sync, False
                    left = False
                    if self.poller is not None:
                        left = await self.poller.run(session, force=force)
                        next_round = time.monotonic() + self.ctx.settings.poll_interval
                    if force or left:
                        # Every flag again: while another folder was selected, INBOX's own
                        # changes were not announced, and without CONDSTORE only reading
                        # every message's flags finds them (a round leaves INBOX only when
                        # a polled folder changed).
                        await self.folder.select_and_sync(session)
                        self._seen = time.monotonic()
                    continue
                if self.folder.pending():
                    await self.folder.incremental(session)
                    self._seen = time.monotonic()
                    continue
                if todo.check:
                    continue
                if idle:
                    await client.idle_start()
                wait = limit
                if todo.wake_at is not None:
                    wait = max(0.0, min(limit, todo.wake_at - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                if client.closed:
                    raise client.error or ImapConnectionError("connection closed")
                todo = self._plan(next_round)
                only_here = not (self._reconnect or self._sync or todo.round)
                if idle:
                    if self.folder.pending() and only_here:
                        # Only this folder's changes to read: the sync ends IDLE itself,
                        # with the FETCH of new mail pipelined behind DONE.
                        await self.folder.incremental(session, idling=True)
                        self._seen = time.monotonic()
                        continue
                    if todo.check and only_here:
                        # Likewise the check's command goes out right behind DONE.
                        await self._check(session, idling=True)
                        continue
                    await client.idle_done()
                elif todo.check:
                    # Also a liveness check, like the NOOP it replaces.
                    await self._check(session)
                else:
                    # Like DONE, an unanswered NOOP means the connection is dead.
                    async with asyncio.timeout(self.ctx.settings.done_timeout):
                        await client.noop()
        finally:
            unwatch()
