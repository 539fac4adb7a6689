"""Where a listener hands its raw changes: events and folder state, in one transaction.

The listener only knows IMAP; it reports what changed as :data:`Change` values together
with the folder state that results. :meth:`FolderSink.commit` turns the changes into
events (:mod:`relay.events.normalize`) and writes them, their webhook deliveries and the
new state in one transaction. Either everything is stored or nothing is, so a crash at any
point makes the listener redo the same diff against the same old state: nothing is lost
and nothing is reported twice.

Commits are grouped: one writer task takes every commit waiting at that moment and writes
them in one transaction (each folder's compare-and-set decides alone whether its events go
in). With thousands of folders this is what keeps a burst of mail, or the start-up of every
listener at once, from queueing behind one database write each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.errors import LeaseLost, SourceError
from relay.events import normalize, reports
from relay.events.model import Event
from relay.sources.imap.state import FolderState
from relay.store import Store, leases
from relay.store import events as events_store
from relay.store import folders as folders_store
from relay.store.engine import now_ms
from relay.store.leases import Lease

__all__ = [
    "Change",
    "Deleted",
    "FlagsChanged",
    "FolderSink",
    "Initialized",
    "NewMessage",
    "Reset",
    "StateConflict",
]

# Adds message content to events before they are stored (relay.mailbox.notify.Enricher).
Enrich = Callable[[Sequence[Event]], Awaitable[None]]


class StateConflict(SourceError):
    """The stored folder state changed under us (another node); reload and resync."""


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message appeared; ``attributes`` is its parsed FETCH (with the parts of a report,
    :func:`relay.events.reports.report_items`, when it is one)."""

    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Deleted:
    """Message ``uid`` was expunged."""

    uid: int


@dataclass(frozen=True, slots=True)
class FlagsChanged:
    """Message ``uid``'s flags went from ``before`` to ``after``."""

    uid: int
    before: tuple[str, ...]
    after: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reset:
    """UIDVALIDITY changed: every earlier UID (and message id) of the folder is void."""

    previous: int
    uidvalidity: int
    uidnext: int | None


@dataclass(frozen=True, slots=True)
class Initialized:
    """The account's first folder baseline was recorded."""


Change = NewMessage | Deleted | FlagsChanged | Reset | Initialized


@dataclass(frozen=True, slots=True)
class FolderRef:
    """Which folder the changes belong to."""

    account: str
    path: str
    special_use: str | None
    # The lease the listener runs under; None: not fenced (a listener run without a
    # supervisor, in tests and tools).
    lease: Lease | None = None


@dataclass(slots=True)
class _Pending:
    folder: FolderRef
    version: int
    values: dict[str, Any]
    events: list[Event]
    synced: bool
    done: asyncio.Future[None] = field(repr=False)


# Folders written per transaction at most.
_GROUP = 500


