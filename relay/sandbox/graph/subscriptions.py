"""Change subscriptions on messages: the resource, the rules, the JSON (pure).

Rules enforced on ``POST /subscriptions`` and ``PATCH /subscriptions/{id}``:

- ``changeType``: a comma-separated subset of ``created``, ``updated``, ``deleted``.
- ``notificationUrl`` and ``lifecycleNotificationUrl``: absolute https URLs (http to a
  loopback address when the sandbox allows it, for tests).
- ``expirationDateTime``: in the future and at most 10,070 minutes ahead (Microsoft's
  documentation says 10,080 for messages; the service rejects more than 10,070).
- ``clientState``: at most 128 characters.
- ``resource``: ``me/messages``, ``me/mailFolders('{id}')/messages``,
  ``users/{id|upn}/messages``, ``users/{id|upn}/mailFolders/{id}/messages`` (every
  ``mailFolders('x')`` and ``mailFolders/x`` spelling, ids or well-known names). Query
  options (``$filter``) are not supported by the sandbox.
- At most 1,000 active subscriptions per mailbox.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from relay.sandbox.graph.errors import GraphError, bad_request
from relay.sandbox.graph.mail import CHANGE_TYPES
from relay.sandbox.graph.odata import format_precise, split_path

MAX_MINUTES = 10070
MAX_CLIENT_STATE = 128
MAX_PER_MAILBOX = 1000


@dataclass(frozen=True)
class Target:
    """What a ``resource`` names: a user (None for ``me``) and maybe one folder."""

    user: str | None
    folder: str | None


@dataclass
class Subscription:
    """An active subscription; ``folder_id`` None watches the whole mailbox.

    ``immutable_ids`` is fixed at creation (``Prefer: IdType="ImmutableId"``): its change
    notifications name messages by immutable id.
    """

    id: str
    resource: str
    change_types: tuple[str, ...]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires_at: float
    mailbox: str
    owner_id: str
    folder_id: str | None
    client_id: str
    creator_id: str
    user: str | None
    tenant_id: str
    needs_reauthorization: bool = False
    immutable_ids: bool = False

    def watches(self, mailbox: str, folder_id: str, change_type: str) -> bool:
        """Whether a change of a message in ``folder_id`` of ``mailbox`` is reported."""
        return (
            self.mailbox == mailbox
            and change_type in self.change_types
            and (self.folder_id is None or self.folder_id == folder_id)
        )

    def to_json(self) -> dict[str, Any]:
        """The subscription resource as Graph returns it."""
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.client_id,
            "changeType": ",".join(self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": format_precise(self.expires_at),
            "creatorId": self.creator_id,
            "includeResourceData": None,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


def parse_change_types(raw: Any) -> tuple[str, ...]:
    """``created,updated`` -> ``("created", "updated")``; 400 for anything else."""
    if not isinstance(raw, str) or not raw.strip():
        raise bad_request("changeType is required.", "InvalidRequest")
    names = [part.strip().lower() for part in raw.split(",")]
    for name in names:
        if name not in CHANGE_TYPES:
            raise bad_request(
                f"'{name}' is not a valid change type; use {', '.join(CHANGE_TYPES)}.",
                "InvalidRequest",
            )
    return tuple(name for name in CHANGE_TYPES if name in names)


def parse_resource(raw: Any) -> Target:
    """The user and folder a subscription ``resource`` names; 400 otherwise."""
    if not isinstance(raw, str) or not raw.strip():
        raise bad_request("resource is required.", "InvalidRequest")
    unsupported = bad_request(
        f"Resource '{raw}' is not supported; the sandbox knows me/messages, "
        "me/mailFolders('{id}')/messages, users/{id}/messages and "
        "users/{id}/mailFolders/{id}/messages.",
        "InvalidRequest",
    )
    if "?" in raw:
        raise unsupported
    segments = split_path(raw)
    if not segments:
        raise unsupported
    head, rest = segments[0], segments[1:]
    if head.name == "me" and head.key is None and not head.call:
        user = None
    elif head.name == "users" and head.key is not None:
        user = head.key
    elif head.name == "users" and not head.call and rest:
        user, rest = rest[0].raw, rest[1:]
    else:
        raise unsupported
    names = [segment.name for segment in rest]
    keys = [segment.key for segment in rest]
    if names == ["messages"] and keys == [None] and not rest[0].call:
        return Target(user, None)
    if names == ["mailfolders", "messages"] and rest[0].key and keys[1] is None:
        return Target(user, rest[0].key)
    if len(rest) == 3 and names[0] == "mailfolders" and names[2] == "messages" and not any(keys):
        return Target(user, rest[1].raw)
    raise unsupported


def check_expiration(expires_at: float, now: float) -> None:
    """Raise 400 unless ``expires_at`` is in the future and at most 10,070 minutes ahead."""
    if expires_at <= now:
        raise GraphError(
            400, "ExtensionError", "Subscription expiration can only be in the future."
        )
    if expires_at - now > MAX_MINUTES * 60:
        raise GraphError(
            400,
            "ExtensionError",
            f"Subscription expiration can only be {MAX_MINUTES} minutes in the future.",
        )


def check_client_state(raw: Any) -> str | None:
    """``clientState``: absent, or a string of at most 128 characters."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise bad_request("clientState must be a string.", "InvalidRequest")
    if len(raw) > MAX_CLIENT_STATE:
        raise bad_request(
            f"clientState must be at most {MAX_CLIENT_STATE} characters long.", "InvalidRequest"
        )
    return raw


def check_notification_url(raw: Any, name: str, *, allow_http: bool) -> str:
    """An absolute https URL (or http to a loopback address when ``allow_http``)."""
    if not isinstance(raw, str) or not raw.strip():
        raise bad_request(f"{name} is required.", "InvalidRequest")
    parts = urlsplit(raw)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return raw
    if parts.scheme == "http" and host and allow_http and _is_loopback(host):
        return raw
    raise bad_request(
        f"The {name} must be an https URL"
        + (" (http is allowed for loopback addresses only)." if allow_http else "."),
        "ValidationError",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
