"""EmailEngine's documented webhook payloads and API answers, written down by us as data,
and :func:`problems`, which checks a value against one.

A shape is a dict from field name to type; a name ending in ``?`` is optional. Types:

- ``str``, ``int``, ``bool``: a JSON string, integer (not a boolean) or boolean;
- ``ISO``: a string holding an ISO 8601 date (``2024-05-01T10:00:00.000Z``);
- ``[T]``: a list whose items are all ``T``;
- ``{...}``: a nested shape (an object checked the same way);
- ``MapOf(T)``: an object whose values are all ``T`` (``headers``);
- ``OneOf(A, B, ...)``: any of them; a value that is not a type (``False``) matches itself;
- ``ANY``: any value.

Every required field must be there with its type, every optional field that is there must
have its type, nested shapes likewise; fields the shape does not name are allowed (the
relay's additions).

Facts are from EmailEngine's documentation (its API reference and webhook pages) and its
published payload examples; the shapes are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

Spec = Any


class _Any:
    def __repr__(self) -> str:
        return "ANY"


class _Iso:
    def __repr__(self) -> str:
        return "ISO"


ANY = _Any()
ISO = _Iso()


@dataclass(frozen=True)
class MapOf:
    """An object with any keys whose values are all ``value``."""

    value: Spec


class OneOf:
    """Any of ``options``; an option that is not a type matches an equal value of its type."""

    def __init__(self, *options: Spec) -> None:
        self.options = options

    def __repr__(self) -> str:
        return " | ".join(_name(o) for o in self.options)


def _name(spec: Spec) -> str:
    if isinstance(spec, type):
        return spec.__name__
    if isinstance(spec, list):
        return f"list of {_name(spec[0])}"
    if isinstance(spec, dict):
        return "object"
    if isinstance(spec, MapOf):
        return f"object of {_name(spec.value)}"
    return repr(spec)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def problems(spec: Spec, value: Any, where: str = "") -> list[str]:
    """Every way ``value`` differs from ``spec``, each naming the field's dotted path."""
    at = where or "(top)"
    if spec is ANY:
        return []
    if isinstance(spec, OneOf):
        for option in spec.options:
            if not problems(option, value, where):
                return []
        return [f"{at}: expected {spec!r}, got {_kind(value)} {value!r:.60}"]
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{at}: expected an object, got {_kind(value)}"]
        found: list[str] = []
        for key, sub in spec.items():
            name, optional = key.removesuffix("?"), key.endswith("?")
            path = f"{where}.{name}" if where else name
            if name not in value:
                if not optional:
                    found.append(f"{path}: missing")
                continue
            found += problems(sub, value[name], path)
        return found
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{at}: expected a list, got {_kind(value)}"]
        return [p for n, item in enumerate(value) for p in problems(spec[0], item, f"{at}[{n}]")]
    if isinstance(spec, MapOf):
        if not isinstance(value, dict):
            return [f"{at}: expected an object, got {_kind(value)}"]
        return [p for k, v in value.items() for p in problems(spec.value, v, f"{at}.{k}")]
    if spec is ISO:
        if isinstance(value, str):
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                pass
            else:
                return []
        return [f"{at}: expected an ISO 8601 date, got {_kind(value)} {value!r:.60}"]
    if spec is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(spec, type):
        ok = isinstance(value, spec)
    else:
        ok = type(value) is type(spec) and value == spec
    return [] if ok else [f"{at}: expected {_name(spec)}, got {_kind(value)} {value!r:.60}"]


def assert_shape(spec: Spec, value: Any) -> None:
    """Fail with every difference at once."""
    found = problems(spec, value)
    assert not found, "\n".join(["payload differs from EmailEngine's shape:", *found])


# -- webhook payloads ------------------------------------------------------------------------

ADDRESS = {"name": str, "address": str}

ATTACHMENT = {
    "id": str,
    "contentType": str,
    "encodedSize": int,
    "filename?": str,
    "embedded": bool,
    "inline": bool,
    "contentId?": str,
}

ENVELOPE = {"from": str, "to": [str]}


def webhook(event: str, data: Spec) -> dict[str, Spec]:
    """The envelope every webhook has, around ``data``."""
    return {
        "serviceUrl": str,
        "account": str,
        "date": ISO,
        "path?": str,
        "specialUse?": str,
        "event": OneOf(event),
        "data": data,
    }


