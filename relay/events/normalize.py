"""Raw source changes -> the ``data`` of public events. Pure: no I/O, no clock, no store.

IMAP (``imap_fetch_to_event``, ``message_deleted``, ``message_updated``, ``mailbox_reset``)
produces EmailEngine's field names and shapes (``postalsys/emailengine``,
``lib/payload-examples-webhooks.json``); Graph (``graph_message_to_event``,
``graph_message_updated``) produces the same keys for the same message, with Graph's
properties mapped to IMAP's flags (``isRead`` -> ``\\Seen``, ``flag`` -> ``\\Flagged``,
``isDraft`` -> ``\\Draft``). A Graph message's ``id`` is Graph's own id.

Message ids
-----------
A message's ``id`` is ``base64url(folder_no ‖ uidvalidity ‖ uid)`` without padding: three
unsigned 32-bit big-endian integers, 16 characters. ``folder_no`` is a small number the relay
assigns to each watched folder of an account when it first sees it (``imap_folders``), so the
id is unique within an account, stays the same for the life of the message in its folder,
and changes when the server's UIDVALIDITY does (the UIDs are then reused for other messages).
An attachment's ``id`` is ``base64url(folder_no ‖ uidvalidity ‖ uid ‖ part)``, where ``part``
is the ASCII IMAP part number (``2``, ``1.2``); because 12 bytes encode to exactly 16
characters, it starts with the message id. Both decode with :func:`parse_message_id`.

What EmailEngine adds to ``messageNew``
---------------------------------------
Besides the envelope, both sources add EmailEngine's (``lib/email-client/imap/mailbox.js``,
``lib/email-client/base-client.js``): ``flagged``, ``answered``, ``draft`` (only when true;
``unseen`` is always there, as the relay has always sent it), ``text {id, encodedSize}``
(``id`` is the message id, which ``GET /v1/account/{id}/text/{text}`` takes),
``messageSpecialUse`` (the folder's special use when it is one of
:data:`MESSAGE_SPECIAL_USES`), ``isAutoReply`` (:func:`is_auto_reply`, only when the
header fields were read) and, for reports received in INBOX, ``isBounce`` /
``isComplaint`` with ``relatedMessageId``, the Message-ID of the message the report is
about (:func:`relay.events.reports.report_fields`, which also makes the ``messageBounce``
and ``messageComplaint`` events that follow). The sources read what these need: the IMAP
listener the :data:`AUTO_REPLY_HEADERS` with every new message and a report's parts
(:func:`report_items`); the Graph watcher :data:`GRAPH_DETAIL_FIELDS` and a report's
source (:func:`graph_report_wanted`, :func:`mime_report`). These report functions live
in :mod:`relay.events.reports` and are importable from here too.

A ``messageNew`` event (not the message lists of the API, which read the same fields) also
has ``path`` and ``seemsLikeNew`` (:func:`message_new`); whether the account saw the message
before is decided where the event is stored (:func:`relay.store.events.record`).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from relay.events.model import parse_iso
from relay.events.reports import (
    REPORT_PART_BYTES,
    Report,
    graph_report_wanted,
    imap_report,
    mime_report,
    report_fields,
    report_items,
)
from relay.events.structure import (
    Headers,
    body_item,
    decode_words,
    first_value,
    header_fields,
    header_items,
    is_text,
    leaf_parts,
)
from relay.events.structure import as_text as _text
from relay.events.structure import text_parts as _text_parts

__all__ = [
    "AUTO_REPLY_HEADERS",
    "GRAPH_DETAIL_FIELDS",
    "GRAPH_FIELDS",
    "MESSAGE_SPECIAL_USES",
    "REPORT_PART_BYTES",
    "Report",
    "attachment_id",
    "attachments",
    "body_item",
    "flag_fields",
    "graph_flags",
    "graph_headers",
    "graph_message_deleted",
    "graph_message_moved",
    "graph_message_to_event",
    "graph_message_updated",
    "graph_report_wanted",
    "imap_fetch_to_event",
    "imap_items",
    "imap_report",
    "is_auto_reply",
    "iso_datetime",
    "mailbox_reset",
    "message_deleted",
    "message_id",
    "message_new",
    "message_special_use",
    "message_updated",
    "mime_report",
    "parse_message_id",
    "report_fields",
    "report_items",
    "text_info",
    "visible_flags",
]

# Session-only flag (RFC 3501): it differs per connection, so it is never reported.
_HIDDEN_FLAGS = frozenset({"\\recent"})
_ID = struct.Struct(">III")


# -- ids ------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def message_id(folder_no: int, uidvalidity: int, uid: int) -> str:
    """The stable id of message ``uid`` in folder ``folder_no`` (see the module docstring)."""
    return _b64(_ID.pack(folder_no, uidvalidity, uid))


def attachment_id(folder_no: int, uidvalidity: int, uid: int, part: str) -> str:
    """The id of body part ``part`` (``"2"``, ``"1.2"``) of a message."""
    return _b64(_ID.pack(folder_no, uidvalidity, uid) + part.encode("ascii"))


def parse_message_id(value: str) -> tuple[int, int, int, str | None]:
    """``(folder_no, uidvalidity, uid, part)`` of a message or attachment id; ValueError if bad."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a message id: {value!r}") from exc
    if len(raw) < _ID.size:
        raise ValueError(f"not a message id: {value!r}")
    folder_no, uidvalidity, uid = _ID.unpack(raw[: _ID.size])
    part = raw[_ID.size :].decode("ascii", "replace") or None
    return folder_no, uidvalidity, uid, part