class FolderSink:
    """Commits listener changes (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        service_url: str,
        max_payload_bytes: int,
        enrich: Enrich | None = None,
    ) -> None:
        """Nothing runs until the first commit; ``enrich`` adds content to new messages."""
        self._store = store
        self._enrich = enrich
        self._service_url = service_url
        self._max_bytes = max_payload_bytes
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Stop the writer; commits still waiting fail (their listeners are stopped first)."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        for pending in self._queue:
            if not pending.done.done():
                pending.done.cancel()
        self._queue.clear()

    def events(
        self, folder: FolderRef, state: FolderState, changes: Sequence[Change]
    ) -> list[Event]:
        """The events ``changes`` make (pure; exposed for tests and benchmarks)."""
        out: list[Event] = []
        ms = now_ms()
        no = state.folder_no
        validity = state.uidvalidity or 0
        for change in changes:
            name: str
            data: dict[str, Any] | None
            if isinstance(change, NewMessage):
                out.extend(self._new_message(folder, change, no, validity, ms))
                continue
            if isinstance(change, Deleted):
                name = "messageDeleted"
                data = normalize.message_deleted(no, validity, change.uid)
            elif isinstance(change, FlagsChanged):
                name = "messageUpdated"
                data = normalize.message_updated(
                    no, validity, change.uid, change.before, change.after
                )
            elif isinstance(change, Reset):
                name = "mailboxReset"
                data = normalize.mailbox_reset(
                    folder.path,
                    folder.special_use,
                    change.previous,
                    change.uidvalidity,
                    change.uidnext,
                )
            else:
                out.append(Event("accountInitialized", folder.account, {"initialized": True}, ms))
                continue
            if data is not None:
                out.append(
                    Event(
                        name,
                        folder.account,
                        data,
                        ms,
                        path=folder.path,
                        special_use=folder.special_use,
                    )
                )
        return out

    @staticmethod
    def _new_message(
        folder: FolderRef, change: NewMessage, no: int, validity: int, ms: int
    ) -> list[Event]:
        """``messageNew``, then the ``messageBounce`` / ``messageComplaint`` events of a
        report (whose parts the listener read in INBOX only)."""
        data = normalize.imap_fetch_to_event(
            change.attributes, folder_no=no, uidvalidity=validity, special_use=folder.special_use
        )
        seen = normalize.message_new(data, path=folder.path, special_use=folder.special_use)
        found = [
            Event(
                "messageNew",
                folder.account,
                data,
                ms,
                path=folder.path,
                special_use=folder.special_use,
                seen_key=seen,
            )
        ]
        report = reports.imap_report(change.attributes)
        for name, follows in reports.report_events(report, data):
            # EmailEngine's messageBounce / messageComplaint envelopes have no path.
            found.append(Event(name, folder.account, follows, ms))
        return found

    async def commit(
        self,
        folder: FolderRef,
        state: FolderState,
        changes: Sequence[Change],
        *,
        synced: bool = False,
    ) -> int:
        """Store the events of ``changes`` and ``state`` atomically; return the events stored.

        Raises :class:`StateConflict` (nothing written) when the stored state is no longer
        the version ``state`` was loaded from, and :class:`relay.errors.StoreError` when the
        database failed.
        """
        events = self.events(folder, state, changes)
        if self._enrich is not None:
            await self._enrich(events)
        pending = _Pending(
            folder,
            state.version,
            state.columns(),
            events,
            synced,
            asyncio.get_running_loop().create_future(),
        )
        self._queue.append(pending)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="imap folder writer")
        self._wake.set()
        await pending.done
        state.version += 1
        return len(pending.events)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                group, self._queue = self._queue[:_GROUP], self._queue[_GROUP:]
                try:
                    conflicts = await self._write(group)
                except Exception as exc:
                    for pending in group:
                        if not pending.done.done():
                            pending.done.set_exception(exc)
                    continue
                for pending in group:
                    if pending.done.done():
                        continue
                    if conflicts.get(id(pending)) == "lease":
                        pending.done.set_exception(LeaseLost(pending.folder.account))
                    elif id(pending) in conflicts:
                        folder = pending.folder
                        pending.done.set_exception(
                            StateConflict(f"folder state of {folder.account}/{folder.path} changed")
                        )
                    else:
                        pending.done.set_result(None)

    async def _write(self, group: Sequence[_Pending]) -> dict[int, str]:
        """One transaction for ``group``; returns the ids of the pendings not written and why:
        ``"state"`` (the folder state moved on) or ``"lease"`` (another node holds the
        account now: fenced)."""
        conflicts: dict[int, str] = {}
        batch: list[Event] = []
        async with self._store.write(notify=False) as conn:
            lost = await leases.fenced(
                conn,
                {(p.folder.account, p.folder.lease) for p in group if p.folder.lease is not None},
            )
            for p in group:
                if p.folder.lease is not None and (p.folder.account, p.folder.lease) in lost:
                    conflicts[id(p)] = "lease"
            kept = [p for p in group if id(p) not in conflicts]
            saves = [
                folders_store.Save(
                    p.folder.account, p.folder.path, p.version, p.values, synced=p.synced
                )
                for p in kept
            ]
            saved = await folders_store.save_many(conn, saves)
            for pending, ok in zip(kept, saved, strict=True):
                if ok:
                    batch.extend(pending.events)
                else:
                    conflicts[id(pending)] = "state"
            if batch:
                await events_store.record(
                    conn, batch, default_service_url=self._service_url, max_bytes=self._max_bytes
                )
        return conflicts
