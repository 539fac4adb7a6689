"""The admin API for mailboxes, subscriptions and notifications, under ``/sandbox/``.

Changes made here are real mailbox changes: they show up in delta query and produce
change notifications, exactly as changes made through Graph do. Messages are shown as
Graph shows them (``id`` is the default id) plus ``immutableId``; every ``{id}`` below
takes either.

- ``GET /sandbox/mailboxes/{email}/folders`` -> 200 ``[{id, wellKnownName, displayName,
  parentFolderId, childFolderCount, hidden, totalItemCount, unreadItemCount}]`` (nested
  folders and the hidden Recoverable Items folder too; top-level folders have the
  mailbox root as parent)
- ``POST /sandbox/mailboxes/{email}/folders`` ``{displayName, parentFolderId?}`` -> 201 the
  folder; ``parentFolderId`` is a folder id or a well-known name (the root by default); a
  name already taken among its siblings is a 409
- ``GET /sandbox/mailboxes/{email}/folders/{folder}/messages`` -> 200 ``[message]``
- ``POST /sandbox/mailboxes/{email}/folders/{folder}/expire-delta`` -> 200: every delta
  and skip token of the folder now gets ``410 Gone`` (``syncStateNotFound``)
- ``POST /sandbox/mailboxes/{email}/messages`` ``{folder? ("inbox"), from?, to[]?, cc[]?,
  bcc[]?, replyTo[]?, subject?, body?, bodyType? (text|html), hasAttachments?,
  attachments[]?, internetMessageId?, isRead?, isDraft?, flag? (notFlagged|flagged|complete),
  importance?, categories[]?, receivedDateTime?}`` -> 201 the message as Graph shows it.
  Addresses are strings or ``{name, address}``; an attachment is ``{name, contentBytes
  (base64), contentType? ("application/octet-stream"), isInline? (false), contentId?}``.
  Instead of content fields, ``mime`` may carry a whole message (RFC 5322, base64-encoded):
  subject, addresses, ``Message-ID``, ``Date`` (``sentDateTime``), importance, body (its
  HTML part, else its text part), attachments (every other part; inline ones with their
  ``Content-ID``) and ``internetMessageHeaders`` come from it, and Graph's ``$value``
  returns it byte for byte. Passing ``mime`` with any of ``subject, body, bodyType, from,
  to, cc, bcc, replyTo, internetMessageId, hasAttachments, attachments`` is a 400 (field
  ``mime``), as is a source without any header.
- ``POST /sandbox/mailboxes/{email}/drafts`` (the same body, ``mime`` too; ``folder``
  defaults to ``drafts``, ``isRead`` to true) -> 201 a draft, as Outlook saves one while
  composing
- ``POST /sandbox/mailboxes/{email}/messages/{id}/send`` (no body) -> 200 the sent message:
  the draft moves to Sent Items (new ``id``, same ``immutableId``), sent as its ``from``
  (the mailbox by default), and reaches recipients that are sandbox mailboxes; 400 if it
  is not a draft (field ``message``) or has no recipients (field ``to``)
- ``PATCH /sandbox/mailboxes/{email}/messages/{id}`` ``{isRead?, flag?, categories?,
  importance?}`` -> 200 the message
- ``DELETE /sandbox/mailboxes/{email}/messages/{id}[?permanent=true]`` -> 204 (a soft
  delete into Recoverable Items, like Graph's ``DELETE``; ``permanent`` purges it)
- ``POST /sandbox/mailboxes/{email}/messages/{id}/move`` ``{destination}`` -> 200 the
  message, with its new id (and the same ``immutableId``)
- ``POST /sandbox/mailboxes/{email}/throttle`` ``{requests, retryAfter, code?}`` -> 200
  ``{mailbox, requests, retryAfter, code}``: the next ``requests`` Graph requests to the
  mailbox (``me/...`` and ``users/{id|upn}/...``; not subscriptions) are answered 429 with
  ``Retry-After: retryAfter`` (whole seconds) and the error ``code``
  (``ApplicationThrottled`` by default, ``MailboxConcurrency`` or ``TooManyRequests``);
  replaces an earlier throttle of the mailbox
- ``DELETE /sandbox/mailboxes/{email}/throttle`` -> 200 ``{mailbox, requestsLeft}``: stop
  throttling it
- ``GET /sandbox/mailboxes/{email}/requests`` -> 200 ``[{time, method, path, status,
  throttled, retryAfter, fault}]``: the last 1000 Graph requests to the mailbox (and for
  its subscriptions), oldest first; ``time`` is the arrival on the sandbox clock (epoch
  seconds), ``path`` has no query, a throttled one carries its ``retryAfter`` (null
  otherwise), and one an outage hit names its ``fault`` kind (``status`` is null for a
  reset, and a hang is listed once it ended)
- ``POST /sandbox/faults`` ``{kind, mailbox?, path?, retryAfter?, requests?}`` -> 201 ``{id,
  kind, mailbox, path, retryAfter, requestsLeft, hits}``: an outage of Graph, as Microsoft
  has them. ``kind`` is ``unavailable`` (503 ``serviceNotAvailable``), ``gatewayTimeout``
  (504), ``hang`` (no answer until the fault is removed, then 504; at most 120 s) or
  ``reset`` (the TCP connection is reset). It hits the requests of ``mailbox`` (every
  mailbox when left out): its mailbox requests and the requests for its subscriptions
  (create, renew, reauthorize, delete); ``path`` narrows it to request paths containing
  that text, ignoring case (``/subscriptions``, ``messages/delta``, ``/messages/``).
  ``retryAfter`` (whole seconds, 503 and 504 only) is sent as ``Retry-After``;
  ``requests`` makes only that many requests fail (every one until removed by default).
  Faults are checked in the order they were made; the first that matches applies.
- ``GET /sandbox/faults`` -> 200 ``[fault]``
- ``DELETE /sandbox/faults/{id}`` -> 200 the fault as it ended (``hits``: requests it
  failed); held requests are let go. ``DELETE /sandbox/faults`` -> 200 ``{removed}``: all
- ``GET /sandbox/subscriptions`` -> 200 ``[subscription + {mailbox, folderId, user,
  needsReauthorization, immutableIds}]``
- ``POST /sandbox/subscriptions/{id}/lifecycle`` ``{event: missed | subscriptionRemoved |
  reauthorizationRequired}`` -> 200 ``{sent, removed}``; ``subscriptionRemoved`` also
  removes the subscription, ``reauthorizationRequired`` marks it until it is reauthorized
  or renewed
- ``GET /sandbox/notifications`` -> 200 delivery statistics per notification URL (see
  :class:`relay.sandbox.graph.notifier.EndpointStats`)
- ``GET /sandbox/settings``, ``POST /sandbox/settings`` ``{allowHttpNotifications}`` ->
  200 ``{allowHttpNotifications}``: accept http notification URLs on loopback addresses
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from aiohttp import web

from relay.errors import InputError, NotFound
from relay.sandbox.graph.errors import GraphError
from relay.sandbox.graph.faults import ANSWERING, KINDS
from relay.sandbox.graph.mail import (
    DRAFTS,
    FLAG_STATUS,
    IMPORTANCE,
    INBOX,
    Address,
    Attachment,
    Folder,
    Mailbox,
    Message,
    MessageInput,
    is_address,
)
from relay.sandbox.graph.mime import MimeError, parse_mime
from relay.sandbox.graph.notifier import LIFECYCLE_EVENTS
from relay.sandbox.graph.odata import format_precise, parse_datetime
from relay.sandbox.graph.throttling import CODES, DEFAULT_CODE
from relay.sandbox.graph.views import message_json
from relay.sandbox.inputs import flag, json_body, required_text, text
from relay.sandbox.keys import NOTIFIER, STATE


def _address(value: Any, name: str) -> Address:
    if isinstance(value, str):
        address, display = value, ""
    elif isinstance(value, dict) and isinstance(value.get("address"), str):
        address = value["address"]
        name_value = value.get("name")
        display = name_value if isinstance(name_value, str) else ""
    else:
        raise InputError(f"{name}: must be an address or {{name, address}}", field=name)
    address = address.strip()
    if not is_address(address):
        raise InputError(f"{name}: {address!r} is not an email address", field=name)
    return Address(name=display or address, address=address)


def _addresses(body: dict[str, Any], name: str) -> list[Address]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{name}: must be a list of addresses", field=name)
    return [_address(item, name) for item in value]


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(name, default)
    if value not in allowed:
        raise InputError(f"{name}: must be one of {', '.join(allowed)}", field=name)
    return str(value)


def _categories(body: dict[str, Any]) -> list[str] | None:
    value = body.get("categories")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError("categories: must be a list of strings", field="categories")
    return value


def _message_view(message: Message) -> dict[str, Any]:
    return {**message_json(message), "immutableId": message.immutable_id}


def _folder_view(mailbox: Mailbox, folder: Folder) -> dict[str, Any]:
    return {
        "id": folder.id,
        "wellKnownName": folder.well_known,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id,
        "childFolderCount": len(mailbox.children(folder.id)),
        "hidden": folder.hidden,
        "totalItemCount": len(folder.messages),
        "unreadItemCount": folder.unread,
    }


async def list_folders(request: web.Request) -> web.Response:
    """Every folder of a mailbox, nested and hidden ones included."""
    mailbox = request.app[STATE].mail.mailbox(request.match_info["email"])
    return web.json_response([_folder_view(mailbox, f) for f in mailbox.folders.values()])


async def add_folder(request: web.Request) -> web.Response:
    """Create a folder, at the top or under ``parentFolderId``."""
    mail = request.app[STATE].mail
    body = await json_body(request)
    email = request.match_info["email"]
    folder = mail.add_folder(
        email,
        required_text(body, "displayName"),
        parent=text(body, "parentFolderId", required=False),
    )
    return web.json_response(_folder_view(mail.mailbox(email), folder), status=201)


async def list_messages(request: web.Request) -> web.Response:
    """The messages of a folder, newest first."""
    folder = request.app[STATE].mail.folder(
        request.match_info["email"], request.match_info["folder"]
    )
    messages = sorted(folder.messages.values(), key=lambda m: (m.received, m.seq), reverse=True)
    return web.json_response([_message_view(m) for m in messages])


async def expire_delta(request: web.Request) -> web.Response:
    """Invalidate the delta tokens of a folder."""
    folder = request.app[STATE].mail.expire_delta(
        request.match_info["email"], request.match_info["folder"]
    )
    return web.json_response({"folder": folder.id, "expired": True})


def _base64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise InputError(f"{name}: must be a base64 string", field=name)
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except binascii.Error:
        raise InputError(f"{name}: must be a base64 string", field=name) from None


def _attachments(body: dict[str, Any]) -> list[Attachment]:
    value = body.get("attachments")
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError("attachments: must be a list of attachments", field="attachments")
    found: list[Attachment] = []
    for item in value:
        if not isinstance(item, dict):
            raise InputError("attachments: must be a list of attachments", field="attachments")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError("attachments: each needs a name", field="attachments")
        content_type = item.get("contentType", "application/octet-stream")
        content_id = item.get("contentId")
        inline = item.get("isInline", False)
        if (
            not isinstance(content_type, str)
            or not isinstance(inline, bool)
            or (content_id is not None and not isinstance(content_id, str))
        ):
            raise InputError(
                "attachments: contentType and contentId are strings, isInline a boolean",
                field="attachments",
            )
        found.append(
            Attachment(
                id="",
                name=name,
                content_type=content_type,
                data=_base64(item.get("contentBytes"), "attachments.contentBytes"),
                is_inline=inline,
                content_id=content_id.strip("<>") if content_id else None,
            )
        )
    return found


# What a MIME source says; the admin body may not say it as well.
_FROM_MIME = (
    "subject",
    "body",
    "bodyType",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "internetMessageId",
    "hasAttachments",
    "attachments",
)


async def _input_of(body: dict[str, Any], *, draft: bool) -> MessageInput:
    """A message from an admin body: from fields, or from a base64 ``mime`` source."""
    if body.get("mime") is None:
        return _message_input(body, draft=draft)
    clashing = [name for name in _FROM_MIME if body.get(name) is not None]
    if clashing:
        raise InputError(
            f"mime: the source gives {', '.join(clashing)}; do not pass them as well",
            field="mime",
        )
    raw = _base64(body["mime"], "mime")
    try:
        # Parsing tens of megabytes takes a while: off the event loop.
        parsed = await asyncio.to_thread(parse_mime, raw)
    except MimeError as exc:
        raise InputError(f"mime: not an internet message ({exc})", field="mime") from None
    data = _message_input(body, draft=draft)
    data.subject, data.body, data.body_type = parsed.subject, parsed.body, parsed.body_type
    data.from_, data.sender = parsed.from_, parsed.sender
    data.to, data.cc, data.bcc, data.reply_to = parsed.to, parsed.cc, parsed.bcc, parsed.reply_to
    data.internet_message_id = parsed.internet_message_id
    data.sent = parsed.sent
    if body.get("importance") is None:
        data.importance = parsed.importance
    data.mime, data.attachments, data.headers = raw, parsed.attachments, parsed.headers
    return data


def _message_input(body: dict[str, Any], *, draft: bool) -> MessageInput:
    """A message from an admin body's fields; a draft is read and has ``isDraft`` set."""
    received = None
    if body.get("receivedDateTime") is not None:
        try:
            received = parse_datetime(body["receivedDateTime"], "receivedDateTime")
        except GraphError:
            raise InputError(
                "receivedDateTime: must be an ISO 8601 date and time", field="receivedDateTime"
            ) from None
    sender = _address(body["from"], "from") if body.get("from") is not None else None
    body_type = _choice(body, "bodyType", ("text", "html"), "text")
    return MessageInput(
        subject=text(body, "subject", required=False) or "",
        body=text(body, "body", required=False) or "",
        body_type=body_type,
        from_=sender,
        to=_addresses(body, "to"),
        cc=_addresses(body, "cc"),
        bcc=_addresses(body, "bcc"),
        reply_to=_addresses(body, "replyTo"),
        is_read=flag(body, "isRead", draft),
        is_draft=draft or flag(body, "isDraft"),
        has_attachments=flag(body, "hasAttachments"),
        importance=_choice(body, "importance", IMPORTANCE, "normal"),
        flag_status=_choice(body, "flag", FLAG_STATUS, "notFlagged"),
        categories=_categories(body) or [],
        internet_message_id=text(body, "internetMessageId", required=False),
        received=received,
        attachments=_attachments(body),
    )


