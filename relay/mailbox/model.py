"""What callers of the mailbox layer pass in and get back, whatever the backend.

Answers are EmailEngine's JSON shapes (plain dicts, ready for the API and for webhook
``data``); what goes in is typed here. :class:`Mailbox` is the one interface the API, the
webhook content fetch and the sent-copy step use; ``relay.mailbox.imap`` and
``relay.mailbox.graph`` implement it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from relay.errors import InputError, NotFound

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Download",
    "FlagChange",
    "Mailbox",
    "MailboxNotFound",
    "MessageNotFound",
    "Search",
    "TextKind",
    "TextRequest",
    "TextType",
    "check_path",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

TextType = Literal["plain", "html", "*"]
TextKind = Literal["plain", "html"]
# EmailEngine's default limit of text returned with a message.
DEFAULT_MAX_BYTES = 5 * 1024 * 1024


class MessageNotFound(NotFound):
    """The message (or text) id names nothing in this account."""

    code = "MessageNotFound"

    def __init__(
        self, message: str = "Requested message was not found", *, field: str | None = None
    ) -> None:
        super().__init__(message, field=field)


class MailboxNotFound(NotFound):
    """The folder path names no folder of the account."""

    code = "FolderNotFound"

    def __init__(self, message: str = "Requested mailbox folder was not found") -> None:
        super().__init__(message, field="path")


class AttachmentNotFound(NotFound):
    """The attachment id names no part of a message of this account."""

    code = "AttachmentNotFound"

    def __init__(self, message: str = "Requested attachment was not found") -> None:
        super().__init__(message)


class NotOffered(InputError):
    """The account's backend cannot do this (e.g. a send-only account has no mailbox)."""

    code = "NotSupported"


def check_path(path: str, field: str = "path") -> str:
    """A folder path as given, or InputError: empty, control characters, ``.``/``..`` parts."""
    if not path or len(path) > 1024:
        raise InputError(f"{field}: must be 1-1024 characters", field=field)
    if _CONTROL.search(path):
        raise InputError(f"{field}: must not contain control characters", field=field)
    if any(segment in (".", "..") for segment in path.split("/")):
        raise InputError(f"{field}: must not contain '.' or '..' segments", field=field)
    return path


@dataclass(frozen=True, slots=True)
class TextRequest:
    """Which text of a message to return, and how."""

    text_type: TextType = "*"
    max_bytes: int | None = DEFAULT_MAX_BYTES
    web_safe: bool = False
    embed_images: bool = False
    # Keep remote images and stylesheets in web-safe HTML (they are removed by default).
    allow_remote: bool = False

    def wants(self, kind: TextKind) -> bool:
        """Whether ``kind`` (plain or html) is asked for."""
        return self.text_type in ("*", kind)


@dataclass(frozen=True, slots=True)
class Search:
    """EmailEngine's ``search`` object; None means "do not filter on this"."""

    seen: bool | None = None
    flagged: bool | None = None
    answered: bool | None = None
    deleted: bool | None = None
    draft: bool | None = None
    from_: str | None = None
    to: str | None = None
    cc: str | None = None
    bcc: str | None = None
    subject: str | None = None
    body: str | None = None
    since: datetime | None = None
    before: datetime | None = None
    sent_since: datetime | None = None
    sent_before: datetime | None = None
    larger: int | None = None
    smaller: int | None = None
    uid: str | None = None
    message_id: str | None = None
    email_id: str | None = None
    thread_id: str | None = None
    header: dict[str, str | bool] = field(default_factory=dict)

    def empty(self) -> bool:
        """Whether nothing is filtered on."""
        return self == Search()


@dataclass(frozen=True, slots=True)
class FlagChange:
    """``flags {add, delete, set}`` of a message update (``set`` replaces the whole set)."""

    add: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    set: tuple[str, ...] | None = None


@dataclass
class Download:
    """A body to stream to a client; ``close`` releases what produces it (always call it)."""

    content_type: str
    chunks: AsyncGenerator[bytes, None]
    close: Callable[[], Awaitable[None]]
    filename: str | None = None
    size: int | None = None
    # ``attachment`` or ``inline`` for Content-Disposition.
    disposition: str = "attachment"

    async def release(self) -> None:
        """Stop reading (also midway) and release what produces the body."""
        await self.chunks.aclose()
        await self.close()

    async def read(self) -> bytes:
        """The whole body (for small ones: attachments put into JSON), then :meth:`release`."""
        try:
            return b"".join([chunk async for chunk in self.chunks])
        finally:
            await self.release()


class Mailbox(Protocol):
    """Reading and changing one account's mailbox (see the module docstring).

    Every message, attachment and text id is the one the account's webhooks carry; an id of
    another account raises :class:`MessageNotFound`, never another mailbox's data.
    """

    async def folders(self, *, counters: bool) -> list[dict[str, Any]]:
        """EmailEngine's mailbox list entries."""
        ...

    async def create_folder(self, path: str) -> dict[str, Any]:
        """``{path, mailboxId?, created}``."""
        ...

    async def rename_folder(
        self, path: str, new_path: str | None, *, subscribed: bool | None = None
    ) -> dict[str, Any]:
        """``{path, newPath?, renamed?, subscribed?}``: rename and/or (un)subscribe."""
        ...

    async def delete_folder(self, path: str) -> dict[str, Any]:
        """``{path, deleted}``."""
        ...

    async def messages(
        self, path: str, search: Search | None, page: int, page_size: int
    ) -> dict[str, Any]:
        """``{total, page, pages, messages}``: newest first."""
        ...

    async def message(
        self, message: str, text: TextRequest | None, *, mark_seen: bool = False
    ) -> dict[str, Any]:
        """EmailEngine's message details; ``text`` None leaves the text out."""
        ...

    async def text(self, message: str, text: TextRequest) -> dict[str, Any]:
        """``{plain?, html?, hasMore}``."""
        ...

    async def source(self, message: str) -> Download:
        """The raw RFC 822 message."""
        ...

    async def attachment(self, attachment: str) -> Download:
        """The decoded bytes of one attachment."""
        ...

    async def upload(self, path: str, raw: bytes, flags: tuple[str, ...]) -> dict[str, Any]:
        """Store ``raw`` in ``path``: ``{id?, path, uid?, messageId?}``."""
        ...

    async def update(self, message: str, change: FlagChange) -> dict[str, Any]:
        """``{flags: {add?, delete?, set?}}`` saying what was applied."""
        ...

    async def move(self, message: str, path: str) -> dict[str, Any]:
        """``{path, id, uid?}``: where the message is now."""
        ...

    async def delete(self, message: str, *, force: bool) -> dict[str, Any]:
        """``{deleted, moved?: {destination, message}}``: to Trash unless ``force``."""
        ...

    async def matching(self, path: str, search: Search) -> list[str]:
        """Ids of every message of ``path`` matching ``search`` (for the bulk forms)."""
        ...
