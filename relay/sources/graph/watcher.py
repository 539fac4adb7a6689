"""One Graph account, watched by subscription or by delta polling.

What a :class:`GraphWatcher` does, in one loop::

    start ─▶ which folders: every folder, or INBOX plus those the account's ``path`` names
             (paths, special uses such as ``\\Sent``); the folder tree is listed at start,
             every 15 minutes and on a sync request: folders created or deleted since the
             last listing are reported (mailboxNew / mailboxDeleted)
          ─▶ delta baseline of each ─▶ one subscription per folder (or polling when Graph
             refuses it: delegated shared mailboxes) ─▶ delta catch-up
    then  ─▶ wait for: a notification (the API stored it and woke us), the polling
             interval, the renewal time, a sync or reconnect request
          ─▶ lifecycle events (reauthorize, re-create), delta catch-up of the notified
             folders, renewal

Graph's bad moments (503, 504, timeouts, resets: :mod:`relay.sources.graph.outage`) are
waited out where the loop was, with backoff or Retry-After, and the account keeps its
state; one that lasts longer than ``graph.outage_grace`` is reported once (``connectError``)
and, when Graph answers again, the account is ``connected`` again. A 429 is waited out the
same way but never reported; a 401 drops the token and tries once more with a fresh one.

Every change comes from delta and is turned into events by
:class:`~relay.sources.graph.changes.Changes` (moves, de-duplication). The events, the new
delta state and the consumed notifications are written in one transaction. Expiries are
planned in Graph's time (:meth:`GraphClients.server_ms`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import warnings
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kiota_abstractions.api_error import APIError
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import (  # noqa: E501
        DeltaRequestBuilder,
    )
    from msgraph.generated.users.item.messages.item.message_item_request_builder import (
        MessageItemRequestBuilder,
    )

from relay.auth.crypto import Cipher
from relay.config import GraphSettings
from relay.errors import AuthError, ConsentRequired, LeaseLost, StoreUnavailable
from relay.events import normalize
from relay.events.mailboxes import Listed, folder_name
from relay.events.model import Event
from relay.graph.folders import INBOX_FOLDER, FolderTree, GraphFolder
from relay.sources.graph import subscriptions
from relay.sources.graph.changes import REBASELINE_SLACK_MS, Changes, Delta, Extra, FolderState
from relay.sources.graph.client import AccountClient, GraphClients, gather_all, to_json
from relay.sources.graph.folders import load_tree, select
from relay.sources.graph.outage import Outage, delay, transient
from relay.sources.imap.connection import StateReport
from relay.sources.imap.sink import Enrich
from relay.sources.listing import record_listing
from relay.sources.specs import folder_specs
from relay.store import Store, leases
from relay.store import events as events_store
from relay.store import graph as graph_store
from relay.store.engine import now_ms
from relay.store.graph import GraphMode
from relay.store.leases import Lease
from relay.store.schema import AccountState
from relay.webhooks.retry import parse_retry_after

__all__ = ["GraphContext", "GraphWatcher"]

log = structlog.get_logger(__name__)

# Without a notification, the queue is still looked at this often (another node may
# have stored one for us).
_QUEUE_CHECK = 15.0
# Seconds between looks at the mailbox's folder tree, for accounts whose ``path`` names
# folders (new, renamed or deleted ones); a sync request looks at once.
_FOLDER_CHECK = 900.0
# A second 401 this soon after a fresh token is a failure, not a stale token.
_REFUSED_AGAIN = 60.0
# Concurrent Graph requests of one catch-up (delta of several folders, message lookups).
_PARALLEL = 4


def client_state_context(account: str) -> str:
    """Encryption context of an account's ``clientState``."""
    return f"graph/{account}/clientState"


@dataclass
class GraphContext:
    """What every Graph watcher of a node shares."""

    store: Store
    cipher: Cipher
    settings: GraphSettings
    clients: GraphClients
    service_url: str
    max_payload_bytes: int
    # Adds message content to new-message events before they are stored.
    enrich: Enrich | None = None


