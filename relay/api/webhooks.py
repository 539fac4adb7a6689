"""``/v1/webhooks``, ``/v1/deliveries``: webhook routes and their delivery log.

A route's ``whsec_`` secret is returned once, when it is made (create, ``rotateSecret``);
during rotation the previous secret keeps signing (a second ``v1,`` signature) for 24 hours.
Custom header values may carry credentials for the receiver, so they are stored encrypted
and shown redacted.

A route's ``type`` is ``http`` (POST to ``url``) or a queue sink: ``amqp``, ``nats`` or
``redis``, whose ``url`` names the broker (its password is stored encrypted and shown as
``***``) and whose own fields name where on the broker (relay.webhooks.sink_targets).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, Field, HttpUrl, TypeAdapter, ValidationError, model_validator

from relay.api.endpoint import Endpoint, json_response, read_body, read_query
from relay.api.keys import CIPHER, SETTINGS, STORE, WORKER
from relay.api.models import Body, Identifier, Out, Paging, Text
from relay.auth.crypto import Cipher
from relay.auth.grants import Permission
from relay.errors import Conflict, InputError, NotFound
from relay.events.model import EMAILENGINE_ONLY_EVENTS, EVENT_TYPES, Event, iso_ms
from relay.store import deliveries as queue
from relay.store import events as events_store
from relay.store import wakes
from relay.store import webhook_routes as routes_store
from relay.store.deliveries import Outcome, Stored
from relay.store.engine import Wake, now_ms
from relay.store.schema import DeliveryStatus
from relay.webhooks.routes import (
    decrypt_headers,
    decrypt_sink_url,
    encrypt_headers,
    encrypt_sink_url,
    secret_context,
)
from relay.webhooks.signing import PROTECTED_HEADERS, new_route_secret
from relay.webhooks.sink_targets import (
    ALL_OPTIONS,
    HTTP,
    SinkOptions,
    check_options,
    parse_broker_url,
    redacted,
)

TAG = "Webhooks"
ROTATION_OVERLAP_MS = 24 * 3600 * 1000
REDACTED = "[redacted]"
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
# What a route's headers may not name: what signing never lets them replace, and (though
# signing would) the relay's own User-Agent.
_RESERVED = PROTECTED_HEADERS | {"user-agent"}


def _event_name(value: str) -> str:
    if value != "*" and value not in EVENT_TYPES and value not in EMAILENGINE_ONLY_EVENTS:
        raise ValueError(f"unknown event {value!r}; use '*' or one of {', '.join(EVENT_TYPES)}")
    return value


def check_headers(value: dict[str, str]) -> dict[str, str]:
    """Custom webhook headers: valid names, one-line values, nothing signing sets."""
    for name, header_value in value.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in _RESERVED:
            raise ValueError(f"{name!r} is set by the relay and cannot be overridden")
        if "\r" in header_value or "\n" in header_value or len(header_value) > 4096:
            raise ValueError(f"value of {name!r} must be one line of at most 4096 characters")
    return value


def _http_url(value: HttpUrl) -> HttpUrl:
    if value.scheme not in ("http", "https"):
        raise ValueError("must be an http or https URL")
    return value


EventName = Annotated[str, AfterValidator(_event_name)]
Headers = Annotated[dict[str, str], Field(max_length=32), AfterValidator(check_headers)]
TargetUrl = Annotated[HttpUrl, AfterValidator(_http_url)]
_TARGET_URL: TypeAdapter[HttpUrl] = TypeAdapter(TargetUrl)
Schedule = Annotated[
    list[Annotated[float, Field(ge=0, le=7 * 86400)]], Field(min_length=1, max_length=30)
]
RouteType = Literal["http", "amqp", "nats", "redis"]
Url = Annotated[
    str,
    Field(
        min_length=1,
        # Above what any URL that pydantic's HttpUrl accepts (the settings' webhooks URL) can
        # grow to once normalised (IDNA, percent-encoding); http URLs are checked as HttpUrl.
        max_length=8192,
        description=(
            "http: the receiver's http(s) URL. amqp: amqp://user:password@host:5672/vhost; "
            "nats: nats://[user:password@]host:4222; redis: redis://[user:password@]host:6379/0 "
            "(a password is stored encrypted and shown as ***)"
        ),
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=512)]


def check_target(kind: str, url: str, options: SinkOptions, headers: dict[str, str]) -> str:
    """The URL to store for a route of ``kind`` (an http URL normalised); InputError naming
    the field when the URL, the sink fields or the headers do not fit the kind."""
    if kind == HTTP:
        try:
            normalised = str(_TARGET_URL.validate_python(url))
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
            raise InputError(f"url: {problem}", field="url") from None
    else:
        try:
            parse_broker_url(kind, url)
        except ValueError as exc:
            raise InputError(f"url: {exc}", field="url") from None
        normalised = url
        if headers:
            raise InputError("headers: only http routes send custom headers", field="headers")
    try:
        check_options(kind, options)
    except ValueError as exc:
        name = str(exc).split(":", 1)[0]
        raise InputError(str(exc), field=name) from None
    return normalised


class SinkFields(Body):
    """A queue sink's target; each type takes its own (relay.webhooks.sink_targets)."""

    exchange: Name | None = Field(
        default=None, description="amqp: the exchange published to (it must exist)"
    )
    routingKeyPrefix: Name | None = Field(
        default=None,
        description="amqp: the routing key is prefix.eventName (without it: eventName)",
    )
    subject: Name | None = Field(default=None, description="nats: messages go to subject.eventName")
    stream: Name | None = Field(
        default=None,
        description=(
            "redis: the stream's key (required); nats: the JetStream stream expected to store "
            "the messages (optional)"
        ),
    )
    maxLen: int | None = Field(
        default=None,
        ge=1,
        le=10**12,
        description="redis: trim the stream to about this many entries (XADD MAXLEN ~)",
    )

    def sink_options(self) -> SinkOptions:
        return SinkOptions.from_json(
            {k: getattr(self, k) for k in ALL_OPTIONS if getattr(self, k) is not None}
        )


