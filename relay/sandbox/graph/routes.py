"""HTTP endpoints of the Microsoft Graph v1.0 mail subset, under ``/v1.0/``.

Users are addressed as ``me``, ``users/{id|upn}`` or ``users('{id|upn}')``; segments are
case-insensitive, percent-decoded one by one, and empty ones (``//``) are ignored. Actions
may carry the ``microsoft.graph.`` prefix, and ``delta`` may be written ``delta()``.
``{folder}`` is ``mailFolders/{id}`` followed by any number of ``childFolders/{id}``; a
folder id may be a well-known name such as ``inbox``.

- ``GET {user}``
- ``GET {user}/mailFolders`` (the folders directly under the mailbox's root),
  ``GET {folder}/childFolders`` (``$select``, ``$top``, ``$skip``,
  ``includeHiddenFolders=true``; ``@odata.nextLink`` paging), ``GET {folder}``
- ``POST {user}/mailFolders``, ``POST {folder}/childFolders`` ``{displayName, isHidden?}``
  -> 201; a name taken among the siblings (ignoring case) -> 409 ``ErrorFolderExists``
- ``PATCH {folder}`` ``{displayName}`` -> 200 the renamed folder (a sibling's name -> 409
  ``ErrorFolderExists``; a well-known folder -> 400 ``ErrorInvalidRequest``, the sandbox's
  choice as Microsoft documents none); ``DELETE {folder}`` -> 204: the folder and all in it
  move to Deleted Items, or, already there, are gone (well-known folders -> 400
  ``ErrorDeleteDistinguishedFolder``); ``POST {folder}/move`` ``{destinationId}`` (a folder
  id, a well-known name or ``msgfolderroot``) -> 200 the folder under its new parent
  (well-known folders -> 400 ``ErrorMoveDistinguishedFolder``, into itself or below ->
  400 ``ErrorInvalidRequest``, a name taken there -> 409 ``ErrorFolderExists``). Messages
  keep their ids when their folder moves. Folders show ``totalItemCount`` and
  ``unreadItemCount``.
- ``GET {user}/messages``, ``GET {folder}/messages``
  (``$select``, ``$top``, ``$skip``, ``$count``, ``$orderby=receivedDateTime [asc|desc]``;
  ``@odata.nextLink`` paging). ``$filter`` (see :mod:`relay.sandbox.graph.query`) keeps
  the matching messages; with ``$orderby`` its first property must be
  ``receivedDateTime`` (400 ``InefficientFilter`` otherwise). ``$search`` (KQL subset)
  returns up to 1,000 matches, newest sent first, paged with ``$skiptoken``; it cannot be
  combined with ``$orderby`` (400 ``SearchWithOrderBy``), ``$filter`` (400
  ``SearchWithFilter``) or ``$skip`` (400 ``BadRequest``).
- ``GET {folder}/messages/delta`` (``$select``, ``$skiptoken``, ``$deltatoken``,
  ``Prefer: odata.maxpagesize=N``)
- ``POST {user}/messages``, ``POST {folder}/messages`` -> 201: a draft (``isDraft``), in
  Drafts or in that folder (``subject``, ``body``, ``toRecipients``, ``ccRecipients``,
  ``bccRecipients``, ``replyTo``, ``from``, ``importance``, ``categories``, ``flag``).
  With ``Content-Type: text/plain`` the body is a base64-encoded MIME message: the draft is
  read from it and keeps it byte for byte; bad base64 or a source without headers -> 400
  ``ErrorMimeContentInvalidBase64String``.
- ``GET|PATCH|DELETE {user}[/{folder}]/messages/{id}``. GET takes ``$select``, which alone
  brings ``uniqueBody`` and ``internetMessageHeaders``; ``Prefer:
  outlook.body-content-type="text"|"html"`` converts ``body`` and ``uniqueBody`` (lists and
  delta too) and is answered with ``Preference-Applied``. PATCH changes ``isRead``,
  ``flag``, ``categories``, ``importance`` of any message, ``subject`` and ``body`` of
  drafts only (400 ``ErrorInvalidPropertyUpdateSentMessage`` otherwise); each PATCH is an
  ``updated`` change for delta and notifications.
- ``GET .../messages/{id}/$value`` -> 200 ``text/plain``: the message's MIME, byte for byte
  as delivered or uploaded, or written from its fields; sent in chunks
- ``GET .../messages/{id}/attachments`` (``$select``; fileAttachment properties need the
  cast, ``microsoft.graph.fileAttachment/contentBytes``), ``GET .../attachments/{id}``
  (each ``#microsoft.graph.fileAttachment``, with ``contentBytes`` unless ``$select``
  leaves it out), ``GET .../attachments/{id}/$value`` (the raw bytes, with the
  attachment's content type, in chunks). Sources and attachments need a full read
  permission (403 ``ErrorAccessDenied`` with ``Mail.ReadBasic``); unknown ids -> 404
  ``ErrorItemNotFound``.
- ``POST .../messages/{id}/move``, ``POST .../messages/{id}/copy`` ``{destinationId}`` ->
  201 the message in the destination (a move keeps the immutable id; a copy is a new
  message with new ids), ``POST .../messages/{id}/permanentDelete``
- ``POST .../messages/{id}/send`` -> 202: the draft moves to Sent Items (a new default id,
  the same immutable id) and reaches recipients that are sandbox mailboxes; the checks of
  ``sendMail`` (403 ``ErrorSendAsDenied``, 400 ``ErrorInvalidRecipients``) apply, and a
  message that is not a draft is 400 ``ErrorInvalidRequest``
- ``POST {user}/sendMail``
- ``POST|GET /subscriptions``, ``GET|PATCH|DELETE /subscriptions/{id}``,
  ``POST /subscriptions/{id}/reauthorize``

Every call needs a sandbox access token for ``https://graph.microsoft.com``; see
:mod:`relay.sandbox.graph.access` for what each token may do. Every answer, errors
included, carries a ``Date`` header (IMF-fixdate) read from the sandbox clock, so a client
sees the server's time after ``POST /sandbox/clock`` moved it.

**Immutable ids.** A request with ``Prefer: IdType="ImmutableId"`` (among other
comma-separated preferences, matched ignoring case) sees every message ``id`` as its
immutable id (reads, lists, delta entries and ``@removed`` ones, the answers of move,
PATCH and create) and gets ``Preference-Applied: IdType="ImmutableId"``. It applies to that
request only, as in Graph: delta and skip tokens work with either kind. A subscription
created with the header sends immutable ids in its notifications, for its whole life.
Message ids in URLs may be default or immutable ids, whatever the header.

**Throttling.** Requests under ``{user}/`` (``me/...``, ``users/{id|upn}/...``) are mailbox
requests; each is recorded for that mailbox with its arrival time on the sandbox clock and
its status (see :mod:`relay.sandbox.graph.throttling`). While the admin API throttles a
mailbox, its next requests are answered ``429`` with ``Retry-After`` and Graph's error
(``ApplicationThrottled`` by default), after authentication and before anything else.
``GET {user}`` (a directory read) and subscriptions are not mailbox requests (requests for a
subscription of a mailbox are recorded with that mailbox's, and never throttled).

**Outages.** While the admin API has a fault switched on (see
:mod:`relay.sandbox.graph.faults`), the mailbox and subscription requests it matches are
answered ``503 serviceNotAvailable`` or ``504`` (with ``Retry-After`` when the fault has
one), held without an answer (a hang, let go with a 504 when the fault is removed), or
have their connection reset; after authentication, before throttling and anything else.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import socket
import struct
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from aiohttp import web

from relay.errors import Conflict, InputError, NotFound
from relay.sandbox.graph import delta
from relay.sandbox.graph.access import (
    Caller,
    Need,
    authenticate,
    check_mailbox,
    check_send,
    check_subscribe,
    check_user_read,
    resolve_user,
)
from relay.sandbox.graph.errors import (
    GraphError,
    access_denied,
    bad_request,
    error_body,
    item_not_found,
    malformed_id,
    send_as_denied,
    throttled,
)
from relay.sandbox.graph.faults import ANSWERS, HANG, HOLD_MAX, RESET, Fault
from relay.sandbox.graph.mail import (
    DRAFTS,
    FLAG_STATUS,
    IMPORTANCE,
    SENT_ITEMS,
    Address,
    Folder,
    Mailbox,
    Message,
    MessageInput,
    Removed,
    is_address,
    looks_like_item_id,
)
from relay.sandbox.graph.mime import MimeError, parse_mime, source
from relay.sandbox.graph.odata import (
    Segment,
    fold_keys,
    http_date,
    parse_datetime,
    parse_prefer,
    split_path,
)
from relay.sandbox.graph.query import parse_filter, parse_search
from relay.sandbox.graph.subscriptions import (
    MAX_PER_MAILBOX,
    Subscription,
    check_client_state,
    check_expiration,
    check_notification_url,
    parse_change_types,
    parse_resource,
)
from relay.sandbox.graph.throttling import RecordedRequest
from relay.sandbox.graph.views import (
    FOLDER_PROPERTIES,
    MESSAGE_PROPERTIES,
    attachment_json,
    extended_json,
    folder_json,
    message_json,
    parse_attachment_select,
    parse_expand,
    parse_folder_select,
    parse_select,
    removed_json,
)
from relay.sandbox.keys import NOTIFIER, STATE
from relay.sandbox.state import SandboxState, User

PREFIX = "/v1.0"
DEFAULT_TOP = 10
MAX_TOP = 1000
IMMUTABLE_ID = 'IdType="ImmutableId"'
BODY_CONTENT_TYPE = "outlook.body-content-type"
MAX_SEARCH_RESULTS = 1000
CHUNK_SIZE = 256 * 1024
_ACTION_PREFIX = "microsoft.graph."


class ChunkedBody(web.StreamResponse):
    """A response whose body is written in chunks once the headers are out.

    Large message sources and attachments go out this way rather than in one write; the
    headers can still be changed until aiohttp prepares the response.
    """

    def __init__(self, data: bytes, content_type: str, status: int = 200) -> None:
        super().__init__(status=status)
        self.content_type = content_type
        self.content_length = len(data)
        self._data = data

    async def write_eof(self, data: bytes = b"") -> None:
        """Write the body chunk by chunk, then end the response."""
        view = memoryview(self._data)
        for start in range(0, len(view), CHUNK_SIZE):
            await self.write(view[start : start + CHUNK_SIZE])
        self._data = b""
        await super().write_eof(data)


def _json_answer(body: Any, status: int = 200) -> web.StreamResponse:
    """A JSON answer; a large one (a big attachment's contentBytes) goes out in chunks."""
    data = json.dumps(body).encode()
    if len(data) <= CHUNK_SIZE:
        return web.Response(body=data, status=status, content_type="application/json")
    return ChunkedBody(data, "application/json", status)


class Call:
    """One Graph request: the state, the caller, the origin and the query options."""

    def __init__(self, request: web.Request, state: SandboxState, caller: Caller) -> None:
        self.request = request
        self.state = state
        self.caller = caller
        self.method = request.method
        self.origin = f"{request.scheme}://{request.host}"
        # Graph reads $select and select alike, in any case.
        self.query = {key.lower().removeprefix("$"): value for key, value in request.query.items()}
        self.prefer = parse_prefer(request.headers.getall("Prefer", []))
        # Per request, as Graph does: delta and skip tokens work with either kind of id.
        self.immutable = self.prefer.get("idtype", "").lower() == "immutableid"
        wanted = self.prefer.get(BODY_CONTENT_TYPE, "").lower()
        self.body_type = wanted if wanted in ("text", "html") else None
        self.applied: list[str] = []
        # The mailbox a mailbox request touches, and its Retry-After when throttled.
        self.mailbox: str | None = None
        self.retry_after: int | None = None
        # The outage this request met (relay.sandbox.graph.faults), if any.
        self.fault: str | None = None

    def message(
        self,
        message: Message,
        select: tuple[str, ...] | None = None,
        *,
        bodies: bool = True,
        odata_type: bool = False,
    ) -> dict[str, Any]:
        """A message as this request asks for it: default or immutable id, body format."""
        if self.body_type is not None:
            applied = f'{BODY_CONTENT_TYPE}="{self.body_type}"'
            if applied not in self.applied:
                self.applied.append(applied)
        return message_json(
            message,
            select,
            bodies=bodies,
            odata_type=odata_type,
            immutable=self.immutable,
            body_type=self.body_type,
        )

    def link(
        self, path: str, options: Mapping[str, str], params: Mapping[str, str] | None = None
    ) -> str:
        """An absolute link to ``/v1.0/{path}`` with ``params`` and ``$options``."""
        pairs = [*(params or {}).items(), *((f"${k}", v) for k, v in options.items())]
        query = "&".join(f"{name}={quote(value, safe=',')}" for name, value in pairs)
        return f"{self.origin}{PREFIX}/{path}" + (f"?{query}" if query else "")

    async def body(self) -> dict[str, Any]:
        """The JSON body with property names folded to lower case; 400 if it is not JSON."""
        raw = await self.request.read()
        if not raw.strip():
            raise bad_request("Empty Payload. JSON content expected.")
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad_request(
                "Unable to read JSON request payload. Please ensure Content-Type header is "
                "set and payload is of valid JSON format."
            ) from None
        if not isinstance(value, dict):
            raise bad_request("The request payload must be a JSON object.")
        folded: dict[str, Any] = fold_keys(value)
        return folded


def _action(segment: Segment) -> str:
    return segment.name.removeprefix(_ACTION_PREFIX)


def _not_a_segment(segment: Segment) -> GraphError:
    return bad_request(f"Resource not found for the segment '{segment.raw}'.")


def _unsupported(call: Call) -> GraphError:
    return GraphError(
        405, "BadRequest", f"Unsupported request: {call.method} on {call.request.path}."
    )


def _keyed(rest: list[Segment], name: str) -> tuple[str, list[Segment]] | None:
    """``name('key')/...`` or ``name/key/...`` -> ``(key, rest)``."""
    if not rest or rest[0].name != name:
        return None
    if rest[0].key is not None:
        return rest[0].key, rest[1:]
    if not rest[0].call and len(rest) >= 2:
        return rest[1].raw, rest[2:]
    return None


@contextmanager
def _input_errors() -> Iterator[None]:
    """Turn the mail store's input errors into Graph's error answers."""
    try:
        yield
    except NotFound:
        raise item_not_found() from None
    except InputError as exc:
        raise bad_request(exc.message, "ErrorInvalidArgument") from None


async def handle(request: web.Request) -> web.StreamResponse:
    """Every ``/v1.0/`` request: authenticate, route, answer errors as Graph does."""
    state = request.app[STATE]
    received = state.now()
    request_id = str(uuid.uuid4())
    client_request_id = request.headers.get("client-request-id") or request_id
    call: Call | None = None
    try:
        caller = authenticate(state, request.headers.get("Authorization"))
        call = Call(request, state, caller)
        segments = split_path(request.rel_url.raw_path)[1:]
        response = await _route(call, segments)
        if call.applied:
            response.headers["Preference-Applied"] = ", ".join(call.applied)
    except _Reset:
        assert call is not None
        _record(call, received, None)
        # Nothing is sent: the connection is gone. aiohttp writes nothing for this.
        raise web.HTTPBadRequest() from None
    except GraphError as exc:
        response = web.json_response(
            error_body(exc, state.now(), request_id, client_request_id), status=exc.status
        )
        response.headers.update(exc.headers)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = (
                'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
                'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
            )
    response.headers["request-id"] = request_id
    response.headers["client-request-id"] = client_request_id
    # The sandbox clock, not the wall clock: clients plan renewals in server time.
    response.headers["Date"] = http_date(state.now())
    if call is not None:
        _record(call, received, response.status)
    return response


def _record(call: Call, received: float, status: int | None) -> None:
    """Add a request to its mailbox's log (requests that touch no mailbox are not kept)."""
    if call.mailbox is None:
        return
    call.state.throttling.record(
        call.mailbox,
        RecordedRequest(
            time=received,
            method=call.request.method,
            path=call.request.path,
            status=status,
            retry_after=call.retry_after,
            fault=call.fault,
        ),
    )


class _Reset(Exception):
    """The request's connection was reset on purpose (an outage): nothing is answered."""


async def _outage(call: Call, mailbox: str) -> None:
    """Act out the fault that hits this request to ``mailbox``, if one does."""
    call.mailbox = mailbox
    fault = call.state.faults.take(mailbox, call.request.path)
    if fault is None:
        return
    call.fault = fault.kind
    if fault.kind != HANG:
        call.retry_after = fault.retry_after
    if fault.kind == RESET:
        _reset(call.request)
        raise _Reset
    if fault.kind == HANG:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HOLD_MAX):
                await fault.released.wait()
    raise _outage_error(fault)


