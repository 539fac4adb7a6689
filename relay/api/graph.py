"""``POST /graph/notify`` and ``POST /graph/lifecycle``: what Microsoft Graph calls.

Public (Graph sends no API token): a request is trusted by its ``clientState``, compared in
constant time with the one stored (encrypted) for the subscription it names. Notifications
are stored first and answered 202 after that write; the account's watcher does the rest.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Sequence
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel

from relay.api.endpoint import Endpoint, read_object
from relay.api.keys import BUS, CIPHER, STORE, SUPERVISOR
from relay.errors import InputError
from relay.sources.graph.watcher import client_state_context
from relay.store import graph as graph_store

log = structlog.get_logger(__name__)

# How long a subscription's account and clientState are remembered: a lookup per request
# would double the store round trips of the hot path.
_CACHE_SECONDS = 5.0


class NotificationInbox:
    """Writes the notifications of concurrent requests in one transaction (group commit).

    Each request waits until its rows are committed, so a 202 still means "stored".
    """

    def __init__(self, app: web.Application) -> None:
        """Nothing runs until the first :meth:`put`; the store is the application's."""
        self._app = app
        self._pending: list[tuple[Sequence[dict[str, Any]], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._known: dict[str, tuple[float, str, bytes | None]] = {}

    async def put(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store ``rows``; returns once they are committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    async with self._app[STORE].write(notify=False) as conn:
                        await graph_store.queue(conn, [r for rows, _ in batch for r in rows])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._task = None

    async def subscriptions(self, ids: Sequence[str]) -> dict[str, tuple[str, bytes | None]]:
        """Subscription id -> (account, encrypted clientState) for the known ones of ``ids``."""
        now = time.monotonic()
        out: dict[str, tuple[str, bytes | None]] = {}
        missing = []
        for sub_id in set(ids):
            hit = self._known.get(sub_id)
            if hit is not None and hit[0] > now:
                out[sub_id] = (hit[1], hit[2])
            else:
                missing.append(sub_id)
        if missing:
            async with self._app[STORE].read() as conn:
                rows = await graph_store.by_subscriptions(conn, missing)
            if len(self._known) > 10_000:
                self._known.clear()
            for sub_id, row in rows.items():
                entry = (str(row["account"]), row["client_state"])
                self._known[sub_id] = (now + _CACHE_SECONDS, *entry)
                out[sub_id] = entry
        return out


INBOX = web.AppKey("graph_inbox", NotificationInbox)


def setup(app: web.Application) -> None:
    """Give the application its notification inbox (before it starts)."""
    app[INBOX] = NotificationInbox(app)


def _validation(request: web.Request) -> web.Response | None:
    token = request.query.get("validationToken")
    if token is None:
        return None
    # aiohttp has already percent-decoded it; only the token goes back, as plain text.
    return web.Response(text=token, content_type="text/plain")


async def _receive(request: web.Request, *, lifecycle: bool) -> web.Response:
    answer = _validation(request)
    if answer is not None:
        return answer
    items = (await read_object(request)).get("value")
    if not isinstance(items, list):
        raise InputError('expected a JSON object {"value": [notifications]}', field="value")
    items = [i for i in items if isinstance(i, dict) and isinstance(i.get("subscriptionId"), str)]
    inbox = request.app[INBOX]
    cipher = request.app[CIPHER]
    known = await inbox.subscriptions([i["subscriptionId"] for i in items])
    rows: list[dict[str, Any]] = []
    for item in items:
        account, sealed = known.get(item["subscriptionId"], ("", None))
        if sealed is None:
            log.warning(
                "notification for an unknown subscription", subscription=item["subscriptionId"]
            )
            continue
        expected = cipher.decrypt(sealed, context=client_state_context(account))
        given = str(item.get("clientState") or "").encode()
        if not hmac.compare_digest(expected, given):
            log.warning("notification with a wrong clientState", account=account)
            continue
        kind = item.get("lifecycleEvent") if lifecycle else item.get("changeType")
        rows.append(
            {
                "account": account,
                "subscription_id": item["subscriptionId"],
                "kind": str(kind or "")[:64],
                "lifecycle": 1 if lifecycle else 0,
                "payload": {k: v for k, v in item.items() if k != "clientState"},
            }
        )
    if rows:
        await inbox.put(rows)
        supervisor = request.app.get(SUPERVISOR)
        bus = request.app.get(BUS)
        for account in sorted({r["account"] for r in rows}):
            # The account's watcher runs on whichever node holds it: this one, or another.
            if supervisor is not None and supervisor.wake_graph(account):
                continue
            if bus is not None:
                bus.send("graph", account)
    return web.Response(status=202)


async def notify(request: web.Request) -> web.Response:
    """Change notifications (and the validation handshake of a new subscription)."""
    return await _receive(request, lifecycle=False)


async def lifecycle(request: web.Request) -> web.Response:
    """Lifecycle notifications: reauthorizationRequired, subscriptionRemoved, missed."""
    return await _receive(request, lifecycle=True)


_ERRORS = {400: "Not a notification payload"}
_VALIDATION = {200: ("The validationToken, echoed (a new subscription's validation)", "text/plain")}


class Notifications(BaseModel):
    """What Microsoft Graph posts: ``{"value": [notification, ...]}``; notifications of
    unknown subscriptions or with a wrong ``clientState`` are dropped."""

    value: list[dict[str, Any]]


class Validation(BaseModel):
    """Graph's validation request of a new subscription carries only this, and no body."""

    validationToken: str | None = None


ENDPOINTS = [
    Endpoint(
        "POST",
        "/graph/notify",
        notify,
        "Microsoft Graph change notifications (200 text/plain echo of validationToken)",
        "Microsoft Graph",
        body=Notifications,
        query=Validation,
        status=202,
        content_type="",
        alternatives=_VALIDATION,
        errors=_ERRORS,
        public=True,
    ),
    Endpoint(
        "POST",
        "/graph/lifecycle",
        lifecycle,
        "Microsoft Graph lifecycle notifications (200 text/plain echo of validationToken)",
        "Microsoft Graph",
        body=Notifications,
        query=Validation,
        status=202,
        content_type="",
        alternatives=_VALIDATION,
        errors=_ERRORS,
        public=True,
    ),
]
