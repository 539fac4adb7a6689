"""MIME in and out of sandbox messages (pure).

- :func:`parse_mime` reads a raw message (RFC 5322 / MIME) into what a sandbox message is
  made of: subject, addresses, ``Message-ID``, ``Date``, importance, the body (the first
  HTML part if there is one, else the first plain-text part), the top-level header lines,
  and every other leaf part as a file attachment. Inline parts (``Content-Disposition:
  inline``, or a ``Content-ID`` without a disposition) are inline attachments with their
  ``contentId``; a further text part that is not the body becomes an attachment named
  ``ATT00001.txt`` and so on, as Exchange names them; a ``message/rfc822`` part is one
  attachment (its source), not walked into.
- :func:`source` is a message's MIME: the bytes it was made from, or a source written from
  its fields (``multipart/related`` for inline attachments, ``multipart/mixed`` for others).
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, formataddr

from relay.sandbox.graph.mail import Address, Attachment, Message

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_BODY_TYPES = ("text/plain", "text/html")
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$")


class MimeError(ValueError):
    """The bytes are not an internet message."""


@dataclass
class ParsedMime:
    """What a raw message says about itself."""

    subject: str = ""
    from_: Address | None = None
    sender: Address | None = None
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    internet_message_id: str | None = None
    sent: float | None = None
    importance: str = "normal"
    body: str = ""
    body_type: str = "text"
    attachments: list[Attachment] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)


def parse_mime(raw: bytes) -> ParsedMime:
    """Read a raw message; MimeError if it has no header at all."""
    if not raw.strip():
        raise MimeError("the message is empty")
    message = BytesParser(policy=policy.default).parsebytes(raw)
    if not message.keys():
        raise MimeError("the message has no header")
    parsed = ParsedMime(
        subject=_text_header(message, "subject"),
        from_=next(iter(_addresses(message, "from")), None),
        sender=next(iter(_addresses(message, "sender")), None),
        to=_addresses(message, "to"),
        cc=_addresses(message, "cc"),
        bcc=_addresses(message, "bcc"),
        reply_to=_addresses(message, "reply-to"),
        internet_message_id=_text_header(message, "message-id") or None,
        sent=_date(message),
        importance=_importance(message),
        headers=[(name, _FOLD.sub("", str(value)).strip()) for name, value in message.raw_items()],
    )
    bodies: dict[str, str] = {}
    _walk(message, bodies, parsed.attachments, top=True)
    if "text/html" in bodies:
        parsed.body, parsed.body_type = bodies["text/html"], "html"
    elif "text/plain" in bodies:
        parsed.body, parsed.body_type = bodies["text/plain"], "text"
    return parsed


def _walk(
    part: EmailMessage, bodies: dict[str, str], found: list[Attachment], *, top: bool
) -> None:
    kind = part.get_content_type()
    if kind == "message/rfc822" and not top:
        inner = part.get_payload(0)
        data = inner.as_bytes() if isinstance(inner, EmailMessage) else b""
        found.append(_attachment(part, data, len(found)))
        return
    if part.is_multipart():
        for sub in part.iter_parts():
            assert isinstance(sub, EmailMessage)
            _walk(sub, bodies, found, top=False)
        return
    disposition = part.get_content_disposition()
    is_body = kind in _BODY_TYPES and disposition != "attachment" and not part.get_filename()
    if is_body and kind not in bodies:
        bodies[kind] = _text(part)
        return
    payload = part.get_payload(decode=True)
    found.append(_attachment(part, payload if isinstance(payload, bytes) else b"", len(found)))


def _attachment(part: EmailMessage, data: bytes, index: int) -> Attachment:
    kind = part.get_content_type()
    disposition = part.get_content_disposition()
    content_id = (part.get("content-id") or "").strip().strip("<>").strip() or None
    name = part.get_filename() or part.get_param("name", header="content-type")
    if not isinstance(name, str) or not name:
        name = f"ATT{index + 1:05d}{mimetypes.guess_extension(kind) or '.dat'}"
    return Attachment(
        id="",
        name=name,
        content_type=kind,
        data=data,
        is_inline=disposition == "inline" or (disposition is None and content_id is not None),
        content_id=content_id,
    )


def _text(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def _text_header(message: EmailMessage, name: str) -> str:
    value = message.get(name)
    return "" if value is None else _FOLD.sub("", str(value)).strip()


def _addresses(message: EmailMessage, name: str) -> list[Address]:
    found: list[Address] = []
    for header in message.get_all(name) or []:
        for address in getattr(header, "addresses", ()):
            email = str(address.addr_spec).strip()
            if "@" not in email:
                continue
            found.append(Address(name=address.display_name or email, address=email))
    return found


def _date(message: EmailMessage) -> float | None:
    header = message.get("date")
    moment = getattr(header, "datetime", None)
    if not isinstance(moment, datetime):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _importance(message: EmailMessage) -> str:
    value = _text_header(message, "importance").lower()
    if value in ("low", "normal", "high"):
        return value
    priority = _text_header(message, "x-priority")[:1]
    return {"1": "high", "2": "high", "4": "low", "5": "low"}.get(priority, "normal")


# -- writing a source ----------------------------------------------------------------------


def source(message: Message) -> bytes:
    """The message's MIME: the bytes it was made from, or one written from its fields."""
    if message.mime is not None:
        return message.mime
    return build(message).as_bytes()