def _outage_error(fault: Fault) -> GraphError:
    status, code, message = ANSWERS[fault.kind]
    headers = {}
    if fault.retry_after is not None and fault.kind != HANG:
        headers["Retry-After"] = str(fault.retry_after)
    return GraphError(status, code, message, headers)


def _reset(request: web.Request) -> None:
    """Close the request's connection with a TCP reset (RST), as a failing front end does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _route(call: Call, segments: list[Segment]) -> web.StreamResponse:
    if not segments:
        raise bad_request("Invalid request.")
    head = segments[0]
    if head.name == "subscriptions":
        return await _subscriptions(call, segments)
    if head.name == "me" and head.key is None and not head.call:
        user = resolve_user(call.state, call.caller, None)
        rest = segments[1:]
    else:
        keyed = _keyed(segments, "users")
        if keyed is None:
            raise _not_a_segment(head)
        user = resolve_user(call.state, call.caller, keyed[0])
        rest = keyed[1]
    return await _user(call, user, rest)


# -- users, folders, messages ----------------------------------------------------------


async def _user(call: Call, user: User, rest: list[Segment]) -> web.StreamResponse:
    mailbox = call.state.mail.mailbox(user.email)
    if call.immutable:
        call.applied.append(IMMUTABLE_ID)
    if not rest:
        if call.method != "GET":
            raise _unsupported(call)
        check_user_read(call.caller, user)
        return web.json_response(_user_json(call, user))
    await _outage(call, user.email)
    throttle = call.state.throttling.take(user.email)
    if throttle is not None:
        call.retry_after = throttle.retry_after
        raise throttled(throttle.code, throttle.message, throttle.retry_after)
    name = _action(rest[0])
    if name == "sendmail" and len(rest) == 1:
        if call.method != "POST":
            raise _unsupported(call)
        return await _send_mail(call, user)
    if rest[0].name == "mailfolders":
        keyed = _keyed(rest, "mailfolders")
        if keyed is None:
            if len(rest) > 1 or rest[0].call:
                raise _not_a_segment(rest[-1])
            return await _folders(call, user, mailbox, None)
        folder = _folder(mailbox, keyed[0])
        return await _in_folder(call, user, mailbox, folder, keyed[1])
    if rest[0].name == "messages":
        if len(rest) == 1 and rest[0].key is None:
            return await _messages(call, user, mailbox, None)
        if len(rest) >= 2 and _action(rest[1]) == "delta" and rest[0].key is None:
            raise bad_request(
                "Change tracking is supported on a mail folder's messages only: use "
                "mailFolders/{id}/messages/delta."
            )
        return await _message_path(call, user, mailbox, rest)
    raise _not_a_segment(rest[0])


def _user_json(call: Call, user: User) -> dict[str, Any]:
    return {
        "@odata.context": f"{call.origin}{PREFIX}/$metadata#users/$entity",
        "id": user.object_id,
        "displayName": user.display_name,
        "mail": user.email,
        "userPrincipalName": user.email,
        "businessPhones": [],
        "givenName": None,
        "surname": None,
        "jobTitle": None,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": None,
    }


def _folder(mailbox: Mailbox, key: str) -> Folder:
    folder = mailbox.folder(key)
    if folder is None:
        if looks_like_item_id(key):
            raise item_not_found()
        raise malformed_id()
    return folder


def _folder_json(mailbox: Mailbox, folder: Folder, select: tuple[str, ...] | None) -> Any:
    return folder_json(folder, len(mailbox.children(folder.id)), select)


async def _folders(call: Call, user: User, mailbox: Mailbox, parent: Folder | None) -> web.Response:
    """``mailFolders`` (the root's children) or ``mailFolders/{id}/childFolders``."""
    if call.method == "POST":
        return await _create_folder(call, user, mailbox, parent)
    if call.method != "GET":
        raise _unsupported(call)
    check_mailbox(call.state, call.caller, user, Need.READ)
    hidden = call.query.get("includehiddenfolders", "").lower() == "true"
    select = parse_folder_select(call.query.get("select"))
    folders = [
        f
        for f in mailbox.children(parent.id if parent else mailbox.root_id)
        if hidden or not f.hidden
    ]
    top, skip = _paging(call)
    page = folders[skip : skip + top]
    path, context = f"users/{user.object_id}/mailFolders", f"users('{user.object_id}')/mailFolders"
    if parent is not None:
        path += f"/{parent.id}/childFolders"
        context += f"('{parent.id}')/childFolders"
    body: dict[str, Any] = {
        "@odata.context": f"{call.origin}{PREFIX}/$metadata#{context}",
        "value": [_folder_json(mailbox, f, select) for f in page],
    }
    if skip + top < len(folders):
        options = {"top": str(top), "skip": str(skip + top)}
        if select is not None:
            options["select"] = ",".join(select)
        params = {"includeHiddenFolders": "true"} if hidden else None
        body["@odata.nextLink"] = call.link(path, options, params)
    return web.json_response(body)


async def _create_folder(
    call: Call, user: User, mailbox: Mailbox, parent: Folder | None
) -> web.Response:
    check_mailbox(call.state, call.caller, user, Need.WRITE)
    body = await call.body()
    for name in body:
        if not name.startswith("@odata.") and name not in _FOLDER_FOLDED:
            raise bad_request(
                f"The property '{name}' does not exist on type 'microsoft.graph.mailFolder'.",
                "RequestBroker--ParseUri",
            )
    display_name = body.get("displayname")
    if not isinstance(display_name, str) or not display_name.strip():
        raise bad_request("The displayName property is required.", "ErrorInvalidParameter")
    hidden = _bool(body.get("ishidden", False), "isHidden")
    try:
        folder = call.state.mail.add_folder(
            user.email, display_name, parent=parent.id if parent else None, hidden=hidden
        )
    except Conflict:
        raise _folder_exists() from None
    return web.json_response(_folder_entity(call, user, mailbox, folder), status=201)


_FOLDER_FOLDED = frozenset(name.lower() for name in FOLDER_PROPERTIES)


def _folder_entity(call: Call, user: User, mailbox: Mailbox, folder: Folder) -> dict[str, Any]:
    context = f"users('{user.object_id}')/mailFolders/$entity"
    return {
        "@odata.context": f"{call.origin}{PREFIX}/$metadata#{context}",
        **_folder_json(mailbox, folder, None),
    }


def _folder_exists() -> GraphError:
    return GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")


async def _rename_folder(
    call: Call, user: User, mailbox: Mailbox, folder: Folder
) -> web.StreamResponse:
    """``PATCH {folder}`` ``{displayName}``: rename; other folder properties are ignored.

    Microsoft does not document renaming a well-known folder; Outlook does not allow it,
    and the sandbox answers 400 ``ErrorInvalidRequest``.
    """
    check_mailbox(call.state, call.caller, user, Need.WRITE)
    body = await call.body()
    for name in body:
        if not name.startswith("@odata.") and name not in _FOLDER_FOLDED:
            raise bad_request(
                f"The property '{name}' does not exist on type 'microsoft.graph.mailFolder'.",
                "RequestBroker--ParseUri",
            )
    if "displayname" in body:
        display_name = body["displayname"]
        if not isinstance(display_name, str) or not display_name.strip():
            raise bad_request(
                "The displayName property must not be empty.", "ErrorInvalidParameter"
            )
        if folder.well_known is not None:
            raise bad_request("A distinguished folder cannot be renamed.", "ErrorInvalidRequest")
        try:
            call.state.mail.rename_folder(user.email, folder.id, display_name)
        except Conflict:
            raise _folder_exists() from None
    return web.json_response(_folder_entity(call, user, mailbox, folder))


def _delete_folder(call: Call, user: User, folder: Folder) -> web.StreamResponse:
    """``DELETE {folder}``: into Deleted Items (from there: gone); 204."""
    check_mailbox(call.state, call.caller, user, Need.WRITE)
    if folder.well_known is not None:
        raise bad_request(
            "Distinguished folders cannot be deleted.", "ErrorDeleteDistinguishedFolder"
        )
    with _input_errors():
        call.state.mail.delete_folder(user.email, folder.id)
    return web.Response(status=204)


async def _move_folder(
    call: Call, user: User, mailbox: Mailbox, folder: Folder
) -> web.StreamResponse:
    """``POST {folder}/move`` ``{destinationId}`` -> 200 the folder, under its new parent."""
    check_mailbox(call.state, call.caller, user, Need.WRITE)
    body = await call.body()
    destination = body.get("destinationid")
    if not isinstance(destination, str) or not destination:
        raise bad_request("destinationId is required.", "ErrorInvalidParameter")
    if mailbox.container(destination) is None:
        raise item_not_found() if looks_like_item_id(destination) else malformed_id()
    if folder.well_known is not None:
        raise bad_request("Cannot move distinguished folder.", "ErrorMoveDistinguishedFolder")
    try:
        call.state.mail.move_folder(user.email, folder.id, destination)
    except Conflict:
        raise _folder_exists() from None
    except InputError as exc:
        raise bad_request(exc.message, "ErrorInvalidRequest") from None
    return web.json_response(_folder_entity(call, user, mailbox, folder))


async def _in_folder(
    call: Call, user: User, mailbox: Mailbox, folder: Folder, rest: list[Segment]
) -> web.StreamResponse:
    if not rest:
        if call.method == "PATCH":
            return await _rename_folder(call, user, mailbox, folder)
        if call.method == "DELETE":
            return _delete_folder(call, user, folder)
        if call.method != "GET":
            raise _unsupported(call)
        check_mailbox(call.state, call.caller, user, Need.READ)
        select = parse_folder_select(call.query.get("select"))
        return web.json_response(_folder_json(mailbox, folder, select))
    if len(rest) == 1 and _action(rest[0]) == "move" and rest[0].key is None:
        if call.method != "POST":
            raise _unsupported(call)
        return await _move_folder(call, user, mailbox, folder)
    if rest[0].name == "childfolders":
        keyed = _keyed(rest, "childfolders")
        if keyed is None:
            if len(rest) > 1 or rest[0].call:
                raise _not_a_segment(rest[-1])
            return await _folders(call, user, mailbox, folder)
        child = _folder(mailbox, keyed[0])
        if child.parent_id != folder.id:
            raise item_not_found()
        return await _in_folder(call, user, mailbox, child, keyed[1])
    if rest[0].name != "messages":
        raise _not_a_segment(rest[0])
    if len(rest) == 1 and rest[0].key is None:
        return await _messages(call, user, mailbox, folder)
    if len(rest) == 2 and _action(rest[1]) == "delta" and rest[1].key is None:
        if call.method != "GET":
            raise _unsupported(call)
        return _delta(call, user, mailbox, folder)
    return await _message_path(call, user, mailbox, rest)


def _paging(call: Call) -> tuple[int, int]:
    return _int_option(call, "top", DEFAULT_TOP, 1, MAX_TOP), _int_option(call, "skip", 0, 0, None)


def _int_option(call: Call, name: str, default: int, low: int, high: int | None) -> int:
    raw = call.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"Invalid value '{raw}' for query option '${name}'.") from None
    if value < low or (high is not None and value > high):
        limit = f" and {high}" if high is not None else ""
        raise bad_request(f"'${name}' must be between {low}{limit}.")
    return value