class RouteCreate(SinkFields):
    type: RouteType = Field(
        default="http", description="http (POST to url) or a queue sink: amqp, nats, redis"
    )
    url: Url
    events: Annotated[list[EventName], Field(min_length=1, max_length=64)] = Field(
        default_factory=lambda: ["*"]
    )
    accounts: Annotated[list[Identifier], Field(max_length=10000)] | None = None
    enabled: bool = True
    headers: Headers = Field(default_factory=dict)
    description: Text = ""
    retrySchedule: Schedule | None = None
    ordering: Literal["none", "fifo"] = "none"

    @model_validator(mode="after")
    def _target_fits_type(self) -> RouteCreate:
        self.url = check_target(self.type, self.url, self.sink_options(), self.headers)
        return self


class RouteUpdate(SinkFields):
    type: RouteType | None = None
    url: Url | None = None
    events: Annotated[list[EventName], Field(min_length=1, max_length=64)] | None = None
    accounts: Annotated[list[Identifier], Field(max_length=10000)] | None = None
    enabled: bool | None = None
    headers: Headers | None = None
    description: Text | None = None
    retrySchedule: Schedule | None = None
    ordering: Literal["none", "fifo"] | None = None
    rotateSecret: bool = False

    @model_validator(mode="after")
    def _no_null_for_required(self) -> RouteUpdate:
        for key in ("type", "url", "events", "enabled", "headers", "description", "ordering"):
            if key in self.model_fields_set and getattr(self, key) is None:
                raise InputError(f"{key}: must not be null", field=key)
        return self


class RouteOut(Out):
    id: str
    type: str
    url: str = Field(description="For a queue sink, the broker URL with its password as ***")
    exchange: str | None = None
    routingKeyPrefix: str | None = None
    subject: str | None = None
    stream: str | None = None
    maxLen: int | None = None
    description: str
    events: list[str]
    accounts: list[str] | None = None
    headers: dict[str, str] = Field(description="Header names; values are never shown")
    enabled: bool
    disabledReason: str | None = None
    ordering: str
    retrySchedule: list[float] | None = None
    secretRotating: bool
    failingSince: str | None = None
    created: str
    updated: str
    secret: str | None = Field(
        default=None, description="The whsec_ signing secret; only in the answer that made it"
    )


