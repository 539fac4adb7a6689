"""Reading and changing mailboxes: EmailEngine's mailbox and message routes.

Every route names an account; the account's backend (IMAP or Graph, ``relay.mailbox``)
does the work, so nothing here knows which one it talks to. Ids are the ones the webhooks
carry, and an id is only valid on its own account. Sources and attachments are streamed
to the client as they are read; a client that goes away stops the transfer.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from aiohttp import web
from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from relay.api.endpoint import Endpoint, json_response, read_body, read_query
from relay.api.keys import MAILBOXES, SETTINGS, STORE
from relay.api.models import Body, Out
from relay.api.outbox import check_size
from relay.api.referencing import referenced
from relay.auth.grants import Permission
from relay.errors import AuthError, ImapError, InputError, NotFound, SourceError, Unavailable
from relay.imap.errors import ImapCommandError
from relay.mailbox.model import (
    DEFAULT_MAX_BYTES,
    Download,
    FlagChange,
    Mailbox,
    Search,
    TextRequest,
    check_path,
)
from relay.send.mime import MimeError, build
from relay.send.model import Address, Reference, Submit
from relay.store import accounts as accounts_store

TAG = "Messages"
_CURSOR_PREFIX = "imap_"
# EmailEngine's order of special-use folders in a listing; the rest follow by path.
_SPECIAL_ORDER = (
    "\\Inbox",
    "\\Flagged",
    "\\Sent",
    "\\Drafts",
    "\\All",
    "\\Archive",
    "\\Junk",
    "\\Trash",
)


# -- shapes ---------------------------------------------------------------------------------


class Query(Body):
    # Query strings: other arguments (access_token) are not ours to refuse.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Flag = Annotated[str, Field(min_length=1, max_length=128)]
Flags = Annotated[list[Flag], BeforeValidator(_listify), Field(max_length=100)]
Path = Annotated[str, Field(min_length=1, max_length=1024)]
# In a query string: short enough that a URL stays within what HTTP servers read (8 KiB)
# even with every character percent-encoded.
QueryPath = Annotated[str, Field(min_length=1, max_length=256)]


class Counters(Query):
    counters: bool = False


class MailboxEntry(Out):
    model_config = ConfigDict(extra="allow")
    path: str
    name: str
    delimiter: str | None = None


class MailboxList(Out):
    mailboxes: list[MailboxEntry]


class MailboxCreate(Body):
    path: Annotated[Path | list[Annotated[str, Field(min_length=1, max_length=256)]], Field()]


class MailboxRename(Body):
    path: Path
    newPath: Path | list[Annotated[str, Field(min_length=1, max_length=256)]] | None = None
    subscribed: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> MailboxRename:
        if self.newPath is None and self.subscribed is None:
            raise ValueError("newPath: newPath or subscribed is required")
        return self


class PathQuery(Query):
    path: QueryPath


class MailboxChanged(Out):
    model_config = ConfigDict(extra="allow")
    path: str


class ListQuery(Query):
    path: QueryPath
    cursor: Annotated[str, Field(max_length=256)] | None = None
    page: int = Field(default=0, ge=0, le=1_048_576)
    pageSize: int = Field(default=20, ge=1, le=1000)


class SearchIn(Body):
    """EmailEngine's ``search`` object (what each backend can search on)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, populate_by_name=True)
    seen: bool | None = None
    unseen: bool | None = None
    flagged: bool | None = None
    answered: bool | None = None
    deleted: bool | None = None
    draft: bool | None = None
    from_: Annotated[str, Field(max_length=256)] | None = Field(default=None, alias="from")
    to: Annotated[str, Field(max_length=256)] | None = None
    cc: Annotated[str, Field(max_length=256)] | None = None
    bcc: Annotated[str, Field(max_length=256)] | None = None
    subject: Annotated[str, Field(max_length=2560)] | None = None
    body: Annotated[str, Field(max_length=256)] | None = None
    since: datetime | None = None
    before: datetime | None = None
    sentSince: datetime | None = None
    sentBefore: datetime | None = None
    larger: int | None = Field(default=None, ge=0, le=1024**3)
    smaller: int | None = Field(default=None, ge=0, le=1024**3)
    uid: Annotated[str, Field(max_length=8192, pattern=r"^[0-9:,*]+$")] | None = None
    emailId: Annotated[str, Field(max_length=256, pattern=r"^[A-Za-z0-9_.=+-]+$")] | None = None
    threadId: Annotated[str, Field(max_length=256, pattern=r"^[A-Za-z0-9_.=+-]+$")] | None = None
    header: dict[Annotated[str, Field(pattern=r"^[!-9;-~]{1,76}$")], str | bool] = Field(
        default_factory=dict, max_length=20
    )

    def to_search(self) -> Search:
        seen = self.seen
        if self.unseen is not None and seen is None:
            seen = not self.unseen
        header = dict(self.header)
        message_id = None
        for name in list(header):
            if name.lower() == "message-id" and isinstance(header[name], str):
                message_id = str(header.pop(name))
        return Search(
            seen=seen,
            flagged=self.flagged,
            answered=self.answered,
            deleted=self.deleted,
            draft=self.draft,
            from_=self.from_,
            to=self.to,
            cc=self.cc,
            bcc=self.bcc,
            subject=self.subject,
            body=self.body,
            since=self.since,
            before=self.before,
            sent_since=self.sentSince,
            sent_before=self.sentBefore,
            larger=self.larger,
            smaller=self.smaller,
            uid=self.uid,
            message_id=message_id,
            email_id=self.emailId,
            thread_id=self.threadId,
            header=header,
        )