async def _messages(
    call: Call, user: User, mailbox: Mailbox, folder: Folder | None
) -> web.Response:
    """``GET`` lists messages; ``POST`` creates a draft (in Drafts, or in ``folder``).

    A ``POST`` with ``Content-Type: text/plain`` carries a base64-encoded MIME message.
    """
    if call.method == "POST":
        if call.request.content_type == "text/plain":
            return await _create_from_mime(call, user, folder)
        return await _create_draft(call, user, mailbox, folder)
    if call.method != "GET":
        raise _unsupported(call)
    return _list_messages(call, user, mailbox, folder)


def _list_messages(call: Call, user: User, mailbox: Mailbox, folder: Folder | None) -> web.Response:
    bodies = check_mailbox(call.state, call.caller, user, Need.READ)
    select = parse_select(call.query.get("select"))
    folders = [folder] if folder else [f for f in mailbox.folders.values() if not f.hidden]
    messages = [m for f in folders for m in f.messages.values()]
    path = f"users/{user.object_id}/" + (
        f"mailFolders/{folder.id}/messages" if folder else "messages"
    )
    if "search" in call.query:
        return _search_messages(call, messages, select, bodies, path)
    descending = _order(call)
    if "filter" in call.query:
        found = parse_filter(call.query["filter"])
        # Graph sorts a filtered list by the filter's first property; an $orderby on
        # another one is refused.
        if "orderby" in call.query and found.properties[:1] != ("receivedDateTime",):
            raise GraphError(
                400,
                "InefficientFilter",
                "The restriction or sort order is too complex for this operation.",
            )
        messages = [m for m in messages if found.matches(m)]
    messages.sort(key=lambda m: (m.received, m.seq), reverse=descending)
    top, skip = _paging(call)
    options: dict[str, str] = {"skip": str(skip + top)}
    for name in ("filter", "orderby"):
        if name in call.query:
            options[name] = call.query[name]
    return _page(call, path, messages, skip, top, select, bodies, options)


