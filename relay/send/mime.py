"""Build the MIME message of a submit with the standard library's ``email`` package."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from relay.send.model import RESERVED_HEADERS, THREAD_HEADERS, Address, Submit


class MimeError(ValueError):
    """The payload cannot become a message; ``field`` names the culprit."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _address(a: Address) -> HeaderAddress:
    local, _, domain = a.address.rpartition("@")
    return HeaderAddress(display_name=a.name or "", username=local, domain=domain)


def build(submit: Submit, sender: Address, *, now: datetime | None = None) -> EmailMessage:
    """The message to send: headers from the payload, text/html alternatives, attachments.

    Inline attachments (with ``cid``) go into a ``multipart/related`` with the HTML part.
    """
    msg = EmailMessage(policy=SMTP)
    msg["From"] = _address(sender)
    for header, addresses in (("To", submit.to), ("Cc", submit.cc), ("Reply-To", submit.replyTo)):
        if addresses:
            msg[header] = [_address(a) for a in addresses]
    msg["Subject"] = submit.subject or ""
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = submit.messageId or make_msgid(domain=sender.address.rpartition("@")[2])
    msg["MIME-Version"] = "1.0"
    if submit.inReplyTo:
        msg["In-Reply-To"] = submit.inReplyTo
    if submit.references:
        refs = submit.references
        msg["References"] = refs if isinstance(refs, str) else " ".join(refs)
    for name, value in submit.headers.items():
        lowered = name.lower()
        if lowered in RESERVED_HEADERS:
            raise MimeError(f"{name} is set from the payload, not as a header", f"headers.{name}")
        field = THREAD_HEADERS.get(lowered)
        if field is not None and getattr(submit, field):
            raise MimeError(f"{name} is given twice: as {field} and as a header", f"headers.{name}")
        msg[name] = value

    if submit.text is not None or submit.html is None:
        msg.set_content(submit.text or "")
    if submit.html is not None:
        if submit.text is not None:
            msg.add_alternative(submit.html, subtype="html")
        else:
            msg.set_content(submit.html, subtype="html")
    inline = [a for a in submit.attachments if a.cid]
    if inline and submit.html is not None:
        html_part = msg.get_body(("html",))
        assert html_part is not None
        for a in inline:
            maintype, subtype = _type(a.contentType)
            html_part.add_related(
                base64.b64decode(a.content),
                maintype=maintype,
                subtype=subtype,
                cid=f"<{a.cid}>",
                filename=a.filename,
                disposition="inline",
            )
    for a in submit.attachments:
        if a.cid and submit.html is not None:
            continue
        maintype, subtype = _type(a.contentType)
        msg.add_attachment(
            base64.b64decode(a.content),
            maintype=maintype,
            subtype=subtype,
            filename=a.filename or "attachment",
            cid=f"<{a.cid}>" if a.cid else None,
        )
    return msg


def _type(content_type: str | None) -> tuple[str, str]:
    maintype, _, subtype = (content_type or "application/octet-stream").partition("/")
    return maintype, subtype
