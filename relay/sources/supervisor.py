"""The supervisor: keeps the IMAP connections of every ``imap`` account (and Graph watchers).

What runs::

    Supervisor ─┬─ scan loop: every ``imap.scan_interval`` s, read the accounts table,
                │  take/renew leases, start, restart (``updated_ms`` of the account or of an
                │  account it delegates to changed), stop watchers, pass on reconnect/sync
                │  requests (the ``*_requested_ms`` columns, so requests made through
                │  another node arrive too); in between, at once when the API calls
                │  notify(account): the same for the accounts named since the last pass
                │  (and the watchers that borrow from them) only
                ├─ state writer: account states and connection events, batched
                └─ AccountWatcher per account ─┬─ FolderListener (IDLE) for INBOX, whose
                                               │  connection also runs the FolderPoller's
                                               │  rounds between IDLEs: LIST (mailboxNew /
                                               │  mailboxDeleted) and STATUS of every other
                                               │  watched folder (all, unless ``path``
                                               │  narrows them)
                                               └─ FolderListener (IDLE) per subconnection

**Several nodes.** Each account is watched by exactly one node: a node only runs the
watchers of accounts whose row in ``account_leases`` it holds. Every full scan is also the
node's heartbeat (``cluster_nodes``); the live nodes split the accounts by rendezvous hashing
(:mod:`relay.sources.assignment`), so every node computes the same split on its own. A node
takes the free or expired leases of its share and hands over the accounts that are no
longer its own (stops their watchers, writes what they saw, then releases the leases, which
the new owner takes at its next scan). Leases last ``imap.lease`` seconds and are renewed
on every scan; a node that stops (SIGTERM) first marks itself leaving, then releases its
leases, and those of a node that died are taken over once they expire. Each lease carries
an epoch that grows with every new owner, and every write a watcher makes is fenced by it
(:func:`relay.store.leases.fenced`): a node that was paused past its lease finds its writes
refused and its watchers of the accounts it lost stop.

**Account state.** An account's ``state`` is the worst of its folders' states
(authenticationError > connectError > disconnected > connecting > connected). Events mark
transitions, once each: ``authenticationError`` when credentials are first refused,
``authenticationSuccess`` on an account's first login and when a connection works again
after that (as EmailEngine), ``connectError`` when
the server first cannot be reached (not on every retry). ``accountInitialized`` comes from
the INBOX listener's first baseline, in the same transaction as that baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.engine import RowMapping

from relay.auth.crypto import Cipher
from relay.auth.delegation import MAX_HOPS
from relay.config import ImapSettings
from relay.errors import StoreError
from relay.events.model import Event, parse_iso
from relay.imap.parse import Mailbox
from relay.imap.tls import TlsContexts
from relay.mailbox.access import send_only
from relay.mailbox.credentials import StoredTokens, TokenProvider
from relay.metrics import Metrics
from relay.sources.assignment import assign
from relay.sources.graph.watcher import GraphContext, GraphWatcher
from relay.sources.imap.connection import KeptConnection, ListenerContext, StateReport
from relay.sources.imap.listener import INBOX, INBOX_SPECIAL_USE, FolderListener
from relay.sources.imap.poller import FolderPoller, resolve_folders, selectable
from relay.sources.imap.sink import Enrich, FolderSink
from relay.sources.specs import EVERY_FOLDER, idle_specs, spec_matches, watch_specs
from relay.store import Store
from relay.store import accounts as accounts_store
from relay.store import events as events_store
from relay.store import leases as leases_store
from relay.store import nodes as nodes_store
from relay.store.engine import now_ms
from relay.store.leases import Lease
from relay.store.outage import retry_level
from relay.store.schema import AccountState, accounts, imap_folders

__all__ = ["AccountWatcher", "Supervisor", "resolve_folders"]

log = structlog.get_logger(__name__)

# Worst first: an account shows the worst state of its folders.
_SEVERITY = (
    AccountState.AUTHENTICATION_ERROR,
    AccountState.CONNECT_ERROR,
    AccountState.DISCONNECTED,
    AccountState.CONNECTING,
    AccountState.CONNECTED,
)
# State changes are written in batches; this is how long a batch may gather.
_STATE_BATCH = 0.02
_STATE_RETRY = 1.0


def _watchable(row: Mapping[Any, Any]) -> bool:
    return row["backend"] == "imap" and not send_only(row)


class AccountWatcher:
    """The listeners of one account (INBOX's, which also runs the account's poller, and one
    per subconnection) and their combined state."""

    def __init__(
        self,
        supervisor: Supervisor,
        row: Mapping[Any, Any],
        stamp: tuple[Any, ...],
        folder_rows: Mapping[str, Mapping[Any, Any]] | None = None,
        lease: Lease | None = None,
    ):
        """``stamp`` identifies the settings the listeners were started with; ``row`` and
        ``folder_rows`` (by path) were just read and spare the first connects a read;
        ``lease`` fences the listeners' writes."""
        self.supervisor = supervisor
        self.lease = lease
        self._row: Mapping[Any, Any] | None = row
        self._folder_rows = dict(folder_rows or {})
        self.account = str(row["id"])
        self.stamp = stamp
        self.reconnect_ms = row["reconnect_requested_ms"]
        self.sync_ms = row["sync_requested_ms"]
        config = row["config"] or {}
        self.specs = watch_specs(config.get("path"))
        self.idle_specs = idle_specs(config.get("subconnections"))
        self.notify_from = parse_iso(config.get("notifyFrom"))
        self.listeners: dict[str, FolderListener] = {}
        self.active = True
        self._reports: dict[str, StateReport] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start INBOX's listener, with the poller that lists and polls the other folders."""
        poller = FolderPoller(
            self.supervisor.context,
            self.account,
            self.specs,
            on_folders=self._on_folders,
            notify_from=self.notify_from,
            folder_rows={
                p: self._folder_rows.pop(p) for p in list(self._folder_rows) if p != INBOX
            },
            lease=self.lease,
        )
        self._add(INBOX, INBOX_SPECIAL_USE, primary=True, poller=poller)

    def _add(
        self,
        path: str,
        special_use: str | None,
        *,
        primary: bool = False,
        poller: FolderPoller | None = None,
    ) -> None:
        listener = FolderListener(
            self.supervisor.context,
            self.account,
            path,
            special_use,
            report=self._on_report,
            primary=primary,
            notify_from=self.notify_from,
            account_row=self._row,
            folder_row=self._folder_rows.pop(path, None),
            poller=poller,
            lease=self.lease,
        )
        if primary:
            self._row = None
        self.listeners[path] = listener
        listener.start()

    def _on_folders(self, boxes: Sequence[Mailbox]) -> set[str]:
        """A LIST came in: IDLE listeners for the subconnections found; the paths they hold."""
        wanted = resolve_folders(self.idle_specs, boxes)
        for path, use in wanted.items():
            current = self.listeners.get(path)
            if current is not None and current.special_use != use:
                self._retire(path)
                current = None
            if current is None:
                self._add(path, use)
        for path in [p for p in self.listeners if p != INBOX and p not in wanted]:
            self._retire(path)
        specs = [*self.specs, *(s for s in self.idle_specs if s not in self.specs)]
        missing = [s for s in specs if s != EVERY_FOLDER and not _matched(s, boxes)]
        if missing:
            log.warning("folders not found", account=self.account, folders=missing)
        return {INBOX, *wanted}

    def _retire(self, path: str) -> None:
        listener = self.listeners.pop(path)
        self._reports.pop(path, None)
        task = asyncio.create_task(listener.stop())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _on_report(self, conn: KeptConnection, report: StateReport) -> None:
        if not self.active or self.listeners.get(conn.path) is not conn:
            return
        self._reports[conn.path] = report
        worst = min(self._reports.values(), key=lambda r: _SEVERITY.index(r.state))
        self.supervisor.report_state(self.account, worst)

    def reconnect(self) -> None:
        """Drop and re-open every connection now."""
        for listener in self.listeners.values():
            listener.reconnect()

    def sync(self) -> None:
        """Catch up every folder now (and list the folders again)."""
        for listener in self.listeners.values():
            listener.sync()

    async def stop(self) -> None:
        """Stop every listener; from the first moment on, their reports are ignored."""
        self.active = False
        listeners = list(self.listeners.values())
        self.listeners.clear()
        await asyncio.gather(*(listener.stop() for listener in listeners), *self._retiring)


