"""From delta pages to events: what changed in the watched folders of one account (pure).

The relay asks Graph for immutable ids, so a message keeps its id when it moves. One
catch-up gives :class:`Changes` the delta of some of the watched folders; it then tells

- a message new to a folder and unknown elsewhere: ``messageNew`` (a baseline reports
  nothing; a re-baseline after an expired token only what arrived since the last sync);
- a message new to one folder that another watched folder knew: a **move**, reported once
  as ``messageUpdated`` with ``changes.path`` (``{old, new}``), not as a delete and a new;
- flags that changed: ``messageUpdated`` with ``changes.flags``;
- a message that left a folder without turning up in another watched one: ``unresolved``.
  The caller looks it up (Graph knows where it is now) and calls :meth:`Changes.resolve`:
  gone or in Recoverable Items (Graph's DELETE) is ``messageDeleted``; anywhere else is a
  move (into a watched folder, which then knows it, or out of the watched ones).

This is also what de-duplicates: a repeated ``created`` finds the message known, and a sent
draft (same immutable id, Drafts -> Sent Items) is one move, not a delete plus a new.

Between :meth:`Changes.apply` and :meth:`Changes.settle` the caller reads what delta does
not bring of the messages that will be reported as new (:meth:`Changes.reported`): their
header (for ``isAutoReply``) and, for a report in INBOX, its source (``isBounce``,
``isComplaint``, and the ``messageBounce`` / ``messageComplaint`` events that follow the
``messageNew``); it hands them to :meth:`Changes.settle` as :class:`Extra`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.events import normalize, reports
from relay.events.model import Event, parse_iso
from relay.graph.folders import GraphFolder

__all__ = ["Changes", "Delta", "Extra", "FolderState", "Known"]

# On a re-baseline (expired delta token), messages received this long before the last
# sync are still reported as new.
REBASELINE_SLACK_MS = 60_000


@dataclass
class FolderState:
    """A watched folder's ``graph_folders`` row: delta link and next uid."""

    folder: GraphFolder
    link: str | None = None
    uid_next: int = 1
    synced_ms: int | None = None
    stored: bool = False

    @classmethod
    def of(cls, folder: GraphFolder, row: Mapping[Any, Any] | None) -> FolderState:
        """The state of ``folder`` from its stored row (a fresh one when there is none)."""
        if row is None:
            return cls(folder)
        return cls(
            folder,
            link=row["delta_link"],
            uid_next=int(row["uid_next"]),
            synced_ms=row["synced_ms"],
            stored=True,
        )

    def take_uid(self) -> int:
        """The next uid of this folder."""
        uid = self.uid_next
        self.uid_next += 1
        return uid


# A known message: (folder key, uid, flags).
Known = tuple[str, int, list[str]]


@dataclass(frozen=True)
class Delta:
    """One folder's delta: its items, the next link, and whether it listed everything."""

    items: Sequence[Mapping[str, Any]]
    link: str
    full: bool = False
    # A full listing after an expired token: report messages received since then as new.
    since_ms: int | None = None


@dataclass(frozen=True)
class Extra:
    """What was read of a new message besides its delta item: more of its properties
    (:data:`relay.events.normalize.GRAPH_DETAIL_FIELDS`) and the report in its source."""

    properties: Mapping[str, Any] = field(default_factory=dict)
    report: reports.Report | None = None


def received_ms(message: Mapping[str, Any]) -> int:
    """``receivedDateTime`` in epoch milliseconds (0 when missing or malformed)."""
    moment = parse_iso(message.get("receivedDateTime"))
    return int(moment.timestamp() * 1000) if moment is not None else 0


