"""Mailboxes, folders and messages of the sandbox tenant, held in memory.

Every user and shared mailbox owns one :class:`Mailbox` with the well-known folders
``inbox``, ``sentitems``, ``drafts``, ``deleteditems``, ``junkemail`` and ``archive``
(display names may be localized) and the hidden ``recoverableitemsdeletions`` folder that
Graph's ``DELETE`` moves messages to, all directly under the mailbox's root. Folders nest:
a folder's display name is unique among its siblings. Folders other than the well-known
ones can be renamed, moved and deleted (into Deleted Items, then for good).

A message may carry file attachments and the raw MIME source it was made from (delivered
as MIME through the admin API, or uploaded through Graph); a message made from fields has
no source of its own, :mod:`relay.sandbox.graph.mime` writes one when asked.

A message has two ids, as in Exchange Online: its default id (``AAMk...``), which changes
whenever the message changes folder, and its immutable id (``AAkALg...``), which stays the
same for as long as the message stays in its mailbox: moves, Graph's ``DELETE`` (a move
into Recoverable Items) and sending a draft (a move into Sent Items) keep it. Lookups
accept either.

Each change bumps the mailbox's sequence number and stamps it on the message (or, for a
message that left a folder, on the folder's tombstone for it), which is all that delta
query needs. Every change is reported to ``listeners`` as a :class:`MailChange` after it
happened, so the notifier can turn it into change notifications.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from relay.errors import Conflict, InputError, NotFound
from relay.sandbox.graph.bodies import html_to_text

INBOX = "inbox"
SENT_ITEMS = "sentitems"
DRAFTS = "drafts"
DELETED_ITEMS = "deleteditems"
JUNK_EMAIL = "junkemail"
ARCHIVE = "archive"
RECOVERABLE_DELETIONS = "recoverableitemsdeletions"
MSG_FOLDER_ROOT = "msgfolderroot"

DEFAULT_FOLDER_NAMES: Mapping[str, str] = {
    INBOX: "Inbox",
    SENT_ITEMS: "Sent Items",
    DRAFTS: "Drafts",
    DELETED_ITEMS: "Deleted Items",
    JUNK_EMAIL: "Junk Email",
    ARCHIVE: "Archive",
}
_HIDDEN_FOLDER_NAMES: Mapping[str, str] = {RECOVERABLE_DELETIONS: "Deletions"}

IMPORTANCE = ("low", "normal", "high")
FLAG_STATUS = ("notFlagged", "flagged", "complete")
CHANGE_TYPES = ("created", "updated", "deleted")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SPACE = re.compile(r"\s+")
PREVIEW_LENGTH = 255


def is_address(value: str) -> bool:
    """Whether ``value`` looks like an email address."""
    return bool(_EMAIL.match(value))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def new_item_id() -> str:
    """A message id shaped like Exchange's: base64url, ``AAMk`` prefix, ``=`` padding."""
    return "AAMkA" + _b64(secrets.token_bytes(92))


def new_immutable_id() -> str:
    """An immutable message id shaped like Exchange's: base64url with the ``AAkALg`` prefix."""
    return "AAkALgAA" + _b64(secrets.token_bytes(60))


def looks_like_item_id(value: str) -> bool:
    """Whether ``value`` could be an Exchange id (default, immutable or folder id)."""
    return value.startswith(("AAMk", "AQMk", "AAkA"))


def new_folder_id(mailbox: str, name: str) -> str:
    """A folder id shaped like Exchange's, stable for a mailbox and folder name."""
    digest = hashlib.sha256(f"{mailbox}\0{name}".encode()).digest()
    return "AQMkA" + _b64(digest + digest[:14])[:-1] + "="


def new_attachment_id() -> str:
    """An attachment id shaped like Exchange's (base64url, ``AAMk`` prefix)."""
    return "AAMkA" + _b64(secrets.token_bytes(120))


