"""Signatures and headers of a webhook attempt (pure: no I/O, no clock).

Two independent signatures go on every attempt:

- Standard Webhooks v1 (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``): base64
  HMAC-SHA256 of ``"{id}.{timestamp}.{body}"`` keyed with the route's ``whsec_`` secret. While a
  secret is rotated, the old and the new secret both sign, space-separated.
- EmailEngine compatible ``X-EE-Wh-Signature``: base64url (unpadded) HMAC-SHA256 of the raw
  body keyed with the service secret, as EmailEngine computes it
  (``crypto.createHmac('sha256', serviceSecret).update(body).digest('base64url')``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Mapping, Sequence
from functools import lru_cache

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)

# Headers a route's custom headers may not replace: the signed ones, and those that frame the
# request (a custom Content-Length or Host would corrupt or redirect the POST).
PROTECTED_HEADERS = frozenset(
    {
        "content-type",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-ee-wh-signature",
        "x-ee-wh-event-id",
        "x-ee-wh-attempts-made",
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
    }
)


def new_route_secret() -> str:
    """A fresh route secret: ``whsec_`` followed by 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@lru_cache(maxsize=1024)
def _route_key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        # Standard Webhooks libraries accept unpadded secrets; b64decode ignores extra padding.
        key = base64.b64decode(encoded + "==", validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret must be whsec_ followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks v1 signature (``v1,<base64>``) of one attempt."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    # hmac.digest with a name is OpenSSL's one-shot HMAC: several times cheaper than
    # hmac.new(..., hashlib.sha256), which a queue sink's thousands of messages a second feel.
    digest = hmac.digest(_route_key(secret), signed, "sha256")
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,`` signature per secret, space-separated."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign a webhook")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def ee_signature(service_secret: str, body: bytes) -> str:
    """EmailEngine's ``X-EE-Wh-Signature``: unpadded base64url HMAC-SHA256 of the raw body."""
    digest = hmac.digest(service_secret.encode(), body, "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _valid_header(name: str, value: str) -> bool:
    # aiohttp refuses CR/LF in headers at send time; dropping them here keeps one bad custom
    # header from failing every attempt of the route.
    forbidden = ("\r", "\n", "\0")
    if not name or any(c in name for c in (*forbidden, ":", " ", "\t")):
        return False
    return not any(c in value for c in forbidden)


def delivery_headers(
    *,
    msg_id: str,
    timestamp: int,
    body: bytes,
    route_secrets: Sequence[str],
    service_secret: str,
    attempt: int,
    user_agent: str,
    custom: Mapping[str, str],
) -> dict[str, str]:
    """Every header of one attempt (``attempt`` is 1-based).

    ``custom`` (the route's own headers) may replace ``User-Agent`` but never a header in
    :data:`PROTECTED_HEADERS` (compared case-insensitively): those are ignored, and so are
    custom headers with line breaks or NUL in them.
    """
    headers: dict[str, str] = {"User-Agent": user_agent}
    for name, value in custom.items():
        lowered = name.lower()
        if lowered in PROTECTED_HEADERS or not _valid_header(name, value):
            continue
        for existing in [k for k in headers if k.lower() == lowered]:
            del headers[existing]
        headers[name] = value
    headers.update(
        {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(route_secrets, msg_id, timestamp, body),
            "X-EE-Wh-Signature": ee_signature(service_secret, body),
            "X-EE-Wh-Event-Id": msg_id,
            "X-EE-Wh-Attempts-Made": str(attempt),
        }
    )
    return headers


def sink_headers(
    *, msg_id: str, timestamp: int, body: bytes, route_secrets: Sequence[str]
) -> dict[str, str]:
    """The Standard Webhooks headers of a queue sink's message (AMQP headers, NATS headers,
    Redis stream fields): the same signature over the same body as an HTTP attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(route_secrets, msg_id, timestamp, body),
    }