class SearchBody(Body):
    search: SearchIn


class MessageEntry(Out):
    model_config = ConfigDict(extra="allow")
    id: str


class MessageList(Out):
    total: int
    page: int
    pages: int
    nextPageCursor: str | None
    prevPageCursor: str | None
    messages: list[MessageEntry]


class MessageQuery(Query):
    textType: Literal["plain", "html", "*"] | None = None
    maxBytes: int | None = Field(default=None, ge=0, le=1024**3)
    webSafeHtml: bool = False
    preProcessHtml: bool = False
    embedAttachedImages: bool = False
    markAsSeen: bool = False
    documentStore: bool | None = None


class TextQuery(Query):
    textType: Literal["plain", "html", "*"] = "*"
    maxBytes: int | None = Field(default=None, ge=0, le=1024**3)
    webSafeHtml: bool = False


class TextOut(Out):
    plain: str | None = None
    html: str | None = None
    hasMore: bool
    webSafe: bool | None = None


class FlagUpdate(Body):
    add: Flags | None = None
    delete: Flags | None = None
    set: Flags | None = None


class MessageUpdate(Body):
    flags: FlagUpdate | None = None
    labels: FlagUpdate | None = None

    def change(self) -> FlagChange:
        flags = self.flags or FlagUpdate()
        if flags.set is not None:
            return FlagChange(set=tuple(flags.set))
        return FlagChange(add=tuple(flags.add or ()), delete=tuple(flags.delete or ()))


class Updated(Out):
    model_config = ConfigDict(extra="allow")


class MoveBody(Body):
    path: Path


class Moved(Out):
    model_config = ConfigDict(extra="allow")
    path: str


class ForceQuery(Query):
    force: bool = False


class DeletedOut(Out):
    model_config = ConfigDict(extra="allow")
    deleted: bool


class BulkUpdate(Body):
    search: SearchIn
    update: MessageUpdate


class BulkMove(Body):
    search: SearchIn
    path: Path


class BulkPathForce(Query):
    path: QueryPath
    force: bool = False