def _matched(spec: str, boxes: Sequence[Mailbox]) -> bool:
    return any(
        selectable(box) and spec_matches(spec, box.name, box.special_use) for box in boxes
    ) or (spec.upper() == INBOX)


@dataclass
class _Memory:
    """What the state writer remembers of one account, to report each transition once."""

    state: str
    auth_failed: bool
    connect_failed: bool
    # Whether the account ever connected (its first login is an authenticationSuccess).
    connected_once: bool


class Supervisor:
    """Runs the IMAP listeners of this node (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        cipher: Cipher,
        settings: ImapSettings,
        *,
        service_url: str,
        max_payload_bytes: int = 256 * 1024,
        token_for: TokenProvider | None = None,
        reject: Callable[[str], None] | None = None,
        node: str | None = None,
        address: str = "",
        graph: GraphContext | None = None,
        enrich: Enrich | None = None,
        announce: Callable[[str, str], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """Nothing runs until :meth:`start`; ``graph`` also runs the ``graph`` accounts;
        ``enrich`` adds message content to new-message events; ``node`` and ``address``
        are what this node registers as (``GET /v1/cluster``); ``announce(topic, value)``
        tells the other nodes (:meth:`relay.store.bus.Bus.send`) that the nodes or leases
        changed; ``reject(token)`` is told of an OAuth2 token an IMAP server refused (the
        token manager's, so that the retry gets a fresh one); ``metrics`` counts the
        listeners' push checks."""
        self._announce = announce or (lambda _topic, _value: None)
        self.reject: Callable[[str], None] = reject or (lambda _token: None)
        self._push_checks = (
            {
                found: metrics.imap_push_checks.labels(found=str(found).lower())
                for found in (True, False)
            }
            if metrics is not None
            else None
        )
        self.store = store
        self.enrich = enrich
        self.cipher = cipher
        self.settings = settings
        self.service_url = service_url
        self.max_payload_bytes = max_payload_bytes
        self.token_for: TokenProvider = token_for or StoredTokens(store, cipher)
        self.node = node or nodes_store.new_id()
        self.address = address
        # The live nodes as of the last full scan (between scans, notify() passes split the
        # accounts they look at with it).
        self.live_nodes: list[str] = [self.node]
        # Owner of each account seen, for the nodes in _owners_of.
        self._owners_of: tuple[str, ...] = ()
        self._owners: dict[str, str] = {}
        # The lease each watcher was started under (its writes are fenced by it), kept until
        # what a stopped watcher reported is written or refused.
        self._leases: dict[str, Lease] = {}
        self.graph = graph
        self.watchers: dict[str, AccountWatcher | GraphWatcher] = {}
        self._context: ListenerContext | None = None
        self._wake = asyncio.Event()
        # Accounts named by notify() since the last pass; None in the set: scan everything.
        self._changed: set[str | None] = set()
        self._state_wake = asyncio.Event()
        self._memory: dict[str, _Memory] = {}
        self._pending_states: dict[str, StateReport] = {}
        self._pending_events: list[Event] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._retiring: set[asyncio.Task[None]] = set()
        self._scan_lock = asyncio.Lock()
        self._flushing: asyncio.Future[None] | None = None

    @property
    def running(self) -> bool:
        """Between :meth:`start` and :meth:`stop`."""
        return bool(self._tasks)

    @property
    def context(self) -> ListenerContext:
        """The listeners' shared context (exists once started)."""
        assert self._context is not None, "supervisor not started"
        return self._context

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the shared TLS contexts, start the accounts found, then keep scanning."""
        tls = TlsContexts(self.settings.ca_bundle)
        sink = FolderSink(
            self.store,
            service_url=self.service_url,
            max_payload_bytes=self.max_payload_bytes,
            enrich=self.enrich,
        )
        self._context = ListenerContext(
            self.store,
            self.cipher,
            self.settings,
            sink,
            self.token_for,
            tls,
            service_url=self.service_url,
            max_payload_bytes=self.max_payload_bytes,
            lease_lost=self._lease_lost,
            reject=self.reject,
            push_checked=self._push_checked,
        )
        try:
            async with self.store.write(notify=False) as conn:
                await nodes_store.register(conn, self.node, self.address, now_ms=now_ms())
            self._announce("cluster", "joined")
        except StoreError as exc:
            log.warning("could not register this node; retrying at the next scan", error=str(exc))
        try:
            await self.scan()
        except StoreError as exc:
            log.warning("first account scan failed; retrying", error=str(exc))
        self._tasks = [
            asyncio.create_task(self._scan_loop(), name="imap supervisor scan"),
            asyncio.create_task(self._state_loop(), name="imap supervisor states"),
        ]
        log.info("imap supervisor started", node=self.node, accounts=len(self.watchers))

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listeners, record them as disconnected and give the leases back.

        Each of the two steps may take ``grace`` seconds.
        """
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._flushing is not None:
            # A flush the state loop started runs to its end (it is shielded): its batch is
            # either committed or back in the queue before the last flush below takes it.
            await asyncio.gather(self._flushing, return_exceptions=True)
        # The others stop counting this node at once and take its accounts as soon as the
        # leases are released below.
        with contextlib.suppress(StoreError):
            async with self.store.write(notify=False) as conn:
                await nodes_store.leave(conn, self.node)
        watched = list(self.watchers)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                async with self._scan_lock:
                    await asyncio.gather(
                        *(w.stop() for w in self.watchers.values()), *self._retiring
                    )
                    self.watchers.clear()
                    await self.context.sink.close()
        try:
            async with asyncio.timeout(grace):
                for account in watched:
                    self._pending_states[account] = StateReport(AccountState.DISCONNECTED)
                await self._flush()
        except (StoreError, TimeoutError) as exc:
            log.warning("could not record the last account states", error=str(exc))
        # Whatever became of the states: the leases go back, or the others wait them out.
        try:
            async with asyncio.timeout(grace):
                async with self.store.control_write() as conn:
                    await leases_store.release(conn, self.node)
                    await nodes_store.remove(conn, self.node)
            self._announce("cluster", "left")
        except (StoreError, TimeoutError) as exc:
            log.warning("could not release the leases", error=str(exc))
        log.info("imap supervisor stopped", node=self.node)

    def wake_graph(self, account: str) -> bool:
        """A Graph notification for ``account`` was stored: its watcher (if here) looks now.
        Whether it is here."""
        watcher = self.watchers.get(account)
        if isinstance(watcher, GraphWatcher):
            watcher.wake()
            return True
        return False

    def _lease_lost(self, account: str) -> None:
        """A write for ``account`` was refused: another node holds it. Look at the leases."""
        log.info("lease lost; looking at the leases", account=account)
        self.notify(None)

    def _push_checked(self, found: bool) -> None:
        if self._push_checks is not None:
            self._push_checks[found].inc()

    def notify(self, account: str | None = None) -> None:
        """Look at ``account`` now (it was added, changed or deleted, or a reconnect or sync
        was requested), or at the whole accounts table when none is named. Safe to call
        from any handler; never blocks."""
        self._changed.add(account)
        self._wake.set()

    # -- scanning ---------------------------------------------------------------------------

    async def _scan_loop(self) -> None:
        # Full scans keep their own rhythm (they renew the leases); notify() passes in
        # between look at the named accounts only, so adding N accounts one by one costs
        # N small passes, not N reads of the whole table.
        loop = asyncio.get_running_loop()
        full_at = loop.time() + self.settings.scan_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(full_at):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if loop.time() >= full_at or None in self._changed:
                    full_at = loop.time() + self.settings.scan_interval
                    await self.scan()
                elif self._changed:
                    await self.scan_changed()
            except StoreError as exc:
                log.log(retry_level(exc), "account scan failed", error=str(exc))
            except Exception:
                log.exception("account scan crashed")

    def _wants(self, row: Mapping[Any, Any]) -> bool:
        return _watchable(row) or (self.graph is not None and row["backend"] == "graph")

    async def scan(self) -> None:
        """Beat, then bring the running watchers in line with the accounts table, this
        node's share of them and the leases; hand over what is no longer this node's."""
        async with self._scan_lock:
            # What was named until now is in the table this scan reads.
            self._changed.clear()
            async with self.store.read() as conn:
                rows = (await conn.execute(select(accounts))).mappings().all()
            by_id = {str(r["id"]): r for r in rows}
            wanted = {a: r for a, r in by_id.items() if self._wants(r)}
            lease_ms = int(self.settings.lease * 1000)
            async with self.store.control_write() as conn:
                now = now_ms()
                await nodes_store.beat(conn, self.node, self.address, now_ms=now)
                live = await nodes_store.live(conn, now_ms=now, lease_ms=lease_ms)
                self.live_nodes = sorted({*live, self.node})
                share = self._share(wanted)
                held = await leases_store.claim(
                    conn, self.node, share, now_ms=now, lease_ms=lease_ms
                )
                # Rows of nodes gone for long are only history: drop them now and then.
                await nodes_store.forget_dead(conn, before_ms=now - max(3_600_000, 10 * lease_ms))
            kept = {a: epoch for a, epoch in held.items() if a in share}
            await self._apply(list(self.watchers), by_id, wanted, kept)
            await self._hand_over(sorted(held.keys() - kept.keys()))

    def _share(self, wanted: Mapping[str, Any]) -> set[str]:
        """The accounts of ``wanted`` the live nodes leave to this one."""
        nodes = tuple(self.live_nodes)
        if nodes != self._owners_of or len(self._owners) > 2 * len(wanted) + 1000:
            # Owners only change with the nodes: reused from scan to scan until they do (or
            # until many accounts they name are gone).
            self._owners_of, self._owners = nodes, {}
        fresh = [a for a in wanted if a not in self._owners]
        self._owners.update(assign(fresh, nodes))
        return {a for a in wanted if self._owners[a] == self.node}

    async def _hand_over(self, accounts_: Sequence[str]) -> None:
        """Release the leases of ``accounts_`` (whose watchers are stopped), once what they
        reported is written, for the nodes they belong to now."""
        if not accounts_:
            return
        await self._flush()
        async with self.store.control_write() as conn:
            await leases_store.release(conn, self.node, accounts_)
        self._announce("cluster", "released")
        log.info("accounts handed over", count=len(accounts_))

    async def scan_changed(self) -> None:
        """Bring in line the accounts named by :meth:`notify` since the last pass, and the
        running watchers that borrow settings or tokens from one of them; nothing else."""
        async with self._scan_lock:
            named = {a for a in self._changed if a is not None}
            self._changed.clear()
            try:
                # A watcher's stamp names its account and every account it delegates to.
                scope = named | {
                    a for a, w in self.watchers.items() if any(name in named for name, _ in w.stamp)
                }
                by_id = await self._rows_with_chains(scope)
                wanted = {a: by_id[a] for a in scope if a in by_id and self._wants(by_id[a])}
                share = self._share(wanted)
                async with self.store.write(notify=False) as conn:
                    held = await leases_store.take(
                        conn,
                        self.node,
                        share,
                        now_ms=now_ms(),
                        lease_ms=int(self.settings.lease * 1000),
                    )
            except BaseException:
                self._changed |= named  # look again on the next pass
                raise
            await self._apply(sorted(scope), by_id, wanted, held)
            # Deleted, no longer watchable, or (between scans, rarely) another node's now.
            await self._hand_over(sorted(a for a in scope - held.keys() if a in self._leases))

    async def _rows_with_chains(self, scope: set[str]) -> dict[str, RowMapping]:
        """The rows of ``scope`` and of every account they delegate to (for their stamps)."""
        by_id: dict[str, RowMapping] = {}
        asked: set[str] = set()
        missing = sorted(scope)
        async with self.store.read() as conn:
            while missing:
                asked.update(missing)
                by_id.update(await accounts_store.rows(conn, missing))
                parents = {r["delegated_account"] for r in by_id.values()}
                missing = sorted({str(p) for p in parents if p is not None} - asked)
        return by_id

    async def _apply(
        self,
        scope: Sequence[str],
        by_id: Mapping[str, RowMapping],
        wanted: Mapping[str, RowMapping],
        held: Mapping[str, int],
    ) -> None:
        """Stop the watchers of ``scope`` this node no longer holds; start, restart or pass
        requests on to those of the ``held`` accounts (account -> lease epoch)."""
        for account in [a for a in scope if a in self.watchers and a not in held]:
            gone = self.watchers.pop(account)
            if isinstance(gone, GraphWatcher):
                gone.deleted = account not in by_id
            await gone.stop()
            self._forget(account)
        starting = [
            a for a in held if not self._current(a, _stamp(a, by_id), Lease(self.node, held[a]))
        ]
        folders = await self._folder_rows(starting)
        for account in sorted(held):
            self._reconcile(
                wanted[account], by_id, folders.get(account), Lease(self.node, held[account])
            )

    async def _folder_rows(self, accounts_: Sequence[str]) -> dict[str, dict[str, RowMapping]]:
        """Folder rows of the accounts about to start, in a few reads instead of one each."""
        out: dict[str, dict[str, RowMapping]] = {}
        if not accounts_:
            return out
        async with self.store.read() as conn:
            for start in range(0, len(accounts_), 500):
                chunk = list(accounts_[start : start + 500])
                result = await conn.execute(
                    select(imap_folders).where(imap_folders.c.account.in_(chunk))
                )
                for row in result.mappings():
                    out.setdefault(str(row["account"]), {})[str(row["path"])] = row
        return out

    def _reconcile(
        self,
        row: RowMapping,
        by_id: Mapping[str, RowMapping],
        folder_rows: Mapping[str, RowMapping] | None,
        lease: Lease,
    ) -> None:
        account = str(row["id"])
        stamp = _stamp(account, by_id)
        watcher = self.watchers.get(account)
        if watcher is not None and not self._current(account, stamp, lease):
            log.info("account changed; restarting its listeners", account=account)
            old = self.watchers.pop(account)
            old.active = False
            task = asyncio.create_task(old.stop())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            watcher = None
        if watcher is None:
            self._memory.setdefault(
                account,
                _Memory(
                    state=str(row["state"]),
                    auth_failed=row["state"] == AccountState.AUTHENTICATION_ERROR,
                    connect_failed=row["state"] == AccountState.CONNECT_ERROR,
                    connected_once=row["state"]
                    in (AccountState.CONNECTED, AccountState.DISCONNECTED),
                ),
            )
            if row["backend"] == "graph" and self.graph is not None:
                watcher = GraphWatcher(
                    self.graph,
                    row,
                    stamp,
                    self.report_state,
                    lease=lease,
                    lease_lost=self._lease_lost,
                )
            else:
                watcher = AccountWatcher(self, row, stamp, folder_rows, lease)
            self._leases[account] = lease
            self.watchers[account] = watcher
            watcher.start()
            return
        if row["reconnect_requested_ms"] != watcher.reconnect_ms:
            watcher.reconnect_ms = row["reconnect_requested_ms"]
            log.info("reconnect requested", account=account)
            watcher.reconnect()
        if row["sync_requested_ms"] != watcher.sync_ms:
            watcher.sync_ms = row["sync_requested_ms"]
            log.info("sync requested", account=account)
            watcher.sync()

    def _current(self, account: str, stamp: tuple[Any, ...], lease: Lease) -> bool:
        """Whether ``account``'s watcher runs with these settings and under this lease."""
        watcher = self.watchers.get(account)
        return watcher is not None and watcher.stamp == stamp and watcher.lease == lease

    def _forget(self, account: str) -> None:
        self._memory.pop(account, None)
        self._pending_states.pop(account, None)
        # The lease stays until what the watcher reported is written (or refused): _flush.

    # -- states -----------------------------------------------------------------------------

    def report_state(self, account: str, report: StateReport) -> None:
        """Record an account's combined state; the events of a transition are queued now."""
        memory = self._memory.get(account)
        if memory is None:
            return
        ms = now_ms()
        error = dict(report.error or {})
        if report.state == AccountState.AUTHENTICATION_ERROR and not memory.auth_failed:
            memory.auth_failed = True
            if not report.recorded:
                self._pending_events.append(Event("authenticationError", account, error, ms))
        elif report.state == AccountState.CONNECT_ERROR and not memory.connect_failed:
            memory.connect_failed = True
            self._pending_events.append(Event("connectError", account, error, ms))
        elif report.state == AccountState.CONNECTED:
            if memory.auth_failed or not memory.connected_once:
                data = {"user": report.user} if report.user else {}
                self._pending_events.append(Event("authenticationSuccess", account, data, ms))
            memory.auth_failed = memory.connect_failed = False
            memory.connected_once = True
        if report.state == memory.state:
            return
        memory.state = report.state
        self._pending_states[account] = report
        self._state_wake.set()

    async def _state_loop(self) -> None:
        while True:
            await self._state_wake.wait()
            await asyncio.sleep(_STATE_BATCH)
            self._state_wake.clear()
            try:
                # Shielded: stop() cancelling this loop must not cut a flush between its
                # commit and its bookkeeping (the batch would be queued, and written, again).
                self._flushing = asyncio.ensure_future(self._flush())
                await asyncio.shield(self._flushing)
            except StoreError as exc:
                log.log(retry_level(exc), "could not record account states", error=str(exc))
                self._state_wake.set()
                await asyncio.sleep(_STATE_RETRY)
            except Exception:
                log.exception("recording account states crashed")
                await asyncio.sleep(_STATE_RETRY)

    async def _flush(self) -> None:
        states, self._pending_states = self._pending_states, {}
        queued, self._pending_events = self._pending_events, []
        if not states and not queued:
            return
        try:
            async with self.store.write(notify=False) as conn:
                # What the watchers of accounts another node took over reported is dropped.
                lost = {
                    account
                    for account, _ in await leases_store.fenced(
                        conn,
                        [
                            (a, self._leases[a])
                            for a in {*states, *(e.account for e in queued)}
                            if a in self._leases
                        ],
                    )
                }
                states = {a: r for a, r in states.items() if a not in lost}
                queued = [e for e in queued if e.account not in lost]
                ms = now_ms()
                gone = await accounts_store.set_states(
                    conn,
                    {
                        account: (
                            report.state,
                            {**report.error, "time": ms}
                            if report.state != AccountState.CONNECTED and report.error
                            else None,
                        )
                        for account, report in states.items()
                    },
                )
                batch = [e for e in queued if e.account not in gone]
                if batch:
                    await events_store.record(
                        conn,
                        batch,
                        default_service_url=self.service_url,
                        max_bytes=self.max_payload_bytes,
                    )
        except BaseException:
            # Keep what could not be written; newer states win.
            self._pending_states = {**states, **self._pending_states}
            self._pending_events = queued + self._pending_events
            raise
        pending = {*self._pending_states, *(e.account for e in self._pending_events)}
        for account in [a for a in self._leases if a not in self.watchers and a not in pending]:
            del self._leases[account]


def _stamp(account: str, by_id: Mapping[str, RowMapping]) -> tuple[Any, ...]:
    """``updated_ms`` of the account and of each account it delegates to (tokens, server)."""
    stamp: list[Any] = []
    current: str | None = account
    seen: set[str] = set()
    while current is not None and current not in seen and len(seen) <= MAX_HOPS:
        seen.add(current)
        row = by_id.get(current)
        if row is None:
            stamp.append((current, None))
            break
        stamp.append((current, row["updated_ms"]))
        parent = row["delegated_account"]
        current = str(parent) if parent is not None else None
    return tuple(stamp)
