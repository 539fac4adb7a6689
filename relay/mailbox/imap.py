"""The IMAP backend of :class:`~relay.mailbox.model.Mailbox`.

Ids are the webhooks' (``relay.events.normalize``): a message id names a folder by the
number the relay gave it (``imap_folders``), its UIDVALIDITY and UID; an attachment id adds
the IMAP part number. Any id is checked against this account's folders and the folder's
current UIDVALIDITY, so an id of another account, or one from before a mailbox reset,
finds nothing. A folder listed through the API that no listener watches gets its number
the same way a listener's would (the row is created on first use).

Text parts and attachments are fetched by part (``BODY.PEEK[2]``) so reading a message
never downloads its attachments; sources and attachments stream in ``chunk_bytes`` pieces
with partial FETCH (``BODY.PEEK[]<offset.length>``), which every IMAP server supports and
keeps memory flat whatever the size. Nothing sets ``\\Seen`` unless asked (``markAsSeen``).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from imapclient.datetime_util import format_criteria_date

from relay.errors import InputError
from relay.events import normalize, structure
from relay.imap.client import ImapClient
from relay.imap.errors import ImapCommandError
from relay.imap.parse import FetchedMessage, Mailbox, quote
from relay.imap.parse import Literal as LiteralArg
from relay.mailbox import content, decode
from relay.mailbox.model import (
    AttachmentNotFound,
    Download,
    FlagChange,
    MailboxNotFound,
    MessageNotFound,
    Search,
    TextKind,
    TextRequest,
    check_path,
)
from relay.mailbox.pool import ImapPool
from relay.store import Store
from relay.store import folders as folders_store

__all__ = ["ImapMailbox"]

_PART = re.compile(r"[1-9][0-9]{0,4}(\.[1-9][0-9]{0,4}){0,20}")
# Inline images embedded into HTML (embedAttachedImages) larger than this are left as cid:.
_EMBED_LIMIT = 2 * 1024 * 1024


def search_criteria(search: Search | None) -> list[bytes]:
    """``search`` as UID SEARCH criteria parts (literals for non-ASCII text)."""
    if search is None or search.empty():
        return [b"ALL"]
    parts: list[bytes] = []

    def add(*items: bytes) -> None:
        for item in items:
            parts.append(b" ")
            parts.append(item)

    for value, yes, no in (
        (search.seen, b"SEEN", b"UNSEEN"),
        (search.flagged, b"FLAGGED", b"UNFLAGGED"),
        (search.answered, b"ANSWERED", b"UNANSWERED"),
        (search.deleted, b"DELETED", b"UNDELETED"),
        (search.draft, b"DRAFT", b"UNDRAFT"),
    ):
        if value is not None:
            add(yes if value else no)
    for key, text in (
        (b"FROM", search.from_),
        (b"TO", search.to),
        (b"CC", search.cc),
        (b"BCC", search.bcc),
        (b"SUBJECT", search.subject),
        (b"BODY", search.body),
    ):
        if text is not None:
            add(key, quote(text))
    for key, moment in (
        (b"SINCE", search.since),
        (b"BEFORE", search.before),
        (b"SENTSINCE", search.sent_since),
        (b"SENTBEFORE", search.sent_before),
    ):
        if moment is not None:
            add(key, format_criteria_date(moment))
    if search.larger is not None:
        add(b"LARGER", str(search.larger).encode("ascii"))
    if search.smaller is not None:
        add(b"SMALLER", str(search.smaller).encode("ascii"))
    if search.uid is not None:
        add(b"UID", search.uid.encode("ascii"))
    if search.message_id is not None:
        add(b"HEADER", b"Message-ID", quote(search.message_id))
    if search.email_id is not None:
        add(b"EMAILID", search.email_id.encode("ascii"))
    if search.thread_id is not None:
        add(b"THREADID", search.thread_id.encode("ascii"))
    for name, wanted in search.header.items():
        add(b"HEADER", quote(name), quote("" if wanted is True else str(wanted)))
    if any(isinstance(p, LiteralArg) for p in parts):
        return [b"CHARSET UTF-8", *parts]
    return [b"ALL", *parts]


def _special_use(boxes: Sequence[Mailbox], path: str) -> str | None:
    for box in boxes:
        if box.name == path:
            return box.special_use or ("\\Inbox" if path.upper() == "INBOX" else None)
    return "\\Inbox" if path.upper() == "INBOX" else None


@dataclass(frozen=True, slots=True)
class _Located:
    """Where an id points: the folder (path, special use, number), UIDVALIDITY, UID, part."""

    path: str
    special_use: str | None
    folder_no: int
    uidvalidity: int
    uid: int
    section: str | None


class ImapMailbox:
    """One account's mailbox over IMAP, on connections of an :class:`ImapPool`."""

    def __init__(
        self,
        account: str,
        store: Store,
        pool: ImapPool,
        *,
        chunk_bytes: int,
        folders: Sequence[Any] | None = None,
    ) -> None:
        """``folders``: the account's ``imap_folders`` rows, when the caller just read them."""
        self.account = account
        self._store = store
        self._pool = pool
        self._chunk = chunk_bytes
        self._folders = folders

    # -- folders --------------------------------------------------------------------------

    async def _boxes(self, client: ImapClient) -> list[Mailbox]:
        return await client.list_mailboxes()

    async def _resolve(self, client: ImapClient, path: str) -> tuple[str, str | None]:
        """The folder ``path`` names (a special use like ``\\Sent`` allowed) and its use."""
        check_path(path)
        boxes = await self._boxes(client)
        if path.startswith("\\"):
            for box in boxes:
                if box.special_use and box.special_use.lower() == path.lower():
                    return box.name, box.special_use
            if path.lower() == "\\inbox":
                return "INBOX", "\\Inbox"
            raise MailboxNotFound()
        for box in boxes:
            if box.name == path or (path.upper() == "INBOX" and box.name.upper() == "INBOX"):
                return box.name, _special_use(boxes, box.name)
        raise MailboxNotFound()

    async def folders(self, *, counters: bool) -> list[dict[str, Any]]:
        async with self._pool.connection(self.account) as client:
            boxes = await self._boxes(client)
            subscribed = await client.subscribed()
            out: list[dict[str, Any]] = []
            for box in boxes:
                entry = _folder_entry(box, _special_use(boxes, box.name))
                entry["subscribed"] = box.name in subscribed
                if counters and "\\noselect" not in {f.lower() for f in box.flags}:
                    values = await client.status(box.name, ("MESSAGES", "UNSEEN", "UIDNEXT"))
                    entry["uidNext"] = values.get("UIDNEXT")
                    entry["status"] = {
                        "messages": values.get("MESSAGES", 0),
                        "unseen": values.get("UNSEEN", 0),
                    }
                out.append(entry)
        return out

    async def create_folder(self, path: str) -> dict[str, Any]:
        check_path(path)
        async with self._pool.connection(self.account) as client:
            boxes = await self._boxes(client)
            if any(box.name == path for box in boxes):
                return {"path": path, "created": False}
            await self._server(client.create(path), path)
        return {"path": path, "created": True}

    async def rename_folder(
        self, path: str, new_path: str | None, *, subscribed: bool | None = None
    ) -> dict[str, Any]:
        if new_path is not None:
            check_path(new_path, "newPath")
        async with self._pool.connection(self.account) as client:
            current, _ = await self._resolve(client, path)
            out: dict[str, Any] = {"path": current}
            target = current
            if new_path is not None and new_path != current:
                if client.selected == current:
                    await client.select("INBOX")
                await self._server(client.rename(current, new_path), new_path)
                out.update(newPath=new_path, renamed=True)
                target = new_path
            elif new_path is not None:
                out.update(newPath=new_path, renamed=False)
            if subscribed is not None:
                await self._server(client.subscribe(target, on=subscribed), target)
                out["subscribed"] = subscribed
        return out

    async def delete_folder(self, path: str) -> dict[str, Any]:
        async with self._pool.connection(self.account) as client:
            current, _ = await self._resolve(client, path)
            if current.upper() == "INBOX":
                raise InputError("path: INBOX cannot be deleted", field="path")
            await self._server(client.delete(current), current)
        return {"path": current, "deleted": True}

    async def _server(self, command: Any, path: str) -> None:
        """Run a mailbox command; the server's NO becomes a 400 naming the path."""
        try:
            await command
        except ImapCommandError as exc:
            raise InputError(
                f"path: the server refused {path!r}: {exc.text}", field="path"
            ) from exc

    # -- ids ------------------------------------------------------------------------------

    async def _folder_no(self, path: str, special_use: str | None) -> int:
        async with self._store.read() as conn:
            row = await folders_store.get(conn, self.account, path)
        if row is None:
            async with self._store.write() as conn:
                row = await folders_store.ensure(conn, self.account, path, special_use)
        return int(row["folder_no"])

    async def _rows(self) -> Sequence[Any]:
        if self._folders is None:
            async with self._store.read() as conn:
                self._folders = await folders_store.for_account(conn, self.account)
        return self._folders

    async def _locate(self, value: str, *, part: bool = False) -> _Located:
        """Where a message (or attachment) id of this account points."""
        error = AttachmentNotFound if part else MessageNotFound
        try:
            folder_no, uidvalidity, uid, section = normalize.parse_message_id(value)
        except ValueError:
            raise error() from None
        if (section is None) == part or (section is not None and not _PART.fullmatch(section)):
            raise error()
        for row in await self._rows():
            if int(row["folder_no"]) == folder_no:
                path = str(row["path"])
                special = row["special_use"] or ("\\Inbox" if path.upper() == "INBOX" else None)
                return _Located(path, special, folder_no, uidvalidity, uid, section)
        raise error()

    async def _select(self, client: ImapClient, path: str, uidvalidity: int | None = None) -> int:
        """SELECT ``path`` unless it is selected; the UIDVALIDITY, which must match if given.

        A pooled connection stays selected between reads: the server reports what arrived
        since with the next command, so the next UID FETCH finds new mail too.
        """
        current = client.selection
        if client.selected == path and current is not None:
            validity = current.uidvalidity or 0
        else:
            try:
                result = await client.select(path)
            except ImapCommandError:
                raise MailboxNotFound() from None
            validity = result.uidvalidity or 0
        if uidvalidity is not None and validity != uidvalidity:
            raise MessageNotFound()
        return validity

    async def _fetch_one(
        self, client: ImapClient, uid: int, items: Sequence[str]
    ) -> FetchedMessage:
        result = await client.uid_fetch(uid, list(items))
        found = result.by_uid().get(uid)
        if found is None:
            # A server may tell of new mail only after a command it may answer at leisure.
            await client.noop()
            found = (await client.uid_fetch(uid, list(items))).by_uid().get(uid)
        if found is None:
            raise MessageNotFound()
        return found

    def _items(self, client: ImapClient) -> list[str]:
        return list(normalize.imap_items(client.capabilities))

    # -- listing --------------------------------------------------------------------------

    async def messages(
        self, path: str, search: Search | None, page: int, page_size: int
    ) -> dict[str, Any]:
        async with self._pool.connection(self.account) as client:
            folder, special = await self._resolve(client, path)
            validity = await self._select(client, folder)
            found = await client.uid_search(search_criteria(search))
            uids = sorted(set(found.uids), reverse=True)
            total = len(uids)
            chosen = uids[page * page_size : (page + 1) * page_size]
            fetched = (
                (await client.uid_fetch(chosen, self._items(client))).by_uid() if chosen else {}
            )
        folder_no = await self._folder_no(folder, special)
        entries = [
            _entry(fetched[uid], folder_no, validity, special) for uid in chosen if uid in fetched
        ]
        return {
            "total": total,
            "page": page,
            "pages": max(1, math.ceil(total / page_size)),
            "messages": entries,
        }

    async def matching(self, path: str, search: Search) -> list[str]:
        async with self._pool.connection(self.account) as client:
            folder, special = await self._resolve(client, path)
            validity = await self._select(client, folder)
            found = await client.uid_search(search_criteria(search))
        folder_no = await self._folder_no(folder, special)
        return [normalize.message_id(folder_no, validity, uid) for uid in sorted(found.uids)]

    # -- one message ----------------------------------------------------------------------

    async def message(
        self, message: str, text: TextRequest | None, *, mark_seen: bool = False
    ) -> dict[str, Any]:
        at = await self._locate(message)
        uid = at.uid
        async with self._pool.connection(self.account) as client:
            await self._select(client, at.path, at.uidvalidity)
            fetched = await self._fetch_one(
                client, uid, [*self._items(client), "BODY.PEEK[HEADER]"]
            )
            entry = _entry(fetched, at.folder_no, at.uidvalidity, at.special_use, details=True)
            entry["path"] = at.path
            entry["headers"] = content.headers_of(
                normalize.body_item(fetched.attributes, "HEADER") or b""
            )
            if text is not None:
                entry["text"].update(await self._text(client, uid, fetched, text))
            if mark_seen and "\\Seen" not in entry["flags"]:
                await client.uid_store(uid, "+FLAGS.SILENT", ["\\Seen"])
                entry["flags"].append("\\Seen")
                entry.pop("unseen", None)
        return entry

    async def text(self, message: str, text: TextRequest) -> dict[str, Any]:
        at = await self._locate(message)
        async with self._pool.connection(self.account) as client:
            await self._select(client, at.path, at.uidvalidity)
            fetched = await self._fetch_one(client, at.uid, ["UID", "BODYSTRUCTURE"])
            return await self._text(client, at.uid, fetched, text)

    async def _text(
        self, client: ImapClient, uid: int, fetched: FetchedMessage, request: TextRequest
    ) -> dict[str, Any]:
        parts = structure.leaf_parts(fetched.bodystructure)
        plain_part, html_part = structure.text_parts(parts)
        kinds: tuple[tuple[TextKind, structure.Part | None], ...] = (
            ("plain", plain_part),
            ("html", html_part),
        )
        chosen = [(kind, part) for kind, part in kinds if part is not None and request.wants(kind)]
        # Encoded text is at most ~3x its decoded size (quoted-printable); read no more.
        limit = None if request.max_bytes is None else request.max_bytes * 3 + 1024
        short = {part.section: limit is not None and part.size > limit for _, part in chosen}
        raw = await self._read_parts(
            client,
            uid,
            [(part.section, limit if short[part.section] else None) for _, part in chosen],
        )
        texts: dict[str, str] = {}
        for kind, part in chosen:
            dec = decode.decoder(part.encoding)
            body = dec.feed(raw[part.section]) + (b"" if short[part.section] else dec.flush())
            texts[kind] = decode.to_text(body, part.charset)
        cut: dict[str, Any] = dict(
            content.text_of(
                texts.get("plain"),
                texts.get("html"),
                max_bytes=request.max_bytes,
                text_type=request.text_type,
            )
        )
        if any(short.values()):
            cut["hasMore"] = True
        if "html" in cut:
            if request.embed_images:
                cut["html"] = content.embed_images(
                    cut["html"], await self._images(client, uid, parts)
                )
            if request.web_safe:
                cut["html"] = content.web_safe_html(cut["html"], allow_remote=request.allow_remote)
                cut["webSafe"] = True
        return cut

    async def _read_parts(
        self, client: ImapClient, uid: int, wanted: Sequence[tuple[str, int | None]]
    ) -> dict[str, bytes]:
        """The raw bytes of several parts in one FETCH (each cut to its limit, if any)."""
        if not wanted:
            return {}
        items = ["UID"] + [
            f"BODY.PEEK[{section}]" + (f"<0.{limit}>" if limit is not None else "")
            for section, limit in wanted
        ]
        fetched = await self._fetch_one(client, uid, items)
        return {
            section: normalize.body_item(fetched.attributes, section) or b""
            for section, _ in wanted
        }

    async def _images(
        self, client: ImapClient, uid: int, parts: Sequence[structure.Part]
    ) -> dict[str, tuple[str, bytes]]:
        chosen = [
            part
            for part in parts
            if part.content_id
            and part.content_type.startswith("image/")
            and part.size <= _EMBED_LIMIT
        ]
        raw = await self._read_parts(client, uid, [(part.section, None) for part in chosen])
        return {
            str(part.content_id): (
                part.content_type,
                decode.decode_body(raw[part.section], part.encoding),
            )
            for part in chosen
        }

    # -- streams --------------------------------------------------------------------------

    async def source(self, message: str) -> Download:
        at = await self._locate(message)
        uid = at.uid
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(self._pool.connection(self.account))
            await self._select(client, at.path, at.uidvalidity)
            fetched = await self._fetch_one(client, uid, ["UID", "RFC822.SIZE"])
        except BaseException:
            await stack.aclose()
            raise
        size = fetched.size or 0
        return Download(
            content_type="message/rfc822",
            chunks=self._chunks(client, uid, "", size, None),
            close=stack.aclose,
            filename=f"{message}.eml",
            size=size,
        )

    async def attachment(self, attachment: str) -> Download:
        at = await self._locate(attachment, part=True)
        uid, section = at.uid, at.section
        assert section is not None
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(self._pool.connection(self.account))
            await self._select(client, at.path, at.uidvalidity)
            fetched = await self._fetch_one(client, uid, ["UID", "BODYSTRUCTURE"])
            part = structure.find(structure.leaf_parts(fetched.bodystructure), section)
            if part is None:
                raise AttachmentNotFound()
        except BaseException:
            await stack.aclose()
            raise
        identity = part.encoding in ("7bit", "8bit", "binary")
        return Download(
            content_type=part.content_type,
            chunks=self._chunks(client, uid, section, part.size, decode.decoder(part.encoding)),
            close=stack.aclose,
            filename=part.filename or f"attachment-{section}",
            size=part.size if identity else None,
            disposition="inline" if part.disposition == "inline" else "attachment",
        )

    async def _chunks(
        self,
        client: ImapClient,
        uid: int,
        section: str,
        size: int,
        dec: decode.Decoder | None,
    ) -> AsyncGenerator[bytes, None]:
        """``BODY.PEEK[section]`` in pieces of ``chunk_bytes`` (decoded through ``dec``)."""
        offset = 0
        while True:
            item = f"BODY.PEEK[{section}]<{offset}.{self._chunk}>"
            fetched = await self._fetch_one(client, uid, ["UID", item])
            piece = normalize.body_item(fetched.attributes, section) or b""
            offset += len(piece)
            data = dec.feed(piece) if dec is not None else piece
            if data:
                yield data
            if len(piece) < self._chunk or (size and offset >= size and not section):
                break
        if dec is not None:
            tail = dec.flush()
            if tail:
                yield tail

    # -- changes --------------------------------------------------------------------------

    async def upload(self, path: str, raw: bytes, flags: tuple[str, ...]) -> dict[str, Any]:
        async with self._pool.connection(self.account) as client:
            folder, special = await self._resolve(client, path)
            result = await client.append(folder, raw, flags=flags)
        out: dict[str, Any] = {"path": folder}
        if result.uid is not None and result.uidvalidity is not None:
            folder_no = await self._folder_no(folder, special)
            out["id"] = normalize.message_id(folder_no, result.uidvalidity, result.uid)
            out["uid"] = result.uid
            out["uidValidity"] = str(result.uidvalidity)
        message_id = content.headers_of(raw).get("message-id")
        if message_id:
            out["messageId"] = message_id[0].strip()
        return out

    async def update(self, message: str, change: FlagChange) -> dict[str, Any]:
        at = await self._locate(message)
        uid = at.uid
        out: dict[str, Any] = {}
        async with self._pool.connection(self.account) as client:
            await self._select(client, at.path, at.uidvalidity)
            await self._fetch_one(client, uid, ["UID"])
            if change.set is not None:
                await client.uid_store(uid, "FLAGS.SILENT", change.set)
                out["set"] = True
            if change.add:
                await client.uid_store(uid, "+FLAGS.SILENT", change.add)
                out["add"] = True
            if change.delete:
                await client.uid_store(uid, "-FLAGS.SILENT", change.delete)
                out["delete"] = True
        return {"flags": out}

    async def move(self, message: str, path: str) -> dict[str, Any]:
        at = await self._locate(message)
        uid = at.uid
        async with self._pool.connection(self.account) as client:
            target, special = await self._resolve(client, path)
            await self._select(client, at.path, at.uidvalidity)
            await self._fetch_one(client, uid, ["UID"])
            copied = await _move(client, uid, target)
        out: dict[str, Any] = {"path": target}
        new_uid = copied.uids.get(uid)
        if new_uid is not None and copied.uidvalidity is not None:
            folder_no = await self._folder_no(target, special)
            out["id"] = normalize.message_id(folder_no, copied.uidvalidity, new_uid)
            out["uid"] = new_uid
        return out

    async def delete(self, message: str, *, force: bool) -> dict[str, Any]:
        at = await self._locate(message)
        uid = at.uid
        async with self._pool.connection(self.account) as client:
            boxes = await self._boxes(client)
            trash = next(
                (b.name for b in boxes if (b.special_use or "").lower() == "\\trash"), None
            )
            here = (_special_use(boxes, at.path) or "").lower()
            await self._select(client, at.path, at.uidvalidity)
            await self._fetch_one(client, uid, ["UID"])
            if force or trash is None or here in ("\\trash", "\\junk"):
                await client.uid_store(uid, "+FLAGS.SILENT", ["\\Deleted"])
                await client.uid_expunge(uid)
                return {"deleted": True}
            copied = await _move(client, uid, trash)
        moved: dict[str, Any] = {"destination": trash}
        new_uid = copied.uids.get(uid)
        if new_uid is not None and copied.uidvalidity is not None:
            folder_no = await self._folder_no(trash, "\\Trash")
            moved["message"] = normalize.message_id(folder_no, copied.uidvalidity, new_uid)
        return {"deleted": False, "moved": moved}