async def deliver(request: web.Request) -> web.Response:
    """Put a message into a mailbox folder, as if it had arrived."""
    state = request.app[STATE]
    body = await json_body(request)
    data = await _input_of(body, draft=False)
    folder = text(body, "folder", required=False) or INBOX
    message = state.mail.add_message(request.match_info["email"], folder, data)
    return web.json_response(_message_view(message), status=201)


async def save_draft(request: web.Request) -> web.Response:
    """Save a draft, as Outlook does while the user writes a message."""
    state = request.app[STATE]
    body = await json_body(request)
    data = await _input_of(body, draft=True)
    folder = text(body, "folder", required=False) or DRAFTS
    message = state.mail.add_message(request.match_info["email"], folder, data)
    return web.json_response(_message_view(message), status=201)


async def send_draft(request: web.Request) -> web.Response:
    """Send a draft as the mailbox's owner would in Outlook (no permission checks)."""
    state = request.app[STATE]
    email, message_id = request.match_info["email"], request.match_info["id"]
    owner = state.user(email, field_name="mailbox")
    draft = state.mail.message(email, message_id)
    from_ = draft.from_ or Address(owner.display_name, owner.email)
    sent = state.mail.send_draft(email, message_id, from_=from_, sender=from_)
    return web.json_response(_message_view(sent))