class Changes:
    """The events of one catch-up over an account's watched folders (see the module doc)."""

    def __init__(
        self,
        account: str,
        states: Mapping[str, FolderState],
        known: Mapping[str, Known],
        ms: int,
    ) -> None:
        """``states`` holds every watched folder by key (changed in place); ``known`` what
        the store knows of the messages the deltas name, and of every message of a folder
        whose delta is a full listing."""
        self.account = account
        self.states = states
        self.ms = ms
        self.events: list[Event] = []
        self.dirty: set[str] = set()
        # The rows to write: id -> (folder, uid, flags), and the ids to forget.
        self.upserts: dict[str, Known] = {}
        self.removed: set[str] = set()
        self._known = dict(known)
        self._left: dict[str, str] = {}
        # (folder key, graph id) -> (latest item, report): delta may list a message twice.
        self._new: dict[tuple[str, str], tuple[Mapping[str, Any], bool]] = {}

    def known(self, graph_id: str) -> Known | None:
        """What is known of a message now (with this catch-up's changes)."""
        return self._known.get(graph_id)

    # -- phase 1: each folder's delta -------------------------------------------------------

    def apply(self, key: str, delta: Delta) -> None:
        """Take in one folder's delta (before :meth:`settle`)."""
        state = self.states[key]
        self.dirty.add(key)
        state.link = delta.link
        seen: set[str] = set()
        for item in delta.items:
            graph_id = str(item.get("id") or "")
            if not graph_id:
                continue
            seen.add(graph_id)
            entry = self._known.get(graph_id)
            here = entry is not None and entry[0] == key
            if "@removed" in item:
                if here:
                    self._left[graph_id] = key
                continue
            if here:
                self._flags(state, graph_id, normalize.graph_flags(item))
                continue
            if not delta.full or not state.stored:
                report = state.stored
            else:
                report = delta.since_ms is not None and received_ms(item) >= delta.since_ms
            self._new[(key, graph_id)] = (item, report)
        if delta.full and state.stored:
            # A full listing: what is not in it any more left meanwhile.
            for graph_id, (folder, _, _) in self._known.items():
                if folder == key and graph_id not in seen:
                    self._left[graph_id] = key

    # -- phase 2: moves among the watched folders -------------------------------------------

    def reported(self) -> list[tuple[str, Mapping[str, Any]]]:
        """``(folder key, delta item)`` of the messages :meth:`settle` will report as new
        (not those that moved in from another watched folder), in its order."""
        where = {graph_id: entry[0] for graph_id, entry in self._known.items()}
        found: list[tuple[str, Mapping[str, Any]]] = []
        for (key, graph_id), (item, report) in self._new.items():
            was = where.get(graph_id)
            if was is not None and was != key and was in self.states:
                continue
            where[graph_id] = key
            if report:
                found.append((key, item))
        return found

    def settle(self, extras: Mapping[str, Extra] | None = None) -> list[tuple[str, str]]:
        """Report new messages and moves; the ``(graph id, folder key)`` left unexplained.

        ``extras`` holds, by Graph id, what was read of the new messages besides delta.
        """
        for (key, graph_id), (item, report) in self._new.items():
            flags = normalize.graph_flags(item)
            target = self.states[key]
            entry = self._known.get(graph_id)
            if entry is not None and entry[0] != key and entry[0] in self.states:
                # Known in another watched folder: it moved here.
                self._left.pop(graph_id, None)
                self._move(graph_id, target.folder, flags)
                continue
            uid = target.take_uid()
            self._put(graph_id, (key, uid, flags))
            if report:
                self._new_message(item, uid, target.folder, (extras or {}).get(graph_id))
        self._new.clear()
        left = sorted(self._left.items())
        self._left.clear()
        return left

    # -- phase 3: what the caller looked up -------------------------------------------------

    def resolve(
        self, graph_id: str, source: str, where: GraphFolder | None, *, deleted: bool
    ) -> None:
        """A message that left ``source``: ``deleted``, or now in ``where`` (None: unknown)."""
        entry = self._known.get(graph_id)
        if entry is None or entry[0] != source:
            return
        if not deleted and where is not None and where.key == source:
            return  # still there after all (delta and the lookup crossed)
        if deleted:
            self._forget(graph_id)
            data = normalize.graph_message_deleted(graph_id, entry[1])
            self.events.append(self._event("messageDeleted", data, self.states[source].folder))
            return
        self._move(graph_id, where, None)

    # -- helpers ----------------------------------------------------------------------------

    def _put(self, graph_id: str, entry: Known) -> None:
        self._known[graph_id] = entry
        self.upserts[graph_id] = entry
        self.removed.discard(graph_id)
        self.dirty.add(entry[0])

    def _forget(self, graph_id: str) -> None:
        entry = self._known.pop(graph_id, None)
        self.upserts.pop(graph_id, None)
        self.removed.add(graph_id)
        if entry is not None:
            self.dirty.add(entry[0])

    def _flags(self, state: FolderState, graph_id: str, flags: list[str]) -> None:
        _, uid, before = self._known[graph_id]
        if before == flags:
            return
        self._put(graph_id, (state.folder.key, uid, flags))
        changed = normalize.graph_message_updated(graph_id, uid, before, flags)
        if changed is not None:
            self.events.append(self._event("messageUpdated", changed, state.folder))

    def _move(self, graph_id: str, where: GraphFolder | None, flags: list[str] | None) -> None:
        source, uid, before = self._known[graph_id]
        origin = self.states[source]
        target = self.states.get(where.key) if where is not None else None
        new_uid = None
        if target is not None:
            new_uid = target.take_uid()
            self._put(
                graph_id, (target.folder.key, new_uid, flags if flags is not None else before)
            )
        else:
            self._forget(graph_id)
        self.dirty.add(source)
        data = normalize.graph_message_moved(
            graph_id,
            uid,
            source=(origin.folder.path, origin.folder.special_use),
            target=(where.path, where.special_use) if where is not None else (None, None),
            target_uid=new_uid,
            before=before,
            after=flags,
        )
        self.events.append(self._event("messageUpdated", data, origin.folder))

    def _new_message(
        self, item: Mapping[str, Any], uid: int, folder: GraphFolder, extra: Extra | None
    ) -> None:
        """``messageNew``, then the ``messageBounce`` / ``messageComplaint`` events of a
        report (whose source the watcher read in INBOX only)."""
        extra = extra or Extra()
        data = normalize.graph_message_to_event(
            {**item, **extra.properties},
            uid=uid,
            special_use=folder.special_use,
            report=extra.report,
        )
        seen = normalize.message_new(
            data, path=folder.path, special_use=folder.special_use, by_email_id=False
        )
        self.events.append(self._event("messageNew", data, folder, seen_key=seen))
        for name, follows in reports.report_events(extra.report, data):
            # EmailEngine's messageBounce / messageComplaint envelopes have no path.
            self.events.append(Event(name, self.account, follows, self.ms))

    def _event(
        self, name: str, data: dict[str, Any], folder: GraphFolder, *, seen_key: str | None = None
    ) -> Event:
        return Event(
            name,
            self.account,
            data,
            self.ms,
            path=folder.path,
            special_use=folder.special_use,
            seen_key=seen_key,
        )