# -- text -----------------------------------------------------------------------------------


def iso_datetime(moment: datetime) -> str:
    """``2022-10-17T06:42:07.000Z``; a naive datetime is taken as local time (imapclient's)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


# -- flags ----------------------------------------------------------------------------------


def visible_flags(flags: Iterable[bytes | str] | None) -> list[str]:
    """The flags as strings in server order, without session-only ones (``\\Recent``)."""
    out: list[str] = []
    for flag in flags or ():
        text = _text(flag)
        if text.lower() not in _HIDDEN_FLAGS and text not in out:
            out.append(text)
    return out


# EmailEngine's booleans for system flags, present only when true (``unseen`` is not here:
# the relay always sends it).
_FLAG_FIELDS = (("flagged", "\\flagged"), ("answered", "\\answered"), ("draft", "\\draft"))


def flag_fields(flags: Iterable[str]) -> dict[str, bool]:
    """``flagged``, ``answered`` and ``draft`` for the flags that carry them (only the true
    ones, as EmailEngine sends them)."""
    lowered = {flag.lower() for flag in flags}
    return {name: True for name, flag in _FLAG_FIELDS if flag in lowered}


# -- envelope -------------------------------------------------------------------------------


def _address(addr: Any) -> dict[str, str] | None:
    mailbox = getattr(addr, "mailbox", None)
    host = getattr(addr, "host", None)
    if mailbox is None or host is None:
        return None  # a group-syntax marker ("undisclosed-recipients:;"), not an address
    name = decode_words(getattr(addr, "name", None)) or ""
    return {"name": name, "address": f"{_text(mailbox)}@{_text(host)}"}


def _addresses(value: Any) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for addr in value or ():
        item = _address(addr)
        if item is not None:
            out.append(item)
    return out


def _set_addresses(data: dict[str, Any], key: str, value: Any, *, single: bool = False) -> None:
    found = _addresses(value)
    if found:
        data[key] = found[0] if single else found


def _object_id(value: Any) -> str | None:
    """EMAILID / THREADID values: ``(M6d99ac32)`` parses to a 1-tuple; NIL to None."""
    if isinstance(value, tuple | list):
        value = value[0] if value else None
    if value is None:
        return None
    return _text(value) if isinstance(value, bytes | str) else str(value)


# -- bodystructure --------------------------------------------------------------------------


def attachments(bodystructure: Any, make_id: Any) -> list[dict[str, Any]]:
    """Attachments of a parsed BODYSTRUCTURE, in part order.

    Every leaf part except the message text (:func:`relay.events.structure.is_text`) is
    one; attached messages are not descended into. ``make_id(part_number) -> str`` names
    each. ``embedded`` marks parts referenced by Content-ID inside ``multipart/related``;
    ``inline`` those, and ``inline`` dispositions.
    """
    found: list[dict[str, Any]] = []
    for part in leaf_parts(bodystructure):
        if is_text(part):
            continue
        embedded = bool(part.related and part.content_id and part.disposition != "attachment")
        item: dict[str, Any] = {
            "id": make_id(part.section),
            "contentType": part.content_type,
            "encodedSize": part.size,
        }
        if part.filename:
            item["filename"] = part.filename
        item["embedded"] = embedded
        item["inline"] = embedded or part.disposition == "inline"
        if part.content_id:
            item["contentId"] = f"<{part.content_id}>"
        found.append(item)
    return found


# -- what kind of message --------------------------------------------------------------------

# Folder special uses that EmailEngine reports as a message's ``messageSpecialUse``.
MESSAGE_SPECIAL_USES = ("\\Junk", "\\Sent", "\\Trash", "\\Inbox", "\\Drafts")
_SPECIAL_USE_BY_FOLDED = {name.lower(): name for name in MESSAGE_SPECIAL_USES}

# The header fields isAutoReply is decided on, besides Subject and In-Reply-To: the IMAP
# listener fetches exactly these with every new message.
AUTO_REPLY_HEADERS = (
    "Auto-Submitted",
    "Precedence",
    "X-Autoreply",
    "X-Autorespond",
    "X-Autoresponder",
)
# What imap_fetch_to_event reads of a message, before the server's OBJECTID items.
_IMAP_ITEMS = ("UID", "FLAGS", "ENVELOPE", "BODYSTRUCTURE", "INTERNALDATE", "RFC822.SIZE")


def imap_items(capabilities: Collection[str], *, auto_reply: bool = False) -> tuple[str, ...]:
    """The FETCH items :func:`imap_fetch_to_event` reads (``EMAILID``/``THREADID`` where the
    server has OBJECTID); ``auto_reply`` adds the header fields that tell an automatic reply."""
    items = list(_IMAP_ITEMS)
    if "OBJECTID" in capabilities:
        items += ["EMAILID", "THREADID"]
    if auto_reply:
        items.append(f"BODY.PEEK[HEADER.FIELDS ({' '.join(AUTO_REPLY_HEADERS).upper()})]")
    return tuple(items)


_AUTO_SUBJECT = re.compile(r"(?:auto:|out of office|oof:|ooo:)", re.IGNORECASE)
_AUTO_PRECEDENCE = re.compile(r"auto[_-]?reply", re.IGNORECASE)
_AUTO_SUBMITTED = re.compile(r"auto[_-]?replied", re.IGNORECASE)
_AUTO_MARKERS = ("x-autoreply", "x-autorespond", "x-autoresponder")


def message_special_use(special_use: str | None) -> str | None:
    """EmailEngine's ``messageSpecialUse`` for a message in a folder with ``special_use``:
    the folder's special use if it is one of :data:`MESSAGE_SPECIAL_USES`, else None."""
    if not special_use:
        return None
    return _SPECIAL_USE_BY_FOLDED.get(special_use.lower())