def new_change_key() -> str:
    """An opaque change key; the message's etag is ``W/"<changeKey>"``."""
    return "CQAAABYAAA" + _b64(secrets.token_bytes(21))


def preview(content: str, content_type: str) -> str:
    """``bodyPreview``: the first 255 characters of the body as plain text."""
    text = html_to_text(content) if content_type == "html" else content
    return _SPACE.sub(" ", text).strip()[:PREVIEW_LENGTH]


@dataclass(frozen=True)
class Address:
    """An ``emailAddress``: display name and address."""

    name: str
    address: str


@dataclass(frozen=True)
class Attachment:
    """A file attachment (Graph's ``fileAttachment``): its bytes and how it is shown.

    ``content_id`` is the ``Content-ID`` without angle brackets; inline attachments are the
    ones a body shows (``cid:`` images), which ``hasAttachments`` does not count.
    """

    id: str
    name: str
    content_type: str
    data: bytes
    is_inline: bool = False
    content_id: str | None = None
    modified: float = 0.0

    @property
    def size(self) -> int:
        """The size in bytes."""
        return len(self.data)


@dataclass
class MessageInput:
    """What a new message is made of; everything has a sensible default.

    ``mime`` is the raw source the message was made from (kept byte for byte; None for a
    message made from fields, whose source is generated when asked for), ``headers`` its
    top-level header lines.
    """

    subject: str = ""
    body: str = ""
    body_type: str = "text"
    from_: Address | None = None
    sender: Address | None = None
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    is_read: bool = False
    is_draft: bool = False
    has_attachments: bool = False
    importance: str = "normal"
    flag_status: str = "notFlagged"
    categories: list[str] = field(default_factory=list)
    internet_message_id: str | None = None
    conversation_id: str | None = None
    received: float | None = None
    sent: float | None = None
    mime: bytes | None = None
    attachments: list[Attachment] = field(default_factory=list)
    headers: list[tuple[str, str]] | None = None


@dataclass
class Message:
    """One message in one folder. ``seq`` is the mailbox sequence of its last change.

    ``id`` is the default id (new in every folder); ``immutable_id`` never changes.
    ``mime`` is the source it was made from, if any (see :class:`MessageInput`).
    """

    id: str
    immutable_id: str
    folder_id: str
    subject: str
    body: str
    body_type: str
    from_: Address | None
    sender: Address | None
    to: list[Address]
    cc: list[Address]
    bcc: list[Address]
    reply_to: list[Address]
    is_read: bool
    is_draft: bool
    has_attachments: bool
    importance: str
    flag_status: str
    categories: list[str]
    internet_message_id: str
    conversation_id: str
    created: float
    modified: float
    received: float
    sent: float | None
    change_key: str
    seq: int
    mime: bytes | None = None
    attachments: list[Attachment] = field(default_factory=list)
    headers: list[tuple[str, str]] | None = None

    @property
    def etag(self) -> str:
        """The weak etag Graph derives from the change key."""
        return f'W/"{self.change_key}"'

    @property
    def body_preview(self) -> str:
        """The first 255 characters of the body as text."""
        return preview(self.body, self.body_type)

    @property
    def size(self) -> int:
        """Roughly what the message takes in the store, in bytes."""
        if self.mime is not None:
            return len(self.mime)
        return len(self.body.encode()) + sum(a.size for a in self.attachments) + 512

    def attachment(self, attachment_id: str) -> Attachment | None:
        """One of the message's attachments by id."""
        for found in self.attachments:
            if found.id == attachment_id:
                return found
        return None


@dataclass(frozen=True)
class Removed:
    """A message that left a folder: its ids there, and the sequence number of the change."""

    id: str
    immutable_id: str
    seq: int


@dataclass
class Folder:
    """A mail folder; ``removed`` maps default ids of messages that left it to tombstones."""

    id: str
    display_name: str
    well_known: str | None
    parent_id: str
    hidden: bool = False
    messages: dict[str, Message] = field(default_factory=dict)
    removed: dict[str, Removed] = field(default_factory=dict)
    sync_epoch: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def unread(self) -> int:
        """Number of unread messages."""
        return sum(1 for m in self.messages.values() if not m.is_read)