class RouteList(Out):
    total: int
    page: int
    pages: int
    webhooks: list[RouteOut]


class RouteDeleted(Out):
    id: str
    deleted: bool = True


class AttemptOut(Out):
    attempt: int
    started: str
    durationMs: int
    statusCode: int | None = None
    error: str | None = None
    responseBody: str | None = None


class DeliveryOut(Out):
    id: int
    eventId: str
    event: str
    account: str | None = None
    status: str
    attempts: int
    nextAttempt: str | None = None
    lastStatus: int | None = None
    lastError: str | None = None
    created: str
    delivered: str | None = None
    attemptLog: list[AttemptOut]


class DeliveryList(Out):
    total: int
    page: int
    pages: int
    deliveries: list[DeliveryOut]


class DeliveryQuery(Paging):
    status: Literal["pending", "inflight", "delivered", "failed"] | None = None


class Requeued(Out):
    id: int
    queued: bool = True


class RecoverBody(Body):
    since: datetime
    until: datetime | None = Field(
        default=None, description="Only deliveries created before this time (default: now)"
    )

    @model_validator(mode="after")
    def _until_after_since(self) -> RecoverBody:
        # Timestamps, not datetimes: one may carry a zone and the other not.
        if self.until is not None and self.until.timestamp() <= self.since.timestamp():
            raise InputError("until: must be later than since", field="until")
        return self


class Recovered(Out):
    requeued: int


class TestResult(Out):
    deliveryId: int
    eventId: str
    status: str
    statusCode: int | None = None
    error: str | None = None


def _route_out(row: Any, cipher: Cipher, secret: str | None = None) -> RouteOut:
    names = decrypt_headers(cipher, row["id"], row["headers"])
    return RouteOut(
        id=row["id"],
        type=row["kind"] or HTTP,
        url=row["url"],
        **SinkOptions.from_json(row["sink"]).to_json(),
        description=row["description"],
        events=list(row["events"]),
        accounts=list(row["accounts"]) if row["accounts"] is not None else None,
        headers={name: REDACTED for name in names},
        enabled=bool(row["enabled"]),
        disabledReason=row["disabled_reason"],
        ordering=row["ordering"],
        retrySchedule=row["retry_schedule"],
        secretRotating=(row["previous_until_ms"] or 0) > now_ms(),
        failingSince=iso_ms(row["failing_since_ms"]) if row["failing_since_ms"] else None,
        created=iso_ms(row["created_ms"]),
        updated=iso_ms(row["updated_ms"]),
        secret=secret,
    )


def _routes_changed(request: web.Request) -> None:
    worker = request.app.get(WORKER)
    if worker is not None:
        worker.routes_changed()


async def create_route_row(
    conn: Any, cipher: Cipher, route_id: str, body: RouteCreate
) -> tuple[Any, str]:
    """Insert a route; return its row and its new secret."""
    secret = new_route_secret()
    sink = body.type != HTTP
    await routes_store.insert(
        conn,
        {
            "id": route_id,
            "kind": body.type,
            "url": redacted(body.url) if sink else body.url,
            "url_secret": encrypt_sink_url(cipher, route_id, body.url) if sink else None,
            "sink": body.sink_options().to_json() or None,
            "description": body.description,
            "events": body.events,
            "accounts": body.accounts,
            "headers": encrypt_headers(cipher, route_id, body.headers),
            "enabled": int(body.enabled),
            "ordering": body.ordering,
            "retry_schedule": body.retrySchedule,
            "secret": cipher.encrypt(secret.encode(), context=secret_context(route_id)),
        },
    )
    row = await routes_store.get(conn, route_id)
    return row, secret


async def create_route(request: web.Request) -> web.Response:
    body = await read_body(request, RouteCreate)
    cipher = request.app[CIPHER]
    route_id = "wh_" + secrets.token_urlsafe(9)
    async with request.app[STORE].write() as conn:
        row, secret = await create_route_row(conn, cipher, route_id, body)
    _routes_changed(request)
    return json_response(_route_out(row, cipher, secret), status=201)