def text_info(message: str, bodystructure: Any) -> dict[str, Any]:
    """``text {id, encodedSize {plain?, html?}}``: the message's id (which the text API
    takes) and the encoded sizes of the parts that are its text."""
    plain, html = _text_parts(leaf_parts(bodystructure))
    sizes: dict[str, int] = {}
    if plain is not None:
        sizes["plain"] = plain.size
    if html is not None:
        sizes["html"] = html.size
    return {"id": message, "encodedSize": sizes}


def is_auto_reply(
    headers: Mapping[str, Sequence[str]], *, subject: str | None, in_reply_to: str | None
) -> bool:
    """Whether a message is an automatic reply, by EmailEngine's rules.

    A subject starting with ``Auto:``, ``Out of Office``, ``OOF:`` or ``OOO:`` on a reply
    (it has In-Reply-To); ``Precedence: auto_reply``; ``Auto-Submitted: auto-replied``
    (not ``auto-generated``, which notifications and bounces carry); or any
    ``X-Autoreply``, ``X-Autorespond`` or ``X-Autoresponder`` field. ``headers`` holds
    lower-case names (:func:`relay.events.structure.header_fields`).
    """
    if subject and in_reply_to and _AUTO_SUBJECT.match(subject.lstrip()):
        return True
    if any(_AUTO_PRECEDENCE.search(value) for value in headers.get("precedence", ())):
        return True
    if any(_AUTO_SUBMITTED.search(value) for value in headers.get("auto-submitted", ())):
        return True
    return any(name in headers for name in _AUTO_MARKERS)