def _page(
    call: Call,
    path: str,
    messages: list[Message],
    offset: int,
    top: int,
    select: tuple[str, ...] | None,
    bodies: bool,
    next_options: dict[str, str],
) -> web.Response:
    """One page of a message list; ``next_options`` (plus top, select, count) page on."""
    body: dict[str, Any] = {
        "@odata.context": f"{call.origin}{PREFIX}/$metadata#{path}",
        "value": [call.message(m, select, bodies=bodies) for m in messages[offset : offset + top]],
    }
    if call.query.get("count", "").lower() == "true":
        body["@odata.count"] = len(messages)
    if offset + top < len(messages):
        options = {"top": str(top), **next_options}
        if select is not None:
            options["select"] = ",".join(select)
        if "count" in call.query:
            options["count"] = call.query["count"]
        body["@odata.nextLink"] = call.link(path, options)
    return web.json_response(body)


def _search_messages(
    call: Call,
    messages: list[Message],
    select: tuple[str, ...] | None,
    bodies: bool,
    path: str,
) -> web.Response:
    """``$search``: up to 1,000 matches, newest sent first, paged with ``$skiptoken``."""
    if "orderby" in call.query:
        raise bad_request(
            "The query parameter '$orderBy' is not supported with '$search'.", "SearchWithOrderBy"
        )
    if "filter" in call.query:
        raise bad_request(
            "The query parameter '$filter' is not supported with '$search'.", "SearchWithFilter"
        )
    if "skip" in call.query:
        raise bad_request("The query parameter '$skip' is not supported with '$search'.")
    raw = call.query["search"]
    matches = parse_search(raw)
    found = [m for m in messages if matches(m)]
    found.sort(key=lambda m: (m.sent if m.sent is not None else m.received, m.seq), reverse=True)
    found = found[:MAX_SEARCH_RESULTS]
    top = _int_option(call, "top", DEFAULT_TOP, 1, MAX_TOP)
    offset = _search_offset(call.query.get("skiptoken"))
    token = base64.urlsafe_b64encode(f"search:{offset + top}".encode()).decode()
    options = {"search": raw, "skiptoken": token.rstrip("=")}
    return _page(call, path, found, offset, top, select, bodies, options)