class Upload(Body):
    """``POST /v1/account/{id}/message``: ``raw`` MIME (base64), or the parts to build it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)
    path: Path
    flags: Flags = Field(default_factory=list)
    internalDate: datetime | None = None
    raw: str | None = None
    from_: Address | None = Field(default=None, alias="from")
    to: list[Address] = Field(default_factory=list, max_length=1000)
    cc: list[Address] = Field(default_factory=list, max_length=1000)
    bcc: list[Address] = Field(default_factory=list, max_length=1000)
    replyTo: list[Address] = Field(default_factory=list, max_length=100)
    subject: str | None = Field(default=None, max_length=998)
    text: str | None = None
    html: str | None = None
    attachments: list[dict[str, Any]] = Field(default_factory=list, max_length=100)
    headers: dict[str, str] = Field(default_factory=dict)
    messageId: str | None = None
    # EmailEngine's: the message is a reply to or a forward of this one (a draft, say).
    reference: Reference | None = None

    @model_validator(mode="after")
    def _raw_or_parts(self) -> Upload:
        composed = self.model_fields_set - {"path", "flags", "internalDate", "raw"}
        if self.raw is not None and composed:
            raise ValueError(f"raw: cannot be combined with {sorted(composed)[0]}")
        return self

    def raw_bytes(self) -> bytes | None:
        """The given ``raw`` MIME, decoded; None when the message is built from parts."""
        if self.raw is None:
            return None
        try:
            return base64.b64decode(self.raw, validate=True)
        except (binascii.Error, ValueError):
            raise InputError("raw: must be base64", field="raw") from None

    def submit(self) -> Submit:
        """The parts as the submit model the MIME builder takes."""
        payload = self.model_dump(
            by_alias=True,
            exclude_unset=True,
            exclude={"path", "flags", "internalDate", "raw", "from_", "reference"},
        )
        try:
            return Submit.model_validate(payload)
        except ValueError as exc:
            raise InputError(str(exc).splitlines()[0]) from None


# -- helpers --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _mailbox(request: web.Request) -> AsyncIterator[Mailbox]:
    """The account's mailbox; server failures become EmailEngine's 503s (or a 400)."""
    account = request.match_info["account"]
    try:
        yield await request.app[MAILBOXES].open(account)
    except ImapCommandError as exc:
        raise InputError(f"The server refused the request: {exc.text or exc.status}") from exc
    except AuthError as exc:
        raise Unavailable(
            f"Requested account can not be authenticated: {exc}", code="AuthenticationFails"
        ) from exc
    except ImapError as exc:
        raise Unavailable(
            "IMAP connection is currently not available for requested account"
        ) from exc
    except SourceError as exc:
        raise Unavailable(f"The mailbox server failed: {exc}", code="GraphUnavailable") from exc


def _page(query: ListQuery) -> int:
    if not query.cursor:
        return query.page
    prefix, _, rest = query.cursor.partition("_")
    if f"{prefix}_" != _CURSOR_PREFIX:
        raise InputError("cursor: Invalid cursor", field="cursor")
    try:
        value = json.loads(base64.urlsafe_b64decode(rest + "=" * (-len(rest) % 4)))
        page = int(value["page"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InputError("cursor: Invalid paging cursor", field="cursor") from None
    if not 0 <= page <= 1_048_576:
        raise InputError("cursor: Invalid paging cursor", field="cursor")
    return page


def _cursor(page: int) -> str:
    raw = json.dumps({"page": page}, separators=(",", ":")).encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _list_answer(found: dict[str, Any], page: int, page_size: int) -> dict[str, Any]:
    total = int(found["total"])
    pages = max(1, math.ceil(total / page_size))
    return {
        "total": total,
        "page": page,
        "pages": pages,
        "nextPageCursor": _cursor(page + 1) if page + 1 < pages else None,
        "prevPageCursor": _cursor(page - 1) if page > 0 else None,
        "messages": found["messages"],
    }


def _joined(value: str | list[str], delimiter: str = "/") -> str:
    return delimiter.join(value) if isinstance(value, list) else value


def _folder_order(entry: dict[str, Any]) -> tuple[int, str]:
    use = entry.get("specialUse")
    rank = _SPECIAL_ORDER.index(use) if use in _SPECIAL_ORDER else len(_SPECIAL_ORDER)
    return rank, str(entry["path"])


def _disposition(kind: str, filename: str | None) -> str:
    """``Content-Disposition`` with an ASCII name and the RFC 5987 UTF-8 one when needed."""
    if not filename:
        return kind
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "").replace("\\", "")
    ascii_name = "".join(c if c.isprintable() else "_" for c in ascii_name)
    value = f'{kind}; filename="{ascii_name}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


async def _stream(request: web.Request, download: Download) -> web.StreamResponse:
    """Send ``download`` in chunks; a client that goes away ends the transfer at once."""
    response = web.StreamResponse(
        headers={
            "Content-Type": download.content_type,
            "Content-Disposition": _disposition(download.disposition, download.filename),
        }
    )
    if download.size is not None:
        response.content_length = download.size
    try:
        await response.prepare(request)
        async for chunk in download.chunks:
            await response.write(chunk)
        await response.write_eof()
    finally:
        # Also when the client went away mid-way (write raised): stop reading at once.
        await download.release()
    return response


# -- folders --------------------------------------------------------------------------------


async def list_mailboxes(request: web.Request) -> web.Response:
    query = read_query(request, Counters)
    async with _mailbox(request) as mailbox:
        entries = await mailbox.folders(counters=query.counters)
    entries.sort(key=_folder_order)
    return json_response({"mailboxes": entries})


async def create_mailbox(request: web.Request) -> web.Response:
    body = await read_body(request, MailboxCreate)
    path = check_path(_joined(body.path))
    async with _mailbox(request) as mailbox:
        return json_response(await mailbox.create_folder(path))


async def rename_mailbox(request: web.Request) -> web.Response:
    body = await read_body(request, MailboxRename)
    check_path(body.path)
    new_path = None if body.newPath is None else check_path(_joined(body.newPath), "newPath")
    async with _mailbox(request) as mailbox:
        return json_response(
            await mailbox.rename_folder(body.path, new_path, subscribed=body.subscribed)
        )


async def delete_mailbox(request: web.Request) -> web.Response:
    query = read_query(request, PathQuery)
    check_path(query.path)
    async with _mailbox(request) as mailbox:
        return json_response(await mailbox.delete_folder(query.path))


# -- messages -------------------------------------------------------------------------------


async def list_messages(request: web.Request) -> web.Response:
    query = read_query(request, ListQuery)
    check_path(query.path)
    page = _page(query)
    async with _mailbox(request) as mailbox:
        found = await mailbox.messages(query.path, None, page, query.pageSize)
    return json_response(_list_answer(found, page, query.pageSize))


async def search_messages(request: web.Request) -> web.Response:
    query = read_query(request, ListQuery)
    check_path(query.path)
    body = await read_body(request, SearchBody)
    page = _page(query)
    async with _mailbox(request) as mailbox:
        found = await mailbox.messages(query.path, body.search.to_search(), page, query.pageSize)
    return json_response(_list_answer(found, page, query.pageSize))


def _text_request(query: MessageQuery) -> TextRequest | None:
    web_safe = query.webSafeHtml or query.preProcessHtml
    if query.textType is None and not web_safe:
        return None
    return TextRequest(
        text_type="*" if query.webSafeHtml else (query.textType or "*"),
        max_bytes=query.maxBytes or None,
        web_safe=web_safe,
        embed_images=query.embedAttachedImages or query.webSafeHtml,
    )


async def get_message(request: web.Request) -> web.Response:
    query = read_query(request, MessageQuery)
    async with _mailbox(request) as mailbox:
        details = await mailbox.message(
            request.match_info["message"], _text_request(query), mark_seen=query.markAsSeen
        )
    return json_response(details)


async def get_text(request: web.Request) -> web.Response:
    query = read_query(request, TextQuery)
    text = TextRequest(
        text_type=query.textType,
        max_bytes=query.maxBytes or DEFAULT_MAX_BYTES,
        web_safe=query.webSafeHtml,
    )
    async with _mailbox(request) as mailbox:
        return json_response(await mailbox.text(request.match_info["text"], text))


async def get_source(request: web.Request) -> web.StreamResponse:
    async with _mailbox(request) as mailbox:
        download = await mailbox.source(request.match_info["message"])
        return await _stream(request, download)


async def get_attachment(request: web.Request) -> web.StreamResponse:
    async with _mailbox(request) as mailbox:
        download = await mailbox.attachment(request.match_info["attachment"])
        return await _stream(request, download)


async def upload_message(request: web.Request) -> web.Response:
    body = await read_body(request, Upload)
    check_path(body.path)
    async with request.app[STORE].read() as conn:
        row = await accounts_store.get(conn, request.match_info["account"])
    if row is None:
        raise NotFound("Account record was not found for requested ID", field="account")
    raw = body.raw_bytes()
    if raw is None:
        raw = await _compose(request, body, row)
        check_size(raw, request.app[SETTINGS].send, field="attachments")
    else:
        check_size(raw, request.app[SETTINGS].send, field="raw")
    async with _mailbox(request) as mailbox:
        return json_response(await mailbox.upload(body.path, raw, tuple(body.flags)))


async def _compose(request: web.Request, body: Upload, row: Mapping[Any, Any]) -> bytes:
    """The message built from the upload's parts, completed from its ``reference``; from the
    account's own address unless it says otherwise (as a submit is)."""
    own = str(row["delegated_user"] or row["email"])
    submit = body.submit()
    if body.reference is not None:
        addresses = {own.lower(), str(row["email"]).lower()}
        submit, _ = await referenced(
            request, request.match_info["account"], submit, body.reference, addresses
        )
    try:
        return bytes(build(submit, body.from_ or Address(address=own)))
    except MimeError as exc:
        raise InputError(str(exc), field=exc.field) from None


