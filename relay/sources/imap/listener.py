"""One IMAP IDLE listener per watched folder: connect, catch up, IDLE, report every change once.

Life of a :class:`FolderListener` (one task, one connection)::

    connect -> log in -> [LIST, primary only; again on sync and every 15 min]
      -> ENABLE QRESYNC -> SELECT
      -> sync against the stored folder state -> IDLE
      -> on EXISTS / EXPUNGE / VANISHED / FETCH: DONE -> incremental sync -> IDLE again
      -> every ``idle_restart`` s: DONE (unanswered in ``done_timeout`` s = dead) -> IDLE
    any connection error -> reconnect with backoff (``reconnect_min`` doubling to
    ``reconnect_max``, jittered); refused credentials -> wait ``auth_retry`` s or a request.

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
new baseline instead of a flood of deletions and new mail. On the first connect existing
mail is the baseline: nothing is reported, except (with the account's ``notifyFrom``)
messages whose INTERNALDATE is after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from relay.auth.crypto import Cipher
from relay.config import ImapSettings
from relay.errors import AuthError, ConsentRequired, NotFound, StoreError, TokenRefreshFailed
from relay.events import normalize
from relay.events.normalize import visible_flags
from relay.imap.client import ClientOptions, FetchResult, ImapClient
from relay.imap.errors import (
    ImapAuthError,
    ImapCommandError,
    ImapConnectionError,
    ImapError,
)
from relay.imap.parse import (
    Exists,
    Expunge,
    FetchedMessage,
    Mailbox,
    SelectResult,
    Update,
    Vanished,
)
from relay.imap.tls import TlsContexts
from relay.mailbox.credentials import Credentials, TokenProvider, resolve
from relay.sources.imap.sink import (
    Change,
    Deleted,
    FlagsChanged,
    FolderRef,
    FolderSink,
    Initialized,
    NewMessage,
    Reset,
    StateConflict,
)
from relay.sources.imap.state import FolderState, RangeSet
from relay.store import Store
from relay.store import folders as folders_store
from relay.store.schema import AccountState

__all__ = [
    "INBOX",
    "Backoff",
    "FolderListener",
    "ListenerContext",
    "StateReport",
]

log = structlog.get_logger(__name__)

INBOX = "INBOX"
INBOX_SPECIAL_USE = "\\Inbox"
# The primary listener of an account with a ``path`` LISTs its folders this often.
_LIST_INTERVAL = 900.0
# Without IDLE the listener polls with NOOP this often (at most).
_POLL_INTERVAL = 60.0


class Backoff:
    """Reconnect delays: ``low`` doubling up to ``high``, each scaled by a random 0.5-1."""

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = high
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt."""
        base = min(self.high, self.low * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        return base * (0.5 + random.random() / 2)

    def reset(self) -> None:
        """Back to ``low`` (after a connection that worked)."""
        self.attempt = 0


@dataclass(frozen=True, slots=True)
class ListenerContext:
    """What every listener of the process shares."""

    store: Store
    cipher: Cipher
    settings: ImapSettings
    sink: FolderSink
    token_for: TokenProvider
    tls: TlsContexts

    def client_options(self) -> ClientOptions:
        """Connection timeouts from the settings."""
        s = self.settings
        return ClientOptions(
            connect_timeout=s.connect_timeout,
            command_timeout=s.command_timeout,
            done_timeout=s.done_timeout,
        )


@dataclass(frozen=True, slots=True)
class StateReport:
    """A listener's connection state and, for error states, what went wrong."""

    state: str
    error: dict[str, Any] | None = None
    user: str | None = None
    # The authenticationError event is already stored (by the token manager, for every
    # account that shares the lost grant): the supervisor must not add another.
    recorded: bool = False


Report = Callable[["FolderListener", StateReport], None]
FoldersListed = Callable[[Sequence[Mailbox]], None]


class _Session:
    """What one connection learned about the server and the folder."""

    __slots__ = ("client", "condstore", "items", "qresync")

    def __init__(self, client: ImapClient) -> None:
        self.client = client
        caps = client.capabilities
        self.qresync = "QRESYNC" in caps
        self.condstore = self.qresync or "CONDSTORE" in caps
        # The envelope, flags and structure, and the few header fields that tell an
        # automatic reply (EmailEngine's isAutoReply).
        self.items = normalize.imap_items(caps, auto_reply=True)


class FolderListener:
    """Watches one folder of one account until stopped (see the module docstring)."""

    def __init__(
        self,
        ctx: ListenerContext,
        account: str,
        path: str,
        special_use: str | None,
        *,
        report: Report,
        primary: bool = False,
        on_folders: FoldersListed | None = None,
        notify_from: datetime | None = None,
        account_row: Mapping[Any, Any] | None = None,
        folder_row: Mapping[Any, Any] | None = None,
    ) -> None:
        """``notify_from`` (timezone-aware) is the account's ``notifyFrom``.

        ``account_row`` and ``folder_row``, when the caller has just read them, spare the
        first connect its own reads (thousands of listeners start at once); later connects
        always read afresh.
        """
        self.ctx = ctx
        self.account = account
        self.path = path
        self.special_use = special_use
        self.primary = primary
        self.state = AccountState.CONNECTING
        self._report_to = report
        self._on_folders = on_folders
        self._next_list = 0.0
        self._notify_from = notify_from
        self._ref = FolderRef(account, path, special_use)
        self._folder: FolderState | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: ImapClient | None = None
        self._wake = asyncio.Event()
        # Exists only while the listener waits to retry (one Event per listener costs ~0.6 KiB).
        self._retry_now: asyncio.Future[None] | None = None
        self._reconnect = False
        self._sync = False
        # Triggers set by untagged responses; cleared when the sync they ask for runs.
        self._want_new = False
        self._want_search = False
        self._want_flags = False
        self._flag_updates: dict[int, tuple[str, ...]] = {}
        self._condstore = False
        self._log = log.bind(account=account, path=path)
        self._account_row = account_row
        self._folder_row = folder_row

    # -- control ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the listener task."""
        self._task = asyncio.create_task(self._run(), name=f"imap {self.account} {self.path}")

    def reconnect(self) -> None:
        """Drop the connection and open a new one now (also ends an error backoff)."""
        self._reconnect = True
        self._wake.set()
        if self._retry_now is not None and not self._retry_now.done():
            self._retry_now.set_result(None)

    def sync(self) -> None:
        """Run a full catch-up now (on the open connection, or on the next one)."""
        self._sync = True
        self._wake.set()

    async def stop(self) -> None:
        """Stop the task and close the connection. Nothing half-written stays behind."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def running(self) -> bool:
        """Whether the task is alive."""
        return self._task is not None and not self._task.done()

    # -- the loop ---------------------------------------------------------------------------

    def _report(
        self,
        state: str,
        error: dict[str, Any] | None = None,
        user: str | None = None,
        *,
        recorded: bool = False,
    ) -> None:
        self.state = state
        self._report_to(self, StateReport(state, error, user, recorded))

    async def _run(self) -> None:
        settings = self.ctx.settings
        backoff = Backoff(settings.reconnect_min, settings.reconnect_max)
        while True:
            connected = [False]
            self._reconnect = False
            try:
                self._report(AccountState.CONNECTING)
                await self._session(connected)
                backoff.reset()
                continue
            except NotFound:
                self._log.info("account gone; listener stops")
                return
            except TokenRefreshFailed as exc:
                # The token endpoint failed, not the credentials: retry like a network error.
                self._log.info("token refresh failed", error=str(exc))
                self._report(
                    AccountState.CONNECT_ERROR,
                    {"response": str(exc), "serverResponseCode": "OauthRenewError"},
                )
                delay = backoff.next()
            except (ImapAuthError, AuthError) as exc:
                self._log.warning("authentication failed", error=str(exc))
                recorded = isinstance(exc, ConsentRequired) and exc.recorded
                self._report(AccountState.AUTHENTICATION_ERROR, _auth_error(exc), recorded=recorded)
                delay = settings.auth_retry
            except StateConflict as exc:
                self._log.info("folder state changed elsewhere; resyncing", error=str(exc))
                delay = backoff.next()
            except StoreError as exc:
                self._log.warning("store failed", error=str(exc))
                self._report(AccountState.DISCONNECTED, {"response": str(exc)})
                delay = backoff.next()
            except (ImapError, OSError) as exc:
                if connected[0]:
                    self._log.info("disconnected", error=str(exc))
                    self._report(AccountState.DISCONNECTED, _connect_error(exc))
                    backoff.reset()
                else:
                    self._log.info("cannot connect", error=str(exc))
                    self._report(AccountState.CONNECT_ERROR, _connect_error(exc))
                delay = backoff.next()
            finally:
                # Whatever happened, the next connection starts from the stored state.
                self._folder = None
                self._account_row = self._folder_row = None
                if self._client is not None:
                    self._client.close()
                    self._client = None
            await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a reconnect is (or was, during the attempt) requested."""
        if self._reconnect:
            return
        self._retry_now = asyncio.get_running_loop().create_future()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._retry_now
        finally:
            self._retry_now = None

    async def _connect(self) -> tuple[ImapClient, Credentials]:
        row, self._account_row = self._account_row, None
        endpoint, creds = await resolve(
            self.ctx.store, self.ctx.cipher, self.ctx.token_for, self.account, row=row
        )
        client = await endpoint.connect(self.ctx.tls, self.ctx.client_options(), self._on_update)
        self._client = client
        await creds.log_in(client)
        return client, creds

    async def _session(self, connected: list[bool]) -> None:
        """One connection, from login until it breaks or a reconnect is requested."""
        client, creds = await self._connect()
        session = _Session(client)
        await self._list_folders(client)
        if session.qresync:
            await client.enable("QRESYNC")
        self._folder = await self._load()
        await self._select_and_sync(session)
        connected[0] = True
        self._report(AccountState.CONNECTED, user=creds.user)
        await self._listen(session)

    async def _load(self) -> FolderState:
        row, self._folder_row = self._folder_row, None
        if row is None:
            async with self.ctx.store.read() as conn:
                row = await folders_store.get(conn, self.account, self.path)
        if row is None or (self.special_use and row["special_use"] != self.special_use):
            # Only the first connect writes: at start-up thousands of listeners load at once.
            async with self.ctx.store.write(notify=False) as conn:
                row = await folders_store.ensure(conn, self.account, self.path, self.special_use)
        return FolderState.from_row(row)

    # -- IDLE -------------------------------------------------------------------------------

    def _on_update(self, update: Update) -> None:
        """Untagged responses nobody asked for (called from the event loop; must not block)."""
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
            return
        self._wake.set()

    def _pending(self) -> bool:
        return self._want_new or self._want_search or self._want_flags or bool(self._flag_updates)

    async def _listen(self, session: _Session) -> None:
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
                    await self._list_folders(client)
                    await self._select_and_sync(session)
                    continue
                if self._pending():
                    await self._incremental(session)
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
                if time.monotonic() >= self._next_list:
                    await self._list_folders(client)
        finally:
            closed.cancel()

    async def _list_folders(self, client: ImapClient) -> None:
        """The primary listener of an account with a ``path``: LIST, so that folders
        created, renamed or deleted are taken up (on connect, on sync, every 15 minutes)."""
        self._next_list = time.monotonic() + _LIST_INTERVAL
        if self._on_folders is not None:
            self._on_folders(await client.list_mailboxes())

    # -- sync -------------------------------------------------------------------------------

    async def _select_and_sync(self, session: _Session) -> None:
        """SELECT the folder and bring the stored state up to date with the server."""
        client = session.client
        # Anything announced (or requested) before this point is covered by this full sync.
        self._sync = False
        self._want_new = self._want_search = self._want_flags = False
        self._flag_updates.clear()
        selected = await client.select(self.path, condstore=session.condstore)
        self._condstore = session.condstore and selected.highestmodseq is not None
        folder = self._folder
        assert folder is not None
        changes: list[Change] = []
        new: dict[int, FetchedMessage | None] = {}
        validity = selected.uidvalidity or 0
        if not folder.initialized or folder.uidvalidity != validity:
            await self._baseline(session, selected, folder, changes, new)
        else:
            modseq = await self._catch_up(session, selected, folder, changes, new)
            if (selected.uidnext or 0) > (folder.uidnext or 1):
                self._absorb(
                    await client.uid_fetch(f"{folder.uidnext or 1}:*", session.items),
                    folder,
                    changes,
                    new,
                )
            folder.highestmodseq = modseq
        await self._take_new(session, folder, changes, new)
        await self.ctx.sink.commit(self._ref, folder, changes, synced=True)
        self._log_changes(changes)

    async def _baseline(
        self,
        session: _Session,
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
            self._log.warning(
                "UIDVALIDITY changed; new baseline", previous=folder.uidvalidity, now=validity
            )
        notify_from = self._notify_from if first else None
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
        session: _Session,
        selected: SelectResult,
        folder: FolderState,
        changes: list[Change],
        new: dict[int, FetchedMessage | None],
    ) -> int | None:
        """Deletions and flag changes since the stored state; returns the modseq to store."""
        client = session.client
        if self._condstore and folder.highestmodseq is not None:
            result = await client.uid_fetch(
                "1:*",
                ["UID", "FLAGS"],
                changedsince=folder.highestmodseq,
                vanished=session.qresync,
            )
            self._absorb(result, folder, changes, new)
            if not session.qresync:
                await self._search_diff(client, folder, changes, new)
            return max(_highest(result, folder.highestmodseq), selected.highestmodseq or 0)
        await self._search_diff(client, folder, changes, new)
        if folder.uids:
            self._absorb(await client.uid_fetch("1:*", ["UID", "FLAGS"]), folder, changes, new)
        return selected.highestmodseq if self._condstore else None

    async def _incremental(self, session: _Session) -> None:
        """Act on the triggers IDLE collected."""
        client = session.client
        folder = self._folder
        assert folder is not None
        want_new, want_search, want_flags = self._want_new, self._want_search, self._want_flags
        flag_updates = self._flag_updates
        self._want_new = self._want_search = self._want_flags = False
        self._flag_updates = {}
        changes: list[Change] = []
        new: dict[int, FetchedMessage | None] = {}
        modseq_before = folder.highestmodseq
        if self._condstore and folder.highestmodseq is not None:
            if want_search or want_flags or flag_updates:
                result = await client.uid_fetch(
                    "1:*",
                    ["UID", "FLAGS"],
                    changedsince=folder.highestmodseq,
                    vanished=session.qresync,
                )
                self._absorb(result, folder, changes, new)
                folder.highestmodseq = _highest(result, folder.highestmodseq)
                if want_search and not session.qresync:
                    await self._search_diff(client, folder, changes, new)
        else:
            for uid, flags in flag_updates.items():
                self._flags_seen(uid, flags, folder, changes)
            if want_search:
                await self._search_diff(client, folder, changes, new)
            if want_flags and folder.uids:
                self._absorb(await client.uid_fetch("1:*", ["UID", "FLAGS"]), folder, changes, new)
        if want_new:
            self._absorb(
                await client.uid_fetch(f"{folder.uidnext or 1}:*", session.items),
                folder,
                changes,
                new,
            )
        await self._take_new(session, folder, changes, new)
        if changes or folder.highestmodseq != modseq_before:
            await self.ctx.sink.commit(self._ref, folder, changes)
            self._log_changes(changes)

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
        session: _Session,
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

    async def _with_report(self, session: _Session, message: FetchedMessage) -> dict[str, Any]:
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
            self._log.info("report parts not read", uid=message.uid, error=str(exc))
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
                self._on_update(found)
        return attributes

    def _log_changes(self, changes: Sequence[Change]) -> None:
        if changes:
            self._log.debug("changes stored", count=len(changes))


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


def _auth_error(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, ImapAuthError):
        error: dict[str, Any] = {
            "response": exc.text,
            "serverResponseCode": exc.code or "AUTHENTICATIONFAILED",
        }
        if exc.details:
            error["details"] = exc.details
        return error
    return {"response": str(exc), "serverResponseCode": "NoCredentials"}


def _connect_error(exc: Exception) -> dict[str, Any]:
    error: dict[str, Any] = {"response": str(exc)}
    if isinstance(exc, ImapCommandError):
        error["serverResponseCode"] = exc.code or exc.status
    else:
        error["serverResponseCode"] = type(exc).__name__
    return error