@dataclass
class Mailbox:
    """A user's or shared mailbox: its folders and a change sequence.

    ``immutable`` maps the immutable id of every message to its current default id.
    """

    email: str
    owner_id: str
    root_id: str
    folders: dict[str, Folder] = field(default_factory=dict)
    immutable: dict[str, str] = field(default_factory=dict)
    seq: int = 0

    def next_seq(self) -> int:
        """The sequence number of a new change."""
        self.seq += 1
        return self.seq

    def folder(self, key: str) -> Folder | None:
        """A folder by id or by well-known name (case-insensitive)."""
        found = self.folders.get(key)
        if found is not None:
            return found
        lowered = key.lower()
        for folder in self.folders.values():
            if folder.well_known == lowered:
                return folder
        return None

    def well_known(self, name: str) -> Folder:
        """A well-known folder, which every mailbox has."""
        found = self.folder(name)
        assert found is not None, name
        return found

    def children(self, parent_id: str) -> list[Folder]:
        """The folders directly under ``parent_id`` (the root's for top-level folders)."""
        return [f for f in self.folders.values() if f.parent_id == parent_id]

    def container(self, key: str) -> str | None:
        """A folder id (by id or well-known name), or the root's for ``msgfolderroot``."""
        if key == self.root_id or key.lower() == MSG_FOLDER_ROOT:
            return self.root_id
        found = self.folder(key)
        return found.id if found is not None else None

    def is_within(self, folder_id: str, ancestor_id: str) -> bool:
        """Whether ``folder_id`` is ``ancestor_id`` or lies somewhere below it."""
        current: str | None = folder_id
        while current is not None and current != self.root_id:
            if current == ancestor_id:
                return True
            found = self.folders.get(current)
            current = found.parent_id if found is not None else None
        return ancestor_id == self.root_id

    def subtree(self, folder_id: str) -> list[Folder]:
        """A folder and every folder below it, parents before children."""
        found = [self.folders[folder_id]]
        for folder in found:
            found.extend(self.children(folder.id))
        return found

    def find(self, message_id: str) -> Message | None:
        """A message by default or immutable id, in any folder."""
        current = self.immutable.get(message_id, message_id)
        for folder in self.folders.values():
            found = folder.messages.get(current)
            if found is not None:
                return found
        return None


@dataclass(frozen=True)
class MailChange:
    """One change of one message in one folder, as change notifications report it."""

    mailbox: str
    owner_id: str
    folder_id: str
    message_id: str
    immutable_id: str
    change_type: str
    etag: str