async def update_message(request: web.Request) -> web.Response:
    body = await read_body(request, MessageUpdate)
    async with _mailbox(request) as mailbox:
        return json_response(await mailbox.update(request.match_info["message"], body.change()))


async def move_message(request: web.Request) -> web.Response:
    body = await read_body(request, MoveBody)
    check_path(body.path)
    async with _mailbox(request) as mailbox:
        return json_response(await mailbox.move(request.match_info["message"], body.path))


async def delete_message(request: web.Request) -> web.Response:
    query = read_query(request, ForceQuery)
    async with _mailbox(request) as mailbox:
        return json_response(await mailbox.delete(request.match_info["message"], force=query.force))


# -- bulk -----------------------------------------------------------------------------------


async def bulk_update(request: web.Request) -> web.Response:
    query = read_query(request, PathQuery)
    check_path(query.path)
    body = await read_body(request, BulkUpdate)
    change = body.update.change()
    applied: dict[str, Any] = {}
    async with _mailbox(request) as mailbox:
        for message in await mailbox.matching(query.path, body.search.to_search()):
            applied.update((await mailbox.update(message, change))["flags"])
    return json_response({"flags": applied})


async def bulk_move(request: web.Request) -> web.Response:
    query = read_query(request, PathQuery)
    check_path(query.path)
    body = await read_body(request, BulkMove)
    check_path(body.path)
    id_map: list[list[str]] = []
    target = body.path
    async with _mailbox(request) as mailbox:
        for message in await mailbox.matching(query.path, body.search.to_search()):
            moved = await mailbox.move(message, body.path)
            target = moved["path"]
            if "id" in moved:
                id_map.append([message, moved["id"]])
    return json_response({"path": target, "idMap": id_map})


