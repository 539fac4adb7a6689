"""The Microsoft Graph backend of :class:`~relay.mailbox.model.Mailbox`.

Requests go to ``/users/{mailbox}/...`` with the account's Graph token (a shared mailbox:
its address, with the main account's token), asking for immutable ids, so the ids are the
ones the Graph watcher's webhooks carry. Plain REST over one shared ``httpx`` client rather
than msgraph-sdk: the SDK reads whole bodies into memory, and sources (``$value``) and
attachments (``attachments/{id}/$value``) must stream.

Ids: a message's is Graph's immutable id; an attachment's is ``{message id}~{Graph's
attachment id}`` (``~`` never occurs in Graph ids), the text's is the message's. Graph
has no UIDs: ``uid`` is the number the watcher gave the message where it knows it.

What Graph cannot do is said, not faked: flags other than ``\\Seen`` and ``\\Flagged`` and
search keys Graph has no filter for are refused with a 400 naming the field. A text search
(``from``, ``to``, ``cc``, ``bcc``, ``body``) uses Graph's ``$search``, which cannot be
combined with other criteria. Graph stores an uploaded MIME message as a draft.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from relay.errors import InputError, Unavailable
from relay.events import normalize
from relay.graph.folders import (
    DELETIONS,
    INBOX_KEY,
    SPECIAL_USES,
    FolderTree,
    GraphFolder,
    build_tree,
)
from relay.log import protocol_log
from relay.mailbox import content
from relay.mailbox.model import (
    AttachmentNotFound,
    Download,
    FlagChange,
    MailboxNotFound,
    MessageNotFound,
    NotOffered,
    Search,
    TextRequest,
)
from relay.store import Store
from relay.store import graph as graph_store

__all__ = ["GraphMailbox", "GraphMailboxes"]

# (account) -> (mailbox address, Graph access token).
TokenSource = Callable[[str], Awaitable[tuple[str, str]]]

_ATTACHMENT_SEP = "~"
_FIELDS = ",".join((*normalize.GRAPH_FIELDS, "hasAttachments", "bodyPreview"))
_FOLDER_FIELDS = "id,displayName,parentFolderId,childFolderCount,totalItemCount,unreadItemCount"
# contentId is fileAttachment's own: Graph wants the type cast in $select.
_ATTACHMENT_FIELDS = "id,name,contentType,size,isInline,microsoft.graph.fileAttachment/contentId"
_PAGE = 100
# A folder tree is looked at again after this many seconds.
_TREE_TTL = 30.0
# $search answers at most this many results; paging goes no further.
_SEARCH_LIMIT = 1000
_EPOCH = "1900-01-01T00:00:00Z"


@dataclass
class _Tree:
    tree: FolderTree
    listing: list[dict[str, Any]]
    read_at: float


class GraphMailboxes:
    """The shared HTTP client and folder-tree cache; ``open`` gives one account's backend."""

    def __init__(
        self,
        store: Store,
        graph_url: str,
        tokens: TokenSource,
        *,
        reject: Callable[[str], None] | None = None,
        verify: Any = True,
        chunk_bytes: int = 1024 * 1024,
    ) -> None:
        self.store = store
        self.base_url = graph_url.rstrip("/") + "/v1.0"
        self.tokens = tokens
        self.reject = reject or (lambda token: None)
        self.chunk_bytes = chunk_bytes
        self.http = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(30.0),
            headers={"Prefer": 'IdType="ImmutableId"'},
        )
        self.trees: dict[str, _Tree] = {}

    def open(self, account: str, row: Mapping[Any, Any] | None = None) -> GraphMailbox:
        """The backend of ``account`` (its ``logs`` setting read from ``row``)."""
        config = row["config"] if row is not None and isinstance(row["config"], dict) else {}
        trace = protocol_log("graph", account) if config.get("logs") else None
        return GraphMailbox(account, self, trace)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.http.aclose()


