"""The ``POST /v1/account/{id}/submit`` payload (the EmailEngine subset mailrelay supports)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field

from relay.api.account_schema import Email
from relay.api.models import Body

_HEADER_NAME = Annotated[str, Field(pattern=r"^[!-9;-~]{1,76}$")]
# Headers the builder writes itself: a caller setting them would contradict the payload.
RESERVED_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "reply-to", "subject", "message-id", "date", "mime-version"}
    | {"content-type", "content-transfer-encoding"}
)
# Headers that may come as headers (as EmailEngine allows) or as fields, not both.
THREAD_HEADERS = {"in-reply-to": "inReplyTo", "references": "references"}


def _base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None
    return value


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain line breaks")
    return value


OneLine = Annotated[str, AfterValidator(_one_line)]


def _no_empty(value: str) -> str | None:
    return value or None


class Address(Body):
    name: Annotated[OneLine, Field(max_length=256)] | None = None
    address: Email


class Attachment(Body):
    filename: Annotated[OneLine, Field(min_length=1, max_length=256)] | None = None
    content: Annotated[str, AfterValidator(_base64)]
    contentType: Annotated[str, Field(pattern=r"^[\w.+-]+/[\w.+-]+$")] | None = None
    cid: Annotated[OneLine, Field(min_length=1, max_length=256)] | None = None


class Reference(Body):
    """The message a submit replies to or forwards (EmailEngine's ``reference``)."""

    message: Annotated[str, Field(min_length=1, max_length=1024)]
    action: Literal["reply", "reply-all", "forward"] = "reply"
    # Quote the original's text (a reply) or include it (a forward) in the new message.
    inline: bool = False
    # A forward carries the original's attachments.
    forwardAttachments: bool = False
    # Send anyway when the referenced message is gone.
    ignoreMissing: bool = False
    # The referenced message must have this Message-ID (an id can be reused).
    messageId: Annotated[str, Field(max_length=996)] | None = None


class Submit(Body):
    """A message to send."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)

    from_: Address | None = Field(default=None, alias="from")
    to: list[Address] = Field(default_factory=list, max_length=1000)
    cc: list[Address] = Field(default_factory=list, max_length=1000)
    bcc: list[Address] = Field(default_factory=list, max_length=1000)
    replyTo: list[Address] = Field(default_factory=list, max_length=100)
    subject: Annotated[OneLine, Field(max_length=998)] | None = None
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = Field(default_factory=list, max_length=100)
    headers: dict[_HEADER_NAME, Annotated[OneLine, Field(max_length=998)]] = Field(
        default_factory=dict
    )
    messageId: Annotated[str, Field(pattern=r"^<[^<>\s@]+@[^<>\s@]+>$")] | None = None
    inReplyTo: Annotated[str, Field(pattern=r"^<[^<>\s]+>$")] | None = None
    references: (
        Annotated[OneLine, Field(max_length=998)]
        | list[Annotated[str, Field(pattern=r"^<[^<>\s]+>$")]]
    ) | None = None
    sendAt: datetime | None = None
    deliveryAttempts: Annotated[int, Field(ge=1, le=100)] | None = None
    reference: Reference | None = None
    # Upload a copy to the Sent folder (or not), over the account's ``copy``; named copy_
    # because BaseModel has a copy method.
    copy_: bool | None = Field(default=None, alias="copy")
    # The folder the sent copy goes to instead of the Sent folder ("" as not given, as
    # EmailEngine reads it).
    sentMailPath: Annotated[str, Field(max_length=1024), AfterValidator(_no_empty)] | None = None

    def recipients(self) -> list[str]:
        """Every envelope recipient, in order, without repeats."""
        seen: dict[str, None] = {}
        for a in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(a.address, None)
        return list(seen)