async def update(request: web.Request) -> web.Response:
    """Change read state, flag, categories or importance of a message."""
    state = request.app[STATE]
    body = await json_body(request)
    is_read = body.get("isRead")
    if is_read is not None and not isinstance(is_read, bool):
        raise InputError("isRead: must be true or false", field="isRead")
    flag_status = body.get("flag")
    if flag_status is not None and flag_status not in FLAG_STATUS:
        raise InputError(f"flag: must be one of {', '.join(FLAG_STATUS)}", field="flag")
    importance = body.get("importance")
    if importance is not None and importance not in IMPORTANCE:
        raise InputError(f"importance: must be one of {', '.join(IMPORTANCE)}", field="importance")
    message = state.mail.update(
        request.match_info["email"],
        request.match_info["id"],
        is_read=is_read,
        flag_status=flag_status,
        categories=_categories(body),
        importance=importance,
    )
    return web.json_response(_message_view(message))


async def delete(request: web.Request) -> web.Response:
    """Soft-delete (or with ``?permanent=true`` purge) a message."""
    state = request.app[STATE]
    permanent = request.query.get("permanent", "false").lower()
    if permanent not in ("true", "false"):
        raise InputError("permanent: must be true or false", field="permanent")
    email, message_id = request.match_info["email"], request.match_info["id"]
    if permanent == "true":
        state.mail.purge(email, message_id)
    else:
        state.mail.delete(email, message_id)
    return web.Response(status=204)