def headers(message: Message) -> list[tuple[str, str]]:
    """``internetMessageHeaders``: the top-level header lines of the message's source.

    A draft made from fields has none yet (it has not been through transport).
    """
    if message.headers is not None:
        return list(message.headers)
    if message.is_draft:
        return []
    return [(name, _FOLD.sub("", str(value)).strip()) for name, value in build(message).items()]


def build(message: Message) -> EmailMessage:
    """A MIME message written from a sandbox message's fields, with CRLF line ends."""
    out = EmailMessage(policy=policy.SMTP)
    if message.from_ is not None:
        out["From"] = _format([message.from_])
    if message.sender is not None and message.sender != message.from_:
        out["Sender"] = _format([message.sender])
    for name, values in (
        ("To", message.to),
        ("Cc", message.cc),
        ("Bcc", message.bcc),
        ("Reply-To", message.reply_to),
    ):
        if values:
            out[name] = _format(values)
    out["Subject"] = _one_line(message.subject)
    when = message.sent if message.sent is not None else message.received
    out["Date"] = format_datetime(datetime.fromtimestamp(when, UTC))
    out["Message-ID"] = _one_line(message.internet_message_id)
    if message.importance != "normal":
        out["Importance"] = message.importance
    out["MIME-Version"] = "1.0"
    out.set_content(
        _encodable(message.body),
        subtype="html" if message.body_type == "html" else "plain",
        charset="utf-8",
    )
    for attachment in message.attachments:
        if attachment.is_inline:
            maintype, subtype = _split_type(attachment.content_type)
            out.add_related(
                attachment.data,
                maintype=maintype,
                subtype=subtype,
                filename=_one_line(attachment.name),
                disposition="inline",
                cid=f"<{attachment.content_id}>" if attachment.content_id else None,
            )
    for attachment in message.attachments:
        if not attachment.is_inline:
            maintype, subtype = _split_type(attachment.content_type)
            out.add_attachment(
                attachment.data,
                maintype=maintype,
                subtype=subtype,
                filename=_one_line(attachment.name),
            )
    return out


def _format(addresses: Iterable[Address]) -> str:
    return ", ".join(
        a.address if a.name == a.address else formataddr((_one_line(a.name), a.address))
        for a in addresses
    )


def _encodable(value: str) -> str:
    # JSON may carry lone surrogates, which no charset can write.
    return value.encode("utf-8", "replace").decode("utf-8")


def _one_line(value: str) -> str:
    """A header value: line breaks would end the header (the email package refuses them)."""
    return " ".join(_encodable(value).splitlines())


def _split_type(content_type: str) -> tuple[str, str]:
    if not _CONTENT_TYPE.match(content_type) or content_type.lower().startswith("multipart/"):
        return "application", "octet-stream"
    maintype, _, subtype = content_type.lower().partition("/")
    return maintype, subtype