def _search_offset(token: str | None) -> int:
    if token is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, offset = text.partition(":")
        if kind != "search" or not offset.isdigit():
            raise ValueError(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_request("The $skiptoken is not valid for this request.") from None
    return int(offset)


def _order(call: Call) -> bool:
    raw = call.query.get("orderby")
    if raw is None:
        return True
    parts = raw.split()
    if not parts or parts[0].lower() != "receiveddatetime" or len(parts) > 2:
        raise bad_request("The sandbox orders messages by receivedDateTime only.")
    if len(parts) == 2 and parts[1].lower() not in ("asc", "desc"):
        raise bad_request(f"Invalid $orderby direction '{parts[1]}'.")
    return len(parts) == 1 or parts[1].lower() == "desc"


def _delta(call: Call, user: User, mailbox: Mailbox, folder: Folder) -> web.Response:
    bodies = check_mailbox(call.state, call.caller, user, Need.READ)
    size = DEFAULT_TOP
    prefer = call.prefer.get("odata.maxpagesize", "")
    if prefer.isdigit():
        size = max(1, min(int(prefer), MAX_TOP))
        call.applied.append(f"odata.maxpagesize={size}")
    skip_token = call.query.get("skiptoken")
    delta_token = call.query.get("deltatoken")
    try:
        if skip_token is not None:
            cursor = delta.decode(skip_token, folder)
            if cursor.until is None:
                raise delta.TokenInvalid("not a skip token")
        elif delta_token is not None:
            token = delta.decode(delta_token, folder)
            if token.until is not None:
                raise delta.TokenInvalid("not a delta token")
            cursor = delta.resume(token, mailbox.seq)
        else:
            cursor = delta.start(folder, mailbox.seq, parse_select(call.query.get("select")))
    except delta.TokenExpired:
        raise GraphError(
            410,
            "syncStateNotFound",
            "The sync state of this delta token is gone; start over with a delta request "
            "without a token.",
        ) from None
    except delta.TokenInvalid:
        raise bad_request("The delta or skip token is not valid for this request.") from None
    result = delta.page(folder, cursor, size)
    value = [
        removed_json(item.immutable_id if call.immutable else item.id)
        if isinstance(item, Removed)
        else call.message(item, cursor.select, bodies=bodies, odata_type=True)
        for item in result.messages
    ]
    path = f"users/{user.object_id}/mailFolders('{folder.id}')/messages/delta"
    body: dict[str, Any] = {
        "@odata.context": f"{call.origin}{PREFIX}/$metadata#Collection(message)",
        "value": value,
    }
    if result.next is not None:
        body["@odata.nextLink"] = call.link(path, {"skiptoken": result.next.encode()})
    else:
        assert result.delta is not None
        body["@odata.deltaLink"] = call.link(path, {"deltatoken": result.delta.encode()})
    return web.json_response(body)


async def _message_path(
    call: Call, user: User, mailbox: Mailbox, rest: list[Segment]
) -> web.StreamResponse:
    keyed = _keyed(rest, "messages")
    if keyed is None:
        raise _not_a_segment(rest[0])
    message_id, tail = keyed
    if not looks_like_item_id(message_id):
        raise malformed_id()
    if not tail:
        if call.method == "GET":
            bodies = check_mailbox(call.state, call.caller, user, Need.READ)
            select = parse_select(call.query.get("select"))
            try:
                expanded = parse_expand(call.query.get("expand"))
            except ValueError:
                raise bad_request(
                    "Parsing OData Select and Expand failed: the $expand is not supported."
                ) from None
            message = _message(mailbox, message_id)
            answer = call.message(message, select, bodies=bodies)
            if expanded is not None:
                answer["singleValueExtendedProperties"] = extended_json(message, expanded)
            return web.json_response(answer)
        if call.method == "PATCH":
            return await _patch_message(call, user, mailbox, message_id)
        if call.method == "DELETE":
            check_mailbox(call.state, call.caller, user, Need.WRITE)
            _message(mailbox, message_id)
            with _input_errors():
                call.state.mail.delete(user.email, message_id)
            return web.Response(status=204)
        raise _unsupported(call)
    if tail[0].name == "$value" and len(tail) == 1:
        if call.method != "GET":
            raise _unsupported(call)
        _check_content(call, user)
        return ChunkedBody(source(_message(mailbox, message_id)), "text/plain")
    if tail[0].name == "attachments":
        return _attachments(call, user, mailbox, message_id, tail)
    if len(tail) != 1:
        raise _not_a_segment(tail[-1])
    action = _action(tail[0])
    if action not in ("move", "copy", "permanentdelete", "send"):
        raise _not_a_segment(tail[0])
    if call.method != "POST":
        raise _unsupported(call)
    if action == "send":
        return await _send_draft(call, user, mailbox, message_id)
    check_mailbox(call.state, call.caller, user, Need.WRITE)
    _message(mailbox, message_id)
    if action == "permanentdelete":
        with _input_errors():
            call.state.mail.purge(user.email, message_id)
        return web.Response(status=204)
    body = await call.body()
    destination = body.get("destinationid")
    if not isinstance(destination, str) or not destination:
        raise bad_request("destinationId is required.", "ErrorInvalidParameter")
    target = _folder(mailbox, destination)
    with _input_errors():
        if action == "copy":
            result = call.state.mail.copy(user.email, message_id, target.id)
        else:
            result = call.state.mail.move(user.email, message_id, target.id)
    return web.json_response(call.message(result), status=201)


def _check_content(call: Call, user: User) -> None:
    """Message sources and attachments need a full read permission (not ReadBasic)."""
    if not check_mailbox(call.state, call.caller, user, Need.READ):
        raise access_denied()


def _attachments(
    call: Call, user: User, mailbox: Mailbox, message_id: str, tail: list[Segment]
) -> web.StreamResponse:
    """``.../attachments``, ``.../attachments/{id}`` and ``.../attachments/{id}/$value``."""
    if call.method != "GET":
        raise _unsupported(call)
    _check_content(call, user)
    message = _message(mailbox, message_id)
    message_key = f"users('{user.object_id}')/messages('{quote(message_id, safe='')}')"
    if len(tail) == 1 and tail[0].key is None:
        select = parse_attachment_select(call.query.get("select"))
        return _json_answer(
            {
                "@odata.context": f"{call.origin}{PREFIX}/$metadata#{message_key}/attachments",
                "value": [attachment_json(a, select) for a in message.attachments],
            }
        )
    keyed = _keyed(tail, "attachments")
    if keyed is None:
        raise _not_a_segment(tail[0])
    attachment_id, rest = keyed
    attachment = message.attachment(attachment_id)
    if attachment is None:
        raise item_not_found()
    if not rest:
        select = parse_attachment_select(call.query.get("select"))
        context = f"{call.origin}{PREFIX}/$metadata#{message_key}/attachments/$entity"
        return _json_answer({"@odata.context": context, **attachment_json(attachment, select)})
    if len(rest) == 1 and rest[0].name == "$value":
        return ChunkedBody(attachment.data, attachment.content_type or "application/octet-stream")
    raise _not_a_segment(rest[-1])


def _message(mailbox: Mailbox, message_id: str) -> Message:
    found = mailbox.find(message_id)
    if found is None:
        raise item_not_found()
    return found


_ALWAYS_WRITABLE = ("isread", "flag", "categories", "importance", "inferenceclassification")
_DRAFT_WRITABLE = ("subject", "body")
_READ_ONLY = frozenset(name.lower() for name in MESSAGE_PROPERTIES)


async def _patch_message(call: Call, user: User, mailbox: Mailbox, message_id: str) -> web.Response:
    check_mailbox(call.state, call.caller, user, Need.WRITE)
    message = _message(mailbox, message_id)
    body = await call.body()
    changes: dict[str, Any] = {}
    for name, value in body.items():
        if name.startswith("@odata."):
            continue
        if name == "isread":
            changes["is_read"] = _bool(value, "isRead")
        elif name == "flag":
            changes["flag_status"] = _flag_of(value)
        elif name == "categories":
            changes["categories"] = _categories_of(value)
        elif name == "importance":
            changes["importance"] = _choice(str(value), IMPORTANCE)
        elif name == "inferenceclassification":
            continue
        elif name in _DRAFT_WRITABLE and message.is_draft:
            if name == "subject":
                changes["subject"] = str(value)
            else:
                changes["body"] = _body_of(value)
        elif name in _READ_ONLY:
            raise bad_request(
                "Update operation is not supported for this property on a sent message.",
                "ErrorInvalidPropertyUpdateSentMessage",
            )
        else:
            raise bad_request(
                f"The property '{name}' does not exist on type 'microsoft.graph.message'.",
                "RequestBroker--ParseUri",
            )
    with _input_errors():
        updated = call.state.mail.update(user.email, message_id, **changes)
    return web.json_response(call.message(updated))


_DRAFT_FIELDS = frozenset(
    {
        "subject",
        "body",
        "torecipients",
        "ccrecipients",
        "bccrecipients",
        "replyto",
        "from",
        "importance",
        "categories",
        "flag",
        "isread",
    }
)


async def _create_draft(
    call: Call, user: User, mailbox: Mailbox, folder: Folder | None
) -> web.Response:
    """``POST .../messages``: a draft; read-only properties in the body are ignored."""
    check_mailbox(call.state, call.caller, user, Need.WRITE)
    body = await call.body()
    for name in body:
        if not (name.startswith("@odata.") or name in _DRAFT_FIELDS or name in _READ_ONLY):
            raise bad_request(
                f"The property '{name}' does not exist on type 'microsoft.graph.message'.",
                "RequestBroker--ParseUri",
            )
    subject = body.get("subject", "")
    if not isinstance(subject, str):
        raise bad_request("subject must be a string.", "ErrorInvalidArgument")
    content, kind = _body_of(body.get("body", {"content": "", "contentType": "text"}))
    data = MessageInput(
        subject=subject,
        body=content,
        body_type=kind,
        from_=_recipient(body["from"], "from") if body.get("from") is not None else None,
        to=_recipients(body, "toRecipients"),
        cc=_recipients(body, "ccRecipients"),
        bcc=_recipients(body, "bccRecipients"),
        reply_to=_recipients(body, "replyTo"),
        importance=_choice(str(body.get("importance", "normal")), IMPORTANCE),
        categories=_categories_of(body.get("categories", [])),
        flag_status=_flag_of(body["flag"]) if body.get("flag") is not None else "notFlagged",
        is_read=_bool(body.get("isread", True), "isRead"),
        is_draft=True,
    )
    with _input_errors():
        draft = call.state.mail.add_message(user.email, folder.id if folder else DRAFTS, data)
    context = f"users('{user.object_id}')/messages/$entity"
    return web.json_response(
        {"@odata.context": f"{call.origin}{PREFIX}/$metadata#{context}", **call.message(draft)},
        status=201,
    )


def _invalid_mime() -> GraphError:
    return bad_request(
        "Invalid base64 string for MIME content.", "ErrorMimeContentInvalidBase64String"
    )


async def _create_from_mime(call: Call, user: User, folder: Folder | None) -> web.Response:
    """``POST .../messages`` with a base64 MIME body: a draft, as with JSON.

    The decoded source is kept byte for byte (``$value`` returns it); subject, addresses,
    body, attachments and headers are read from it.
    """
    check_mailbox(call.state, call.caller, user, Need.WRITE)
    encoded = b"".join((await call.request.read()).split())
    try:
        raw = base64.b64decode(encoded, validate=True)
        parsed = await asyncio.to_thread(parse_mime, raw)
    except (binascii.Error, MimeError):
        raise _invalid_mime() from None
    data = MessageInput(
        subject=parsed.subject,
        body=parsed.body,
        body_type=parsed.body_type,
        from_=parsed.from_,
        sender=parsed.sender,
        to=parsed.to,
        cc=parsed.cc,
        bcc=parsed.bcc,
        reply_to=parsed.reply_to,
        importance=parsed.importance,
        is_read=True,
        is_draft=True,
        internet_message_id=parsed.internet_message_id,
        sent=parsed.sent,
        mime=raw,
        attachments=parsed.attachments,
        headers=parsed.headers,
    )
    with _input_errors():
        draft = call.state.mail.add_message(user.email, folder.id if folder else DRAFTS, data)
    context = f"users('{user.object_id}')/messages/$entity"
    return web.json_response(
        {"@odata.context": f"{call.origin}{PREFIX}/$metadata#{context}", **call.message(draft)},
        status=201,
    )


def _flag_of(value: Any) -> str:
    status = value.get("flagstatus") if isinstance(value, dict) else None
    if not isinstance(status, str):
        raise bad_request("flag.flagStatus must be a string.", "ErrorInvalidArgument")
    return _choice(status, FLAG_STATUS)


def _categories_of(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request("categories must be a list of strings.", "ErrorInvalidArgument")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false.", "ErrorInvalidArgument")
    return value


def _choice(value: str, allowed: tuple[str, ...]) -> str:
    for candidate in allowed:
        if candidate.lower() == value.lower():
            return candidate
    raise bad_request(
        f"Requested value '{value}' was not found; use one of {', '.join(allowed)}.",
        "ErrorInvalidArgument",
    )


def _body_of(value: Any) -> tuple[str, str]:
    if not isinstance(value, dict):
        raise bad_request("body must be an itemBody object.", "ErrorInvalidArgument")
    content = value.get("content", "")
    kind = _choice(str(value.get("contenttype", "text")), ("text", "html"))
    if not isinstance(content, str):
        raise bad_request("body.content must be a string.", "ErrorInvalidArgument")
    return content, kind


# -- sendMail ----------------------------------------------------------------------------


def _recipient(value: Any, name: str) -> Address:
    address = value.get("emailaddress") if isinstance(value, dict) else None
    email = address.get("address") if isinstance(address, dict) else None
    if not isinstance(email, str) or not is_address(email.strip()):
        raise bad_request(
            f"At least one recipient isn't valid., A message can't be sent because it "
            f"contains no valid recipients in {name}.",
            "ErrorInvalidRecipients",
        )
    display = address.get("name") if isinstance(address, dict) else None
    email = email.strip()
    return Address(name=display if isinstance(display, str) and display else email, address=email)


def _recipients(message: dict[str, Any], name: str) -> list[Address]:
    value = message.get(name.lower())
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request(f"{name} must be a list of recipients.", "ErrorInvalidRecipients")
    return [_recipient(item, name) for item in value]


async def _send_mail(call: Call, mailbox_user: User) -> web.Response:
    body = await call.body()
    message = body.get("message")
    if not isinstance(message, dict):
        raise bad_request("The message property is required.", "ErrorInvalidParameter")
    save = body.get("savetosentitems", True)
    if not isinstance(save, bool):
        raise bad_request("saveToSentItems must be true or false.", "ErrorInvalidParameter")
    to = _recipients(message, "toRecipients")
    cc = _recipients(message, "ccRecipients")
    bcc = _recipients(message, "bccRecipients")
    reply_to = _recipients(message, "replyTo")
    if not (to or cc or bcc):
        raise bad_request(
            "At least one recipient is required, but none were found.", "ErrorInvalidRecipients"
        )
    from_user = mailbox_user
    if message.get("from") is not None:
        address = _recipient(message["from"], "from").address.lower()
        found = call.state.users.get(address)
        if found is None:
            raise send_as_denied()
        from_user = found
    rights = check_send(call.state, call.caller, mailbox_user, from_user)
    content, kind = _body_of(message.get("body", {"content": "", "contentType": "text"}))
    subject = message.get("subject", "")
    attachments = message.get("attachments") or []
    data = MessageInput(
        subject=subject if isinstance(subject, str) else str(subject),
        body=content,
        body_type=kind,
        from_=Address(rights.from_.display_name, rights.from_.email),
        sender=Address(rights.sender.display_name, rights.sender.email),
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        importance=_choice(str(message.get("importance", "normal")), IMPORTANCE),
        has_attachments=bool(attachments),
        is_read=True,
    )
    mail = call.state.mail
    with _input_errors():
        if save:
            copy = mail.add_message(mailbox_user.email, SENT_ITEMS, data)
            data.internet_message_id = copy.internet_message_id
            data.conversation_id = copy.conversation_id
        mail.deliver(data)
    return web.Response(status=202)


async def _send_draft(
    call: Call, mailbox_user: User, mailbox: Mailbox, message_id: str
) -> web.Response:
    """``POST .../messages/{id}/send``: the draft moves to Sent Items and goes out.

    Microsoft does not document the answer to sending a message that is not a draft;
    the sandbox answers 400 ``ErrorInvalidRequest``.
    """
    message = _message(mailbox, message_id)
    if not message.is_draft:
        raise bad_request(
            "Only a draft can be sent; this message was sent or received already.",
            "ErrorInvalidRequest",
        )
    from_user = mailbox_user
    if message.from_ is not None:
        found = call.state.users.get(message.from_.address.lower())
        if found is None:
            raise send_as_denied()
        from_user = found
    rights = check_send(call.state, call.caller, mailbox_user, from_user)
    if not (message.to or message.cc or message.bcc):
        raise bad_request(
            "At least one recipient is required, but none were found.", "ErrorInvalidRecipients"
        )
    with _input_errors():
        call.state.mail.send_draft(
            mailbox_user.email,
            message.id,
            from_=Address(rights.from_.display_name, rights.from_.email),
            sender=Address(rights.sender.display_name, rights.sender.email),
        )
    return web.Response(status=202)


# -- subscriptions -----------------------------------------------------------------------


async def _subscriptions(call: Call, segments: list[Segment]) -> web.StreamResponse:
    rest = segments
    if len(rest) == 1 and rest[0].key is None:
        if call.method == "POST":
            return await _create_subscription(call)
        if call.method == "GET":
            own = [
                s.to_json()
                for s in call.state.subscriptions.values()
                if s.client_id == call.caller.client_id
            ]
            return web.json_response(
                {"@odata.context": f"{call.origin}{PREFIX}/$metadata#subscriptions", "value": own}
            )
        raise _unsupported(call)
    keyed = _keyed(rest, "subscriptions")
    if keyed is None:
        raise _not_a_segment(rest[0])
    sub = _subscription(call, keyed[0])
    await _outage(call, sub.mailbox)
    tail = keyed[1]
    if tail:
        if len(tail) == 1 and _action(tail[0]) == "reauthorize" and call.method == "POST":
            sub.needs_reauthorization = False
            return web.Response(status=204)
        raise _not_a_segment(tail[0])
    if call.method == "GET":
        return web.json_response(_subscription_json(call, sub))
    if call.method == "DELETE":
        del call.state.subscriptions[sub.id]
        return web.Response(status=204)
    if call.method == "PATCH":
        body = await call.body()
        for name in body:
            if name != "expirationdatetime" and not name.startswith("@odata."):
                raise bad_request(
                    f"The sandbox renews subscriptions only; '{name}' cannot be changed.",
                    "InvalidRequest",
                )
        expires_at = parse_datetime(body.get("expirationdatetime"), "expirationDateTime")
        check_expiration(expires_at, call.state.now())
        sub.expires_at = expires_at
        sub.needs_reauthorization = False
        call.request.app[NOTIFIER].wake()
        return web.json_response(_subscription_json(call, sub))
    raise _unsupported(call)


def _subscription(call: Call, subscription_id: str) -> Subscription:
    sub = call.state.subscriptions.get(subscription_id)
    if sub is None or sub.client_id != call.caller.client_id or sub.expires_at <= call.state.now():
        raise GraphError(404, "ResourceNotFound", "The object was not found.")
    return sub


def _subscription_json(call: Call, sub: Subscription) -> dict[str, Any]:
    return {
        "@odata.context": f"{call.origin}{PREFIX}/$metadata#subscriptions/$entity",
        **sub.to_json(),
    }


async def _create_subscription(call: Call) -> web.Response:
    state = call.state
    body = await call.body()
    if body.get("includeresourcedata"):
        raise bad_request(
            "The sandbox does not send notifications with resource data.", "InvalidRequest"
        )
    change_types = parse_change_types(body.get("changetype"))
    target = parse_resource(body.get("resource"))
    notification_url = check_notification_url(
        body.get("notificationurl"), "notificationUrl", allow_http=state.allow_http_notifications
    )
    lifecycle_url = None
    if body.get("lifecyclenotificationurl") is not None:
        lifecycle_url = check_notification_url(
            body.get("lifecyclenotificationurl"),
            "lifecycleNotificationUrl",
            allow_http=state.allow_http_notifications,
        )
    expires_at = parse_datetime(body.get("expirationdatetime"), "expirationDateTime")
    check_expiration(expires_at, state.now())
    client_state = check_client_state(body.get("clientstate"))
    user = resolve_user(state, call.caller, target.user)
    await _outage(call, user.email)
    check_subscribe(call.caller, user)
    mailbox = state.mail.mailbox(user.email)
    folder = _folder(mailbox, target.folder) if target.folder is not None else None
    now = state.now()
    active = sum(
        1 for s in state.subscriptions.values() if s.mailbox == user.email and s.expires_at > now
    )
    if active >= MAX_PER_MAILBOX:
        raise GraphError(
            403,
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: Forbidden; Reason: The number of "
            f"active subscriptions for this mailbox has reached the limit of {MAX_PER_MAILBOX}.]",
        )
    notifier = call.request.app[NOTIFIER]
    await notifier.validate(notification_url)
    if lifecycle_url is not None and lifecycle_url != notification_url:
        await notifier.validate(lifecycle_url)
    caller = call.caller
    app = state.apps.get(caller.client_id)
    sub = Subscription(
        id=str(uuid.uuid4()),
        resource=str(body["resource"]),
        change_types=change_types,
        notification_url=notification_url,
        lifecycle_url=lifecycle_url,
        client_state=client_state,
        expires_at=expires_at,
        mailbox=user.email,
        owner_id=user.object_id,
        folder_id=folder.id if folder else None,
        client_id=caller.client_id,
        creator_id=caller.user.object_id if caller.user else (app.object_id if app else ""),
        user=caller.user.email if caller.user else None,
        tenant_id=state.tenant_id,
        immutable_ids=call.immutable,
    )
    state.subscriptions[sub.id] = sub
    if sub.immutable_ids:
        call.applied.append(IMMUTABLE_ID)
    notifier.wake()
    return web.json_response(_subscription_json(call, sub), status=201)


def add_routes(app: web.Application) -> None:
    """Register the Graph endpoints on ``app``."""
    app.router.add_route("*", PREFIX + "/{tail:.*}", handle)