async def move(request: web.Request) -> web.Response:
    """Move a message to another folder; it gets a new id."""
    state = request.app[STATE]
    body = await json_body(request)
    moved = state.mail.move(
        request.match_info["email"], request.match_info["id"], required_text(body, "destination")
    )
    return web.json_response(_message_view(moved))


def _at_least_one(body: dict[str, Any], name: str, what: str) -> int:
    value = body.get(name)
    if value is None:
        raise InputError(f"{name}: required", field=name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}: must be a whole number of {what}, at least 1", field=name)
    return value


async def throttle(request: web.Request) -> web.Response:
    """Answer the mailbox's next ``requests`` Graph requests with 429 and ``Retry-After``."""
    state = request.app[STATE]
    mailbox = state.mail.mailbox(request.match_info["email"])
    body = await json_body(request)
    requests = _at_least_one(body, "requests", "requests")
    retry_after = _at_least_one(body, "retryAfter", "seconds")
    code = _choice(body, "code", tuple(CODES), DEFAULT_CODE)
    made = state.throttling.throttle(mailbox.email, requests, retry_after, code)
    return web.json_response({"mailbox": mailbox.email, **made.to_json()})


async def unthrottle(request: web.Request) -> web.Response:
    """Stop throttling a mailbox."""
    state = request.app[STATE]
    mailbox = state.mail.mailbox(request.match_info["email"])
    left = state.throttling.clear(mailbox.email)
    return web.json_response({"mailbox": mailbox.email, "requestsLeft": left})