def _header_source(fetch: Mapping[str, Any]) -> Headers | None:
    """The header fields a FETCH brought (``BODY[HEADER.FIELDS (...)]`` or ``BODY[HEADER]``)."""
    for key, value in fetch.items():
        if key.startswith("BODY[HEADER.FIELDS") or key.startswith("BODY[HEADER]"):
            if isinstance(value, bytes | str):
                return header_fields(value)
            return {}
    return None


def _classify(
    data: dict[str, Any],
    headers: Mapping[str, Sequence[str]] | None,
    report: Report | None,
    special_use: str | None,
    in_reply_to: str | None,
) -> None:
    """Add ``isAutoReply``, the report fields and ``messageSpecialUse`` to ``data``."""
    if headers is not None and is_auto_reply(
        headers, subject=data.get("subject"), in_reply_to=in_reply_to
    ):
        data["isAutoReply"] = True
    if report is not None:
        data.update(report_fields(report))
    chosen = message_special_use(special_use)
    if chosen is not None:
        data["messageSpecialUse"] = chosen


def message_new(
    data: dict[str, Any], *, path: str, special_use: str | None, by_email_id: bool = True
) -> str | None:
    """Make a message's fields (:func:`imap_fetch_to_event`, :func:`graph_message_to_event`)
    ``messageNew`` data, in place: EmailEngine's ``path`` (after ``uid``) and
    ``seemsLikeNew``. Returns the key of the account's set of seen messages that decides
    ``seemsLikeNew`` when the event is stored (:attr:`relay.events.model.Event.seen_key`).

    ``seemsLikeNew`` is false in a ``\\Sent`` folder (and such a message does not join the
    set, as in EmailEngine); otherwise it is true here, and the store makes it false when
    the account has seen the key before. The key is ``emailId`` (RFC 8474: the same for
    every copy of a message), else ``messageId``; no key: true. Graph's id names one copy
    (a copy gets its own), so Graph messages (``by_email_id`` false) are keyed by
    ``messageId``, as the IMAP backend keys the same mailbox (Exchange has no OBJECTID).
    """
    fields = list(data.items())
    data.clear()
    for name, value in fields:
        data[name] = value
        if name == "uid":
            data["path"] = path
    data.setdefault("path", path)
    sent = message_special_use(special_use) == "\\Sent"
    data["seemsLikeNew"] = not sent
    if sent:
        return None
    key = data.get("emailId") if by_email_id else None
    return str(key or data.get("messageId") or "") or None


# -- events ---------------------------------------------------------------------------------


