"""One Graph account, watched by subscription or by delta polling.

What a :class:`GraphWatcher` does, in one loop::

    start ─▶ delta baseline of INBOX ─▶ subscription (or polling when Graph refuses it:
             delegated shared mailboxes) ─▶ delta catch-up
    then  ─▶ wait for: a notification (the API stored it and woke us), the polling
             interval, the renewal time, a sync or reconnect request
          ─▶ lifecycle events (reauthorize, re-create), delta catch-up, renewal

Every change comes from delta, so repeated notifications, a notification for a change
already seen and the draft -> sent sequence produce one event each. The events, the new
delta state and the consumed notifications are written in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kiota_abstractions.api_error import APIError
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import (  # noqa: E501
        DeltaRequestBuilder,
    )

from relay.auth.crypto import Cipher
from relay.config import GraphSettings
from relay.errors import AuthError, ConsentRequired
from relay.events import normalize
from relay.events.model import Event
from relay.sources.graph import subscriptions
from relay.sources.graph.client import AccountClient, GraphClients, to_json
from relay.sources.imap.listener import StateReport
from relay.store import Store
from relay.store import events as events_store
from relay.store import graph as graph_store
from relay.store.engine import now_ms
from relay.store.graph import GraphMode
from relay.store.schema import AccountState

__all__ = ["GraphContext", "GraphWatcher"]

log = structlog.get_logger(__name__)

INBOX_ID = "inbox"
INBOX_PATH = "INBOX"
INBOX_SPECIAL_USE = "\\Inbox"
# Without a notification, the queue is still looked at this often (another node may
# have stored one for us).
_QUEUE_CHECK = 15.0
# On a re-baseline (expired delta token), messages received this long before the last
# sync are still reported as new.
_REBASELINE_SLACK_MS = 60_000


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


class _Rebaseline(Exception):
    """The stored delta token expired (410 / syncStateNotFound)."""


def _status(exc: APIError) -> int:
    return int(exc.response_status_code or 0)


def _code(exc: APIError) -> str:
    error = getattr(exc, "error", None)
    return str(getattr(error, "code", "") or "")


def _message(exc: BaseException) -> str:
    if isinstance(exc, APIError):
        error = getattr(exc, "error", None)
        text = getattr(error, "message", None) or exc.message or ""
        return f"{_status(exc)} {_code(exc)}: {text}".strip()
    return str(exc) or type(exc).__name__


def _received_ms(message: Mapping[str, Any]) -> int:
    value = message.get("receivedDateTime")
    if not isinstance(value, str):
        return 0
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


class GraphWatcher:
    """Watches one Graph account (see the module docstring)."""

    def __init__(
        self,
        context: GraphContext,
        row: Mapping[Any, Any],
        stamp: tuple[Any, ...],
        report: Callable[[str, StateReport], None],
    ) -> None:
        """``report(account, state)`` receives the account's state transitions."""
        self.context = context
        self.account = str(row["id"])
        self.stamp = stamp
        self.reconnect_ms = row["reconnect_requested_ms"]
        self.sync_ms = row["sync_requested_ms"]
        self.active = True
        # Set by the supervisor when the account itself is gone: the subscription goes too.
        self.deleted = False
        self._report = report
        self._client: AccountClient = context.clients.for_account(self.account)
        self._wake = asyncio.Event()
        self._reconnect = False
        self._task: asyncio.Task[None] | None = None
        self._subscription: str | None = None
        self._expires_ms: int | None = None
        self._mode: str | None = None

    # -- control ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run(), name=f"graph {self.account}")

    def wake(self) -> None:
        """Look at the notification queue now."""
        self._wake.set()

    def sync(self) -> None:
        """Catch up with delta now."""
        self._wake.set()

    def reconnect(self) -> None:
        """Re-create the subscription now."""
        self._reconnect = True
        self._wake.set()

    async def stop(self) -> None:
        """Stop the loop; delete the subscription when the account was deleted."""
        self.active = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.deleted:
            return
        if self._subscription is not None:
            try:
                await subscriptions.delete(self._client, self._subscription)
            except Exception as exc:
                log.info("could not delete subscription", account=self.account, error=str(exc))
        try:
            # Received before the account went; nothing will consume them now.
            async with self.context.store.write(notify=False) as conn:
                await graph_store.forget(conn, self.account)
        except Exception as exc:
            log.info("could not drop notifications", account=self.account, error=str(exc))

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        s = self.context.settings
        backoff = s.retry_min
        ready = False
        while True:
            try:
                if not ready or self._reconnect:
                    self._reconnect = False
                    self._report(self.account, StateReport(AccountState.CONNECTING))
                    await self._catch_up()
                    await self._watch()
                    await self._catch_up()
                    ready = True
                    backoff = s.retry_min
                    self._report(self.account, StateReport(AccountState.CONNECTED))
                await self._handle_queue()
                await self._renew_if_due()
                if self._mode == GraphMode.POLLING:
                    await self._catch_up()
                await self._sleep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                ready = False
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
        if self._expires_ms is not None:
            due = (self._expires_ms - now_ms()) / 1000 - s.subscription_renew_before
            timeout = min(timeout, max(due, 0.05))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        self._wake.clear()

    async def _failed(self, exc: BaseException) -> None:
        message = _message(exc)
        retry_after = None
        if isinstance(exc, APIError) and exc.response_headers:
            retry_after = exc.response_headers.get("retry-after")
        log.warning("graph account failed", account=self.account, error=message)
        state = (
            AccountState.AUTHENTICATION_ERROR
            if isinstance(exc, AuthError) or (isinstance(exc, APIError) and _status(exc) == 401)
            else AccountState.CONNECT_ERROR
        )
        error = {"error": message}
        if isinstance(exc, ConsentRequired):
            error["code"] = "ConsentRequired"
        self._report(self.account, StateReport(state, error))
        try:
            async with self.context.store.write(notify=False) as conn:
                await graph_store.save_account(
                    conn, self.account, {"last_error": {**error, "time": now_ms()}}
                )
        except Exception as store_exc:
            log.warning("could not record graph error", error=str(store_exc))
        if retry_after:
            with contextlib.suppress(ValueError):
                await asyncio.sleep(min(float(retry_after[0]), self.context.settings.retry_max))

    # -- subscriptions ----------------------------------------------------------------------

    async def _base_url(self) -> str:
        async with self.context.store.read() as conn:
            return await events_store.service_url(conn, self.context.service_url)

    async def _watch(self) -> None:
        """Create the subscription, or fall back to polling when Graph refuses it."""
        s = self.context.settings
        user = await self._client.user()
        resource = subscriptions.resource_for(user, INBOX_ID)
        async with self.context.store.read() as conn:
            old = await graph_store.get_account(conn, self.account)
        if old is not None and old["subscription_id"]:
            with contextlib.suppress(Exception):
                await subscriptions.delete(self._client, str(old["subscription_id"]))
        try:
            made = await subscriptions.create(
                self._client,
                resource=resource,
                base_url=await self._base_url(),
                lifetime=s.subscription_lifetime,
            )
        except APIError as exc:
            if _status(exc) != 403:
                raise
            log.info("subscription refused; polling", account=self.account, error=_message(exc))
            self._mode, self._subscription, self._expires_ms = GraphMode.POLLING, None, None
            async with self.context.store.write(notify=False) as conn:
                await graph_store.save_account(
                    conn,
                    self.account,
                    {
                        "mode": GraphMode.POLLING,
                        "subscription_id": None,
                        "resource": resource,
                        "expires_ms": None,
                        "client_state": None,
                        "last_error": None,
                    },
                )
            return
        self._mode, self._subscription, self._expires_ms = (
            GraphMode.SUBSCRIPTION,
            made.id,
            made.expires_ms,
        )
        async with self.context.store.write(notify=False) as conn:
            await graph_store.save_account(
                conn,
                self.account,
                {
                    "mode": GraphMode.SUBSCRIPTION,
                    "subscription_id": made.id,
                    "resource": made.resource,
                    "expires_ms": made.expires_ms,
                    "client_state": self.context.cipher.encrypt(
                        made.client_state.encode(), context=client_state_context(self.account)
                    ),
                    "last_error": None,
                },
            )
        log.info("subscription created", account=self.account, subscription=made.id)

    async def _renew_if_due(self) -> None:
        s = self.context.settings
        if self._subscription is None or self._expires_ms is None:
            return
        if (self._expires_ms - now_ms()) / 1000 > s.subscription_renew_before:
            return
        try:
            expires = await subscriptions.renew(
                self._client, self._subscription, lifetime=s.subscription_lifetime
            )
        except APIError as exc:
            if _status(exc) != 404:
                raise
            # Gone already: create it again and catch up on what was missed.
            await self._watch()
            await self._catch_up()
            return
        self._expires_ms = expires
        async with self.context.store.write(notify=False) as conn:
            await graph_store.save_account(conn, self.account, {"expires_ms": expires})
        log.info("subscription renewed", account=self.account, subscription=self._subscription)

    async def _handle_queue(self) -> None:
        """Lifecycle events first, then one delta catch-up for all change notifications."""
        async with self.context.store.read() as conn:
            rows = await graph_store.pending(conn, self.account)
        if not rows:
            return
        upto = max(int(r["seq"]) for r in rows)
        kinds = {str(r["kind"]) for r in rows if r["lifecycle"]}
        if self._subscription is not None and "subscriptionRemoved" in kinds:
            log.info("subscription removed by Graph; re-creating", account=self.account)
            self._subscription = None
            await self._watch()
        elif self._subscription is not None and "reauthorizationRequired" in kinds:
            try:
                await subscriptions.reauthorize(self._client, self._subscription)
            except APIError as exc:
                if _status(exc) != 404:
                    raise
                await self._watch()
        await self._catch_up(consume_upto=upto)

    # -- delta ------------------------------------------------------------------------------

    def _folder_builder(self, user: str) -> Any:
        return self._client.service.users.by_user_id(user).mail_folders.by_mail_folder_id(INBOX_ID)

    async def _pages(self, link: str | None) -> tuple[list[dict[str, Any]], str]:
        """Every change since ``link`` (everything when None) and the next delta link."""
        builder = self._folder_builder(await self._client.user()).messages.delta
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

    async def _catch_up(self, consume_upto: int | None = None) -> None:
        """Apply delta to the stored folder state; store events, state and consumed rows."""
        async with self.context.store.read() as conn:
            folder = await graph_store.get_folder(conn, self.account, INBOX_ID)
        link = folder["delta_link"] if folder is not None else None
        known: dict[str, Any] = dict(folder["messages"]) if folder is not None else {}
        uid_next = int(folder["uid_next"]) if folder is not None else 1
        since_ms: int | None = None
        try:
            items, new_link = await self._pages(link)
        except _Rebaseline:
            log.info("delta token expired; re-baselining", account=self.account)
            items, new_link = await self._pages(None)
            link = None
            since_ms = (folder["synced_ms"] or 0) - _REBASELINE_SLACK_MS if folder else None
        baseline = link is None
        ms = now_ms()
        batch: list[Event] = []
        seen: set[str] = set()
        for item in items:
            graph_id = str(item.get("id") or "")
            if not graph_id:
                continue
            seen.add(graph_id)
            entry = known.get(graph_id)
            if "@removed" in item:
                if entry is not None:
                    del known[graph_id]
                    batch.append(
                        self._event(
                            "messageDeleted",
                            normalize.graph_message_deleted(graph_id, entry[0]),
                            ms,
                        )
                    )
                continue
            flags = normalize.graph_flags(item)
            if entry is None:
                uid = uid_next
                uid_next += 1
                known[graph_id] = [uid, flags]
                report = not baseline or (
                    since_ms is not None and _received_ms(item) >= since_ms and folder is not None
                )
                if report:
                    data = normalize.graph_message_to_event(item, uid=uid)
                    batch.append(self._event("messageNew", data, ms))
                continue
            changed = normalize.graph_message_updated(graph_id, entry[0], entry[1], flags)
            known[graph_id] = [entry[0], flags]
            if changed is not None:
                batch.append(self._event("messageUpdated", changed, ms))
        if baseline and folder is not None:
            # A full listing: what is not in it any more was removed meanwhile.
            for graph_id in [g for g in known if g not in seen]:
                uid = known.pop(graph_id)[0]
                data = normalize.graph_message_deleted(graph_id, uid)
                batch.append(self._event("messageDeleted", data, ms))
        first = folder is None
        if first:
            batch.append(Event("accountInitialized", self.account, {"initialized": True}, ms))
        async with self.context.store.write(notify=bool(batch)) as conn:
            if batch:
                await events_store.record(
                    conn,
                    batch,
                    default_service_url=self.context.service_url,
                    max_bytes=self.context.max_payload_bytes,
                )
            await graph_store.save_folder(
                conn,
                self.account,
                INBOX_ID,
                delta_link=new_link,
                messages=known,
                uid_next=uid_next,
            )
            if consume_upto is not None:
                await graph_store.consume(conn, self.account, consume_upto)
        if batch:
            log.info("graph changes", account=self.account, events=len(batch))

    def _event(self, name: str, data: dict[str, Any], ms: int) -> Event:
        return Event(name, self.account, data, ms, path=INBOX_PATH, special_use=INBOX_SPECIAL_USE)
