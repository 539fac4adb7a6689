"""``/v1/settings``: EmailEngine-style global settings.

``webhooks`` (URL), ``webhookEvents`` and ``webhooksEnabled`` drive the route with id
``default``; ``serviceSecret`` keys ``X-EE-Wh-Signature``; ``serviceUrl`` is the envelope's
``serviceUrl``. The service secret is write-only: reads say only whether it is set.
The ``notify*`` keys choose the message content added to ``messageNew`` webhooks
(``relay.mailbox.notify``); ``null`` unsets one.
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import AfterValidator, Field

from relay.api.endpoint import Endpoint, json_response, read_body
from relay.api.keys import CIPHER, ENRICHER, SETTINGS, STORE, WORKER
from relay.api.models import Body, Out
from relay.api.webhooks import (
    REDACTED,
    EventName,
    RouteCreate,
    TargetUrl,
    check_headers,
    create_route_row,
)
from relay.auth.grants import Permission
from relay.errors import InputError
from relay.mailbox.notify import KEYS as NOTIFY_KEYS
from relay.store import settings as settings_store
from relay.store import webhook_routes as routes_store
from relay.store.events import service_url
from relay.webhooks.routes import (
    decrypt_headers,
    encrypt_headers,
    service_secret,
    store_service_secret,
)

TAG = "Settings"
DEFAULT_ROUTE = "default"


HeaderName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^(\*|[!-9;-~]+)$")]
Size = Annotated[int, Field(ge=0, le=1024**3)]


class CustomHeader(Body):
    key: Annotated[str, Field(min_length=1, max_length=256)]
    value: Annotated[str, Field(max_length=4096)]


def _header_map(value: list[CustomHeader] | None) -> list[CustomHeader] | None:
    if value is not None:
        # The same rules as a route's headers (no line breaks, nothing signing sets).
        check_headers({h.key: h.value for h in value})
    return value


class SettingsIn(Body):
    webhooks: TargetUrl | None = None
    # EmailEngine's list of headers added to every webhook (of the default route); the
    # values are stored encrypted and never shown again.
    webhooksCustomHeaders: (
        Annotated[list[CustomHeader], Field(max_length=32), AfterValidator(_header_map)] | None
    ) = None
    webhookEvents: Annotated[list[EventName], Field(min_length=1, max_length=64)] | None = None
    webhooksEnabled: bool | None = None
    serviceSecret: Annotated[str, Field(min_length=8, max_length=1024)] | None = None
    serviceUrl: TargetUrl | None = None
    notifyText: bool | None = None
    notifyTextSize: Size | None = None
    notifyWebSafeHtml: bool | None = None
    notifyHeaders: Annotated[list[HeaderName], Field(max_length=100)] | None = None
    notifyAttachments: bool | None = None
    notifyAttachmentSize: Size | None = None


class SettingsUpdated(Out):
    updated: list[str]
    webhooksSecret: str | None = Field(
        default=None, description="The default route's whsec_ secret, when this call made it"
    )


class SettingsOut(Out):
    """Every setting; with query keys (``?webhooks=true``), only those, as in EmailEngine."""

    webhooks: str | None = None
    # Header names; values are never shown.
    webhooksCustomHeaders: list[dict[str, str]] | None = None
    webhookEvents: list[str] | None = None
    webhooksEnabled: bool | None = None
    serviceUrl: str | None = None
    # Whether a service secret is set (EmailEngine's name, and ours).
    serviceSecret: bool | None = None
    serviceSecretSet: bool | None = None
    # The notify* settings appear once set.
    notifyText: bool | None = None
    notifyTextSize: int | None = None
    notifyWebSafeHtml: bool | None = None
    notifyHeaders: list[str] | None = None
    notifyAttachments: bool | None = None
    notifyAttachmentSize: int | None = None


async def update_settings(request: web.Request) -> web.Response:
    body = await read_body(request, SettingsIn)
    given = body.model_fields_set
    cipher = request.app[CIPHER]
    new_secret: str | None = None
    async with request.app[STORE].write() as conn:
        if "serviceUrl" in given:
            if body.serviceUrl is None:
                await settings_store.delete(conn, "serviceUrl")
            else:
                await settings_store.put(conn, "serviceUrl", str(body.serviceUrl).rstrip("/"))
        if body.serviceSecret is not None:
            await store_service_secret(conn, cipher, body.serviceSecret)
        for key in NOTIFY_KEYS:
            if key in given:
                value = getattr(body, key)
                if value is None:
                    await settings_store.delete(conn, key)
                else:
                    await settings_store.put(conn, key, value)
        headers = {h.key: h.value for h in body.webhooksCustomHeaders or ()}
        route_keys = {"webhooks", "webhookEvents", "webhooksEnabled", "webhooksCustomHeaders"}
        if route_keys & given:
            row = await routes_store.get(conn, DEFAULT_ROUTE)
            if row is None and body.webhooks is None and body.webhooksCustomHeaders:
                raise InputError(
                    "webhooksCustomHeaders: set webhooks (the URL) first or in the same call",
                    field="webhooksCustomHeaders",
                )
            if row is None and body.webhooks is not None:
                _, new_secret = await create_route_row(
                    conn,
                    cipher,
                    DEFAULT_ROUTE,
                    RouteCreate(
                        url=str(body.webhooks),
                        events=body.webhookEvents or ["*"],
                        enabled=body.webhooksEnabled if body.webhooksEnabled is not None else True,
                        headers=headers,
                        description="EmailEngine-style global webhook (POST /v1/settings)",
                    ),
                )
            elif row is not None:
                values: dict[str, object] = {}
                if "webhooks" in given:
                    if body.webhooks is None:
                        values["enabled"] = 0  # no URL: stop delivering, keep the queue
                    else:
                        # The EmailEngine setting is an HTTP URL, whatever the route was.
                        values.update(kind="http", url=str(body.webhooks), url_secret=None)
                        values["sink"] = None
                if body.webhookEvents is not None:
                    values["events"] = body.webhookEvents
                if body.webhooksEnabled is not None:
                    values["enabled"] = int(body.webhooksEnabled)
                    if body.webhooksEnabled:
                        values["disabled_reason"] = None
                        values["failing_since_ms"] = None
                if "webhooksCustomHeaders" in given:
                    values["headers"] = encrypt_headers(cipher, DEFAULT_ROUTE, headers)
                await routes_store.update(conn, DEFAULT_ROUTE, values)
    worker = request.app.get(WORKER)
    if worker is not None:
        worker.routes_changed()
    enricher = request.app.get(ENRICHER)
    if enricher is not None:
        enricher.forget()
    return json_response(SettingsUpdated(updated=sorted(given), webhooksSecret=new_secret))


async def read_settings(request: web.Request) -> web.Response:
    cipher = request.app[CIPHER]
    async with request.app[STORE].read() as conn:
        row = await routes_store.get(conn, DEFAULT_ROUTE)
        url = await service_url(conn, request.app[SETTINGS].service_url)
        secret = await service_secret(conn, cipher, create=False)
        notify = {key: await settings_store.get(conn, key) for key in NOTIFY_KEYS}
    names = decrypt_headers(cipher, DEFAULT_ROUTE, row["headers"]) if row else {}
    values: dict[str, Any] = {
        "webhooks": row["url"] if row else None,
        "webhooksCustomHeaders": [{"key": name, "value": REDACTED} for name in names] or None,
        "webhookEvents": list(row["events"]) if row else ["*"],
        "webhooksEnabled": bool(row["enabled"]) if row else False,
        "serviceUrl": url,
        "serviceSecret": secret is not None,
        "serviceSecretSet": secret is not None,
        **notify,
    }
    asked = [key for key, value in request.query.items() if key in values and _truthy(value)]
    if asked:
        # EmailEngine answers the keys asked for, null when unset.
        return json_response({key: values[key] for key in asked})
    return json_response(SettingsOut(**{k: v for k, v in values.items() if v is not None}))


def _truthy(value: str) -> bool:
    return value.lower() in ("true", "1", "y", "yes", "on")


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/settings",
        update_settings,
        "Set global settings",
        TAG,
        body=SettingsIn,
        response=SettingsUpdated,
        permission=Permission("settings", "write"),
    ),
    Endpoint(
        "GET",
        "/v1/settings",
        read_settings,
        "Read global settings (never the service secret)",
        TAG,
        response=SettingsOut,
        permission=Permission("settings", "read"),
    ),
]
