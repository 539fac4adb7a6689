"""One poller per IMAP account: the folder list, and every watched folder without IDLE.

IDLE watches one folder per connection, and servers limit connections per mailbox
(Exchange Online: 20), so, as EmailEngine does, only INBOX and the account's
``subconnections`` get IDLE; every other watched folder is looked at by this poller on one
more connection. Each round (every ``imap.poll_interval`` s, at once on a sync request)::

    LIST (with LIST-STATUS: the STATUS of every folder in the same command)
      -> record the listing: mailboxNew / mailboxDeleted against the stored one
      -> tell the account's watcher (it starts or stops the IDLE listeners)
      -> for each polled folder: STATUS (MESSAGES UIDNEXT UIDVALIDITY [HIGHESTMODSEQ])
         compared with what its last sync saw; changed (or never synced on this
         connection, or, without CONDSTORE, not synced in full for
         ``imap.full_sync_interval`` s) -> EXAMINE + the same sync as an IDLE listener's
      -> UNSELECT

A STATUS that differs is only a trigger: the sync itself diffs the server against the
stored state (:mod:`relay.sources.imap.sync`), so a change is never missed or reported
twice, whatever the poller saw. Without CONDSTORE a flag change leaves STATUS alone (the
cost of Exchange Online), which the periodic full sync covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from relay.events.mailboxes import Listed, folder_name
from relay.imap.client import ImapClient
from relay.imap.errors import ImapCommandError, ImapConnectionError
from relay.imap.parse import Mailbox, SelectResult
from relay.mailbox.credentials import Credentials
from relay.sources.imap.connection import KeptConnection, ListenerContext, Report
from relay.sources.imap.sync import INBOX, FolderSync, Session
from relay.sources.listing import record_listing, stored_listing
from relay.sources.specs import spec_matches
from relay.store.schema import AccountState

__all__ = ["FolderPoller", "listing_of", "resolve_folders", "selectable"]

# Called with each LIST: starts/stops the IDLE listeners; returns the paths they watch.
FoldersListed = Callable[[Sequence[Mailbox]], set[str]]


def selectable(box: Mailbox) -> bool:
    """Whether a LIST entry is a folder that holds messages."""
    flags = {flag.lower() for flag in box.flags}
    return "\\noselect" not in flags and "\\nonexistent" not in flags


def resolve_folders(specs: Sequence[str], boxes: Sequence[Mailbox]) -> dict[str, str | None]:
    """Folder path -> special use, for every selectable LISTed folder that ``specs`` name
    (INBOX aside)."""
    out: dict[str, str | None] = {}
    for box in boxes:
        if not selectable(box) or box.name.upper() == INBOX:
            continue
        use = box.special_use
        if any(spec_matches(spec, box.name, use) for spec in specs):
            out[box.name] = use
    return out


def listing_of(boxes: Sequence[Mailbox]) -> dict[str, Listed]:
    """The listing to record: every selectable folder with its name and special use."""
    return {
        box.name: Listed(folder_name(box.name, box.delimiter), box.special_use)
        for box in boxes
        if selectable(box)
    }


def _signature(values: Mapping[str, int | None]) -> tuple[int | None, ...]:
    return tuple(values.get(key) for key in ("UIDVALIDITY", "UIDNEXT", "MESSAGES", "HIGHESTMODSEQ"))


def _selected_signature(selected: SelectResult, condstore: bool) -> tuple[int | None, ...]:
    return _signature(
        {
            "UIDVALIDITY": selected.uidvalidity,
            "UIDNEXT": selected.uidnext,
            "MESSAGES": selected.exists,
            "HIGHESTMODSEQ": selected.highestmodseq if condstore else None,
        }
    )


class FolderPoller(KeptConnection):
    """Lists an account's folders and polls the watched ones without IDLE (see the module
    docstring)."""

    name = "imap poll"

    def __init__(
        self,
        ctx: ListenerContext,
        account: str,
        specs: Sequence[str],
        *,
        report: Report,
        on_folders: FoldersListed,
        notify_from: datetime | None = None,
        folder_rows: Mapping[str, Mapping[Any, Any]] | None = None,
    ) -> None:
        """``specs`` are the account's ``path`` specs; ``folder_rows`` (by path), when just
        read, spare the first syncs their reads."""
        super().__init__(ctx, account, "*", report=report)
        self.specs = list(specs)
        self._on_folders = on_folders
        self._notify_from = notify_from
        self._folder_rows = dict(folder_rows or {})
        self.folders: dict[str, FolderSync] = {}
        # What each folder's last sync on this connection saw, and when it was in full.
        self._seen: dict[str, tuple[int | None, ...]] = {}
        self._synced_at: dict[str, float] = {}
        self._listed: dict[str, Listed] | None = None

    def _closed(self) -> None:
        for folder in self.folders.values():
            folder.forget()
        self._seen.clear()
        self._synced_at.clear()
        self._listed = None

    async def _session(self, client: ImapClient, creds: Credentials, connected: list[bool]) -> None:
        session = Session(client)
        if session.qresync:
            await client.enable("QRESYNC")
        closed = asyncio.ensure_future(client.wait_closed())
        closed.add_done_callback(lambda _: self._wake.set())
        try:
            while True:
                self._wake.clear()
                force, self._sync = self._sync, False
                await self._round(session, force=force)
                if not connected[0]:
                    connected[0] = True
                    self._report(AccountState.CONNECTED, user=creds.user)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.ctx.settings.poll_interval):
                        await self._wake.wait()
                if self._reconnect:
                    return
                if client.closed:
                    raise client.error or ImapConnectionError("connection closed")
        finally:
            closed.cancel()

    async def _round(self, session: Session, *, force: bool) -> None:
        client = session.client
        items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"] + (
            ["HIGHESTMODSEQ"] if session.condstore else []
        )
        boxes, statuses = await client.list_status(items)
        await self._record(client, boxes, statuses)
        idle = self._on_folders(boxes)
        wanted = {
            path: use
            for path, use in resolve_folders(self.specs, boxes).items()
            if path not in idle
        }
        for path in [p for p in self.folders if p not in wanted]:
            del self.folders[path]
            self._seen.pop(path, None)
            self._synced_at.pop(path, None)
        synced = False
        for path, use in wanted.items():
            folder = self.folders.get(path)
            if folder is None or folder.special_use != use:
                folder = FolderSync(
                    self.ctx.store,
                    self.ctx.sink,
                    self.account,
                    path,
                    use,
                    notify_from=self._notify_from,
                    folder_row=self._folder_rows.pop(path, None),
                )
                self.folders[path] = folder
                self._seen.pop(path, None)
            try:
                if folder.folder is None:
                    await folder.load()
                status = statuses.get(path)
                if status is None:
                    status = await client.status(path, items)
                if force or self._due(path, status, session.condstore):
                    selected = await folder.select_and_sync(session, readonly=True)
                    synced = True
                    self._seen[path] = _selected_signature(selected, session.condstore)
                    self._synced_at[path] = time.monotonic()
            except ImapCommandError as exc:
                # Deleted or renamed since the LIST: the next round's listing says so.
                self._log.info("folder not polled", folder=path, error=str(exc))
        if synced:
            await client.unselect()

    def _due(self, path: str, status: Mapping[str, int], condstore: bool) -> bool:
        seen = self._seen.get(path)
        if seen is None or _signature(status) != seen:
            return True
        if condstore:
            return False
        return time.monotonic() - self._synced_at.get(path, 0.0) >= (
            self.ctx.settings.full_sync_interval
        )

    async def _record(
        self,
        client: ImapClient,
        boxes: Sequence[Mailbox],
        statuses: Mapping[str, Mapping[str, int]],
    ) -> None:
        """Record the listing when it differs from the last one recorded on this connection."""
        listing = listing_of(boxes)
        if listing == self._listed:
            return
        validity: dict[str, int] = {}
        known = self._listed
        if known is None:
            known = await stored_listing(self.ctx.store, self.account)
        for path in listing:
            if known is None or path in known:
                continue  # the first listing of an account reports nothing
            value = (statuses.get(path) or {}).get("UIDVALIDITY")
            if value is None:
                with contextlib.suppress(ImapCommandError):
                    value = (await client.status(path, ["UIDVALIDITY"])).get("UIDVALIDITY")
            if value is not None:
                validity[path] = value
        await record_listing(
            self.ctx.store,
            self.account,
            listing,
            service_url=self.ctx.service_url,
            max_bytes=self.ctx.max_payload_bytes,
            uidvalidity=validity,
            imap=True,
        )
        self._listed = listing