async def list_requests(request: web.Request) -> web.Response:
    """The last Graph requests to a mailbox, oldest first, throttled ones marked."""
    state = request.app[STATE]
    mailbox = state.mail.mailbox(request.match_info["email"])
    return web.json_response([r.to_json() for r in state.throttling.requests(mailbox.email)])


# Longest ``path`` a fault may match on.
_MAX_FAULT_PATH = 512


def _optional_count(body: dict[str, Any], name: str, what: str) -> int | None:
    return None if body.get(name) is None else _at_least_one(body, name, what)


async def add_fault(request: web.Request) -> web.Response:
    """Switch on an outage for the requests of a mailbox (or every one), maybe one path."""
    state = request.app[STATE]
    body = await json_body(request)
    kind = required_text(body, "kind")
    if kind not in KINDS:
        raise InputError(f"kind: must be one of {', '.join(KINDS)}", field="kind")
    mailbox = text(body, "mailbox", required=False)
    if mailbox is not None:
        mailbox = state.user(mailbox, field_name="mailbox").email
    path = text(body, "path", required=False)
    if path is not None and (not path.strip() or len(path) > _MAX_FAULT_PATH):
        raise InputError(
            f"path: must be a non-empty string of at most {_MAX_FAULT_PATH} characters",
            field="path",
        )
    retry_after = _optional_count(body, "retryAfter", "seconds")
    if retry_after is not None and kind not in ANSWERING:
        raise InputError(
            f"retryAfter: only {' and '.join(ANSWERING)} answer, with Retry-After",
            field="retryAfter",
        )
    requests = _optional_count(body, "requests", "requests")
    fault = state.faults.add(
        kind, mailbox=mailbox, path=path, retry_after=retry_after, requests=requests
    )
    return web.json_response(fault.to_json(), status=201)


async def list_faults(request: web.Request) -> web.Response:
    """The faults switched on, in the order they apply."""
    return web.json_response([f.to_json() for f in request.app[STATE].faults.active.values()])