@dataclass
class _Subscription:
    id: str
    folder: str
    expires_ms: int


class _Rebaseline(Exception):
    """The stored delta token expired (410 / syncStateNotFound)."""


def _status(exc: APIError) -> int:
    return int(exc.response_status_code or 0)


def _code(exc: APIError) -> str:
    error = getattr(exc, "error", None)
    return str(getattr(error, "code", "") or "")


def _retry_after(exc: BaseException, now: float) -> float | None:
    """Seconds to wait from a Graph error's ``Retry-After`` (delta-seconds or an HTTP date).

    kiota hands over httpx's headers, one string per name; a plain mapping may spell the
    name in any case or hold a list of values.
    """
    headers: Any = exc.response_headers if isinstance(exc, APIError) else None
    if not headers:
        return None
    for name, value in headers.items():
        if str(name).lower() != "retry-after":
            continue
        if isinstance(value, list | tuple | set | frozenset):
            value = next(iter(value), None)
        return parse_retry_after(value if isinstance(value, str) else None, now)
    return None


def _message(exc: BaseException) -> str:
    if isinstance(exc, APIError):
        error = getattr(exc, "error", None)
        text = getattr(error, "message", None) or exc.message or ""
        head = " ".join(str(part) for part in (_status(exc), _code(exc)) if part)
        return f"{head}: {text}".strip()
    return str(exc) or type(exc).__name__


def error_data(exc: BaseException) -> dict[str, Any]:
    """The ``authenticationError`` / ``connectError`` data of a failure, EmailEngine's way:
    ``{response, serverResponseCode}`` (+ ``statusCode`` for Graph's HTTP errors)."""
    if isinstance(exc, ConsentRequired):
        return {"response": str(exc), "serverResponseCode": "OauthRenewError"}
    if isinstance(exc, APIError):
        status = _status(exc)
        return {
            "response": _message(exc),
            "serverResponseCode": _code(exc) or f"HTTP{status}",
            "statusCode": status,
        }
    if isinstance(exc, AuthError):
        return {"response": str(exc), "serverResponseCode": "NoCredentials"}
    return {"response": str(exc) or type(exc).__name__, "serverResponseCode": type(exc).__name__}