def imap_fetch_to_event(
    fetch: Mapping[str, Any],
    *,
    folder_no: int,
    uidvalidity: int,
    special_use: str | None = None,
) -> dict[str, Any]:
    """The ``messageNew`` data of one parsed FETCH (``FetchedMessage.attributes``).

    ``fetch`` holds upper-case item names as imapclient parses them: ``UID``, ``FLAGS``,
    ``ENVELOPE``, ``BODYSTRUCTURE``, ``INTERNALDATE``, ``RFC822.SIZE`` and, from servers
    with OBJECTID, ``EMAILID`` / ``THREADID``; optionally header fields
    (``BODY[HEADER.FIELDS (...)]`` or ``BODY[HEADER]``) and a report's parts
    (:func:`report_items`). Always present in the result: ``id, uid, flags, unseen, size,
    attachments, text`` (and ``date`` when the server sent one); header fields
    (``messageId, subject, from, sender, to, cc, bcc, replyTo, inReplyTo``) and
    ``emailId`` / ``threadId`` only when the message has them; ``flagged``, ``answered``,
    ``draft``, ``isAutoReply`` (only when header fields were fetched), ``isBounce``,
    ``isComplaint``, ``relatedMessageId`` only when true or known; ``messageSpecialUse``
    when ``special_use``, the folder's, is one of :data:`MESSAGE_SPECIAL_USES`.
    """
    uid = int(fetch["UID"])
    data: dict[str, Any] = {"id": message_id(folder_no, uidvalidity, uid), "uid": uid}
    email_id = _object_id(fetch.get("EMAILID"))
    if email_id:
        data["emailId"] = email_id
    thread_id = _object_id(fetch.get("THREADID"))
    if thread_id:
        data["threadId"] = thread_id
    envelope = fetch.get("ENVELOPE")
    if envelope is not None:
        if envelope.message_id:
            data["messageId"] = _text(envelope.message_id).strip()
        subject = decode_words(envelope.subject)
        if subject is not None:
            data["subject"] = subject
        _set_addresses(data, "from", envelope.from_, single=True)
        _set_addresses(data, "sender", envelope.sender, single=True)
        _set_addresses(data, "to", envelope.to)
        _set_addresses(data, "cc", envelope.cc)
        _set_addresses(data, "bcc", envelope.bcc)
        _set_addresses(data, "replyTo", envelope.reply_to)
        if envelope.in_reply_to:
            data["inReplyTo"] = _text(envelope.in_reply_to).strip()
    header_date = getattr(envelope, "date", None) if envelope is not None else None
    internal = fetch.get("INTERNALDATE")
    moment = header_date if isinstance(header_date, datetime) else internal
    if isinstance(moment, datetime):
        data["date"] = iso_datetime(moment)
    flags = visible_flags(fetch.get("FLAGS"))
    data["flags"] = flags
    data["unseen"] = "\\seen" not in {f.lower() for f in flags}
    data.update(flag_fields(flags))
    size = fetch.get("RFC822.SIZE")
    data["size"] = size if isinstance(size, int) else 0

    def make_id(part: str) -> str:
        return attachment_id(folder_no, uidvalidity, uid, part)

    bodystructure = fetch.get("BODYSTRUCTURE")
    data["attachments"] = attachments(bodystructure, make_id)
    data["text"] = text_info(data["id"], bodystructure)
    _classify(data, _header_source(fetch), imap_report(fetch), special_use, data.get("inReplyTo"))
    return data


def message_deleted(folder_no: int, uidvalidity: int, uid: int) -> dict[str, Any]:
    """The ``messageDeleted`` data: ``{id, uid}``."""
    return {"id": message_id(folder_no, uidvalidity, uid), "uid": uid}


def message_updated(
    folder_no: int,
    uidvalidity: int,
    uid: int,
    before: Iterable[bytes | str],
    after: Iterable[bytes | str],
) -> dict[str, Any] | None:
    """The ``messageUpdated`` data for a flag change, or None when nothing visible changed.

    ``{id, uid, changes: {flags: {added, deleted, value}}}`` (EmailEngine's names; ``removed``
    repeats ``deleted``, the name earlier versions of the relay used); ``value`` is the full
    new set.
    """
    old = visible_flags(before)
    new = visible_flags(after)
    added = [f for f in new if f not in old]
    removed = [f for f in old if f not in new]
    if not added and not removed:
        return None
    return {
        "id": message_id(folder_no, uidvalidity, uid),
        "uid": uid,
        "changes": {"flags": _flag_changes(added, removed, new)},
    }


def _flag_changes(added: list[str], deleted: list[str], value: list[str]) -> dict[str, Any]:
    return {"added": added, "deleted": deleted, "removed": deleted, "value": value}