class MailStore:
    """Every mailbox of the tenant; ``now`` is the sandbox clock."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.mailboxes: dict[str, Mailbox] = {}
        self.listeners: list[Callable[[MailChange], None]] = []

    # -- mailboxes and folders -------------------------------------------------------

    def create_mailbox(
        self, email: str, owner_id: str, folder_names: Mapping[str, str] | None = None
    ) -> Mailbox:
        """Create the mailbox of ``email`` with its well-known folders.

        ``folder_names`` maps well-known names to localized display names.
        """
        names = dict(DEFAULT_FOLDER_NAMES)
        for key, value in (folder_names or {}).items():
            if key.lower() not in DEFAULT_FOLDER_NAMES:
                known = ", ".join(DEFAULT_FOLDER_NAMES)
                raise InputError(
                    f"folderNames: {key!r} is not a well-known folder ({known})",
                    field="folderNames",
                )
            if not value.strip():
                raise InputError(
                    "folderNames: display names must not be empty", field="folderNames"
                )
            names[key.lower()] = value
        mailbox = Mailbox(email=email, owner_id=owner_id, root_id=new_folder_id(email, "root"))
        for well_known, display_name in [*names.items(), *_HIDDEN_FOLDER_NAMES.items()]:
            folder = Folder(
                id=new_folder_id(email, well_known),
                display_name=display_name,
                well_known=well_known,
                parent_id=mailbox.root_id,
                hidden=well_known in _HIDDEN_FOLDER_NAMES,
            )
            mailbox.folders[folder.id] = folder
        self.mailboxes[email] = mailbox
        return mailbox

    def mailbox(self, email: str) -> Mailbox:
        """The mailbox at ``email``; NotFound otherwise."""
        found = self.mailboxes.get(email.strip().lower())
        if found is None:
            raise NotFound(f"mailbox: no mailbox {email!r}", field="mailbox")
        return found

    def folder(self, email: str, key: str) -> Folder:
        """A folder of a mailbox by id or well-known name; NotFound otherwise."""
        found = self.mailbox(email).folder(key)
        if found is None:
            raise NotFound(f"folder: no folder {key!r} in {email}", field="folder")
        return found

    def add_folder(
        self, email: str, display_name: str, *, parent: str | None = None, hidden: bool = False
    ) -> Folder:
        """Create a folder under ``parent`` (id or well-known name; the root by default).

        Display names are unique among siblings, ignoring case: Conflict otherwise.
        """
        mailbox = self.mailbox(email)
        parent_id = mailbox.root_id
        if parent is not None:
            found = mailbox.folder(parent)
            if found is None:
                raise NotFound(
                    f"parentFolderId: no folder {parent!r} in {email}", field="parentFolderId"
                )
            parent_id = found.id
        if not display_name.strip():
            raise InputError("displayName: must not be empty", field="displayName")
        self._check_name_free(mailbox, parent_id, display_name, "")
        folder = Folder(
            id=new_folder_id(email, f"custom:{secrets.token_hex(8)}"),
            display_name=display_name,
            well_known=None,
            parent_id=parent_id,
            hidden=hidden,
        )
        mailbox.folders[folder.id] = folder
        return folder

    def rename_folder(self, email: str, folder_key: str, display_name: str) -> Folder:
        """Give a folder another display name; Conflict if a sibling has it already.

        Well-known folders keep their names (InputError).
        """
        mailbox = self.mailbox(email)
        folder = self.folder(email, folder_key)
        if folder.well_known is not None:
            raise InputError(
                f"displayName: the well-known folder {folder.well_known!r} cannot be renamed",
                field="displayName",
            )
        if not display_name.strip():
            raise InputError("displayName: must not be empty", field="displayName")
        self._check_name_free(mailbox, folder.parent_id, display_name, folder.id)
        folder.display_name = display_name
        return folder

    def move_folder(self, email: str, folder_key: str, destination: str) -> Folder:
        """Move a folder, with everything in it, under ``destination``.

        ``destination`` is a folder id, a well-known name or ``msgfolderroot``. Well-known
        folders stay where they are, a folder cannot move below itself (InputError), and a
        sibling of the same name at the destination is a Conflict. Messages keep their ids:
        they stay in their folder, which moves.
        """
        mailbox = self.mailbox(email)
        folder = self.folder(email, folder_key)
        if folder.well_known is not None:
            raise InputError(
                f"folder: the well-known folder {folder.well_known!r} cannot be moved",
                field="folder",
            )
        target = mailbox.container(destination)
        if target is None:
            raise NotFound(f"destinationId: no folder {destination!r} in {email}", field="folder")
        if target != mailbox.root_id and mailbox.is_within(target, folder.id):
            raise InputError(
                "destinationId: a folder cannot move into itself or one of its subfolders",
                field="destinationId",
            )
        if target == folder.parent_id:
            return folder
        self._check_name_free(mailbox, target, folder.display_name, folder.id)
        folder.parent_id = target
        return folder

    def delete_folder(self, email: str, folder_key: str) -> None:
        """Graph's ``DELETE`` of a folder: it moves, with its contents, to Deleted Items.

        A folder already in Deleted Items is removed with its subfolders, and their
        messages are purged (reported as ``deleted``). A name that Deleted Items holds
        already gets a number appended (``Orders 1``): the sandbox's choice, Microsoft
        does not document one. Well-known folders cannot be deleted (InputError).
        """
        mailbox = self.mailbox(email)
        folder = self.folder(email, folder_key)
        if folder.well_known is not None:
            raise InputError(
                f"folder: the well-known folder {folder.well_known!r} cannot be deleted",
                field="folder",
            )
        deleted_items = mailbox.well_known(DELETED_ITEMS)
        if mailbox.is_within(folder.id, deleted_items.id):
            for gone in mailbox.subtree(folder.id):
                for message in list(gone.messages.values()):
                    self._take_out(mailbox, message)
                    del mailbox.immutable[message.immutable_id]
                del mailbox.folders[gone.id]
            return
        taken = {
            f.display_name.lower() for f in mailbox.children(deleted_items.id) if f is not folder
        }
        name, n = folder.display_name, 0
        while name.lower() in taken:
            n += 1
            name = f"{folder.display_name} {n}"
        folder.display_name = name
        folder.parent_id = deleted_items.id

    def _check_name_free(
        self, mailbox: Mailbox, parent_id: str, display_name: str, folder_id: str
    ) -> None:
        for sibling in mailbox.children(parent_id):
            # Recoverable Items lives outside the folders a user sees in Exchange.
            if sibling.id == folder_id or sibling.well_known in _HIDDEN_FOLDER_NAMES:
                continue
            if sibling.display_name.lower() == display_name.lower():
                raise Conflict(
                    f"displayName: a folder named {display_name!r} already exists there",
                    field="displayName",
                )

    def expire_delta(self, email: str, folder_key: str) -> Folder:
        """Invalidate every delta and skip token issued for a folder."""
        folder = self.folder(email, folder_key)
        folder.sync_epoch = secrets.token_hex(8)
        return folder

    # -- messages --------------------------------------------------------------------

    def message(self, email: str, message_id: str) -> Message:
        """A message of a mailbox; NotFound otherwise."""
        found = self.mailbox(email).find(message_id)
        if found is None:
            raise NotFound(f"message: no message {message_id!r} in {email}", field="message")
        return found

    def add_message(self, email: str, folder_key: str, data: MessageInput) -> Message:
        """Put a new message into a folder (delivery, a sent copy, a saved draft)."""
        mailbox = self.mailbox(email)
        folder = self.folder(email, folder_key)
        _check_choice("importance", data.importance, IMPORTANCE)
        _check_choice("flag", data.flag_status, FLAG_STATUS)
        now = self.now()
        domain = (data.from_.address if data.from_ else email).rpartition("@")[2]
        # Every copy of a message gets attachment ids of its own, as in Exchange.
        attachments = [replace(a, id=new_attachment_id(), modified=now) for a in data.attachments]
        message = Message(
            id=new_item_id(),
            immutable_id=new_immutable_id(),
            folder_id=folder.id,
            subject=data.subject,
            body=data.body,
            body_type=data.body_type,
            from_=data.from_,
            sender=data.sender or data.from_,
            to=list(data.to),
            cc=list(data.cc),
            bcc=list(data.bcc),
            reply_to=list(data.reply_to),
            is_read=data.is_read,
            is_draft=data.is_draft,
            has_attachments=data.has_attachments or any(not a.is_inline for a in attachments),
            importance=data.importance,
            flag_status=data.flag_status,
            categories=list(data.categories),
            internet_message_id=data.internet_message_id
            or f"<{secrets.token_hex(12).upper()}@{domain}>",
            conversation_id=data.conversation_id or "AAQkA" + _b64(secrets.token_bytes(30)),
            created=now,
            modified=now,
            received=data.received if data.received is not None else now,
            sent=data.sent if data.sent is not None else (None if data.is_draft else now),
            change_key=new_change_key(),
            seq=mailbox.next_seq(),
            mime=data.mime,
            attachments=attachments,
            headers=list(data.headers) if data.headers is not None else None,
        )
        folder.messages[message.id] = message
        mailbox.immutable[message.immutable_id] = message.id
        self._emit(mailbox, folder.id, message, "created")
        return message

    def update(
        self,
        email: str,
        message_id: str,
        *,
        is_read: bool | None = None,
        flag_status: str | None = None,
        categories: Iterable[str] | None = None,
        importance: str | None = None,
        subject: str | None = None,
        body: tuple[str, str] | None = None,
    ) -> Message:
        """Change a message's state; a new change key and sequence even if nothing differs.

        ``subject`` and ``body`` (``(content, contentType)``) may change on drafts only.
        """
        mailbox = self.mailbox(email)
        message = self.message(email, message_id)
        if flag_status is not None:
            _check_choice("flag", flag_status, FLAG_STATUS)
        if importance is not None:
            _check_choice("importance", importance, IMPORTANCE)
        if (subject is not None or body is not None) and not message.is_draft:
            raise InputError(
                "subject, body: only a draft's subject and body can be changed", field="body"
            )
        if is_read is not None:
            message.is_read = is_read
        if flag_status is not None:
            message.flag_status = flag_status
        if categories is not None:
            message.categories = list(categories)
        if importance is not None:
            message.importance = importance
        if subject is not None:
            message.subject = subject
        if body is not None:
            message.body, message.body_type = body
        if subject is not None or body is not None:
            # The draft no longer matches the source it was made from: Exchange writes a
            # new one from the item when asked.
            message.mime = None
            message.headers = None
        message.modified = self.now()
        message.change_key = new_change_key()
        message.seq = mailbox.next_seq()
        self._emit(mailbox, message.folder_id, message, "updated")
        return message

    def move(self, email: str, message_id: str, destination: str) -> Message:
        """Move a message to another folder; it gets a new default id there.

        Reported as ``deleted`` in the source folder and ``created`` in the destination.
        Moving to the folder it is in changes nothing and keeps the id.
        """
        mailbox = self.mailbox(email)
        message = self.message(email, message_id)
        target = self.folder(email, destination)
        if target.id == message.folder_id:
            return message
        return self._relocate(mailbox, message, target)

    def copy(self, email: str, message_id: str, destination: str) -> Message:
        """Copy a message into a folder: a new message (new ids) reported as ``created``."""
        mailbox = self.mailbox(email)
        message = self.message(email, message_id)
        target = self.folder(email, destination)
        now = self.now()
        copied = replace(
            message,
            id=new_item_id(),
            immutable_id=new_immutable_id(),
            folder_id=target.id,
            to=list(message.to),
            cc=list(message.cc),
            bcc=list(message.bcc),
            reply_to=list(message.reply_to),
            categories=list(message.categories),
            attachments=[replace(a, id=new_attachment_id()) for a in message.attachments],
            created=now,
            modified=now,
            change_key=new_change_key(),
            seq=mailbox.next_seq(),
        )
        target.messages[copied.id] = copied
        mailbox.immutable[copied.immutable_id] = copied.id
        self._emit(mailbox, target.id, copied, "created")
        return copied

    def _relocate(
        self, mailbox: Mailbox, message: Message, target: Folder, **changes: Any
    ) -> Message:
        """Take ``message`` out of its folder and put it, with ``changes``, into ``target``."""
        self._take_out(mailbox, message)
        moved = replace(
            message,
            id=new_item_id(),
            folder_id=target.id,
            modified=self.now(),
            change_key=new_change_key(),
            seq=mailbox.next_seq(),
            **changes,
        )
        target.messages[moved.id] = moved
        mailbox.immutable[moved.immutable_id] = moved.id
        self._emit(mailbox, target.id, moved, "created")
        return moved

    def _take_out(self, mailbox: Mailbox, message: Message) -> None:
        folder = mailbox.folders[message.folder_id]
        del folder.messages[message.id]
        folder.removed[message.id] = Removed(message.id, message.immutable_id, mailbox.next_seq())
        self._emit(mailbox, folder.id, message, "deleted")

    def send_draft(
        self, email: str, message_id: str, *, from_: Address, sender: Address
    ) -> Message:
        """Send a draft: it becomes the sent message in Sent Items, and recipients get it.

        Like a move, the message gets a new default id and keeps its immutable id; it is
        reported as ``deleted`` where the draft was and ``created`` in Sent Items. ``from_``
        and ``sender`` are whom it is sent as and by (checked by the caller).
        """
        mailbox = self.mailbox(email)
        message = self.message(email, message_id)
        if not message.is_draft:
            raise InputError(f"message: {message_id!r} is not a draft", field="message")
        if not (message.to or message.cc or message.bcc):
            raise InputError("to: a message needs at least one recipient", field="to")
        now = self.now()
        sent = self._relocate(
            mailbox,
            message,
            mailbox.well_known(SENT_ITEMS),
            is_draft=False,
            is_read=True,
            from_=from_,
            sender=sender,
            received=now,
            sent=now,
        )
        self.deliver(as_input(sent))
        return sent

    def deliver(self, data: MessageInput) -> list[Message]:
        """Put a sent message into the inbox of every recipient with a sandbox mailbox.

        The copies are unread and carry no Bcc; they share ``data``'s internetMessageId
        and conversationId, or the first copy's when ``data`` has none.
        """
        copy = replace(data, is_read=False, is_draft=False, bcc=[])
        delivered: list[Message] = []
        for address in dict.fromkeys(a.address.lower() for a in [*data.to, *data.cc, *data.bcc]):
            if address in self.mailboxes:
                received = self.add_message(address, INBOX, copy)
                copy.internet_message_id = received.internet_message_id
                copy.conversation_id = received.conversation_id
                delivered.append(received)
        return delivered

    def delete(self, email: str, message_id: str) -> None:
        """Graph's ``DELETE``: a soft delete into the hidden Recoverable Items folder."""
        mailbox = self.mailbox(email)
        message = self.message(email, message_id)
        deletions = mailbox.well_known(RECOVERABLE_DELETIONS)
        if message.folder_id == deletions.id:
            self.purge(email, message_id)
            return
        self.move(email, message_id, deletions.id)

    def purge(self, email: str, message_id: str) -> None:
        """``permanentDelete``: the message is gone from every folder."""
        mailbox = self.mailbox(email)
        message = self.message(email, message_id)
        self._take_out(mailbox, message)
        del mailbox.immutable[message.immutable_id]

    def _emit(self, mailbox: Mailbox, folder_id: str, message: Message, change_type: str) -> None:
        change = MailChange(
            mailbox=mailbox.email,
            owner_id=mailbox.owner_id,
            folder_id=folder_id,
            message_id=message.id,
            immutable_id=message.immutable_id,
            change_type=change_type,
            etag=message.etag,
        )
        for listener in list(self.listeners):
            listener(change)


def as_input(message: Message) -> MessageInput:
    """What a recipient's copy of a sent message is made of."""
    return MessageInput(
        subject=message.subject,
        body=message.body,
        body_type=message.body_type,
        from_=message.from_,
        sender=message.sender,
        to=list(message.to),
        cc=list(message.cc),
        bcc=list(message.bcc),
        reply_to=list(message.reply_to),
        has_attachments=message.has_attachments,
        importance=message.importance,
        internet_message_id=message.internet_message_id,
        conversation_id=message.conversation_id,
        sent=message.sent,
        mime=message.mime,
        attachments=list(message.attachments),
        headers=message.headers,
    )


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{name}: must be one of {', '.join(allowed)}", field=name)
