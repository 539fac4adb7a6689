"""Bringing one folder's stored state up to date with the server, on a connection lent to it.

A :class:`FolderSync` holds what the relay remembers of one folder (a :class:`FolderState`)
and the diff logic; it owns no connection. The IDLE listener of a folder
(:class:`~relay.sources.imap.listener.FolderListener`) lends it its own connection and feeds
it the untagged responses IDLE brings; the poller of an account
(:class:`~relay.sources.imap.poller.FolderPoller`) lends it INBOX's connection between two
IDLEs, for a sync when STATUS says the folder changed.

**Never miss, never repeat.** The folder state (``imap_folders``: UIDVALIDITY, the next UID
not yet reported, HIGHESTMODSEQ, the UIDs known to exist and, per flag, the UIDs carrying it)
is the only memory. Every sync diffs the server against it and hands the changes together
with the new state to :class:`~relay.sources.imap.sink.FolderSink`, which writes events and
state in one transaction. After a disconnect or a restart the next sync finds exactly what
was not yet stored:

* new mail: UIDs at or above the stored ``uidnext`` (``UID FETCH uidnext:*``);
* with QRESYNC: ``UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE modseq VANISHED)`` gives expunged
  UIDs and changed flags. The stored modseq only moves to values such a query returned
  (or SELECT's HIGHESTMODSEQ before it), so no change below it can be skipped;
* without QRESYNC: ``UID SEARCH ALL`` diffed against the known UIDs gives the expunged
  ones; flags come from ``CHANGEDSINCE`` with CONDSTORE, or from fetching every message's
  flags otherwise (the cost of servers without CONDSTORE, such as Exchange Online).

Live notifications are only *triggers* for the same queries, so a notification lost in a
dead connection costs nothing. A UIDVALIDITY change reports ``mailboxReset`` and records a
new baseline instead of a flood of deletions and new mail. On the first sync existing mail
is the baseline: nothing is reported, except (with the account's ``notifyFrom``) messages
whose INTERNALDATE is after it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from relay.events import normalize
from relay.events.normalize import visible_flags
from relay.imap.client import FetchResult, ImapClient
from relay.imap.errors import ImapCommandError
from relay.imap.parse import (
    Exists,
    Expunge,
    FetchedMessage,
    SelectResult,
    Update,
    Vanished,
)
from relay.sources.imap.sink import (
    Change,
    Deleted,
    FlagsChanged,
    FolderRef,
    FolderSink,
    Initialized,
    NewMessage,
    Reset,
)
from relay.sources.imap.state import FolderState, RangeSet
from relay.store import Store
from relay.store import folders as folders_store
from relay.store.leases import Lease

__all__ = ["INBOX", "INBOX_SPECIAL_USE", "FolderSync", "Session"]

_log = structlog.get_logger(__name__)

INBOX = "INBOX"
INBOX_SPECIAL_USE = "\\Inbox"


class Session:
    """What one connection learned about the server."""

    __slots__ = ("client", "condstore", "items", "qresync")

    def __init__(self, client: ImapClient) -> None:
        self.client = client
        caps = client.capabilities
        self.qresync = "QRESYNC" in caps
        self.condstore = self.qresync or "CONDSTORE" in caps
        # The envelope, flags and structure, and the few header fields that tell an
        # automatic reply (EmailEngine's isAutoReply).
        self.items = normalize.imap_items(caps, auto_reply=True)


class FolderSync:
    """One folder's state and how it is brought up to date (see the module docstring)."""

    # Every watched folder of every account has one: slots keep them small.
    __slots__ = (
        "_condstore",
        "_flag_updates",
        "_folder_row",
        "_want_flags",
        "_want_new",
        "_want_search",
        "account",
        "flags_fetched",
        "folder",
        "notify_from",
        "path",
        "primary",
        "ref",
        "sink",
        "special_use",
        "store",
    )

    def __init__(
        self,
        store: Store,
        sink: FolderSink,
        account: str,
        path: str,
        special_use: str | None,
        *,
        primary: bool = False,
        notify_from: datetime | None = None,
        folder_row: Mapping[Any, Any] | None = None,
        lease: Lease | None = None,
    ) -> None:
        """``primary``: the folder whose first baseline is the account's
        ``accountInitialized``. ``folder_row``, when the caller has just read it, spares the
        first load its own read. ``lease`` fences the commits (see
        :func:`relay.store.leases.fenced`)."""
        self.store = store
        self.sink = sink
        self.account = account
        self.path = path
        self.special_use = special_use
        self.primary = primary
        self.notify_from = notify_from
        self.ref = FolderRef(account, path, special_use, lease)
        self.folder: FolderState | None = None
        self._folder_row = folder_row
        self._condstore = False
        # Triggers set by untagged responses; cleared when the sync they ask for runs.
        self._want_new = False
        self._want_search = False
        self._want_flags = False
        self._flag_updates: dict[int, tuple[str, ...]] = {}
        # When every message's flags were last fetched (servers without CONDSTORE), monotonic.
        self.flags_fetched = -1e18

    @property
    def log(self) -> Any:
        """A logger bound to the folder (made when needed: most folders never log)."""
        return _log.bind(account=self.account, path=self.path)

    # -- state ------------------------------------------------------------------------------

    def adopt(self, row: Mapping[Any, Any]) -> FolderState:
        """Take the stored state from ``row`` (just read by the caller)."""
        self._folder_row = None
        self.folder = FolderState.from_row(row)
        return self.folder

    @property
    def has_row(self) -> bool:
        """Whether the caller handed over the folder's row already."""
        return self._folder_row is not None

    async def load(self) -> FolderState:
        """Read the stored state (creating the row on the first run)."""
        row, self._folder_row = self._folder_row, None
        if row is None:
            async with self.store.read() as conn:
                row = await folders_store.get(conn, self.account, self.path)
        if row is None or (self.special_use and row["special_use"] != self.special_use):
            # Only the first connect writes: at start-up thousands of listeners load at once.
            async with self.store.write(notify=False) as conn:
                row = await folders_store.ensure(conn, self.account, self.path, self.special_use)
        self.folder = FolderState.from_row(row)
        return self.folder

    def forget(self) -> None:
        """Drop the state and the triggers: the next connection starts from the store."""
        self.folder = None
        self.flags_fetched = -1e18
        self.clear_triggers()

    def unchanged(self, status: Mapping[str, int], *, condstore: bool) -> bool:
        """Whether STATUS shows the folder exactly as stored: nothing arrived, went or (with
        CONDSTORE) changed since. Without CONDSTORE flag changes do not show, so never."""
        folder = self.folder
        if not condstore or folder is None or not folder.initialized:
            return False
        return (
            status.get("UIDVALIDITY") == folder.uidvalidity
            and status.get("UIDNEXT") == folder.uidnext
            and status.get("MESSAGES") == len(folder.uids)
            and status.get("HIGHESTMODSEQ") == folder.highestmodseq
        )

    def clear_triggers(self) -> None:
        """Forget what untagged responses asked for (a full sync covers it)."""
        self._want_new = self._want_search = self._want_flags = False
        self._flag_updates.clear()

    # -- triggers ---------------------------------------------------------------------------

    def on_update(self, update: Update) -> bool:
        """Note what an untagged response asks for; whether it asks for anything."""
        if isinstance(update, Exists):
            self._want_new = True
        elif isinstance(update, Expunge | Vanished):
            self._want_search = True
        elif isinstance(update, FetchedMessage):
            if not self._condstore and update.uid is not None and update.flags is not None:
                self._flag_updates[update.uid] = update.flags
            else:
                self._want_flags = True
        else:
            return False
        return True

    def pending(self) -> bool:
        """Whether an incremental sync is asked for."""
        return self._want_new or self._want_search or self._want_flags or bool(self._flag_updates)

    # -- sync -------------------------------------------------------------------------------

    async def select_and_sync(
        self, session: Session, *, readonly: bool = False, flags_every: float = 0.0
    ) -> SelectResult:
        """SELECT (EXAMINE with ``readonly``) the folder and bring the stored state up to
        date with the server; returns what the SELECT said.

        Without CONDSTORE only fetching every message's flags finds flag changes;
        ``flags_every`` (seconds) skips that when it ran more recently (new and expunged
        mail is still found)."""
        client = session.client
        # Anything announced (or requested) before this point is covered by this full sync.
        self.clear_triggers()
        selected = await client.select(self.path, readonly=readonly, condstore=session.condstore)
        self._condstore = session.condstore and selected.highestmodseq is not None
        folder = self.folder
        assert folder is not None
        changes: list[Change] = []
        new: dict[int, FetchedMessage | None] = {}
        validity = selected.uidvalidity or 0
        if not folder.initialized or folder.uidvalidity != validity:
            await self._baseline(session, selected, folder, changes, new)
        else:
            every_flag = time.monotonic() - self.flags_fetched >= flags_every
            modseq = await self._catch_up(session, selected, folder, changes, new, every_flag)
            if (selected.uidnext or 0) > (folder.uidnext or 1):
                self._absorb(
                    await client.uid_fetch(f"{folder.uidnext or 1}:*", session.items),
                    folder,
                    changes,
                    new,
                )
            folder.highestmodseq = modseq
        await self._take_new(session, folder, changes, new)
        await self.sink.commit(self.ref, folder, changes, synced=True)
        self._log_changes(changes)
        return selected

    async def _baseline(
        self,
        session: Session,
        selected: SelectResult,
        folder: FolderState,
        changes: list[Change],
        new: dict[int, FetchedMessage | None],
    ) -> None:
        """Record what the folder holds now; report nothing old (but ``notifyFrom`` mail)."""
        first = not folder.initialized
        validity = selected.uidvalidity or 0
        if not first:
            assert folder.uidvalidity is not None
            changes.append(Reset(folder.uidvalidity, validity, selected.uidnext))
            self.log.warning(
                "UIDVALIDITY changed; new baseline", previous=folder.uidvalidity, now=validity
            )
        notify_from = self.notify_from if first else None
        items = ["UID", "FLAGS"] + (["INTERNALDATE"] if notify_from else [])
        result = await session.client.uid_fetch("1:*", items) if selected.exists else None
        uidnext = selected.uidnext
        if uidnext is None:
            uids = [m.uid for m in result.messages if m.uid] if result else []
            uidnext = max(uids, default=0) + 1
        folder.reset(validity, uidnext, selected.highestmodseq if self._condstore else None)
        for message in result.messages if result else ():
            uid = message.uid
            if uid is None:
                continue
            if uid >= uidnext:
                new[uid] = None  # arrived after SELECT: new mail
            elif notify_from is not None and _after(message.internaldate, notify_from):
                new[uid] = None
            else:
                folder.set_flags(uid, visible_flags(message.flags))
        if first and self.primary:
            changes.append(Initialized())

    async def _catch_up(
        self,
        session: Session,
        selected: SelectResult,
        folder: FolderState,
        changes: list[Change],
        new: dict[int, FetchedMessage | None],
        every_flag: bool = True,
    ) -> int | None:
        """Deletions and flag changes since the stored state; returns the modseq to store.
        Without CONDSTORE, flag changes only with ``every_flag``."""
        client = session.client
        if self._condstore and folder.highestmodseq is not None:
            result = await self._changed_since(session, folder, changes, new, search=True)
            return max(_highest(result, folder.highestmodseq), selected.highestmodseq or 0)
        await self._search_diff(client, folder, changes, new)
        if folder.uids and every_flag:
            self._absorb(await client.uid_fetch("1:*", ["UID", "FLAGS"]), folder, changes, new)
        if every_flag:
            self.flags_fetched = time.monotonic()
        return selected.highestmodseq if self._condstore else None

    async def _changed_since(
        self,
        session: Session,
        folder: FolderState,
        changes: list[Change],
        new: dict[int, FetchedMessage | None],
        *,
        search: bool,
    ) -> FetchResult:
        """Flag changes (and, with QRESYNC, expunges) since the stored modseq; without
        QRESYNC, ``search`` finds the expunged with a UID diff."""
        assert folder.highestmodseq is not None
        result = await session.client.uid_fetch(
            "1:*",
            ["UID", "FLAGS"],
            changedsince=folder.highestmodseq,
            vanished=session.qresync,
        )
        self._absorb(result, folder, changes, new)
        if search and not session.qresync:
            await self._search_diff(session.client, folder, changes, new)
        return result

    async def incremental(self, session: Session, *, idling: bool = False) -> None:
        """Act on the triggers IDLE collected. With ``idling`` the connection's IDLE still
        runs and this ends it: when new mail is all there is to read, its FETCH goes out
        right behind DONE (:meth:`ImapClient.idle_done_fetch`), a round trip sooner."""
        client = session.client
        folder = self.folder
        assert folder is not None
        want_new, want_search, want_flags = self._want_new, self._want_search, self._want_flags
        flag_updates = self._flag_updates
        self._want_new = self._want_search = self._want_flags = False
        self._flag_updates = {}
        changes: list[Change] = []
        new: dict[int, FetchedMessage | None] = {}
        modseq_before = folder.highestmodseq

        async def end_idle() -> None:
            nonlocal idling
            if idling:
                idling = False
                await client.idle_done()

        if self._condstore and folder.highestmodseq is not None:
            if want_search or want_flags or flag_updates:
                await end_idle()
                result = await self._changed_since(
                    session, folder, changes, new, search=want_search
                )
                folder.highestmodseq = _highest(result, folder.highestmodseq)
        else:
            for uid, flags in flag_updates.items():
                self._flags_seen(uid, flags, folder, changes)
            if want_search:
                await end_idle()
                await self._search_diff(client, folder, changes, new)
            if want_flags and folder.uids:
                await end_idle()
                self._absorb(await client.uid_fetch("1:*", ["UID", "FLAGS"]), folder, changes, new)
        if want_new:
            uids = f"{folder.uidnext or 1}:*"
            if idling:
                idling = False
                fetched = await client.idle_done_fetch(uids, session.items)
            else:
                fetched = await client.uid_fetch(uids, session.items)
            self._absorb(fetched, folder, changes, new)
        await end_idle()
        await self._take_new(session, folder, changes, new)
        if changes or folder.highestmodseq != modseq_before:
            await self.sink.commit(self.ref, folder, changes)
            self._log_changes(changes)

    async def check(self, session: Session, *, idling: bool = False) -> bool:
        """Look with one command for a change no push announced (see
        :mod:`relay.sources.imap.pushcheck`); whether one was found: stored already, or left
        as a trigger for :meth:`incremental`. With ``idling`` the command goes out right
        behind the DONE that ends the connection's IDLE.

        With CONDSTORE, ``UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE modseq [VANISHED])``: new
        mail has a modseq above the stored one too, so this finds it with the flag changes
        and, with QRESYNC, the expunges; the sync then goes on as after a push. Without
        CONDSTORE (Exchange Online), ``UID FETCH * (UID)``: the last message's sequence
        number and UID tell new mail (a UID at or above ``uidnext``) and expunges (fewer
        messages than known); flag changes do not show. An EXISTS the server held back
        comes with the command's answer and is a trigger like any other.
        """
        client = session.client
        folder = self.folder
        assert folder is not None
        if self._condstore and folder.highestmodseq is not None:
            modseq_before = folder.highestmodseq
            if idling:
                result = await client.idle_done_fetch(
                    "1:*", ["UID", "FLAGS"], changedsince=modseq_before, vanished=session.qresync
                )
            else:
                result = await client.uid_fetch(
                    "1:*", ["UID", "FLAGS"], changedsince=modseq_before, vanished=session.qresync
                )
            changes: list[Change] = []
            new: dict[int, FetchedMessage | None] = {}
            self._absorb(result, folder, changes, new)
            folder.highestmodseq = _highest(result, modseq_before)
            await self._take_new(session, folder, changes, new)
            if changes or folder.highestmodseq != modseq_before:
                await self.sink.commit(self.ref, folder, changes)
                self._log_changes(changes)
            return bool(changes) or self.pending()
        try:
            if idling:
                result = await client.idle_done_fetch("*", ["UID"])
            else:
                result = await client.uid_fetch("*", ["UID"])
        except ImapCommandError as exc:
            if exc.command != "UID FETCH":
                raise
            # A server that refuses "*" (an empty folder, say) costs the check, not the
            # connection (IDLE has ended all the same).
            self.log.debug("push check refused", error=str(exc))
            return self.pending()
        last = max(result.messages, key=lambda m: m.seq, default=None)
        for message in result.messages:
            if message is not last:
                self.on_update(message)  # another message's flags, sent along unasked
        count = last.seq if last is not None else 0
        top = (last.uid or 0) if last is not None else 0
        if top >= (folder.uidnext or 1):
            self._want_new = True
        elif count != len(folder.uids):
            self._want_search = True
        return self.pending()

    def _absorb(
        self,
        result: FetchResult,
        folder: FolderState,
        changes: list[Change],
        new: dict[int, FetchedMessage | None],
    ) -> None:
        """Fold one FETCH result (solicited or not) into the state and the change list."""
        for gone in result.vanished:
            new.pop(gone, None)
            if gone in folder.uids:
                folder.forget(gone)
                changes.append(Deleted(gone))
        for message in result.messages:
            uid = message.uid
            if uid is None:
                if message.flags is not None:
                    self._want_flags = True
                continue
            if uid in folder.uids:
                if message.flags is not None:
                    self._flags_seen(uid, message.flags, folder, changes)
            elif uid in new or uid >= (folder.uidnext or 1):
                if "ENVELOPE" in message.attributes:
                    new[uid] = message
                else:
                    new.setdefault(uid, None)

    def _flags_seen(
        self, uid: int, flags: Iterable[str], folder: FolderState, changes: list[Change]
    ) -> None:
        if uid not in folder.uids:
            return
        before = folder.flags_of(uid)
        after = visible_flags(flags)
        if set(before) != set(after):
            folder.set_flags(uid, after)
            changes.append(FlagsChanged(uid, tuple(before), tuple(after)))

    async def _search_diff(
        self,
        client: ImapClient,
        folder: FolderState,
        changes: list[Change],
        new: dict[int, FetchedMessage | None],
    ) -> None:
        """Expunged UIDs (and unseen new ones) from ``UID SEARCH ALL``."""
        found = await client.uid_search("ALL")
        current = RangeSet(found.uids)
        for uid in [u for u in folder.uids if u not in current]:
            folder.forget(uid)
            changes.append(Deleted(uid))
        uidnext = folder.uidnext or 1
        for uid in found.uids:
            if uid >= uidnext and uid not in new:
                new[uid] = None

    async def _take_new(
        self,
        session: Session,
        folder: FolderState,
        changes: list[Change],
        new: dict[int, FetchedMessage | None],
    ) -> None:
        """Fetch what is missing of the new messages and report them in UID order."""
        missing = [uid for uid, message in new.items() if message is None]
        if missing:
            self._absorb(
                await session.client.uid_fetch(missing, session.items), folder, changes, new
            )
        for uid in sorted(new):
            message = new[uid]
            if message is None:
                continue  # expunged before it could be fetched
            folder.set_flags(uid, visible_flags(message.flags))
            changes.append(NewMessage(await self._with_report(session, message)))
        if new:
            folder.uidnext = max(folder.uidnext or 1, max(new) + 1)

    async def _with_report(self, session: Session, message: FetchedMessage) -> dict[str, Any]:
        """A new message's attributes, with the parts of a delivery or feedback report in
        INBOX read too (EmailEngine looks for bounces and complaints there only)."""
        inbox = self.path.upper() == INBOX
        items = normalize.report_items(message.attributes, inbox=inbox)
        if not items or message.uid is None:
            return message.attributes
        try:
            result = await session.client.uid_fetch(message.uid, ["UID", *items])
        except ImapCommandError as exc:
            # A server that cannot read a part: the message is still reported, as it is.
            self.log.info("report parts not read", uid=message.uid, error=str(exc))
            return message.attributes
        attributes = dict(message.attributes)
        for found in result.messages:
            if found.uid == message.uid:
                attributes.update(
                    (key, value)
                    for key, value in found.attributes.items()
                    if key.startswith("BODY[")
                )
            else:
                # Another message's flags, sent along unasked: a trigger like any other.
                self.on_update(found)
        return attributes

    def _log_changes(self, changes: Sequence[Change]) -> None:
        if changes:
            self.log.debug("changes stored", count=len(changes))


def _after(moment: datetime | None, threshold: datetime) -> bool:
    """Whether ``moment`` (naive means local time, as imapclient parses) is after ``threshold``."""
    if moment is None:
        return False
    return moment.astimezone(UTC) > threshold


def _highest(result: FetchResult, current: int | None) -> int:
    highest = current or 0
    for message in result.messages:
        if message.modseq is not None and message.modseq > highest:
            highest = message.modseq
    return highest