class GraphWatcher:
    """Watches one Graph account (see the module docstring)."""

    def __init__(
        self,
        context: GraphContext,
        row: Mapping[Any, Any],
        stamp: tuple[Any, ...],
        report: Callable[[str, StateReport], None],
        *,
        lease: Lease | None = None,
        lease_lost: Callable[[str], None] | None = None,
    ) -> None:
        """``report(account, state)`` receives the account's state transitions. ``lease``
        fences every write (None: not fenced); once a write is refused because another node
        took the account over, the loop stops and ``lease_lost(account)`` is told."""
        self.context = context
        self.lease = lease
        self._lease_lost = lease_lost
        self.account = str(row["id"])
        self.stamp = stamp
        self.reconnect_ms = row["reconnect_requested_ms"]
        self.sync_ms = row["sync_requested_ms"]
        self.active = True
        # Set by the supervisor when the account itself is gone: the subscriptions go too.
        self.deleted = False
        config = row["config"] or {}
        self._specs = folder_specs(config.get("path"), config.get("subconnections"))
        self._report = report
        self._client: AccountClient = context.clients.for_account(self.account)
        self._wake = asyncio.Event()
        self._reconnect = False
        self._sync = False
        self._task: asyncio.Task[None] | None = None
        self._folders: list[GraphFolder] = [INBOX_FOLDER]
        self._tree: FolderTree | None = None
        # The folder listing last recorded (mailboxNew / mailboxDeleted).
        self._listed: dict[str, Listed] | None = None
        # Folder ids the last listing did not have (hidden ones): not listed again for them.
        self._unlisted: set[str] = set()
        self._tree_lock = asyncio.Lock()
        self._subs: dict[str, _Subscription] = {}
        self._mode: str | None = None
        # When the folder tree is looked at again (monotonic).
        self._folder_check = 0.0
        # When the notification queue was last handled (monotonic).
        self._caught_up = -1e9
        # When Graph last answered 401 (monotonic).
        self._refused_at = -_REFUSED_AGAIN
        # The Graph outage going on (503/504, timeouts, resets), if any.
        self._outage: Outage | None = None

    # -- control ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run(), name=f"graph {self.account}")

    def wake(self) -> None:
        """Look at the notification queue now."""
        self._wake.set()

    def sync(self) -> None:
        """Catch up with delta now (every watched folder)."""
        self._sync = True
        self._wake.set()

    def reconnect(self) -> None:
        """Re-create the subscriptions now."""
        self._reconnect = True
        self._wake.set()

    async def stop(self) -> None:
        """Stop the loop; delete the subscriptions when the account was deleted."""
        self.active = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.deleted:
            return
        for sub in list(self._subs.values()):
            try:
                await subscriptions.delete(self._client, sub.id)
            except Exception as exc:
                log.info("could not delete subscription", account=self.account, error=str(exc))
        try:
            # Received before the account went; nothing will consume them now.
            async with self.context.store.write(notify=False) as conn:
                await graph_store.forget(conn, self.account)
        except Exception as exc:
            log.info("could not drop notifications", account=self.account, error=str(exc))

    # -- the loop ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Any]:
        """A write transaction for this account, refused (:class:`LeaseLost`) once another
        node holds it."""
        async with self.context.store.write(notify=False) as conn:
            await leases.check(conn, self.account, self.lease)
            yield conn

    async def _run(self) -> None:
        s = self.context.settings
        backoff = s.retry_min
        ready = False
        # The first start takes over the subscriptions another node (or an earlier run of
        # this one) left, when they cover the same folders; later starts make new ones.
        adopt = True
        while True:
            try:
                if not ready or self._reconnect:
                    # Until it is done: a setup that failed half-way is started again.
                    ready = False
                    adopt = adopt and not self._reconnect
                    self._reconnect = False
                    if self._outage is None or not self._outage.reported:
                        self._report(self.account, StateReport(AccountState.CONNECTING))
                    await self._choose_folders()
                    await self._catch_up()
                    await self._watch(adopt=adopt)
                    adopt = False
                    await self._catch_up()
                    ready = True
                    backoff = s.retry_min
                    user = await self._client.user()
                    self._report(self.account, StateReport(AccountState.CONNECTED, user=user))
                await self._handle_queue()
                await self._renew_if_due()
                if (self._sync or time.monotonic() >= self._folder_check) and (
                    await self._folders_changed()
                ):
                    log.info("watched folders changed", account=self.account)
                    self._reconnect = True
                    continue
                if self._mode == GraphMode.POLLING or self._sync:
                    self._sync = False
                    await self._catch_up()
                if self._outage is not None:
                    await self._outage_over()
                await self._sleep()
            except asyncio.CancelledError:
                raise
            except LeaseLost:
                log.info("another node watches the account now; stopping", account=self.account)
                self.active = False
                if self._lease_lost is not None:
                    self._lease_lost(self.account)
                return
            except StoreUnavailable:
                # The database, not Graph, is down: nothing was stored and no delta link
                # advanced. Keep the subscriptions, wait for the store, and catch up from the
                # stored delta links (notifications taken meanwhile are found again there).
                log.debug("store unavailable; graph watcher waits", account=self.account)
                await self.context.store.outage.wait(backoff)
                backoff = min(backoff * 2, s.retry_max)
                self._sync = True
            except Exception as exc:
                if self._token_refused(exc):
                    continue
                if await self._throttled(exc, backoff) or await self._unavailable(exc):
                    # A subscription replaced half-way (renewal, lifecycle) is made again.
                    ready = ready and self._subscribed()
                    continue
                ready = False
                self._outage = None
                await self._failed(exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff * random.uniform(0.8, 1.2)):
                        await self._wake.wait()
                self._wake.clear()
                backoff = min(backoff * 2, s.retry_max)

    async def _sleep(self) -> None:
        s = self.context.settings
        if self._mode == GraphMode.POLLING:
            timeout = s.poll_interval * random.uniform(0.9, 1.1)
        else:
            timeout = _QUEUE_CHECK
        if self._subs:
            soonest = min(sub.expires_ms for sub in self._subs.values())
            due = (soonest - self.context.clients.server_ms()) / 1000 - s.subscription_renew_before
            timeout = min(timeout, max(due, 0.05))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        self._wake.clear()

    def _token_refused(self, exc: BaseException) -> bool:
        """A 401: drop the token and try again at once with a fresh one; but not again
        within a minute (then it is a failure, with backoff)."""
        token = self._client.last_token
        if not isinstance(exc, APIError) or _status(exc) != 401 or token is None:
            return False
        now = time.monotonic()
        if now - self._refused_at < _REFUSED_AGAIN:
            return False
        self._refused_at = now
        self.context.clients.reject(token)
        log.info("graph refused the access token; refreshing", account=self.account)
        return True

    async def _throttled(self, exc: BaseException, backoff: float) -> bool:
        """A 429 that outlasted msgraph's own retries: wait ``Retry-After`` (``backoff``
        without one), then carry on where the loop was.

        Throttling is not a connection failure: the account keeps its state and no event is
        emitted. Nothing is lost: a catch-up stores its delta link only when it succeeds.
        """
        if not isinstance(exc, APIError) or _status(exc) != 429:
            return False
        s = self.context.settings
        retry_after = _retry_after(exc, self.context.clients.server_ms() / 1000)
        delay = backoff * random.uniform(0.8, 1.2) if retry_after is None else retry_after
        delay = min(delay, s.retry_max)
        log.warning(
            "graph throttled; waiting",
            account=self.account,
            retry_after=retry_after,
            seconds=round(delay, 3),
            error=_message(exc),
        )
        await asyncio.sleep(delay)
        return True

    def _subscribed(self) -> bool:
        """Whether every watched folder has its subscription (always true while polling)."""
        if self._mode != GraphMode.SUBSCRIPTION:
            return True
        return {f.key for f in self._folders} <= set(self._subs)

    async def _unavailable(self, exc: BaseException) -> bool:
        """A Graph outage (:func:`~relay.sources.graph.outage.transient`): wait (backoff
        or Retry-After) and carry on where the loop was. The account keeps its state until
        the outage has lasted ``outage_grace`` seconds; then it is reported once
        (``connectError``) and the waiting goes on. Nothing is lost meanwhile: a catch-up
        stores its delta link and consumes notifications only when it succeeds."""
        if not transient(exc):
            return False
        s = self.context.settings
        now = time.monotonic()
        if self._outage is None:
            self._outage = Outage(since=now)
        outage = self._outage
        outage.attempts += 1
        retry_after = _retry_after(exc, self.context.clients.server_ms() / 1000)
        wait = delay(
            outage.attempts,
            retry_after,
            low=s.retry_min,
            high=s.retry_max,
            jitter=random.uniform(0.8, 1.2),
        )
        log.warning(
            "graph unavailable; retrying",
            account=self.account,
            attempt=outage.attempts,
            retry_after=retry_after,
            seconds=round(wait, 3),
            outage_seconds=round(now - outage.since, 1),
            error=_message(exc),
        )
        report_in = outage.report_in(now, s.outage_grace)
        if report_in is not None and report_in <= wait:
            await asyncio.sleep(report_in)
            wait -= report_in
            outage.reported = True
            log.warning(
                "graph outage outlasted the grace period",
                account=self.account,
                outage_seconds=round(time.monotonic() - outage.since, 1),
                attempts=outage.attempts,
                error=_message(exc),
            )
            await self._report_error(AccountState.CONNECT_ERROR, exc)
        await asyncio.sleep(wait)
        return True

    async def _outage_over(self) -> None:
        """Graph answers again: back to ``connected`` if the outage was reported."""
        outage, self._outage = self._outage, None
        assert outage is not None
        log.info(
            "graph answers again",
            account=self.account,
            outage_seconds=round(time.monotonic() - outage.since, 1),
            attempts=outage.attempts,
        )
        if outage.reported:
            user = await self._client.user()
            self._report(self.account, StateReport(AccountState.CONNECTED, user=user))

    async def _report_error(self, state: str, exc: BaseException) -> None:
        """Report ``state`` with what ``exc`` says, and keep it as the account's last error."""
        error = error_data(exc)
        self._report(self.account, StateReport(state, error))
        try:
            async with self._write() as conn:
                await graph_store.save_account(
                    conn, self.account, {"last_error": {**error, "time": now_ms()}}
                )
        except Exception as store_exc:
            log.warning("could not record graph error", error=str(store_exc))

    async def _failed(self, exc: BaseException) -> None:
        message = _message(exc)
        retry_after = _retry_after(exc, self.context.clients.server_ms() / 1000)
        log.warning("graph account failed", account=self.account, error=message)
        state = (
            AccountState.AUTHENTICATION_ERROR
            if isinstance(exc, AuthError) or (isinstance(exc, APIError) and _status(exc) == 401)
            else AccountState.CONNECT_ERROR
        )
        await self._report_error(state, exc)
        if retry_after:
            await asyncio.sleep(min(retry_after, self.context.settings.retry_max))

    # -- folders ----------------------------------------------------------------------------

    async def _folders_changed(self) -> bool:
        """List the folders (reporting new and deleted ones); whether the folders watched
        are others now (created, renamed, deleted)."""
        self._folder_check = time.monotonic() + _FOLDER_CHECK
        chosen, _ = select(self._specs, await self._load_tree())
        return chosen != self._folders

    async def _choose_folders(self) -> None:
        """INBOX and what the account's ``path`` names (every folder without one); forget
        folders no longer watched."""
        self._folder_check = time.monotonic() + _FOLDER_CHECK
        self._folders, missing = select(self._specs, await self._load_tree())
        if missing:
            log.warning("folders not found", account=self.account, folders=missing)
        keys = {f.key for f in self._folders}
        async with self.context.store.read() as conn:
            stored = await graph_store.folders_of(conn, self.account)
        gone = [key for key in stored if key not in keys]
        if gone:
            async with self._write() as conn:
                await graph_store.drop_folders(conn, self.account, gone)

    # -- subscriptions ----------------------------------------------------------------------

    async def _base_url(self) -> str:
        async with self.context.store.read() as conn:
            return await events_store.service_url(conn, self.context.service_url)

    async def _watch(self, *, adopt: bool = False) -> None:
        """One subscription per folder, or polling when Graph refuses them; ``adopt``: keep
        the stored subscriptions when they cover exactly the watched folders and are not
        about to expire (a node taking the account over, a restart)."""
        async with self.context.store.read() as conn:
            old = await graph_store.subscriptions_of(conn, self.account)
        if adopt and self._adopt(old):
            return
        for row in old:
            with contextlib.suppress(Exception):
                await subscriptions.delete(self._client, str(row["subscription_id"]))
        async with self._write() as conn:
            await graph_store.drop_subscriptions(conn, [str(r["subscription_id"]) for r in old])
        self._subs.clear()
        base_url = await self._base_url()
        for folder in self._folders:
            try:
                await self._subscribe(folder, base_url)
            except APIError as exc:
                if _status(exc) != 403 or self._subs:
                    raise
                log.info("subscription refused; polling", account=self.account, error=_message(exc))
                await self._save_mode(GraphMode.POLLING)
                return
        await self._save_mode(GraphMode.SUBSCRIPTION)

    def _adopt(self, rows: Collection[Mapping[Any, Any]]) -> bool:
        by_folder = {str(r["folder"]): r for r in rows}
        keys = {f.key for f in self._folders}
        margin = int(self.context.settings.subscription_renew_before * 1000)
        now = self.context.clients.server_ms()
        if not rows or set(by_folder) != keys or len(by_folder) != len(rows):
            return False
        if any(int(r["expires_ms"]) <= now + margin for r in rows):
            return False
        self._subs = {
            key: _Subscription(str(r["subscription_id"]), key, int(r["expires_ms"]))
            for key, r in by_folder.items()
        }
        self._mode = GraphMode.SUBSCRIPTION
        log.info("subscriptions taken over", account=self.account, count=len(rows))
        return True

    async def _save_mode(self, mode: str) -> None:
        self._mode = mode
        async with self._write() as conn:
            await graph_store.save_account(conn, self.account, {"mode": mode, "last_error": None})

    async def _subscribe(self, folder: GraphFolder, base_url: str | None = None) -> None:
        s = self.context.settings
        user = await self._client.user()
        made = await subscriptions.create(
            self._client,
            resource=subscriptions.resource_for(user, folder.key),
            base_url=base_url or await self._base_url(),
            lifetime=s.subscription_lifetime,
            now_ms=self.context.clients.server_ms(),
        )
        self._subs[folder.key] = _Subscription(made.id, folder.key, made.expires_ms)
        async with self._write() as conn:
            await graph_store.add_subscription(
                conn,
                subscription_id=made.id,
                account=self.account,
                folder=folder.key,
                resource=made.resource,
                expires_ms=made.expires_ms,
                client_state=self.context.cipher.encrypt(
                    made.client_state.encode(), context=client_state_context(self.account)
                ),
            )
        log.info("subscription created", account=self.account, folder=folder.path, id=made.id)

    async def _resubscribe(self, key: str) -> None:
        """Replace the subscription of folder ``key`` (Graph removed or lost it)."""
        old = self._subs.pop(key, None)
        if old is not None:
            with contextlib.suppress(Exception):
                await subscriptions.delete(self._client, old.id)
            async with self._write() as conn:
                await graph_store.drop_subscriptions(conn, [old.id])
        folder = next((f for f in self._folders if f.key == key), None)
        if folder is not None:
            await self._subscribe(folder)

    async def _renew_if_due(self) -> None:
        s = self.context.settings
        for sub in list(self._subs.values()):
            now = self.context.clients.server_ms()
            if (sub.expires_ms - now) / 1000 > s.subscription_renew_before:
                continue
            try:
                expires = await subscriptions.renew(
                    self._client, sub.id, lifetime=s.subscription_lifetime, now_ms=now
                )
            except APIError as exc:
                if _status(exc) != 404:
                    raise
                # Gone already: create it again and catch up on what was missed.
                await self._resubscribe(sub.folder)
                await self._catch_up([sub.folder])
                continue
            sub.expires_ms = expires
            async with self._write() as conn:
                await graph_store.renew_subscription(conn, sub.id, expires)
            log.info("subscription renewed", account=self.account, id=sub.id)

    async def _handle_queue(self) -> None:
        """Lifecycle events first, then one delta catch-up of the notified folders."""
        async with self.context.store.read() as conn:
            rows = await graph_store.pending(conn, self.account)
        if not rows:
            return
        pause = self.context.settings.catch_up_interval - (time.monotonic() - self._caught_up)
        if pause > 0 and len(rows) > 1:
            # Notifications come faster than catch-ups: gather more into this one.
            await asyncio.sleep(pause)
            async with self.context.store.read() as conn:
                rows = await graph_store.pending(conn, self.account)
        upto = max(int(r["seq"]) for r in rows)
        by_id = {sub.id: sub for sub in self._subs.values()}
        keys: set[str] = set()
        everything = False
        for row in rows:
            sub = by_id.get(str(row["subscription_id"]))
            if sub is None:
                # From a subscription replaced meanwhile: look everywhere.
                everything = True
                continue
            keys.add(sub.folder)
            if not row["lifecycle"]:
                continue
            if row["kind"] == "subscriptionRemoved":
                log.info("subscription removed by Graph; re-creating", account=self.account)
                await self._resubscribe(sub.folder)
            elif row["kind"] == "reauthorizationRequired":
                try:
                    await subscriptions.reauthorize(self._client, sub.id)
                except APIError as exc:
                    if _status(exc) != 404:
                        raise
                    await self._resubscribe(sub.folder)
        await self._catch_up(None if everything else keys, consume_upto=upto)
        self._caught_up = time.monotonic()

    # -- delta ------------------------------------------------------------------------------

    async def _pages(self, key: str, link: str | None) -> tuple[list[dict[str, Any]], str]:
        """Every change of folder ``key`` since ``link`` (all when None) and the next link."""
        user = await self._client.user()
        builder = (
            self._client.service.users.by_user_id(user)
            .mail_folders.by_mail_folder_id(key)
            .messages.delta
        )
        if link is None:
            config: RequestConfiguration[Any] = RequestConfiguration(
                query_parameters=DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
                    select=list(normalize.GRAPH_FIELDS)
                )
            )
            page = await builder.get(request_configuration=config)
        else:
            try:
                page = await builder.with_url(link).get()
            except APIError as exc:
                if _status(exc) == 410 or _code(exc) in ("syncStateNotFound", "SyncStateNotFound"):
                    raise _Rebaseline from exc
                raise
        items: list[dict[str, Any]] = []
        while True:
            assert page is not None
            for message in page.value or []:
                item = to_json(message)
                extra = message.additional_data or {}
                if "@removed" in extra:
                    item["@removed"] = extra["@removed"]
                items.append(item)
            if page.odata_delta_link:
                return items, page.odata_delta_link
            if not page.odata_next_link:
                raise ValueError("delta page without nextLink or deltaLink")
            page = await builder.with_url(page.odata_next_link).get()

    async def _delta(self, state: FolderState) -> Delta:
        key = state.folder.key
        try:
            items, link = await self._pages(key, state.link)
        except _Rebaseline:
            log.info("delta token expired; re-baselining", account=self.account, folder=key)
            items, link = await self._pages(key, None)
            since = (state.synced_ms or 0) - REBASELINE_SLACK_MS
            return Delta(items, link, full=True, since_ms=since)
        return Delta(items, link, full=state.link is None)

    async def _where(self, graph_id: str) -> tuple[bool, GraphFolder | None]:
        """Where a message that left a folder is now: ``(deleted, folder)``."""
        user = await self._client.user()
        builder = self._client.service.users.by_user_id(user).messages.by_message_id(graph_id)
        config: RequestConfiguration[Any] = RequestConfiguration(
            query_parameters=MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(
                select=["id", "parentFolderId"]
            )
        )
        try:
            found = await builder.get(request_configuration=config)
        except APIError as exc:
            if _status(exc) in (404, 400):
                return True, None
            raise
        parent = found.parent_folder_id if found is not None else None
        if not parent:
            return True, None
        tree = await self._tree_knowing(parent)
        if parent in tree.deletions:
            return True, None
        return False, tree.find(parent)

    async def _extra(self, key: str, item: Mapping[str, Any]) -> Extra | None:
        """What delta does not bring of a new message: its header fields and, for a report
        in INBOX, the report in its source. None when the message is gone meanwhile (or
        may not be read so far)."""
        user = await self._client.user()
        builder = self._client.service.users.by_user_id(user).messages.by_message_id(
            str(item.get("id"))
        )
        config: RequestConfiguration[Any] = RequestConfiguration(
            query_parameters=MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(
                select=list(normalize.GRAPH_DETAIL_FIELDS), expand=[normalize.GRAPH_SIZE_EXPAND]
            )
        )
        try:
            found = await builder.get(request_configuration=config)
        except APIError as exc:
            if _status(exc) in (400, 403, 404):
                return None
            raise
        read = to_json(found) if found is not None else {}
        wanted = (*normalize.GRAPH_DETAIL_FIELDS, "singleValueExtendedProperties")
        properties = {name: read[name] for name in wanted if name in read}
        headers = normalize.graph_headers(properties.get("internetMessageHeaders"))
        if not normalize.graph_report_wanted(item, headers, inbox=key == INBOX_FOLDER.key):
            return Extra(properties)
        try:
            source = await builder.content.get()
        except APIError as exc:
            if _status(exc) in (400, 403, 404):
                return Extra(properties)
            raise
        return Extra(properties, normalize.mime_report(source or b""))

    async def _tree_knowing(self, folder_id: str) -> FolderTree:
        """The folder tree, listed again (once, whoever else asks meanwhile) when it does
        not know ``folder_id`` and did not miss it in its last listing already."""
        async with self._tree_lock:
            tree = self._tree
            if tree is None or not (tree.knows(folder_id) or folder_id in self._unlisted):
                tree = await self._load_tree()
                if not tree.knows(folder_id):
                    self._unlisted.add(folder_id)
            return tree

    async def _load_tree(self) -> FolderTree:
        """List the mailbox's folders (again); report folders that appeared or went."""
        tree = await load_tree(self._client)
        self._tree = tree
        self._unlisted = set()
        listing = {
            f.path: Listed(f.name or folder_name(f.path, "/"), f.special_use)
            for f in tree.folders.values()
        }
        if listing != self._listed:
            await record_listing(
                self.context.store,
                self.account,
                listing,
                service_url=self.context.service_url,
                max_bytes=self.context.max_payload_bytes,
            )
            self._listed = listing
        return tree

    async def _catch_up(
        self, keys: Collection[str] | None = None, consume_upto: int | None = None
    ) -> None:
        """Delta of the folders ``keys`` (None: all); store events, state, consumed rows."""
        async with self.context.store.read() as conn:
            rows = await graph_store.folders_of(conn, self.account)
        first = not rows
        states = {f.key: FolderState.of(f, rows.get(f.key)) for f in self._folders}
        chosen = [s for s in states.values() if keys is None or s.folder.key in keys]
        gate = asyncio.Semaphore(_PARALLEL)

        async def delta_of(state: FolderState) -> Delta:
            async with gate:
                return await self._delta(state)

        deltas = await gather_all(delta_of(state) for state in chosen)
        ids = [str(i.get("id") or "") for d in deltas for i in d.items]
        full = [state.folder.key for state, d in zip(chosen, deltas, strict=True) if d.full]
        async with self.context.store.read() as conn:
            known = await graph_store.known_messages(conn, self.account, ids, full)
        changes = Changes(self.account, states, known, now_ms())
        for state, delta in zip(chosen, deltas, strict=True):
            changes.apply(state.folder.key, delta)
        wanted = changes.reported()

        async def extra_of(key: str, item: Mapping[str, Any]) -> Extra | None:
            async with gate:
                return await self._extra(key, item)

        extras = await gather_all(extra_of(key, item) for key, item in wanted)
        left = changes.settle(
            {
                str(item.get("id")): extra
                for (_, item), extra in zip(wanted, extras, strict=True)
                if extra is not None
            }
        )

        async def where(graph_id: str) -> tuple[bool, GraphFolder | None]:
            async with gate:
                return await self._where(graph_id)

        found = await gather_all(where(graph_id) for graph_id, _ in left)
        for (graph_id, source), (deleted, folder) in zip(left, found, strict=True):
            changes.resolve(graph_id, source, folder, deleted=deleted)
        batch = changes.events
        if self.context.enrich is not None:
            await self.context.enrich(batch)
        if first:
            batch.append(
                Event("accountInitialized", self.account, {"initialized": True}, changes.ms)
            )
        async with self._write() as conn:
            if batch:
                await events_store.record(
                    conn,
                    batch,
                    default_service_url=self.context.service_url,
                    max_bytes=self.context.max_payload_bytes,
                )
            for key in sorted(changes.dirty):
                state = states[key]
                await graph_store.save_folder(
                    conn,
                    self.account,
                    key,
                    path=state.folder.path,
                    special_use=state.folder.special_use,
                    delta_link=state.link,
                    uid_next=state.uid_next,
                )
            await graph_store.save_messages(
                conn, self.account, changes.upserts, sorted(changes.removed)
            )
            if consume_upto is not None:
                await graph_store.consume(conn, self.account, consume_upto)
        if batch:
            log.info("graph changes", account=self.account, events=len(batch))
