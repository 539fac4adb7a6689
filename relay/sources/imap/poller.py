"""One poller per IMAP account: the folder list, and every watched folder without IDLE.

IDLE watches one folder per connection, and servers limit connections per mailbox
(Exchange Online: 20), so, as EmailEngine does, only INBOX and the account's
``subconnections`` get IDLE. Every other watched folder is looked at by the poller, on
INBOX's connection between two IDLEs: an account costs one connection whatever its number
of folders. Each round (every ``imap.poll_interval`` s, at once on a sync request)::

    LIST (with LIST-STATUS: the STATUS of every folder in the same command)
      -> record the listing: mailboxNew / mailboxDeleted against the stored one
      -> tell the account's watcher (it starts or stops the subconnections' listeners)
      -> for each polled folder: STATUS (MESSAGES UIDNEXT UIDVALIDITY [HIGHESTMODSEQ])
         compared with what its last sync saw (on a new connection: with the stored
         state); changed, or, without CONDSTORE, not synced in full for
         ``imap.full_sync_interval`` s -> EXAMINE + the same sync as an IDLE listener's
      -> the listener SELECTs INBOX again (and catches up) when the round left it

A STATUS that differs is only a trigger: the sync itself diffs the server against the
stored state (:mod:`relay.sources.imap.sync`), so a change is never missed or reported
twice, whatever the poller saw. Without CONDSTORE a flag change leaves STATUS alone (the
cost of Exchange Online), which the periodic full sync covers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from relay.events.mailboxes import Listed, folder_name
from relay.imap.client import ImapClient
from relay.imap.errors import ImapCommandError
from relay.imap.parse import Mailbox, SelectResult
from relay.sources.imap.connection import ListenerContext
from relay.sources.imap.sync import INBOX, FolderSync, Session
from relay.sources.listing import record_listing, stored_listing
from relay.sources.specs import spec_matches
from relay.store import folders as folders_store
from relay.store.leases import Lease

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


class FolderPoller:
    """Lists an account's folders and polls the watched ones without IDLE, on a connection
    lent by INBOX's listener (see the module docstring)."""

    def __init__(
        self,
        ctx: ListenerContext,
        account: str,
        specs: Sequence[str],
        *,
        on_folders: FoldersListed,
        notify_from: datetime | None = None,
        folder_rows: Mapping[str, Mapping[Any, Any]] | None = None,
        lease: Lease | None = None,
    ) -> None:
        """``specs`` are the account's ``path`` specs; ``folder_rows`` (by path), when just
        read, spare the first syncs their reads; ``lease`` fences every write."""
        self.ctx = ctx
        self.account = account
        self.lease = lease
        self.specs = list(specs)
        self._on_folders = on_folders
        self._notify_from = notify_from
        self._folder_rows = dict(folder_rows or {})
        self.folders: dict[str, FolderSync] = {}
        # What each folder's last sync on this connection saw.
        self._seen: dict[str, tuple[int | None, ...]] = {}
        self._listed: dict[str, Listed] | None = None
        self._log = structlog.get_logger(__name__).bind(account=account)

    def forget(self) -> None:
        """The connection is gone: the next one starts from the store."""
        for folder in self.folders.values():
            folder.forget()
        self._seen.clear()
        self._listed = None

    async def run(self, session: Session, *, force: bool = False) -> bool:
        """One round (``force``: sync every polled folder); whether it left INBOX, i.e. the
        connection now has another folder selected, or none."""
        try:
            return await self._round(session, force=force)
        except ImapCommandError as exc:
            # A LIST or STATUS the server refused: the next round tries again.
            self._log.warning("folder round failed", error=str(exc))
            return session.client.selected != INBOX

    async def _round(self, session: Session, *, force: bool) -> bool:
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
        for path, use in wanted.items():
            folder = self.folders.get(path)
            if folder is None or folder.special_use != use:
                self.folders[path] = FolderSync(
                    self.ctx.store,
                    self.ctx.sink,
                    self.account,
                    path,
                    use,
                    notify_from=self._notify_from,
                    folder_row=self._folder_rows.pop(path, None),
                    lease=self.lease,
                )
                self._seen.pop(path, None)
        await self._load({p: self.folders[p] for p in wanted})
        self._folder_rows.clear()  # only the first round's folders could use them
        left = False
        for path in wanted:
            folder = self.folders[path]
            try:
                status = statuses.get(path)
                if status is None:
                    status = await client.status(path, items)
                if force or self._due(folder, status, session.condstore):
                    left = True
                    selected = await folder.select_and_sync(
                        session,
                        readonly=True,
                        flags_every=0.0 if force else self.ctx.settings.full_sync_interval,
                    )
                    self._seen[path] = _selected_signature(selected, session.condstore)
            except ImapCommandError as exc:
                # Deleted or renamed since the LIST: the next round's listing says so.
                self._log.info("folder not polled", folder=path, error=str(exc))
        return left

    async def _load(self, wanted: Mapping[str, FolderSync]) -> None:
        """The stored state of the folders not loaded yet: rows the caller handed over, else
        one read, and the missing rows created in one write (at an account's first round
        every folder is new)."""
        unread = {p: f for p, f in wanted.items() if f.folder is None and not f.has_row}
        for folder in wanted.values():
            if folder.folder is None and folder.has_row:
                await folder.load()
        if not unread:
            return
        async with self.ctx.store.read() as conn:
            rows = {str(r["path"]): r for r in await folders_store.for_account(conn, self.account)}
        missing = {
            p: f.special_use
            for p, f in unread.items()
            if p not in rows or (f.special_use and rows[p]["special_use"] != f.special_use)
        }
        if missing:
            async with self.ctx.store.write(notify=False) as conn:
                rows.update(await folders_store.ensure_many(conn, self.account, missing))
        for path, folder in unread.items():
            folder.adopt(rows[path])

    def _due(self, folder: FolderSync, status: Mapping[str, int], condstore: bool) -> bool:
        """Whether ``folder`` needs a sync: STATUS moved since its last sync here (or, on a
        new connection, from the stored state), or (no CONDSTORE) its flags are due."""
        seen = self._seen.get(folder.path)
        if seen is None:
            if folder.unchanged(status, condstore=condstore):
                self._seen[folder.path] = _signature(status)
                return False
            return True
        if _signature(status) != seen:
            return True
        if condstore:
            return False
        return time.monotonic() - folder.flags_fetched >= self.ctx.settings.full_sync_interval

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
        stored = None
        if known is None:
            known = stored = await stored_listing(self.ctx.store, self.account)
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
            stored=stored,
            lease=self.lease,
        )
        self._listed = listing
