"""Webhook routes as the worker uses them: decrypted secrets, schedule, headers."""

from __future__ import annotations

import base64
import secrets as random_secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from relay.auth.crypto import Cipher
from relay.store import settings as settings_store
from relay.webhooks.retry import DEFAULT_SCHEDULE
from relay.webhooks.sink_targets import HTTP, SinkOptions

SERVICE_SECRET_KEY = "serviceSecret"  # noqa: S105 - a settings key, not a secret


def secret_context(route_id: str, which: str = "secret") -> str:
    return f"webhook_routes/{route_id}/{which}"


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    url: str  # for a sink: the broker URL with its credentials
    headers: dict[str, str]
    secrets: tuple[str, ...]  # current first; the previous one while rotation overlaps
    schedule: tuple[float, ...]
    ordering: str
    enabled: bool
    kind: str = HTTP  # "http", or the sink's: "amqp" | "nats" | "redis"
    sink: SinkOptions = field(default_factory=SinkOptions)


def encrypt_sink_url(cipher: Cipher, route_id: str, url: str) -> bytes:
    """A broker URL (it may carry a password), encrypted for ``url_secret``."""
    return cipher.encrypt(url.encode(), context=secret_context(route_id, "url"))


def decrypt_sink_url(cipher: Cipher, route_id: str, blob: bytes) -> str:
    return cipher.decrypt(blob, context=secret_context(route_id, "url")).decode()


def encrypt_headers(cipher: Cipher, route_id: str, headers: dict[str, str]) -> dict[str, str]:
    """Custom header values may be credentials for the receiver: store them encrypted."""
    if not headers:
        return {}
    blob = cipher.encrypt_json(headers, context=secret_context(route_id, "headers"))
    return {"encrypted": base64.b64encode(blob).decode()}


def decrypt_headers(cipher: Cipher, route_id: str, stored: dict[str, str]) -> dict[str, str]:
    if not stored:
        return {}
    blob = base64.b64decode(stored["encrypted"])
    return dict(cipher.decrypt_json(blob, context=secret_context(route_id, "headers")))


def route_from_row(row: Any, cipher: Cipher, now_ms: int) -> Route:
    """Decrypt a stored route for signing."""
    current = cipher.decrypt(row["secret"], context=secret_context(row["id"])).decode()
    keys = [current]
    if row["previous_secret"] is not None and (row["previous_until_ms"] or 0) > now_ms:
        keys.append(
            cipher.decrypt(
                row["previous_secret"], context=secret_context(row["id"], "previous")
            ).decode()
        )
    schedule = row["retry_schedule"]
    kind = row["kind"] or HTTP
    url = row["url"]
    if kind != HTTP and row["url_secret"] is not None:
        url = decrypt_sink_url(cipher, row["id"], row["url_secret"])
    return Route(
        id=row["id"],
        url=url,
        headers=decrypt_headers(cipher, row["id"], row["headers"]),
        secrets=tuple(keys),
        schedule=tuple(float(s) for s in schedule) if schedule else DEFAULT_SCHEDULE,
        ordering=row["ordering"],
        enabled=bool(row["enabled"]),
        kind=kind,
        sink=SinkOptions.from_json(row["sink"]),
    )


async def service_secret(conn: AsyncConnection, cipher: Cipher, *, create: bool) -> str | None:
    """The secret behind ``X-EE-Wh-Signature``; made (random) on first use when ``create``."""
    stored = await settings_store.get(conn, SERVICE_SECRET_KEY)
    if stored:
        blob = base64.b64decode(stored["encrypted"])
        return cipher.decrypt(blob, context="settings/serviceSecret").decode()
    if not create:
        return None
    blob = cipher.encrypt(
        random_secrets.token_urlsafe(32).encode(), context="settings/serviceSecret"
    )
    stored = await settings_store.put_new(
        conn, SERVICE_SECRET_KEY, {"encrypted": base64.b64encode(blob).decode()}
    )
    blob = base64.b64decode(stored["encrypted"])
    return cipher.decrypt(blob, context="settings/serviceSecret").decode()


async def store_service_secret(conn: AsyncConnection, cipher: Cipher, value: str) -> None:
    blob = cipher.encrypt(value.encode(), context="settings/serviceSecret")
    await settings_store.put(
        conn, SERVICE_SECRET_KEY, {"encrypted": base64.b64encode(blob).decode()}
    )