async def _move(client: ImapClient, uid: int, target: str) -> Any:
    """UID MOVE where offered, else COPY + delete + expunge of just that message."""
    if "MOVE" in client.capabilities:
        return await client.uid_move(uid, target)
    copied = await client.uid_copy(uid, target)
    await client.uid_store(uid, "+FLAGS.SILENT", ["\\Deleted"])
    await client.uid_expunge(uid)
    return copied


def _folder_entry(box: Mailbox, special_use: str | None) -> dict[str, Any]:
    delimiter = box.delimiter
    name = box.name.rsplit(delimiter, 1)[-1] if delimiter else box.name
    entry: dict[str, Any] = {
        "path": box.name,
        "delimiter": delimiter,
        "name": name,
        "listed": True,
    }
    if delimiter and delimiter in box.name:
        entry["parentPath"] = box.name.rsplit(delimiter, 1)[0]
    if special_use:
        entry["specialUse"] = special_use
        entry["specialUseSource"] = "name" if box.name.upper() == "INBOX" else "extension"
    if "\\noinferiors" in {f.lower() for f in box.flags}:
        entry["noInferiors"] = True
    return entry


def _entry(
    fetched: FetchedMessage,
    folder_no: int,
    validity: int,
    special_use: str | None,
    *,
    details: bool = False,
) -> dict[str, Any]:
    """EmailEngine's message list entry (or, with ``details``, message details) of a FETCH.

    The fields are ``messageNew``'s (:func:`relay.events.normalize.imap_fetch_to_event`);
    as in EmailEngine's lists, ``unseen`` only when true and ``messageSpecialUse`` only in
    details.
    """
    data = normalize.imap_fetch_to_event(
        fetched.attributes,
        folder_no=folder_no,
        uidvalidity=validity,
        special_use=special_use if details else None,
    )
    if not data["unseen"]:
        del data["unseen"]
    if not data["attachments"]:
        del data["attachments"]
    if not data.get("subject"):
        data.pop("subject", None)
    if not details:
        data.pop("sender", None)
        data.pop("bcc", None)
    if details and special_use:
        data["specialUse"] = special_use
    return data