async def list_routes(request: web.Request) -> web.Response:
    paging = read_query(request, Paging)
    cipher = request.app[CIPHER]
    async with request.app[STORE].read() as conn:
        total, rows = await routes_store.page(conn, paging.page * paging.pageSize, paging.pageSize)
    pages = max(1, -(-total // paging.pageSize))
    return json_response(
        RouteList(
            total=total,
            page=paging.page,
            pages=pages,
            webhooks=[_route_out(r, cipher) for r in rows],
        )
    )


async def _route_or_404(conn: Any, route_id: str) -> Any:
    row = await routes_store.get(conn, route_id)
    if row is None:
        raise _no_route(route_id)
    return row


def _no_route(route_id: str) -> NotFound:
    return NotFound(f"Webhook route {route_id!r} not found", field="id")


async def get_route(request: web.Request) -> web.Response:
    async with request.app[STORE].read() as conn:
        row = await _route_or_404(conn, request.match_info["id"])
    return json_response(_route_out(row, request.app[CIPHER]))


async def update_route(request: web.Request) -> web.Response:
    route_id = request.match_info["id"]
    body = await read_body(request, RouteUpdate)
    cipher = request.app[CIPHER]
    changes = body.model_dump(mode="json", exclude_unset=True)
    values: dict[str, Any] = {}
    for key, column in (
        ("events", "events"),
        ("accounts", "accounts"),
        ("description", "description"),
        ("retrySchedule", "retry_schedule"),
        ("ordering", "ordering"),
    ):
        if key in changes:
            values[column] = changes[key]
    if "headers" in changes:
        values["headers"] = encrypt_headers(cipher, route_id, changes["headers"])
    if "enabled" in changes:
        values["enabled"] = int(changes["enabled"])
        if changes["enabled"]:
            values["disabled_reason"] = None
            values["failing_since_ms"] = None
    secret: str | None = None
    async with request.app[STORE].write() as conn:
        row = await _route_or_404(conn, route_id)
        if changes.keys() & {"type", "url", "headers", *ALL_OPTIONS}:
            values.update(_target_changes(row, changes, cipher))
        if body.rotateSecret:
            secret = new_route_secret()
            values["previous_secret"] = cipher.encrypt(
                cipher.decrypt(row["secret"], context=secret_context(route_id)),
                context=secret_context(route_id, "previous"),
            )
            values["previous_until_ms"] = now_ms() + ROTATION_OVERLAP_MS
            values["secret"] = cipher.encrypt(secret.encode(), context=secret_context(route_id))
        await routes_store.update(conn, route_id, values)
        row = await routes_store.get(conn, route_id)
    _routes_changed(request)
    return json_response(_route_out(row, cipher, secret))


def _target_changes(row: Any, changes: dict[str, Any], cipher: Cipher) -> dict[str, Any]:
    """The columns of a route whose type, URL, sink fields or headers change, checked as a
    whole: what is given replaces, ``null`` removes a sink field, the rest stays. A new type
    takes a new URL, and none of the old type's sink fields."""
    route_id = row["id"]
    old_kind = row["kind"] or HTTP
    kind = changes.get("type") or old_kind
    if "url" in changes:
        url = changes["url"]
    elif kind != old_kind:
        raise InputError(f"url: a route of type {kind} needs its URL", field="url")
    elif old_kind != HTTP:
        url = decrypt_sink_url(cipher, route_id, row["url_secret"])
    else:
        url = row["url"]
    stored: dict[str, Any] = {}
    if kind == old_kind:
        stored.update(SinkOptions.from_json(row["sink"]).to_json())
    given: dict[str, Any] = {k: changes[k] for k in ALL_OPTIONS if k in changes}
    merged = {k: v for k, v in {**stored, **given}.items() if v is not None}
    if "headers" in changes:
        headers = changes["headers"]
    else:
        headers = decrypt_headers(cipher, route_id, row["headers"])
    options = SinkOptions.from_json(merged)
    url = check_target(kind, url, options, headers)
    sink = kind != HTTP
    return {
        "kind": kind,
        "url": redacted(url) if sink else url,
        "url_secret": encrypt_sink_url(cipher, route_id, url) if sink else None,
        "sink": options.to_json() or None,
    }


async def delete_route(request: web.Request) -> web.Response:
    route_id = request.match_info["id"]
    async with request.app[STORE].write() as conn:
        await _route_or_404(conn, route_id)
        await routes_store.delete(conn, route_id)
    _routes_changed(request)
    return json_response(RouteDeleted(id=route_id))


def _delivery_out(row: Any, attempts: list[Any]) -> DeliveryOut:
    pending = row["status"] == DeliveryStatus.PENDING
    return DeliveryOut(
        id=int(row["seq"]),
        eventId=row["event_id"],
        event=row["event"],
        account=row["account"],
        status=row["status"],
        attempts=int(row["attempts"]),
        nextAttempt=iso_ms(row["next_attempt_ms"]) if pending else None,
        lastStatus=row["last_status"],
        lastError=row["last_error"],
        created=iso_ms(row["created_ms"]),
        delivered=iso_ms(row["delivered_ms"]) if row["delivered_ms"] else None,
        attemptLog=[
            AttemptOut(
                attempt=a["attempt"],
                started=iso_ms(a["started_ms"]),
                durationMs=a["duration_ms"],
                statusCode=a["status_code"],
                error=a["error"],
                responseBody=a["response_body"],
            )
            for a in attempts
        ],
    )


async def list_deliveries(request: web.Request) -> web.Response:
    route_id = request.match_info["id"]
    query = read_query(request, DeliveryQuery)
    async with request.app[STORE].read() as conn:
        await _route_or_404(conn, route_id)
        total, rows, attempts = await queue.page(
            conn,
            route_id,
            status=query.status,
            offset=query.page * query.pageSize,
            limit=query.pageSize,
        )
    pages = max(1, -(-total // query.pageSize))
    return json_response(
        DeliveryList(
            total=total,
            page=query.page,
            pages=pages,
            deliveries=[_delivery_out(r, attempts[int(r["seq"])]) for r in rows],
        )
    )


def _delivery_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"Delivery {raw!r} not found", field="id")
    return int(raw)


async def retry_delivery(request: web.Request) -> web.Response:
    seq = _delivery_id(request)
    async with request.app[STORE].write() as conn:
        row = await queue.get(conn, seq)
        if row is None:
            raise NotFound(f"Delivery {seq} not found", field="id")
        if not await queue.requeue(conn, seq, now=now_ms()):
            raise Conflict(f"Delivery {seq} is being attempted right now", field="id")
    return json_response(Requeued(id=seq))


async def recover_route(request: web.Request) -> web.Response:
    route_id = request.match_info["id"]
    body = await read_body(request, RecoverBody)
    since_ms = int(body.since.timestamp() * 1000)
    until_ms = int(body.until.timestamp() * 1000) if body.until is not None else None
    async with request.app[STORE].write() as conn:
        await _route_or_404(conn, route_id)
        count = await queue.recover(
            conn, route_id, since_ms=since_ms, until_ms=until_ms, now=now_ms()
        )
    return json_response(Recovered(requeued=count))


async def test_route(request: web.Request) -> web.Response:
    route_id = request.match_info["id"]
    settings = request.app[SETTINGS]
    worker = request.app.get(WORKER)
    event = Event(
        "test",
        None,
        {"message": "Test delivery from mailrelay", "route": route_id},
        now_ms(),
    )
    # Registered before the write, so the outcome cannot be recorded before the waiter.
    waiting = (
        worker.outcome_waiters.waiting((event.id, route_id))
        if worker is not None
        else contextlib.nullcontext()
    )
    # This node attempts the delivery itself when it has a slot free: queued already taken
    # by this node, no claim of its own and no wait for the claim loop.
    slot = worker.slot(route_id) if worker is not None else contextlib.nullcontext()
    with waiting as recorded, slot as held:
        async with request.app[STORE].write(notify=False) as conn:
            enabled = await routes_store.enabled(conn, route_id)
            if enabled is None:
                raise _no_route(route_id)
            if not enabled:
                raise Conflict(
                    f"Webhook route {route_id!r} is disabled; enable it first", field="id"
                )
            payload = await events_store.record_alone(
                conn, event, default_service_url=settings.service_url
            )
            claimed = await queue.add_one(
                conn,
                route_id=route_id,
                event_id=event.id,
                now=now_ms() if held is None else held.now_ms,
                taken=None if held is None else (held.node, held.lease_until_ms),
            )
            if held is None:
                wakes.wake_on_commit(conn, Wake.DELIVERIES)
        if worker is not None and held is not None:
            worker.hand_over(held, claimed, Stored(event.event, event.account, payload))
        # This node's worker wakes us with the outcome once it is committed. A delivery
        # another node attempts (or any, on a node without a worker) never does: the
        # timeout, then one read, covers it.
        wait = settings.webhooks.timeout + 2
        done: Outcome | None = None
        if recorded is None:
            await asyncio.sleep(wait)
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    done = await recorded
    if done is not None:
        return json_response(
            TestResult(
                deliveryId=done.seq,
                eventId=event.id,
                status=done.result,
                statusCode=done.status_code,
                error=done.error,
            )
        )
    async with request.app[STORE].read() as conn:
        outcome = await queue.latest_outcome(conn, route_id, event.id)
    if outcome is None:  # the route was deleted meanwhile, and its deliveries with it
        raise _no_route(route_id)
    attempted = outcome["attempt_seq"] is not None
    return json_response(
        TestResult(
            deliveryId=int(outcome["seq"]),
            eventId=event.id,
            status=outcome["status"],
            statusCode=outcome["status_code"],
            error=outcome["error"] if attempted else "no attempt finished in time",
        )
    )


_NOT_FOUND = {404: "Unknown webhook route"}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/webhooks",
        create_route,
        "Add a webhook route (its secret is returned once)",
        TAG,
        body=RouteCreate,
        response=RouteOut,
        status=201,
        permission=Permission("webhook", "write"),
    ),
    Endpoint(
        "GET",
        "/v1/webhooks",
        list_routes,
        "List webhook routes",
        TAG,
        query=Paging,
        response=RouteList,
        permission=Permission("webhook", "read"),
    ),
    Endpoint(
        "GET",
        "/v1/webhooks/{id}",
        get_route,
        "Read a webhook route",
        TAG,
        response=RouteOut,
        errors=_NOT_FOUND,
        permission=Permission("webhook", "read"),
    ),
    Endpoint(
        "PUT",
        "/v1/webhooks/{id}",
        update_route,
        "Update a route; rotateSecret issues a new secret",
        TAG,
        body=RouteUpdate,
        response=RouteOut,
        errors=_NOT_FOUND,
        permission=Permission("webhook", "write"),
    ),
    Endpoint(
        "DELETE",
        "/v1/webhooks/{id}",
        delete_route,
        "Delete a route and its queued deliveries",
        TAG,
        response=RouteDeleted,
        errors=_NOT_FOUND,
        permission=Permission("webhook", "destructive"),
    ),
    Endpoint(
        "POST",
        "/v1/webhooks/{id}/test",
        test_route,
        "Deliver a test event now and report the attempt",
        TAG,
        response=TestResult,
        errors={**_NOT_FOUND, 409: "The route is disabled"},
        permission=Permission("webhook", "write"),
    ),
    Endpoint(
        "GET",
        "/v1/webhooks/{id}/deliveries",
        list_deliveries,
        "The route's deliveries with every attempt",
        TAG,
        query=DeliveryQuery,
        response=DeliveryList,
        errors=_NOT_FOUND,
        permission=Permission("webhook", "read"),
    ),
    Endpoint(
        "POST",
        "/v1/webhooks/{id}/recover",
        recover_route,
        "Queue failed deliveries created since a time (and before another) again",
        TAG,
        body=RecoverBody,
        response=Recovered,
        errors=_NOT_FOUND,
        permission=Permission("webhook", "write"),
    ),
    Endpoint(
        "POST",
        "/v1/deliveries/{id}/retry",
        retry_delivery,
        "Queue one delivery again now",
        TAG,
        response=Requeued,
        errors={404: "Unknown delivery", 409: "The delivery is being attempted"},
        permission=Permission("webhook", "write"),
    ),
]
