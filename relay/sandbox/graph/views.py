"""Messages, attachments and folders as Graph's JSON, with ``$select`` (pure)."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from relay.sandbox.graph import mime
from relay.sandbox.graph.bodies import html_to_text, text_to_html
from relay.sandbox.graph.errors import bad_request
from relay.sandbox.graph.mail import Address, Attachment, Folder, Message
from relay.sandbox.graph.odata import format_datetime


def _address(value: Address | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"emailAddress": {"name": value.name, "address": value.address}}


def _addresses(values: list[Address]) -> list[dict[str, Any]]:
    return [{"emailAddress": {"name": a.name, "address": a.address}} for a in values]


def _date(value: float | None) -> str | None:
    return None if value is None else format_datetime(value)


_MESSAGE_FIELDS: Mapping[str, Callable[[Message], Any]] = {
    "createdDateTime": lambda m: format_datetime(m.created),
    "lastModifiedDateTime": lambda m: format_datetime(m.modified),
    "changeKey": lambda m: m.change_key,
    "categories": lambda m: list(m.categories),
    "receivedDateTime": lambda m: format_datetime(m.received),
    "sentDateTime": lambda m: _date(m.sent),
    "hasAttachments": lambda m: m.has_attachments,
    "internetMessageId": lambda m: m.internet_message_id,
    "subject": lambda m: m.subject,
    "bodyPreview": lambda m: m.body_preview,
    "importance": lambda m: m.importance,
    "parentFolderId": lambda m: m.folder_id,
    "conversationId": lambda m: m.conversation_id,
    "isDeliveryReceiptRequested": lambda m: False,
    "isReadReceiptRequested": lambda m: False,
    "isRead": lambda m: m.is_read,
    "isDraft": lambda m: m.is_draft,
    "webLink": lambda m: (
        "https://outlook.office365.com/owa/?ItemID="
        f"{quote(m.id, safe='')}&exvsurl=1&viewmodel=ReadMessageItem"
    ),
    "inferenceClassification": lambda m: "focused",
    "body": lambda m: {"contentType": m.body_type, "content": m.body},
    "sender": lambda m: _address(m.sender),
    "from": lambda m: _address(m.from_),
    "toRecipients": lambda m: _addresses(m.to),
    "ccRecipients": lambda m: _addresses(m.cc),
    "bccRecipients": lambda m: _addresses(m.bcc),
    "replyTo": lambda m: _addresses(m.reply_to),
    "flag": lambda m: {"flagStatus": m.flag_status},
}
# Graph returns these only when $select names them.
_SELECTED_ONLY: Mapping[str, Callable[[Message], Any]] = {
    "uniqueBody": lambda m: {"contentType": m.body_type, "content": m.body},
    "internetMessageHeaders": lambda m: [
        {"name": name, "value": value} for name, value in mime.headers(m)
    ],
}
_BODY_FIELDS = frozenset({"body", "bodyPreview", "uniqueBody"})
_CONVERTED = frozenset({"body", "uniqueBody"})
MESSAGE_PROPERTIES = ("id", *_MESSAGE_FIELDS, *_SELECTED_ONLY)
_BY_FOLDED = {name.lower(): name for name in MESSAGE_PROPERTIES}


def parse_select(raw: str | None) -> tuple[str, ...] | None:
    """A message ``$select`` as canonical property names (case-insensitive); 400 if unknown."""
    return _parse_select(raw, _BY_FOLDED, "message")


def parse_folder_select(raw: str | None) -> tuple[str, ...] | None:
    """A mailFolder ``$select`` as canonical property names; 400 for unknown ones."""
    return _parse_select(raw, _FOLDER_BY_FOLDED, "mailFolder")


def _parse_select(
    raw: str | None, known: Mapping[str, str], type_name: str
) -> tuple[str, ...] | None:
    if raw is None:
        return None
    names: list[str] = []
    for part in raw.split(","):
        name = part.strip()
        if not name:
            continue
        canonical = known.get(name.lower())
        if canonical is None:
            raise bad_request(
                f"Could not find a property named '{name}' on type 'microsoft.graph.{type_name}'.",
                "RequestBroker--ParseUri",
            )
        if canonical not in names:
            names.append(canonical)
    return tuple(names)


def message_json(
    message: Message,
    select: Iterable[str] | None = None,
    *,
    bodies: bool = True,
    odata_type: bool = False,
    immutable: bool = False,
    body_type: str | None = None,
) -> dict[str, Any]:
    """A message resource; ``bodies`` False leaves out the body (``Mail.ReadBasic``).

    ``immutable`` shows the immutable id as ``id`` (``Prefer: IdType="ImmutableId"``);
    ``body_type`` (``text`` or ``html``) converts ``body`` and ``uniqueBody`` to that
    format (``Prefer: outlook.body-content-type``).
    """
    out: dict[str, Any] = {}
    if odata_type:
        out["@odata.type"] = "#microsoft.graph.message"
    out["@odata.etag"] = message.etag
    out["id"] = message.immutable_id if immutable else message.id
    names = _MESSAGE_FIELDS if select is None else [n for n in select if n != "id"]
    for name in names:
        if not bodies and name in _BODY_FIELDS:
            continue
        render = _MESSAGE_FIELDS.get(name) or _SELECTED_ONLY[name]
        out[name] = render(message)
        if name in _CONVERTED and body_type is not None:
            out[name] = convert_body(out[name], body_type)
    return out


def convert_body(body: dict[str, Any], body_type: str) -> dict[str, Any]:
    """An itemBody in ``body_type``: HTML as text, or text wrapped in HTML."""
    if body["contentType"] == body_type:
        return body
    if body_type == "text":
        return {"contentType": "text", "content": html_to_text(body["content"])}
    return {"contentType": "html", "content": text_to_html(body["content"])}


# -- attachments ----------------------------------------------------------------------------

FILE_ATTACHMENT = "#microsoft.graph.fileAttachment"
_ATTACHMENT_FIELDS: Mapping[str, Callable[[Attachment], Any]] = {
    "lastModifiedDateTime": lambda a: format_datetime(a.modified),
    "name": lambda a: a.name,
    "contentType": lambda a: a.content_type,
    "size": lambda a: a.size,
    "isInline": lambda a: a.is_inline,
}
# fileAttachment's own properties; $select names them with the type cast
# (microsoft.graph.fileAttachment/contentBytes): the collection is of attachments.
_FILE_FIELDS: Mapping[str, Callable[[Attachment], Any]] = {
    "contentId": lambda a: a.content_id,
    "contentLocation": lambda a: None,
    "contentBytes": lambda a: base64.b64encode(a.data).decode("ascii"),
}
_FILE_CAST = "microsoft.graph.fileattachment/"
_ATTACHMENT_BY_FOLDED = {name.lower(): name for name in ("id", *_ATTACHMENT_FIELDS)}
_ATTACHMENT_BY_FOLDED.update({_FILE_CAST + name.lower(): name for name in _FILE_FIELDS})


def parse_attachment_select(raw: str | None) -> tuple[str, ...] | None:
    """An attachment ``$select``; fileAttachment properties need their type cast."""
    return _parse_select(raw, _ATTACHMENT_BY_FOLDED, "attachment")


def attachment_json(attachment: Attachment, select: Iterable[str] | None = None) -> dict[str, Any]:
    """A fileAttachment resource; without ``$select`` it carries ``contentBytes``."""
    out: dict[str, Any] = {"@odata.type": FILE_ATTACHMENT, "id": attachment.id}
    for name, render in [*_ATTACHMENT_FIELDS.items(), *_FILE_FIELDS.items()]:
        if select is None or name in select:
            out[name] = render(attachment)
    return out


def removed_json(message_id: str) -> dict[str, Any]:
    """A delta entry for a message that left the folder."""
    return {
        "@odata.type": "#microsoft.graph.message",
        "id": message_id,
        "@removed": {"reason": "deleted"},
    }


def folder_json(
    folder: Folder, child_count: int, select: Iterable[str] | None = None
) -> dict[str, Any]:
    """A mailFolder resource; ``child_count`` is how many folders it holds (hidden too)."""
    full: dict[str, Any] = {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id,
        "childFolderCount": child_count,
        "unreadItemCount": folder.unread,
        "totalItemCount": len(folder.messages),
        "sizeInBytes": sum(m.size for m in folder.messages.values()),
        "isHidden": folder.hidden,
    }
    if select is None:
        return full
    return {"id": folder.id, **{name: full[name] for name in select if name != "id"}}


FOLDER_PROPERTIES = (
    "id",
    "displayName",
    "parentFolderId",
    "childFolderCount",
    "unreadItemCount",
    "totalItemCount",
    "sizeInBytes",
    "isHidden",
)
_FOLDER_BY_FOLDED = {name.lower(): name for name in FOLDER_PROPERTIES}


# -- extended properties --------------------------------------------------------------------

# MAPI's PR_MESSAGE_SIZE, the one extended property the sandbox knows; Graph names
# properties back with lower-case hex and no leading zeros.
MESSAGE_SIZE_PROPERTY = "Integer 0xe08"
_EXPAND_EXTENDED = re.compile(
    r"^singleValueExtendedProperties\(\$filter=id eq '([^']+)'\)$", re.IGNORECASE
)


def parse_expand(raw: str | None) -> str | None:
    """The extended property an ``$expand`` asks for (``Integer 0xe08``), None without one.

    Raises ValueError for an ``$expand`` the sandbox does not know (Graph: 400).
    """
    if raw is None:
        return None
    found = _EXPAND_EXTENDED.match(raw.strip())
    if found is None:
        raise ValueError(raw)
    kind, _, tag = found.group(1).strip().partition(" ")
    try:
        number = int(tag, 16)
    except ValueError:
        raise ValueError(raw) from None
    return f"{kind.capitalize()} {number:#x}"


def extended_json(message: Message, property_id: str) -> list[dict[str, str]]:
    """``singleValueExtendedProperties`` of ``message`` for one property (empty when unset)."""
    if property_id == MESSAGE_SIZE_PROPERTY:
        return [{"id": MESSAGE_SIZE_PROPERTY, "value": str(message.size)}]
    return []