async def bulk_delete(request: web.Request) -> web.Response:
    query = read_query(request, BulkPathForce)
    check_path(query.path)
    body = await read_body(request, SearchBody)
    id_map: list[list[str]] = []
    destination: str | None = None
    deleted = False
    async with _mailbox(request) as mailbox:
        for message in await mailbox.matching(query.path, body.search.to_search()):
            done = await mailbox.delete(message, force=query.force)
            if done["deleted"]:
                deleted = True
            elif "moved" in done:
                destination = done["moved"]["destination"]
                if "message" in done["moved"]:
                    id_map.append([message, done["moved"]["message"]])
    answer: dict[str, Any] = {"deleted": deleted}
    if destination is not None:
        answer["moved"] = {"destination": destination, "idMap": id_map}
    return json_response(answer)


_ACCOUNT = "/v1/account/{account}"
_NOT_FOUND = {404: "Unknown account, folder or message (an id of another account too)"}
_STREAM = {404: "Unknown account or message"}

ENDPOINTS = [
    Endpoint(
        "GET",
        _ACCOUNT + "/mailboxes",
        list_mailboxes,
        "List the account's folders (counters=true adds message and unseen counts)",
        TAG,
        query=Counters,
        response=MailboxList,
        errors=_NOT_FOUND,
        permission=Permission("mailbox", "read"),
    ),
    Endpoint(
        "POST",
        _ACCOUNT + "/mailbox",
        create_mailbox,
        "Create a folder",
        TAG,
        body=MailboxCreate,
        response=MailboxChanged,
        errors=_NOT_FOUND,
        permission=Permission("mailbox", "write"),
    ),
    Endpoint(
        "PUT",
        _ACCOUNT + "/mailbox",
        rename_mailbox,
        "Rename a folder and/or (un)subscribe it",
        TAG,
        body=MailboxRename,
        response=MailboxChanged,
        errors=_NOT_FOUND,
        permission=Permission("mailbox", "write"),
    ),
    Endpoint(
        "DELETE",
        _ACCOUNT + "/mailbox",
        delete_mailbox,
        "Delete a folder",
        TAG,
        query=PathQuery,
        response=MailboxChanged,
        errors=_NOT_FOUND,
        permission=Permission("mailbox", "destructive"),
    ),
    Endpoint(
        "GET",
        _ACCOUNT + "/messages",
        list_messages,
        "List the messages of a folder, newest first",
        TAG,
        query=ListQuery,
        response=MessageList,
        errors=_NOT_FOUND,
        permission=Permission("message", "read"),
    ),
    Endpoint(
        "POST",
        _ACCOUNT + "/search",
        search_messages,
        "Search the messages of a folder, newest first",
        TAG,
        query=ListQuery,
        body=SearchBody,
        response=MessageList,
        errors=_NOT_FOUND,
        permission=Permission("message", "read"),
    ),
    Endpoint(
        "GET",
        _ACCOUNT + "/message/{message}",
        get_message,
        "Read a message (textType adds its text)",
        TAG,
        query=MessageQuery,
        response=MessageEntry,
        errors=_NOT_FOUND,
        permission=Permission("message", "read"),
    ),
    Endpoint(
        "GET",
        _ACCOUNT + "/text/{text}",
        get_text,
        "Read the text of a message",
        TAG,
        query=TextQuery,
        response=TextOut,
        errors=_NOT_FOUND,
        permission=Permission("message", "read"),
    ),
    Endpoint(
        "GET",
        _ACCOUNT + "/message/{message}/source",
        get_source,
        "Download the raw message (RFC 822), streamed",
        TAG,
        errors=_STREAM,
        content_type="message/rfc822",
        permission=Permission("message", "read"),
    ),
    Endpoint(
        "GET",
        _ACCOUNT + "/attachment/{attachment}",
        get_attachment,
        "Download an attachment, streamed",
        TAG,
        errors=_STREAM,
        content_type="application/octet-stream",
        permission=Permission("message", "read"),
    ),
    Endpoint(
        "POST",
        _ACCOUNT + "/message",
        upload_message,
        "Store a message in a folder (raw MIME, or built from the given parts)",
        TAG,
        body=Upload,
        response=Updated,
        errors={
            **_NOT_FOUND,
            413: "The message (send.max_message_bytes) or the request body is too large",
        },
        permission=Permission("message", "write"),
        carries_message=True,
    ),
    Endpoint(
        "PUT",
        _ACCOUNT + "/message/{message}",
        update_message,
        "Change a message's flags",
        TAG,
        body=MessageUpdate,
        response=Updated,
        errors=_NOT_FOUND,
        permission=Permission("message", "write"),
    ),
    Endpoint(
        "PUT",
        _ACCOUNT + "/message/{message}/move",
        move_message,
        "Move a message to another folder",
        TAG,
        body=MoveBody,
        response=Moved,
        errors=_NOT_FOUND,
        permission=Permission("message", "write"),
    ),
    Endpoint(
        "DELETE",
        _ACCOUNT + "/message/{message}",
        delete_message,
        "Delete a message (to Trash; force=true removes it)",
        TAG,
        query=ForceQuery,
        response=DeletedOut,
        errors=_NOT_FOUND,
        permission=Permission("message", "destructive"),
    ),
    Endpoint(
        "PUT",
        _ACCOUNT + "/messages",
        bulk_update,
        "Change the flags of every message matching a search",
        TAG,
        query=PathQuery,
        body=BulkUpdate,
        response=Updated,
        errors=_NOT_FOUND,
        permission=Permission("message", "write"),
    ),
    Endpoint(
        "PUT",
        _ACCOUNT + "/messages/move",
        bulk_move,
        "Move every message matching a search",
        TAG,
        query=PathQuery,
        body=BulkMove,
        response=Moved,
        errors=_NOT_FOUND,
        permission=Permission("message", "write"),
    ),
    Endpoint(
        "PUT",
        _ACCOUNT + "/messages/delete",
        bulk_delete,
        "Delete every message matching a search",
        TAG,
        query=BulkPathForce,
        body=SearchBody,
        response=DeletedOut,
        errors=_NOT_FOUND,
        permission=Permission("message", "destructive"),
    ),
]