async def remove_fault(request: web.Request) -> web.Response:
    """Switch one fault off; the requests it holds are answered."""
    fault = request.app[STATE].faults.remove(request.match_info["id"])
    if fault is None:
        raise NotFound(f"id: no fault {request.match_info['id']!r}", field="id")
    return web.json_response(fault.to_json())


async def clear_faults(request: web.Request) -> web.Response:
    """Switch every fault off."""
    return web.json_response({"removed": len(request.app[STATE].faults.clear())})


async def list_subscriptions(request: web.Request) -> web.Response:
    """Every active subscription, with what it watches."""
    state = request.app[STATE]
    return web.json_response(
        [
            {
                **sub.to_json(),
                "mailbox": sub.mailbox,
                "folderId": sub.folder_id,
                "user": sub.user,
                "needsReauthorization": sub.needs_reauthorization,
                "immutableIds": sub.immutable_ids,
            }
            for sub in state.subscriptions.values()
        ]
    )


async def fire_lifecycle(request: web.Request) -> web.Response:
    """Send a lifecycle notification for a subscription, as Graph would."""
    state = request.app[STATE]
    notifier = request.config_dict[NOTIFIER]
    sub = state.subscriptions.get(request.match_info["id"])
    if sub is None:
        raise NotFound(f"subscription: no subscription {request.match_info['id']!r}", field="id")
    body = await json_body(request)
    event = required_text(body, "event")
    if event not in LIFECYCLE_EVENTS:
        raise InputError(f"event: must be one of {', '.join(LIFECYCLE_EVENTS)}", field="event")
    if event == "subscriptionRemoved":
        return web.json_response({"sent": notifier.remove(sub), "removed": True})
    if event == "reauthorizationRequired":
        sub.needs_reauthorization = True
    return web.json_response({"sent": notifier.lifecycle(sub, event), "removed": False})


async def notifications(request: web.Request) -> web.Response:
    """Delivery statistics per notification URL."""
    notifier = request.config_dict[NOTIFIER]
    return web.json_response(
        {"now": format_precise(notifier.state.now()), "endpoints": notifier.stats()}
    )


async def settings(request: web.Request) -> web.Response:
    """Read or change the Graph emulator's switches."""
    state = request.app[STATE]
    if request.method == "POST":
        body = await json_body(request)
        state.allow_http_notifications = flag(
            body, "allowHttpNotifications", state.allow_http_notifications
        )
    return web.json_response({"allowHttpNotifications": state.allow_http_notifications})


def add_routes(app: web.Application) -> None:
    """Register the mail and subscription admin endpoints on the admin sub-application."""
    app.router.add_get("/mailboxes/{email}/folders", list_folders)
    app.router.add_post("/mailboxes/{email}/folders", add_folder)
    app.router.add_get("/mailboxes/{email}/folders/{folder}/messages", list_messages)
    app.router.add_post("/mailboxes/{email}/folders/{folder}/expire-delta", expire_delta)
    app.router.add_post("/mailboxes/{email}/messages", deliver)
    app.router.add_post("/mailboxes/{email}/drafts", save_draft)
    app.router.add_post("/mailboxes/{email}/messages/{id}/send", send_draft)
    app.router.add_patch("/mailboxes/{email}/messages/{id}", update)
    app.router.add_delete("/mailboxes/{email}/messages/{id}", delete)
    app.router.add_post("/mailboxes/{email}/messages/{id}/move", move)
    app.router.add_post("/mailboxes/{email}/throttle", throttle)
    app.router.add_delete("/mailboxes/{email}/throttle", unthrottle)
    app.router.add_get("/mailboxes/{email}/requests", list_requests)
    app.router.add_post("/faults", add_fault)
    app.router.add_get("/faults", list_faults)
    app.router.add_delete("/faults", clear_faults)
    app.router.add_delete("/faults/{id}", remove_fault)
    app.router.add_get("/subscriptions", list_subscriptions)
    app.router.add_post("/subscriptions/{id}/lifecycle", fire_lifecycle)
    app.router.add_get("/notifications", notifications)
    app.router.add_get("/settings", settings)
    app.router.add_post("/settings", settings)