EVENTS: dict[str, Spec] = {
    "messageNew": {
        "id": str,
        "uid": int,
        # ``path`` and ``seemsLikeNew``: EmailEngine always sends them.
        "path": str,
        "emailId?": str,
        "threadId?": str,
        "date": ISO,
        "flags": [str],
        "unseen": bool,
        "size": int,
        "subject": str,
        "from": ADDRESS,
        "replyTo?": [ADDRESS],
        "sender?": ADDRESS,
        "to": [ADDRESS],
        "cc?": [ADDRESS],
        "bcc?": [ADDRESS],
        "attachments": [ATTACHMENT],
        "messageId": str,
        "inReplyTo?": str,
        "headers?": MapOf([str]),
        "text": {
            "id": str,
            "encodedSize": {"plain?": int, "html?": int},
            "plain?": str,
            "html?": str,
            "hasMore?": bool,
        },
        "seemsLikeNew": bool,
        "messageSpecialUse?": str,
        "isAutoReply?": bool,
        "flagged?": bool,
        "answered?": bool,
        "draft?": bool,
    },
    "messageDeleted": {"id": str, "uid": int},
    "messageUpdated": {
        "id": str,
        "uid": int,
        # ``added`` and ``deleted`` are left out when empty; ``value`` is always there.
        "changes": {"flags": {"added?": [str], "deleted?": [str], "value": [str]}},
    },
    "messageSent": {
        "messageId": str,
        "response": str,
        "queueId": str,
        "envelope": ENVELOPE,
        "originalMessageId?": str,
    },
    "messageDeliveryError": {
        "queueId": str,
        "envelope": ENVELOPE,
        "messageId": str,
        "error": str,
        "errorCode?": str,
        "smtpResponse?": str,
        "smtpResponseCode?": int,
        "smtpCommand?": str,
        # nextAttempt: the next try, or false when none follows (EmailEngine's webhook page).
        "job": {"attemptsMade": int, "attempts": int, "nextAttempt": OneOf(ISO, False)},
    },
    "messageFailed": {"messageId": str, "queueId": str, "error": str},
    "mailboxReset": {
        "path": str,
        "name": str,
        "specialUse?": OneOf(str, False),
        "uidValidity": str,
        "prevUidValidity": str,
        "reason?": str,
    },
    "authenticationError": {"response": str, "serverResponseCode": str},
    "connectError": {"response": str, "serverResponseCode": str},
    "authenticationSuccess": {"user": str},
    "accountAdded": {"account": str},
    "accountInitialized": {"initialized": bool},
    "accountDeleted": {"account": str},
    "messageBounce": {
        "bounceMessage": str,
        "recipient": str,
        "action": str,
        "response": {"source?": str, "message": str, "status": str},
        "mta?": str,
        "queueId?": str,
        "messageId": str,
        "messageHeaders?": MapOf([str]),
    },
    "messageComplaint": {
        "complaintMessage": str,
        "arf": {
            "source?": str,
            "feedbackType?": str,
            "abuseType?": str,
            "originalMailFrom?": str,
            "originalRcptTo?": [str],
            "sourceIp?": str,
            "arrivalDate?": str,
        },
        "headers": {
            "messageId?": str,
            "from?": str,
            "to?": [str],
            "subject?": str,
            "date?": str,
        },
    },
    "mailboxNew": {
        "path": str,
        "name": str,
        "specialUse": OneOf(str, False),
        "uidValidity?": str,
    },
    "mailboxDeleted": {"path": str, "name": str, "specialUse": OneOf(str, False)},
}


def event_shape(event: str) -> dict[str, Spec]:
    """The whole payload of ``event``: the envelope with its ``data``."""
    return webhook(event, EVENTS[event])


def assert_event(payload: dict[str, Any], event: str) -> None:
    """``payload`` is a stored (or delivered) ``event`` in EmailEngine's shape."""
    assert_shape(event_shape(event), payload)


# -- API answers -----------------------------------------------------------------------------

ROUTES: dict[str, Spec] = {
    # POST /v1/account
    "accountCreated": {"account": str, "state": OneOf("new", "existing")},
    # POST /v1/settings
    "settingsUpdated": {"updated": [str]},
    # GET /v1/settings?webhooks=true (EmailEngine answers the keys asked for)
    "settingsWebhooks": {"webhooks": str},
    # GET /v1/settings?webhooksCustomHeaders=true
    "settingsCustomHeaders": {"webhooksCustomHeaders": [{"key": str, "value": str}]},
    # POST /v1/account/{account}/submit
    "submitted": {
        "response": str,
        "messageId": str,
        "queueId": str,
        "sendAt": ISO,
        "reference?": {"message?": str, "success?": bool, "error?": str},
    },
    # GET /v1/outbox
    "outbox": {
        "total": int,
        "page": int,
        "pages": int,
        "messages": [
            {
                "queueId": str,
                "account": str,
                "source?": OneOf("smtp", "api"),
                "messageId": str,
                "envelope": ENVELOPE,
                "subject": str,
                "created": ISO,
                "scheduled": ISO,
                "nextAttempt?": ISO,
                "attemptsMade": int,
                "attempts": int,
                "progress?": {"status?": str, "response?": str, "error?": dict},
            }
        ],
    },
}