def mailbox_reset(
    path: str,
    special_use: str | None,
    previous_uidvalidity: int,
    uidvalidity: int,
    uidnext: int | None,
) -> dict[str, Any]:
    """The ``mailboxReset`` data: the folder's UIDs were reassigned (UIDVALIDITY changed).

    EmailEngine's ``{path, name, specialUse (or false), uidValidity, prevUidValidity}``, plus
    ``uidNext`` and ``previousUidValidity`` (the name earlier versions of the relay used).
    Earlier message ids of the folder are void; nothing is reported for the messages the
    folder holds now, only what changes from here on.
    """
    data: dict[str, Any] = {
        "path": path,
        "name": path.rsplit("/", 1)[-1],
        "specialUse": special_use or False,
        "uidValidity": str(uidvalidity),
        "prevUidValidity": str(previous_uidvalidity),
        "previousUidValidity": str(previous_uidvalidity),
    }
    if uidnext is not None:
        data["uidNext"] = uidnext
    return data


# -- Microsoft Graph ------------------------------------------------------------------------

# What graph_message_to_event reads: the $select of every message the relay fetches.
GRAPH_FIELDS = (
    "id",
    "internetMessageId",
    "conversationId",
    "subject",
    "from",
    "sender",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "sentDateTime",
    "receivedDateTime",
    "isRead",
    "isDraft",
    "flag",
    "parentFolderId",
)
# What the watcher reads for each new message besides GRAPH_FIELDS: Graph returns the
# header only when asked by name, and a delta of every message's header would be large.
GRAPH_DETAIL_FIELDS = ("internetMessageHeaders",)
# Graph has no size property; MAPI's PR_MESSAGE_SIZE, read as an extended property, is it.
GRAPH_SIZE_PROPERTY = "Integer 0x0E08"
GRAPH_SIZE_EXPAND = f"singleValueExtendedProperties($filter=id eq '{GRAPH_SIZE_PROPERTY}')"


def graph_size(message: Mapping[str, Any]) -> int:
    """The message size from its expanded ``singleValueExtendedProperties`` (0 if absent)."""
    for item in message.get("singleValueExtendedProperties") or ():
        if not isinstance(item, Mapping):
            continue
        kind, _, tag = str(item.get("id") or "").partition(" ")
        try:
            if kind.lower() == "integer" and int(tag, 16) == 0x0E08:
                return int(item.get("value") or 0)
        except ValueError:
            continue
    return 0


def _graph_address(value: Any) -> dict[str, str] | None:
    if not isinstance(value, Mapping):
        return None
    inner = value.get("emailAddress")
    if not isinstance(inner, Mapping) or not inner.get("address"):
        return None
    return {"name": str(inner.get("name") or ""), "address": str(inner["address"])}


def _graph_addresses(values: Any) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for value in values or ():
        item = _graph_address(value)
        if item is not None:
            out.append(item)
    return out


def graph_flags(message: Mapping[str, Any]) -> list[str]:
    """IMAP's flags for a Graph message: ``\\Seen``, ``\\Flagged``, ``\\Draft``."""
    flags: list[str] = []
    if message.get("isRead"):
        flags.append("\\Seen")
    flag = message.get("flag")
    if isinstance(flag, Mapping) and str(flag.get("flagStatus", "")).lower() == "flagged":
        flags.append("\\Flagged")
    if message.get("isDraft"):
        flags.append("\\Draft")
    return flags


def _graph_date(value: Any) -> str | None:
    moment = parse_iso(value)
    return iso_datetime(moment) if moment is not None else None


def graph_headers(values: Any) -> Headers:
    """Graph's ``internetMessageHeaders`` (``[{name, value}]``) as lower-case name -> values."""
    pairs = [
        (str(item["name"]), str(item.get("value") or ""))
        for item in values or ()
        if isinstance(item, Mapping) and item.get("name")
    ]
    return header_items(pairs)