class GraphMailbox:
    """One account's mailbox through Microsoft Graph (see the module docstring)."""

    def __init__(self, account: str, shared: GraphMailboxes, trace: Any = None) -> None:
        self.account = account
        self._g = shared
        # The account's protocol log (its ``logs`` setting), or None.
        self._trace = trace

    # -- requests -------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content_bytes: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        not_found: Callable[[], InputError] = MessageNotFound,
    ) -> httpx.Response:
        """One request to ``/users/{mailbox}{path}``; Graph's errors become ours.

        A 401 drops the token and tries once more with a fresh one.
        """
        for attempt in range(2):
            user, token = await self._g.tokens(self.account)
            url = (
                path
                if path.startswith(self._g.base_url + "/")
                else (f"{self._g.base_url}/users/{quote(user, safe='@')}{path}")
            )
            request = self._g.http.build_request(
                method,
                url,
                params=params,
                json=json,
                content=content_bytes,
                headers={"Authorization": f"Bearer {token}", **(headers or {})},
            )
            if self._trace is not None:
                self._trace.debug("graph request", method=method, url=str(request.url))
            try:
                response = await self._g.http.send(request, stream=stream)
            except httpx.HTTPError as exc:
                if self._trace is not None:
                    self._trace.debug("graph failed", method=method, error=str(exc))
                raise Unavailable(
                    f"Microsoft Graph cannot be reached: {exc}", code="GraphUnavailable"
                ) from exc
            if self._trace is not None:
                self._trace.debug(
                    "graph response",
                    method=method,
                    url=str(request.url),
                    status=response.status_code,
                )
            if response.status_code < 400:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            if response.status_code == 401 and attempt == 0:
                self._g.reject(token)
                continue
            raise _error(response, not_found)
        raise AssertionError("unreachable")

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._send(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return {}
        body = response.json()
        return dict(body) if isinstance(body, dict) else {}

    async def _pages(
        self, path: str, params: Mapping[str, str], limit: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every page of a listing, following ``@odata.nextLink``."""
        page = await self._json("GET", path, params=params, not_found=MailboxNotFound)
        seen = 0
        while True:
            yield page
            seen += len(page.get("value") or ())
            link = page.get("@odata.nextLink")
            if not link or (limit is not None and seen >= limit):
                return
            if not str(link).startswith(self._g.base_url + "/"):
                raise Unavailable("Microsoft Graph sent a foreign next link", code="GraphError")
            page = await self._json("GET", str(link), not_found=MailboxNotFound)

    # -- folders --------------------------------------------------------------------------

    async def _tree(self, *, fresh: bool = False) -> _Tree:
        cached = self._g.trees.get(self.account)
        if cached is not None and not fresh and time.monotonic() - cached.read_at < _TREE_TTL:
            return cached
        listing: list[dict[str, Any]] = []
        parents = await self._collect("/mailFolders", listing)
        while parents:
            parents += await self._collect(f"/mailFolders/{parents.pop()}/childFolders", listing)
        names = [*SPECIAL_USES, DELETIONS]
        found = await asyncio.gather(*(self._well_known(name) for name in names))
        well_known = {name: fid for name, fid in zip(names, found, strict=True) if fid}
        tree = _Tree(build_tree(listing, well_known), listing, time.monotonic())
        self._g.trees[self.account] = tree
        return tree

    async def _collect(self, path: str, listing: list[dict[str, Any]]) -> list[str]:
        parents: list[str] = []
        params = {"$select": _FOLDER_FIELDS, "$top": str(_PAGE)}
        async for page in self._pages(path, params):
            for folder in page.get("value") or ():
                listing.append(folder)
                if folder.get("childFolderCount"):
                    parents.append(str(folder["id"]))
        return parents

    async def _well_known(self, name: str) -> str | None:
        try:
            found = await self._json(
                "GET", f"/mailFolders/{name}", params={"$select": "id"}, not_found=MailboxNotFound
            )
        except (MailboxNotFound, InputError):
            return None
        return str(found["id"]) if found.get("id") else None

    async def _folder(self, path: str) -> tuple[str, GraphFolder]:
        """``(Graph id, folder)`` of a path or special use (``\\Sent``)."""
        for fresh in (False, True):
            tree = (await self._tree(fresh=fresh)).tree
            for folder_id, folder in tree.folders.items():
                if folder_id == INBOX_KEY:
                    continue
                if _names(folder, path):
                    return folder_id, folder
        raise MailboxNotFound()

    async def folders(self, *, counters: bool) -> list[dict[str, Any]]:
        cached = await self._tree(fresh=True)
        by_id = {str(f["id"]): f for f in cached.listing}
        out: list[dict[str, Any]] = []
        for folder_id, folder in cached.tree.folders.items():
            if folder_id == INBOX_KEY:
                continue
            path = folder.path
            entry: dict[str, Any] = {
                "path": path,
                "delimiter": "/",
                "name": path.rsplit("/", 1)[-1],
                "listed": True,
                "subscribed": True,
                "id": folder_id,
            }
            if "/" in path:
                entry["parentPath"] = path.rsplit("/", 1)[0]
            if folder.special_use:
                entry["specialUse"] = folder.special_use
                entry["specialUseSource"] = "extension"
            raw = by_id.get(folder_id, {})
            if counters:
                entry["status"] = {
                    "messages": int(raw.get("totalItemCount") or 0),
                    "unseen": int(raw.get("unreadItemCount") or 0),
                }
            out.append(entry)
        return out

    async def create_folder(self, path: str) -> dict[str, Any]:
        parent, _, name = path.rpartition("/")
        target = "/mailFolders"
        if parent:
            parent_id, _ = await self._folder(parent)
            target = f"/mailFolders/{parent_id}/childFolders"
        try:
            made = await self._json("POST", target, json={"displayName": name})
        except InputError as exc:
            if exc.code == "ErrorFolderExists":
                return {"path": path, "created": False}
            raise
        self._g.trees.pop(self.account, None)
        return {"path": path, "mailboxId": str(made.get("id")), "created": True}

    async def rename_folder(
        self, path: str, new_path: str | None, *, subscribed: bool | None = None
    ) -> dict[str, Any]:
        if subscribed is not None:
            raise NotOffered(
                "subscribed: Microsoft Graph folders have no subscriptions", field="subscribed"
            )
        folder_id, folder = await self._folder(path)
        if new_path is None or new_path == folder.path:
            return {"path": folder.path, "newPath": new_path or folder.path, "renamed": False}
        old_parent = folder.path.rpartition("/")[0]
        new_parent, _, new_name = new_path.rpartition("/")
        if new_parent != old_parent:
            destination = (await self._folder(new_parent))[0] if new_parent else "msgfolderroot"
            moved = await self._json(
                "POST", f"/mailFolders/{folder_id}/move", json={"destinationId": destination}
            )
            folder_id = str(moved.get("id") or folder_id)
        if new_name != folder.path.rpartition("/")[2]:
            await self._json("PATCH", f"/mailFolders/{folder_id}", json={"displayName": new_name})
        self._g.trees.pop(self.account, None)
        return {"path": folder.path, "newPath": new_path, "renamed": True, "mailboxId": folder_id}

    async def delete_folder(self, path: str) -> dict[str, Any]:
        folder_id, folder = await self._folder(path)
        await self._json("DELETE", f"/mailFolders/{folder_id}")
        self._g.trees.pop(self.account, None)
        return {"path": folder.path, "deleted": True, "mailboxId": folder_id}

    # -- listing --------------------------------------------------------------------------

    async def _uids(self, ids: Sequence[str]) -> dict[str, int]:
        async with self._g.store.read() as conn:
            known = await graph_store.known_messages(conn, self.account, ids)
        return {graph_id: uid for graph_id, (_, uid, _) in known.items()}

    async def _entries(
        self, messages: Sequence[Mapping[str, Any]], tree: FolderTree
    ) -> list[dict[str, Any]]:
        uids = await self._uids([str(m["id"]) for m in messages])
        return [_entry(m, uids.get(str(m["id"])), tree) for m in messages]

    async def messages(
        self, path: str, search: Search | None, page: int, page_size: int
    ) -> dict[str, Any]:
        folder_id, _ = await self._folder(path)
        tree = (await self._tree()).tree
        query = _query(search)
        base = f"/mailFolders/{folder_id}/messages"
        if "$search" in query:
            found: list[dict[str, Any]] = []
            params = {"$select": _FIELDS, "$top": str(_PAGE), **query}
            async for batch in self._pages(base, params, limit=_SEARCH_LIMIT):
                found += batch.get("value") or []
            found.sort(key=lambda m: str(m.get("receivedDateTime") or ""), reverse=True)
            chosen = found[page * page_size : (page + 1) * page_size]
            return {
                "total": len(found),
                "messages": await self._entries(chosen, tree),
            }
        if "$filter" in query and not query["$filter"].startswith("receivedDateTime"):
            # Graph sorts a filtered list only when the sort property is filtered on first.
            query["$filter"] = f"receivedDateTime ge {_EPOCH} and {query['$filter']}"
        params = {
            "$select": _FIELDS,
            "$top": str(page_size),
            "$skip": str(page * page_size),
            "$count": "true",
            "$orderby": "receivedDateTime desc",
            **query,
        }
        answer = await self._json("GET", base, params=params, not_found=MailboxNotFound)
        values = list(answer.get("value") or [])
        total = answer.get("@odata.count")
        return {
            "total": int(total) if isinstance(total, int) else page * page_size + len(values),
            "messages": await self._entries(values, tree),
        }

    async def matching(self, path: str, search: Search) -> list[str]:
        folder_id, _ = await self._folder(path)
        params = {"$select": "id", "$top": str(_PAGE), **_query(search)}
        ids: list[str] = []
        async for page in self._pages(f"/mailFolders/{folder_id}/messages", params):
            ids += [str(m["id"]) for m in page.get("value") or []]
        return ids

    # -- one message ----------------------------------------------------------------------

    def _message_path(self, message: str) -> str:
        if not message or _ATTACHMENT_SEP in message or "/" in message or len(message) > 1024:
            raise MessageNotFound()
        return f"/messages/{quote(message, safe='=-_')}"

    async def _get(self, message: str, select: str, *, size: bool = False) -> dict[str, Any]:
        params = {"$select": select}
        if size:
            params["$expand"] = normalize.GRAPH_SIZE_EXPAND
        return await self._json("GET", self._message_path(message), params=params)

    async def _attachments(self, message: str) -> list[dict[str, Any]]:
        answer = await self._json(
            "GET",
            self._message_path(message) + "/attachments",
            params={"$select": _ATTACHMENT_FIELDS},
        )
        out: list[dict[str, Any]] = []
        for item in answer.get("value") or []:
            entry: dict[str, Any] = {
                "id": f"{message}{_ATTACHMENT_SEP}{item['id']}",
                "contentType": str(item.get("contentType") or "application/octet-stream"),
                "encodedSize": int(item.get("size") or 0),
            }
            if item.get("name"):
                entry["filename"] = str(item["name"])
            inline = bool(item.get("isInline"))
            content_id = item.get("contentId")
            entry["embedded"] = bool(inline and content_id)
            entry["inline"] = inline
            if content_id:
                entry["contentId"] = f"<{str(content_id).strip('<>')}>"
            out.append(entry)
        return out

    async def message(
        self, message: str, text: TextRequest | None, *, mark_seen: bool = False
    ) -> dict[str, Any]:
        found = await self._get(message, _FIELDS + ",internetMessageHeaders", size=True)
        tree = (await self._tree()).tree
        uid = (await self._uids([str(found["id"])])).get(str(found["id"]))
        entry = _entry(found, uid, tree, details=True)
        attachments = await self._attachments(message) if found.get("hasAttachments") else []
        if attachments:
            entry["attachments"] = attachments
        entry["headers"] = _headers(found.get("internetMessageHeaders"))
        if text is not None:
            entry["text"].update(await self._text(message, text, attachments))
        if mark_seen and "\\Seen" not in entry["flags"]:
            await self._json("PATCH", self._message_path(message), json={"isRead": True})
            entry["flags"].append("\\Seen")
            entry.pop("unseen", None)
        return entry

    async def text(self, message: str, text: TextRequest) -> dict[str, Any]:
        attachments: list[dict[str, Any]] = []
        if text.embed_images:
            found = await self._get(message, "hasAttachments")
            if found.get("hasAttachments"):
                attachments = await self._attachments(message)
        return await self._text(message, text, attachments)

    async def _body(self, message: str, kind: str) -> str | None:
        found = await self._json(
            "GET",
            self._message_path(message),
            params={"$select": "body"},
            headers={"Prefer": f'IdType="ImmutableId", outlook.body-content-type="{kind}"'},
        )
        body = found.get("body") or {}
        if str(body.get("contentType", "")).lower() != kind:
            return None
        return str(body.get("content") or "")

    async def _text(
        self, message: str, request: TextRequest, attachments: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        plain = await self._body(message, "text") if request.wants("plain") else None
        html = await self._body(message, "html") if request.wants("html") else None
        cut: dict[str, Any] = dict(
            content.text_of(plain, html, max_bytes=request.max_bytes, text_type=request.text_type)
        )
        if "html" in cut:
            if request.embed_images:
                images: dict[str, tuple[str, bytes]] = {}
                for item in attachments:
                    if item.get("contentId") and str(item["contentType"]).startswith("image/"):
                        images[str(item["contentId"]).strip("<>")] = (
                            str(item["contentType"]),
                            await (await self.attachment(str(item["id"]))).read(),
                        )
                cut["html"] = content.embed_images(cut["html"], images)
            if request.web_safe:
                cut["html"] = content.web_safe_html(cut["html"], allow_remote=request.allow_remote)
                cut["webSafe"] = True
        return cut

    # -- streams --------------------------------------------------------------------------

    async def _download(
        self, path: str, content_type: str, filename: str | None, disposition: str, **kw: Any
    ) -> Download:
        response = await self._send("GET", path, stream=True, **kw)
        length = response.headers.get("Content-Length")

        async def chunks() -> AsyncGenerator[bytes, None]:
            async for chunk in response.aiter_bytes(self._g.chunk_bytes):
                yield chunk

        return Download(
            content_type=content_type,
            chunks=chunks(),
            close=response.aclose,
            filename=filename,
            size=int(length) if length and length.isdigit() else None,
            disposition=disposition,
        )

    async def source(self, message: str) -> Download:
        return await self._download(
            self._message_path(message) + "/$value", "message/rfc822", "message.eml", "attachment"
        )

    async def attachment(self, attachment: str) -> Download:
        message, sep, graph_id = attachment.partition(_ATTACHMENT_SEP)
        if not sep or not graph_id or "/" in graph_id:
            raise AttachmentNotFound()
        base = f"{self._message_path(message)}/attachments/{quote(graph_id, safe='=-_')}"
        meta = await self._json(
            "GET",
            base,
            params={"$select": "id,name,contentType,size,isInline"},
            not_found=AttachmentNotFound,
        )
        return await self._download(
            base + "/$value",
            str(meta.get("contentType") or "application/octet-stream"),
            str(meta.get("name") or "attachment"),
            "inline" if meta.get("isInline") else "attachment",
            not_found=AttachmentNotFound,
        )

    # -- changes --------------------------------------------------------------------------

    async def upload(self, path: str, raw: bytes, flags: tuple[str, ...]) -> dict[str, Any]:
        folder_id, folder = await self._folder(path)
        patch = _flag_patch(FlagChange(add=flags), field="flags")
        made = await self._json(
            "POST",
            f"/mailFolders/{folder_id}/messages",
            content_bytes=base64.b64encode(raw),
            headers={"Content-Type": "text/plain"},
        )
        message = str(made["id"])
        if patch:
            await self._json("PATCH", self._message_path(message), json=patch)
        out: dict[str, Any] = {"id": message, "path": folder.path}
        if made.get("internetMessageId"):
            out["messageId"] = str(made["internetMessageId"])
        return out

    async def update(self, message: str, change: FlagChange) -> dict[str, Any]:
        patch = _flag_patch(change)
        await self._get(message, "id")
        if patch:
            await self._json("PATCH", self._message_path(message), json=patch)
        done: dict[str, Any] = {}
        if change.set is not None:
            done["set"] = True
        if change.add:
            done["add"] = True
        if change.delete:
            done["delete"] = True
        return {"flags": done}

    async def move(self, message: str, path: str) -> dict[str, Any]:
        folder_id, folder = await self._folder(path)
        moved = await self._json(
            "POST", self._message_path(message) + "/move", json={"destinationId": folder_id}
        )
        out: dict[str, Any] = {"path": folder.path, "id": str(moved.get("id") or message)}
        uid = (await self._uids([out["id"]])).get(out["id"])
        if uid is not None:
            out["uid"] = uid
        return out

    async def delete(self, message: str, *, force: bool) -> dict[str, Any]:
        found = await self._get(message, "id,parentFolderId")
        tree = (await self._tree()).tree
        here = tree.find(str(found.get("parentFolderId") or ""))
        in_trash = here is not None and here.special_use in ("\\Trash", "\\Junk")
        if force or in_trash:
            await self._json("DELETE", self._message_path(message))
            return {"deleted": True}
        trash_id, trash = await self._folder("\\Trash")
        moved = await self._json(
            "POST", self._message_path(message) + "/move", json={"destinationId": trash_id}
        )
        return {
            "deleted": False,
            "moved": {"destination": trash.path, "message": str(moved.get("id") or message)},
        }


# -- pure helpers ---------------------------------------------------------------------------


def _error(response: httpx.Response, not_found: Callable[[], InputError]) -> Exception:
    """Graph's error answer as ours: 404 -> not found, 4xx -> 400, the rest -> 503."""
    code, message = "", response.reason_phrase
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = response.json().get("error") or {}
        code = str(error.get("code") or "")
        message = str(error.get("message") or message)
    status = response.status_code
    if status == 404 or code in ("ErrorItemNotFound", "ErrorInvalidIdMalformed"):
        return not_found()
    if status in (429, 503, 504) or status >= 500:
        return Unavailable(f"Microsoft Graph: {message}", code="GraphUnavailable")
    if status == 403:
        return Unavailable(f"Microsoft Graph refused access: {message}", code="AccessDenied")
    if status == 401:
        return Unavailable(
            f"Requested account can not be authenticated: {message}", code="AuthenticationFails"
        )
    error = InputError(f"Microsoft Graph refused the request: {message}")
    error.code = code or "GraphRequestError"
    return error


_FLAG_FIELDS = {"\\seen": "isRead", "\\flagged": "flag"}


def _flag_patch(change: FlagChange, field: str = "flags") -> dict[str, Any]:
    """The PATCH body for a flag change; flags Graph has no property for are refused."""
    values: dict[str, bool] = {}
    if change.set is not None:
        values = {name: False for name in _FLAG_FIELDS.values()}
        groups: list[tuple[Sequence[str], bool]] = [(change.set, True)]
    else:
        groups = [(change.add, True), (change.delete, False)]
    for flags, on in groups:
        for flag in flags:
            target = _FLAG_FIELDS.get(flag.lower())
            if target is None:
                raise NotOffered(
                    f"{field}: {flag} cannot be set on a Microsoft Graph account"
                    " (only \\Seen and \\Flagged)",
                    field=field,
                )
            values[target] = on
    patch: dict[str, Any] = {}
    if "isRead" in values:
        patch["isRead"] = values["isRead"]
    if "flag" in values:
        patch["flag"] = {"flagStatus": "flagged" if values["flag"] else "notFlagged"}
    return patch


def _names(folder: GraphFolder, path: str) -> bool:
    """Whether ``path`` (a path, ``INBOX`` or a special use like ``\\Sent``) is ``folder``."""
    if path.startswith("\\"):
        return (folder.special_use or "").lower() == path.lower()
    return folder.path == path or (path.upper() == "INBOX" and folder.key == INBOX_KEY)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _query(search: Search | None) -> dict[str, str]:
    """``$filter`` (or ``$search``) for a search; what Graph cannot express is refused."""
    if search is None or search.empty():
        return {}
    for name, value in (
        ("answered", search.answered),
        ("deleted", search.deleted),
        ("uid", search.uid),
        ("larger", search.larger),
        ("smaller", search.smaller),
        ("emailId", search.email_id),
        ("sentSince", search.sent_since),
        ("sentBefore", search.sent_before),
    ):
        if value is not None:
            raise NotOffered(
                f"search.{name}: Microsoft Graph accounts cannot search on this",
                field=f"search.{name}",
            )
    if search.header:
        raise NotOffered(
            "search.header: Microsoft Graph accounts can only search Message-ID headers",
            field="search.header",
        )
    terms = [
        f"{key}:{value}"
        for key, value in (
            ("from", search.from_),
            ("to", search.to),
            ("cc", search.cc),
            ("bcc", search.bcc),
            ("body", search.body),
        )
        if value
    ]
    filters: list[str] = []
    if search.since is not None:
        filters.append(f"receivedDateTime ge {_date(search.since)}")
    if search.before is not None:
        filters.append(f"receivedDateTime lt {_date(search.before)}")
    if search.seen is not None:
        filters.append(f"isRead eq {str(search.seen).lower()}")
    if search.flagged is not None:
        filters.append(
            "flag/flagStatus eq 'flagged'" if search.flagged else "flag/flagStatus ne 'flagged'"
        )
    if search.draft is not None:
        filters.append(f"isDraft eq {str(search.draft).lower()}")
    if search.subject is not None:
        if terms:
            terms.append(f"subject:{search.subject}")
        else:
            filters.append(f"contains(subject,{_literal(search.subject)})")
    if search.message_id is not None:
        filters.append(f"internetMessageId eq {_literal(search.message_id)}")
    if search.thread_id is not None:
        filters.append(f"conversationId eq {_literal(search.thread_id)}")
    if terms:
        if filters:
            raise NotOffered(
                "search: on Microsoft Graph accounts from, to, cc, bcc and body cannot be"
                " combined with other criteria",
                field="search",
            )
        return {"$search": '"' + " ".join(t.replace('"', "") for t in terms) + '"'}
    return {"$filter": " and ".join(filters)}


def _headers(values: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in values or ():
        if isinstance(item, Mapping) and item.get("name"):
            out.setdefault(str(item["name"]).lower(), []).append(str(item.get("value") or ""))
    return out


def _entry(
    message: Mapping[str, Any], uid: int | None, tree: FolderTree, *, details: bool = False
) -> dict[str, Any]:
    """EmailEngine's list entry (or details) of a Graph message: ``messageNew``'s fields
    (:func:`relay.events.normalize.graph_message_to_event`), ``unseen`` only when true,
    ``path``, ``specialUse`` and ``messageSpecialUse`` only in details."""
    folder = tree.find(str(message.get("parentFolderId") or ""))
    special_use = folder.special_use if details and folder is not None else None
    data = normalize.graph_message_to_event(message, uid=uid or 0, special_use=special_use)
    if uid is None:
        del data["uid"]
    if not data["unseen"]:
        del data["unseen"]
    del data["attachments"]
    if not details:
        del data["size"]  # a list does not read each message's size
    if not data.get("subject"):
        data.pop("subject", None)
    if message.get("bodyPreview"):
        data["preview"] = str(message["bodyPreview"])
    if not details:
        data.pop("sender", None)
        data.pop("bcc", None)
    elif folder is not None:
        data["path"] = folder.path
        if folder.special_use:
            data["specialUse"] = folder.special_use
    return data