def graph_message_to_event(
    message: Mapping[str, Any],
    *,
    uid: int,
    special_use: str | None = None,
    report: Report | None = None,
) -> dict[str, Any]:
    """The ``messageNew`` data of a Graph message (its JSON, with :data:`GRAPH_FIELDS`).

    ``uid`` is the number the relay assigned to the message in its folder. The keys are
    those of :func:`imap_fetch_to_event`: ``emailId`` is Graph's id, ``threadId`` the
    conversation id; ``size`` comes from the expanded PR_MESSAGE_SIZE property (0 without it),
    attachments are not listed and ``text.encodedSize`` is empty. ``isAutoReply`` needs
    the message's ``internetMessageHeaders`` (:data:`GRAPH_DETAIL_FIELDS`); ``report``
    is what :func:`mime_report` found in its source; ``special_use`` is the folder's.
    """
    graph_id = str(message["id"])
    data: dict[str, Any] = {"id": graph_id, "uid": uid, "emailId": graph_id}
    if message.get("conversationId"):
        data["threadId"] = str(message["conversationId"])
    if message.get("internetMessageId"):
        data["messageId"] = str(message["internetMessageId"]).strip()
    if message.get("subject") is not None:
        data["subject"] = str(message["subject"])
    for key, source in (("from", "from"), ("sender", "sender")):
        single = _graph_address(message.get(source))
        if single is not None:
            data[key] = single
    for key, source in (
        ("to", "toRecipients"),
        ("cc", "ccRecipients"),
        ("bcc", "bccRecipients"),
        ("replyTo", "replyTo"),
    ):
        found = _graph_addresses(message.get(source))
        if found:
            data[key] = found
    moment = _graph_date(message.get("sentDateTime")) or _graph_date(
        message.get("receivedDateTime")
    )
    if moment is not None:
        data["date"] = moment
    flags = graph_flags(message)
    data["flags"] = flags
    data["unseen"] = "\\Seen" not in flags
    data.update(flag_fields(flags))
    data["size"] = graph_size(message)
    data["attachments"] = []
    data["text"] = {"id": graph_id, "encodedSize": {}}
    headers = None
    if "internetMessageHeaders" in message:
        headers = graph_headers(message.get("internetMessageHeaders"))
    in_reply_to = first_value(headers.get("in-reply-to")) if headers is not None else None
    _classify(data, headers, report, special_use, in_reply_to)
    return data


def graph_message_deleted(graph_id: str, uid: int) -> dict[str, Any]:
    """The ``messageDeleted`` data of a Graph message: ``{id, uid}``."""
    return {"id": graph_id, "uid": uid}


def graph_message_updated(
    graph_id: str, uid: int, before: Sequence[str], after: Sequence[str]
) -> dict[str, Any] | None:
    """The ``messageUpdated`` data of a Graph message whose flags changed, else None."""
    added = [f for f in after if f not in before]
    removed = [f for f in before if f not in after]
    if not added and not removed:
        return None
    return {
        "id": graph_id,
        "uid": uid,
        "changes": {"flags": _flag_changes(added, removed, list(after))},
    }


def graph_message_moved(
    graph_id: str,
    uid: int,
    *,
    source: tuple[str, str | None],
    target: tuple[str | None, str | None],
    target_uid: int | None,
    before: Sequence[str],
    after: Sequence[str] | None,
) -> dict[str, Any]:
    """The ``messageUpdated`` data of a Graph message that moved to another folder.

    ``source`` and ``target`` are ``(path, specialUse)``; the target path is None when the
    folder could not be found. ``changes`` holds ``path`` (``{old, new}``), ``specialUse``
    when either folder has one, ``uid`` when the target is watched too (its uid there), and
    ``flags`` when they changed on the way (``after`` None: not known).
    """
    changes: dict[str, Any] = {"path": {"old": source[0], "new": target[0]}}
    if source[1] is not None or target[1] is not None:
        changes["specialUse"] = {"old": source[1], "new": target[1]}
    if target_uid is not None:
        changes["uid"] = {"old": uid, "new": target_uid}
    if after is not None:
        flags = graph_message_updated(graph_id, uid, before, after)
        if flags is not None:
            changes["flags"] = flags["changes"]["flags"]
    return {"id": graph_id, "uid": uid, "changes": changes}
