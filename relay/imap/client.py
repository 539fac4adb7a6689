"""A small asyncio IMAP4rev1 client for long-lived listeners.

Why our own: the relay keeps thousands of IDLE connections open for weeks. ``aioimaplib``
(GPL, so unusable here anyway) hangs on a failed XOAUTH2 (it never answers the ``+`` error
challenge), hangs when IDLE is answered with BYE, never notices a silently dead connection,
and drops untagged responses that arrive while no command is pending. ``imaplib`` and
``imapclient`` are synchronous.

What is ours is only the *framing* and the command/response bookkeeping: an
``asyncio.Protocol`` cuts the byte stream into logical responses (CRLF lines with ``{n}``
literals spliced in). Everything inside a response is parsed by
``imapclient.response_parser`` (BSD, pure) via :mod:`relay.imap.parse`.

Design, for memory (2,000+ idle connections per process):

* no task per connection: the protocol's ``data_received`` callback dispatches responses;
  tasks exist only while a caller awaits something;
* the receive buffer holds at most one incomplete response and is emptied after each one;
* untagged responses that no pending command asked for become :data:`Update` values,
  handed to an ``on_update`` callback or kept (bounded) until :meth:`ImapClient.next_update`
  reads them. None is ever dropped.

Commands run one at a time (an ``asyncio.Lock``); each has a timeout after which the
connection is presumed dead and closed. A BYE, EOF or protocol error closes the client and
wakes every waiter with an :class:`ImapConnectionError` / :class:`ImapProtocolError`.

Measured (``bench/imap_conn_memory.py``, Dovecot, logged in, INBOX selected, IDLE running):
about 9 KiB per plain connection and 41-45 KiB per TLS connection on uvloop; on the default
asyncio loop TLS costs about 300 KiB, because its SSL protocol keeps a 256 KiB read buffer
per connection. Share one ``SSLContext`` among connections: each context holds its own
certificate store (hundreds of KiB).

A listener looks like this::

    client = await ImapClient.connect(host, 993, ssl=ctx)
    await client.authenticate_xoauth2(user, token)
    await client.enable("QRESYNC")
    state = await client.select("INBOX", qresync=Qresync(uidvalidity, modseq))
    while True:
        await client.idle_start()
        try:
            async with asyncio.timeout(25 * 60):   # re-IDLE before servers drop it
                while True:
                    handle(await client.next_update())
        except TimeoutError:
            pass
        await client.idle_done()                   # raises ImapTimeoutError if dead
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import re
import socket
import ssl as ssl_module
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from imapclient.datetime_util import datetime_to_INTERNALDATE

from relay.imap.errors import (
    ImapAuthError,
    ImapByeError,
    ImapCommandError,
    ImapConnectionError,
    ImapError,
    ImapProtocolError,
    ImapStateError,
    ImapTimeoutError,
)
from relay.imap.parse import (
    AppendResult,
    Bye,
    CopyResult,
    FetchedMessage,
    Literal,
    Mailbox,
    Record,
    SearchResult,
    SelectResult,
    Tagged,
    UidSet,
    Untagged,
    Update,
    encode_mailbox,
    parse_copyuid,
    parse_fetch,
    parse_list,
    parse_search,
    parse_select,
    parse_status,
    parse_untagged,
    parse_vanished,
    quote,
    sequence_set,
    split_status,
    to_update,
)
from relay.imap.xoauth2 import decode_error_challenge, xoauth2_initial_response
from relay.proxy import connect as proxied
from relay.proxy import redacted

__all__ = [
    "ClientOptions",
    "ExpungeResult",
    "FetchResult",
    "ImapClient",
    "Qresync",
]

# A line that ends in a literal marker: {n}, {n+} (LITERAL+) or ~{n} (BINARY literal8).
_LITERAL_MARKER = re.compile(rb"~?\{(\d+)\+?\}\Z")
_STATUS_WORDS = frozenset({"OK", "NO", "BAD", "PREAUTH", "BYE"})
# Codes that mean the server could not check the credentials right now: not the user's fault.
_TRANSIENT_AUTH_CODES = frozenset({"UNAVAILABLE", "SERVERBUG", "LIMIT", "INUSE"})


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Timeouts and limits of one client connection (all times in seconds)."""

    connect_timeout: float = 30.0
    command_timeout: float = 60.0
    done_timeout: float = 30.0
    keepalive_idle: int = 60
    keepalive_interval: int = 15
    keepalive_count: int = 4
    max_response_bytes: int = 64 * 1024 * 1024
    max_pending_updates: int = 10_000


@dataclass(frozen=True, slots=True)
class Qresync:
    """Parameters of ``SELECT ... (QRESYNC (uidvalidity modseq [known-uids]))``."""

    uidvalidity: int
    modseq: int
    known_uids: str | Sequence[int] | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Messages returned by UID FETCH (in server order) and, with VANISHED, the UIDs gone."""

    messages: tuple[FetchedMessage, ...]
    vanished: UidSet = field(default_factory=UidSet)

    def by_uid(self) -> dict[int, FetchedMessage]:
        """The messages keyed by UID (messages without a UID are left out)."""
        return {m.uid: m for m in self.messages if m.uid is not None}


@dataclass(frozen=True, slots=True)
class ExpungeResult:
    """What EXPUNGE / UID EXPUNGE removed: sequence numbers, or UIDs when QRESYNC is on."""

    seqs: tuple[int, ...]
    vanished: UidSet = field(default_factory=UidSet)


class _Command:
    """One command in flight; lives only while a caller awaits it."""

    __slots__ = ("follow", "future", "name", "on_continuation", "owns", "tag", "untagged")

    def __init__(
        self,
        tag: bytes,
        name: str,
        owns: frozenset[str],
        future: asyncio.Future[Tagged],
        on_continuation: Callable[[bytes], None] | None,
    ) -> None:
        self.tag = tag
        self.name = name
        self.owns = owns
        self.future = future
        self.on_continuation = on_continuation
        self.untagged: list[Untagged] = []
        # A command written right behind this one: it becomes the pending command the
        # moment this one's tagged response arrives (DONE + UID FETCH in one write).
        self.follow: _Command | None = None


class _Wire(asyncio.Protocol):
    """Frames the byte stream into responses and hands each to the client."""

    __slots__ = ("_buf", "_client", "_head", "_need", "_records", "_scan", "_size", "transport")

    def __init__(self, client: ImapClient) -> None:
        self._client = client
        self._buf = bytearray()
        self._records: list[Record] = []
        self._head = b""
        self._need = -1  # bytes of literal still expected, -1 when reading a line
        self._scan = 0  # where to resume looking for CRLF in _buf
        self._size = 0  # bytes of the response being assembled
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        limit = self._client._options.max_response_bytes
        try:
            while buf:
                if self._need >= 0:
                    if len(buf) < self._need:
                        break
                    literal = bytes(buf[: self._need])
                    del buf[: self._need]
                    self._records.append((self._head, literal))
                    self._need = -1
                    self._scan = 0
                    continue
                end = buf.find(b"\r\n", self._scan)
                if end < 0:
                    self._scan = max(0, len(buf) - 1)
                    if self._size + len(buf) > limit:
                        raise ImapProtocolError(f"response longer than {limit} bytes")
                    break
                line = bytes(buf[:end])
                del buf[: end + 2]
                self._scan = 0
                self._size += end + 2
                marker = _LITERAL_MARKER.search(line)
                if marker is not None:
                    size = int(marker.group(1))
                    self._size += size
                    if self._size > limit:
                        raise ImapProtocolError(f"response longer than {limit} bytes")
                    # imapclient's parser only knows the plain {n} form.
                    self._head = line[: marker.start()] + b"{%d}" % size
                    self._need = size
                    continue
                records = self._records
                records.append(line)
                self._records = []
                self._head = b""
                self._size = 0
                self._client._on_response(records)
                if self.transport is None or self.transport.is_closing():
                    break
        except ImapError as exc:
            self._client._fail(exc)
        except Exception as exc:  # a bug must not leave waiters hanging
            self._client._fail(ImapProtocolError(f"cannot handle response: {exc!r}"))
            self._client._loop.call_exception_handler(
                {"message": "IMAP response handling failed", "exception": exc}
            )
        if not buf and buf.__alloc__() > 4096:
            # Drop the capacity a large response left behind.
            self._buf = bytearray()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._buf = bytearray()
        self._records = []
        self._client._on_connection_lost(exc)


class ImapClient:
    """One IMAP connection. Create it with :meth:`ImapClient.connect`.

    Untagged responses that no command asked for (EXISTS, EXPUNGE, VANISHED, FETCH with
    FLAGS/MODSEQ, BYE, ``* OK`` ...) are delivered as :data:`Update` values: to
    ``on_update`` if given (called from the event loop; must not block), else queued for
    :meth:`next_update` / :meth:`drain_updates`. After the connection ends,
    :meth:`next_update` returns what is left and then raises the error that ended it.
    """

    __slots__ = (
        "_capabilities",
        "_closed",
        "_enabled",
        "_error",
        "_greeting",
        "_idle",
        "_lock",
        "_loop",
        "_on_update",
        "_options",
        "_pending",
        "_selected",
        "_selection",
        "_tag",
        "_trace",
        "_update_waiter",
        "_updates",
        "_wire",
    )

    def __init__(
        self,
        options: ClientOptions,
        on_update: Callable[[Update], None] | None = None,
        trace: Any = None,
    ) -> None:
        """Use :meth:`connect`; this only sets up state."""
        self._loop = asyncio.get_running_loop()
        self._options = options
        self._on_update = on_update
        self._trace = trace
        self._wire: _Wire | None = None
        self._tag = 0
        self._lock = asyncio.Lock()
        self._pending: _Command | None = None
        self._idle: _Command | None = None
        self._greeting: asyncio.Future[Untagged] | None = self._loop.create_future()
        self._updates: deque[Update] | None = None
        self._update_waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[ImapError] = self._loop.create_future()
        self._error: ImapError | None = None
        self._capabilities: frozenset[str] = frozenset()
        self._enabled: frozenset[str] = frozenset()
        self._selected: str | None = None
        self._selection: SelectResult | None = None

    # -- connection -----------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        options: ClientOptions | None = None,
        on_update: Callable[[Update], None] | None = None,
        proxy: str | None = None,
        trace: Any = None,
    ) -> ImapClient:
        """Open a connection (TLS when ``ssl`` is given), read the greeting, return the client.

        ``proxy``: connect through this SOCKS4/SOCKS5/HTTP proxy URL (:mod:`relay.proxy`).
        ``trace``: a structlog logger that gets every command (credentials masked) and the
        first line of every response at debug level (an account's ``logs`` setting).

        Raises :class:`ImapConnectionError` if the server cannot be reached in
        ``options.connect_timeout`` or greets with BYE.
        """
        options = options or ClientOptions()
        client = cls(options, on_update, trace)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(options.connect_timeout):
                if trace is not None:
                    trace.debug(
                        "imap connect",
                        host=host,
                        port=port,
                        tls=ssl is not None,
                        proxy=redacted(proxy) if proxy else None,
                    )
                tls_name = (server_hostname or host) if ssl is not None else None
                if proxy is None:
                    _, wire = await loop.create_connection(
                        lambda: _Wire(client), host, port, ssl=ssl, server_hostname=tls_name
                    )
                else:
                    sock = await proxied(proxy, host, port, seconds=options.connect_timeout)
                    try:
                        _, wire = await loop.create_connection(
                            lambda: _Wire(client), sock=sock, ssl=ssl, server_hostname=tls_name
                        )
                    except BaseException:
                        sock.close()
                        raise
                client._wire = wire
                if wire.transport is not None:
                    _set_keepalive(wire.transport, options)
                assert client._greeting is not None
                greeting = await client._greeting
        except TimeoutError:
            client.close()
            raise ImapConnectionError(
                f"connecting to {host}:{port} took longer than {options.connect_timeout} s"
            ) from None
        except OSError as exc:
            client.close()
            raise ImapConnectionError(f"cannot connect to {host}:{port}: {exc}") from exc
        except BaseException:
            client.close()
            raise
        client._greeting = None
        code, data, _ = split_status(greeting.text())
        if code == "CAPABILITY":
            client._capabilities = _words(data)
        return client

    @property
    def capabilities(self) -> frozenset[str]:
        """Capabilities the server announced last (upper case)."""
        return self._capabilities

    @property
    def enabled(self) -> frozenset[str]:
        """Extensions turned on with ENABLE (``CONDSTORE``, ``QRESYNC``)."""
        return self._enabled

    @property
    def selected(self) -> str | None:
        """The selected mailbox, if any."""
        return self._selected

    @property
    def selection(self) -> SelectResult | None:
        """What the SELECT of the selected mailbox reported (UIDVALIDITY...), if any."""
        return self._selection

    @property
    def idling(self) -> bool:
        """Whether an IDLE is running."""
        return self._idle is not None

    @property
    def closed(self) -> bool:
        """Whether the connection has ended (for any reason)."""
        return self._error is not None

    @property
    def error(self) -> ImapError | None:
        """The error that ended the connection, or None while it is open."""
        return self._error

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Transport information (``"socket"``, ``"peername"``, ``"ssl_object"``...)."""
        wire = self._wire
        if wire is None or wire.transport is None:
            return default
        return wire.transport.get_extra_info(name, default)

    async def wait_closed(self) -> ImapError:
        """Wait until the connection ends; return the error that ended it."""
        return await asyncio.shield(self._closed)

    def on_close(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (from the event loop) when the connection ends; returns a
        function that cancels the call. Unlike a task waiting on :meth:`wait_closed`, this
        leaves nothing behind that refers to the connection once cancelled."""
        closed = self._closed

        def done(_: asyncio.Future[ImapError]) -> None:
            callback()

        def cancel() -> None:
            closed.remove_done_callback(done)

        closed.add_done_callback(done)
        return cancel

    def close(self) -> None:
        """Drop the connection now, without LOGOUT. Safe to call more than once."""
        self._fail(ImapConnectionError("connection closed by the client"))

    def discard(self) -> None:
        """Close, and let go of the frames the ending error holds.

        The error that ended the connection was raised where its commands were awaited: its
        traceback holds those frames, and they hold this client (and its buffers, its TLS
        state, the session built on it). That cycle would keep every ended connection until
        the collector's next full pass; when a server restart ends thousands of connections
        at once, that is a heap's worth. Called by the owner once the error is handled; an
        error still being raised (the caller's ``finally``) keeps its traceback.
        """
        self.close()
        raising = {id(e) for e in _chain(sys.exc_info()[1])}
        for error in _chain(self._error):
            if id(error) not in raising:
                error.__traceback__ = None
        self._pending = None
        self._greeting = None
        # The wire refers back to the client, to hand it what arrives.
        self._wire = None

    async def logout(self) -> None:
        """End IDLE if it runs, send LOGOUT, wait for its answer (bounded), then close."""
        with contextlib.suppress(ImapError):
            if self._idle is not None:
                await self.idle_done()
            if self._error is None:
                await self._simple("LOGOUT", b"LOGOUT", owns={"BYE"})
        self.close()

    # -- updates --------------------------------------------------------------------------

    async def next_update(self) -> Update:
        """Return the next queued :data:`Update`, waiting for one if none is queued.

        Raises the error that ended the connection once the queue is empty. Bound the wait
        with ``asyncio.timeout`` (cancelling it loses nothing). Not usable with ``on_update``.
        """
        if self._on_update is not None:
            raise ImapStateError("updates go to the on_update callback")
        if not self._updates:
            if self._error is not None:
                raise self._error
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._update_waiter = waiter
            try:
                await waiter
            finally:
                self._update_waiter = None
        if self._updates:
            return self._updates.popleft()
        assert self._error is not None
        raise self._error

    def drain_updates(self) -> list[Update]:
        """Return (and forget) every queued update without waiting."""
        updates = list(self._updates or ())
        self._updates = None
        return updates

    # -- authentication -------------------------------------------------------------------

    async def capability(self) -> frozenset[str]:
        """Ask for CAPABILITY and return it."""
        await self._simple("CAPABILITY", b"CAPABILITY", owns={"CAPABILITY"})
        return self._capabilities

    async def login(self, user: str, password: str) -> None:
        """LOGIN; raises :class:`ImapAuthError` when the server refuses the password."""
        tagged, _ = await self._run("LOGIN", [b"LOGIN ", quote(user), b" ", quote(password)])
        self._check_auth("LOGIN", tagged, None)

    async def authenticate_plain(self, user: str, password: str, *, authzid: str = "") -> None:
        """AUTHENTICATE PLAIN; raises :class:`ImapAuthError` when refused."""
        raw = f"{authzid}\x00{user}\x00{password}".encode()
        await self._authenticate("PLAIN", base64.b64encode(raw))

    async def authenticate_xoauth2(self, user: str, token: str) -> None:
        """AUTHENTICATE XOAUTH2 as ``user`` (a shared mailbox works with the owner's token).

        A refused token raises :class:`ImapAuthError` at once: the error challenge is
        answered with an empty line as the mechanism requires.
        """
        await self._authenticate("XOAUTH2", xoauth2_initial_response(user, token))

    async def _authenticate(self, mechanism: str, initial: bytes) -> None:
        sasl_ir = "SASL-IR" in self._capabilities
        challenges: list[bytes] = []
        state = {"sent": sasl_ir}

        def on_continuation(text: bytes) -> None:
            if not state["sent"]:
                state["sent"] = True
                self._write(initial + b"\r\n")
            else:
                # An error challenge (XOAUTH2): answer empty so the server sends its NO.
                challenges.append(text)
                self._write(b"*\r\n" if len(challenges) > 3 else b"\r\n")

        line = b"AUTHENTICATE " + mechanism.encode("ascii")
        if sasl_ir:
            line += b" " + initial
        tagged, _ = await self._run("AUTHENTICATE", [line], on_continuation=on_continuation)
        details = decode_error_challenge(challenges[0]) if challenges else None
        self._check_auth(f"AUTHENTICATE {mechanism}", tagged, details)

    def _check_auth(self, name: str, tagged: Tagged, details: dict[str, object] | None) -> None:
        if tagged.status == "OK":
            if tagged.code == "CAPABILITY":
                self._capabilities = _words(tagged.code_data)
            return
        if tagged.status == "NO" and tagged.code not in _TRANSIENT_AUTH_CODES:
            raise ImapAuthError(name, tagged.status, tagged.code, tagged.text, details)
        raise ImapCommandError(name, tagged.status, tagged.code, tagged.text)

    # -- mailbox state --------------------------------------------------------------------

    async def enable(self, *extensions: str) -> frozenset[str]:
        """ENABLE extensions (``"CONDSTORE"``, ``"QRESYNC"``); return all now enabled."""
        line = b"ENABLE " + " ".join(extensions).encode("ascii")
        _, untagged = await self._simple("ENABLE", line, owns={"ENABLED"})
        for response in untagged:
            self._enabled |= _words(response.text())
        if "QRESYNC" in self._enabled:
            # RFC 7162: enabling QRESYNC implies CONDSTORE, even if ENABLED does not say so.
            self._enabled |= {"CONDSTORE"}
        return self._enabled

    async def select(
        self,
        mailbox: str = "INBOX",
        *,
        readonly: bool = False,
        condstore: bool = False,
        qresync: Qresync | None = None,
    ) -> SelectResult:
        """SELECT (or EXAMINE with ``readonly``) a mailbox.

        ``condstore`` adds ``(CONDSTORE)`` so HIGHESTMODSEQ is reported; ``qresync`` (needs
        ``enable("QRESYNC")`` first) adds ``(QRESYNC (...))`` and the result then carries the
        UIDs vanished and the messages changed since ``qresync.modseq``.
        """
        name = "EXAMINE" if readonly else "SELECT"
        parts: list[bytes] = [name.encode("ascii") + b" ", encode_mailbox(mailbox)]
        if qresync is not None:
            params = b"%d %d" % (qresync.uidvalidity, qresync.modseq)
            if qresync.known_uids:
                params += b" " + sequence_set(qresync.known_uids)
            parts.append(b" (QRESYNC (" + params + b"))")
        elif condstore:
            parts.append(b" (CONDSTORE)")
        self._selected = self._selection = None
        tagged, untagged = await self._run(
            name,
            parts,
            owns={"FLAGS", "EXISTS", "RECENT", "OK", "NO", "FETCH", "VANISHED"},
        )
        self._raise_unless_ok(name, tagged)
        self._selected = mailbox
        self._selection = parse_select(mailbox, untagged, tagged)
        return self._selection

    async def examine(
        self,
        mailbox: str = "INBOX",
        *,
        condstore: bool = False,
        qresync: Qresync | None = None,
    ) -> SelectResult:
        """EXAMINE: :meth:`select` read-only."""
        return await self.select(mailbox, readonly=True, condstore=condstore, qresync=qresync)

    async def status(
        self,
        mailbox: str,
        items: Iterable[str] = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"),
    ) -> dict[str, int]:
        """STATUS of a mailbox, e.g. ``{"MESSAGES": 3, "UIDNEXT": 4, ...}``."""
        parts = [b"STATUS ", encode_mailbox(mailbox), b" (" + " ".join(items).encode() + b")"]
        tagged, untagged = await self._run("STATUS", parts, owns={"STATUS"})
        self._raise_unless_ok("STATUS", tagged)
        values: dict[str, int] = {}
        for response in untagged:
            values.update(parse_status(response)[1])
        return values

    async def list_mailboxes(
        self,
        reference: str = "",
        pattern: str = "*",
        *,
        special_use_only: bool = False,
    ) -> list[Mailbox]:
        """LIST mailboxes with their flags, asking for special-use flags when supported.

        ``special_use_only`` lists only mailboxes with a special use (``\\Sent``, ...).
        """
        parts: list[bytes] = [b"LIST "]
        extended = "SPECIAL-USE" in self._capabilities or "LIST-EXTENDED" in self._capabilities
        if special_use_only and extended:
            parts.append(b"(SPECIAL-USE) ")
        parts += [encode_mailbox(reference), b" ", encode_mailbox(pattern)]
        if extended:
            parts.append(b" RETURN (SPECIAL-USE)")
        tagged, untagged = await self._run("LIST", parts, owns={"LIST"})
        self._raise_unless_ok("LIST", tagged)
        boxes = [parse_list(response) for response in untagged]
        if special_use_only:
            boxes = [box for box in boxes if box.special_use]
        return boxes

    async def list_status(
        self, items: Iterable[str] = ("MESSAGES", "UIDNEXT", "UIDVALIDITY")
    ) -> tuple[list[Mailbox], dict[str, dict[str, int]]]:
        """Every mailbox and, with LIST-STATUS (RFC 5819), the STATUS ``items`` of each in the
        same command; without it the second value is empty (ask :meth:`status` per mailbox)."""
        if "LIST-STATUS" not in self._capabilities:
            return await self.list_mailboxes(), {}
        returns = b"SPECIAL-USE " if "SPECIAL-USE" in self._capabilities else b""
        line = b'LIST "" "*" RETURN (' + returns + b"STATUS (" + " ".join(items).encode() + b"))"
        tagged, untagged = await self._simple("LIST", line, owns={"LIST", "STATUS"})
        self._raise_unless_ok("LIST", tagged)
        boxes: list[Mailbox] = []
        statuses: dict[str, dict[str, int]] = {}
        for response in untagged:
            if response.kind == "STATUS":
                name, values = parse_status(response)
                statuses[name] = values
            else:
                boxes.append(parse_list(response))
        return boxes, statuses

    async def unselect(self) -> None:
        """Leave the selected mailbox without expunging: UNSELECT (RFC 3691), else CLOSE
        (which expunges nothing after EXAMINE; after SELECT it would, so it is refused)."""
        if self._selected is None:
            return
        if "UNSELECT" in self._capabilities:
            tagged, _ = await self._simple("UNSELECT", b"UNSELECT")
        elif self._selection is not None and self._selection.read_only:
            tagged, _ = await self._simple("CLOSE", b"CLOSE")
        else:
            raise ImapStateError("CLOSE would expunge a mailbox selected read-write")
        self._raise_unless_ok("UNSELECT", tagged)
        self._selected = self._selection = None

    async def subscribed(self) -> set[str]:
        """The names of the subscribed mailboxes (LIST (SUBSCRIBED), else LSUB)."""
        if "LIST-EXTENDED" in self._capabilities:
            line = b'LIST (SUBSCRIBED) "" "*"'
            tagged, untagged = await self._simple("LIST", line, owns={"LIST"})
        else:
            tagged, untagged = await self._simple("LSUB", b'LSUB "" "*"', owns={"LSUB"})
        self._raise_unless_ok("LIST", tagged)
        return {parse_list(response).name for response in untagged}

    async def subscribe(self, mailbox: str, *, on: bool = True) -> None:
        """SUBSCRIBE (or, with ``on=False``, UNSUBSCRIBE) a mailbox."""
        name = "SUBSCRIBE" if on else "UNSUBSCRIBE"
        tagged, _ = await self._run(name, [name.encode("ascii") + b" ", encode_mailbox(mailbox)])
        self._raise_unless_ok(name, tagged)

    # -- messages -------------------------------------------------------------------------

    async def uid_fetch(
        self,
        uids: str | int | Iterable[int],
        items: str | Sequence[str],
        *,
        changedsince: int | None = None,
        vanished: bool = False,
    ) -> FetchResult:
        """UID FETCH ``items`` (e.g. ``["FLAGS", "ENVELOPE", "BODYSTRUCTURE"]``).

        ``changedsince`` adds ``(CHANGEDSINCE n)``; with ``vanished`` (QRESYNC enabled) the
        UIDs expunged since then come back in :attr:`FetchResult.vanished`.
        """
        line = _fetch_line(uids, items, changedsince, vanished)
        tagged, untagged = await self._simple("UID FETCH", line, owns=_FETCH_OWNS)
        self._raise_unless_ok("UID FETCH", tagged)
        return _fetch_result(untagged)

    async def uid_search(self, criteria: str | Sequence[bytes] = "ALL") -> SearchResult:
        """UID SEARCH with raw ``criteria`` (``"UNSEEN"``, ``"MODSEQ 42"``); the caller quotes.

        ``criteria`` may also be a sequence of parts, where :class:`Literal` parts (from
        :func:`quote` of non-ASCII text) are sent as literals; prefix ``CHARSET UTF-8`` then.
        """
        if isinstance(criteria, str):
            if "\r" in criteria or "\n" in criteria:
                raise ValueError("search criteria must be one line")
            parts: list[bytes] = [criteria.encode("utf-8")]
        else:
            parts = list(criteria)
        tagged, untagged = await self._run("UID SEARCH", [b"UID SEARCH ", *parts], owns={"SEARCH"})
        self._raise_unless_ok("UID SEARCH", tagged)
        return parse_search(untagged)

    async def uid_copy(self, uids: str | int | Iterable[int], mailbox: str) -> CopyResult:
        """UID COPY to ``mailbox``; the new UIDs come back when the server has UIDPLUS."""
        return await self._copy("UID COPY", uids, mailbox)

    async def uid_move(self, uids: str | int | Iterable[int], mailbox: str) -> CopyResult:
        """UID MOVE (RFC 6851) to ``mailbox``; the caller checks the MOVE capability."""
        return await self._copy("UID MOVE", uids, mailbox)

    async def _copy(self, name: str, uids: str | int | Iterable[int], mailbox: str) -> CopyResult:
        parts = [name.encode("ascii") + b" ", sequence_set(uids), b" ", encode_mailbox(mailbox)]
        tagged, untagged = await self._run(name, parts, owns={"EXPUNGE", "VANISHED", "OK"})
        self._raise_unless_ok(name, tagged)
        # MOVE reports COPYUID in an untagged OK before its expunges; COPY in the tagged OK.
        codes = [(tagged.code, tagged.code_data)]
        for response in untagged:
            if response.kind == "OK":
                code, data, _ = split_status(response.text())
                codes.append((code, data))
        for code, data in codes:
            if code == "COPYUID":
                return parse_copyuid(data)
        return CopyResult(None, {})

    async def create(self, mailbox: str) -> None:
        """CREATE a mailbox."""
        tagged, _ = await self._run("CREATE", [b"CREATE ", encode_mailbox(mailbox)])
        self._raise_unless_ok("CREATE", tagged)

    async def rename(self, mailbox: str, new_name: str) -> None:
        """RENAME a mailbox."""
        parts = [b"RENAME ", encode_mailbox(mailbox), b" ", encode_mailbox(new_name)]
        tagged, _ = await self._run("RENAME", parts)
        self._raise_unless_ok("RENAME", tagged)

    async def delete(self, mailbox: str) -> None:
        """DELETE a mailbox."""
        if self._selected == mailbox:
            self._selected = self._selection = None
        tagged, _ = await self._run("DELETE", [b"DELETE ", encode_mailbox(mailbox)])
        self._raise_unless_ok("DELETE", tagged)

    async def uid_store(
        self,
        uids: str | int | Iterable[int],
        action: str,
        flags: Iterable[str],
        *,
        unchangedsince: int | None = None,
    ) -> FetchResult:
        """UID STORE; ``action`` is ``FLAGS``, ``+FLAGS`` or ``-FLAGS``, optionally ``.SILENT``."""
        if action.upper().removesuffix(".SILENT").lstrip("+-") != "FLAGS":
            raise ValueError(f"bad STORE action: {action!r}")
        line = b"UID STORE " + sequence_set(uids) + b" "
        if unchangedsince is not None:
            line += b"(UNCHANGEDSINCE %d) " % unchangedsince
        line += action.encode("ascii") + b" " + _paren(flags)
        tagged, untagged = await self._simple("UID STORE", line, owns={"FETCH", "VANISHED"})
        self._raise_unless_ok("UID STORE", tagged)
        return _fetch_result(untagged)

    async def append(
        self,
        mailbox: str,
        message: bytes,
        *,
        flags: Iterable[str] = (),
        date: datetime | None = None,
    ) -> AppendResult:
        """APPEND a message; return its UID when the server supports UIDPLUS."""
        parts: list[bytes] = [b"APPEND ", encode_mailbox(mailbox)]
        flag_list = tuple(flags)
        if flag_list:
            parts.append(b" " + _paren(flag_list))
        if date is not None:
            parts.append(b' "' + datetime_to_INTERNALDATE(date).encode("ascii") + b'"')
        parts += [b" ", Literal(message)]
        tagged, _ = await self._run("APPEND", parts)
        self._raise_unless_ok("APPEND", tagged)
        if tagged.code == "APPENDUID":
            validity, _, uid = tagged.code_data.partition(b" ")
            if validity.isdigit() and uid.isdigit():
                return AppendResult(int(validity), int(uid))
        return AppendResult(None, None)

    async def expunge(self) -> ExpungeResult:
        """EXPUNGE every ``\\Deleted`` message of the selected mailbox."""
        return await self._expunge("EXPUNGE", b"EXPUNGE")

    async def uid_expunge(self, uids: str | int | Iterable[int]) -> ExpungeResult:
        """UID EXPUNGE (UIDPLUS): expunge only these ``\\Deleted`` messages."""
        return await self._expunge("UID EXPUNGE", b"UID EXPUNGE " + sequence_set(uids))

    async def _expunge(self, name: str, line: bytes) -> ExpungeResult:
        tagged, untagged = await self._simple(name, line, owns={"EXPUNGE", "VANISHED"})
        self._raise_unless_ok(name, tagged)
        seqs = tuple(r.number for r in untagged if r.kind == "EXPUNGE" and r.number is not None)
        ranges = tuple(
            span for r in untagged if r.kind == "VANISHED" for span in parse_vanished(r).uids.ranges
        )
        return ExpungeResult(seqs, UidSet(ranges))

    async def noop(self) -> None:
        """NOOP: a liveness check that also lets the server send pending updates."""
        tagged, _ = await self._simple("NOOP", b"NOOP")
        self._raise_unless_ok("NOOP", tagged)

    # -- IDLE -----------------------------------------------------------------------------

    async def idle_start(self) -> None:
        """Send IDLE and wait for the server's ``+``; updates then flow to the consumer.

        A server that answers with NO/BAD raises :class:`ImapCommandError`, one that answers
        with BYE raises :class:`ImapByeError`, both at once. No other command may run
        until :meth:`idle_done`.
        """
        if "IDLE" not in self._capabilities and self._capabilities:
            raise ImapStateError("server does not support IDLE")
        await self._lock.acquire()
        try:
            self._check_usable()
            started: asyncio.Future[None] = self._loop.create_future()

            def on_continuation(_: bytes) -> None:
                if not started.done():
                    started.set_result(None)

            cmd = self._send("IDLE", (), b"IDLE\r\n", on_continuation)
            try:
                async with asyncio.timeout(self._options.command_timeout):
                    await asyncio.wait((started, cmd.future), return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                limit = self._options.command_timeout
                raise self._dead(f"IDLE not acknowledged in {limit} s") from None
            except asyncio.CancelledError:
                self._fail(ImapConnectionError("IDLE start was cancelled"))
                raise
            finally:
                started.cancel()
            if cmd.future.done():
                self._pending = None
                tagged = cmd.future.result()  # raises the BYE / connection error
                self._raise_unless_ok("IDLE", tagged)
                raise ImapProtocolError("IDLE completed without being started")
            self._idle = cmd
        finally:
            self._lock.release()

    async def idle_done(self) -> None:
        """End IDLE with DONE and wait for the tagged OK.

        If it is not answered within ``options.done_timeout`` seconds the
        connection is presumed dead: it is closed and :class:`ImapTimeoutError` raised.
        """
        cmd = self._idle
        if cmd is None:
            raise ImapStateError("not idling")
        async with self._lock:
            self._idle = None
            try:
                self._check_usable()
                self._write(b"DONE\r\n")
                tagged = await self._answer(cmd, self._options.done_timeout, "DONE", "IDLE DONE")
            finally:
                self._pending = None
            self._raise_unless_ok("IDLE", tagged)

    async def idle_done_fetch(
        self,
        uids: str | int | Iterable[int],
        items: str | Sequence[str],
        *,
        changedsince: int | None = None,
        vanished: bool = False,
    ) -> FetchResult:
        """End IDLE and UID FETCH ``items`` of ``uids``, the FETCH written right behind DONE
        (pipelined, RFC 3501 5.5) instead of after IDLE's tagged OK: a new message is read
        one round trip sooner. ``changedsince`` and ``vanished`` as in :meth:`uid_fetch`.

        Untagged responses that come before IDLE's OK are updates, as with
        :meth:`idle_done`; the FETCH's own come back in the result. Raises like
        :meth:`idle_done` (the FETCH still completes first) and :meth:`uid_fetch`.
        """
        cmd = self._idle
        if cmd is None:
            raise ImapStateError("not idling")
        if cmd.future.done():
            # The server ended IDLE on its own: nothing to pipeline behind.
            await self.idle_done()
            return await self.uid_fetch(uids, items, changedsince=changedsince, vanished=vanished)
        line = _fetch_line(uids, items, changedsince, vanished)
        async with self._lock:
            self._idle = None
            try:
                self._check_usable()
                fetch = self._command("UID FETCH", _FETCH_OWNS, line, None)
                cmd.follow = fetch
                self._write(b"DONE\r\n" + fetch.tag + b" " + line + b"\r\n")
                done = await self._answer(cmd, self._options.done_timeout, "DONE", "IDLE DONE")
                # IDLE's tagged response made the FETCH the pending command (_on_response).
                tagged = await self._answer(fetch, self._options.command_timeout, "UID FETCH")
            finally:
                self._pending = None
        self._raise_unless_ok("IDLE", done)
        self._raise_unless_ok("UID FETCH", tagged)
        return _fetch_result(fetch.untagged)

    @contextlib.asynccontextmanager
    async def idle(self) -> AsyncIterator[ImapClient]:
        """``async with client.idle(): ...`` runs IDLE for the block and ends it with DONE."""
        await self.idle_start()
        try:
            yield self
        finally:
            if self._idle is not None and self._error is None:
                await self.idle_done()

    # -- machinery ------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._idle is not None:
            raise ImapStateError("IDLE is running; call idle_done() first")

    async def _simple(
        self,
        name: str,
        line: bytes,
        *,
        owns: Iterable[str] = (),
    ) -> tuple[Tagged, list[Untagged]]:
        return await self._run(name, [line], owns=owns)

    async def _run(
        self,
        name: str,
        parts: Sequence[bytes],
        *,
        owns: Iterable[str] = (),
        on_continuation: Callable[[bytes], None] | None = None,
    ) -> tuple[Tagged, list[Untagged]]:
        """Send one command and wait (bounded) for its tagged completion."""
        limit = self._options.command_timeout
        async with self._lock:
            self._check_usable()
            if any(isinstance(p, Literal) for p in parts):
                if on_continuation is not None:
                    raise ImapStateError("a command cannot mix literals and continuations")
                chunks = self._literal_chunks(parts)
                first = chunks.popleft()

                def send_next(_: bytes) -> None:
                    if chunks:
                        self._write(chunks.popleft())

                cmd = self._send(name, owns, first, send_next)
            else:
                cmd = self._send(name, owns, b"".join(parts) + b"\r\n", on_continuation)
            try:
                tagged = await self._answer(cmd, limit, name)
            finally:
                self._pending = None
            return tagged, cmd.untagged

    async def _answer(
        self, cmd: _Command, limit: float, name: str, cancelled_name: str | None = None
    ) -> Tagged:
        """The tagged response of ``cmd``; a connection that does not answer within ``limit``
        seconds is presumed dead. A caller cancelled meanwhile leaves an answer nobody waits
        for: the connection is failed so that it starts afresh."""
        try:
            async with asyncio.timeout(limit):
                return await cmd.future
        except TimeoutError:
            raise self._dead(f"{name} not answered in {limit} s") from None
        except asyncio.CancelledError:
            self._fail(ImapConnectionError(f"{cancelled_name or name} was cancelled"))
            raise

    def _literal_chunks(self, parts: Sequence[bytes]) -> deque[bytes]:
        """Split a command (CRLF included) after each ``{n}``; with LITERAL+ it is one chunk."""
        nonsync = "LITERAL+" in self._capabilities
        chunks: deque[bytes] = deque()
        current = bytearray()
        for part in parts:
            if isinstance(part, Literal):
                if nonsync:
                    current += b"{%d+}\r\n" % len(part)
                    current += part
                else:
                    current += b"{%d}\r\n" % len(part)
                    chunks.append(bytes(current))
                    current = bytearray(part)
            else:
                current += part
        current += b"\r\n"
        chunks.append(bytes(current))
        return chunks

    def _send(
        self,
        name: str,
        owns: Iterable[str],
        payload: bytes,
        on_continuation: Callable[[bytes], None] | None,
    ) -> _Command:
        """Tag and write ``payload`` (which ends in CRLF); it becomes the pending command."""
        cmd = self._command(name, owns, payload, on_continuation)
        self._pending = cmd
        self._write(cmd.tag + b" " + payload)
        return cmd

    def _command(
        self,
        name: str,
        owns: Iterable[str],
        payload: bytes,
        on_continuation: Callable[[bytes], None] | None,
    ) -> _Command:
        """A new tagged command for ``payload`` (neither pending nor written yet)."""
        self._tag += 1
        tag = b"R%d" % self._tag
        future: asyncio.Future[Tagged] = self._loop.create_future()
        cmd = _Command(tag, name, frozenset(owns), future, on_continuation)
        if self._trace is not None:
            self._trace.debug("imap command", line=_shown(tag, name, payload))
        return cmd

    def _write(self, data: bytes) -> None:
        wire = self._wire
        if wire is None or wire.transport is None or wire.transport.is_closing():
            raise self._error or ImapConnectionError("not connected")
        wire.transport.write(data)

    def _raise_unless_ok(self, name: str, tagged: Tagged) -> None:
        if tagged.status != "OK":
            raise ImapCommandError(name, tagged.status, tagged.code, tagged.text)

    def _dead(self, message: str) -> ImapTimeoutError:
        exc = ImapTimeoutError(message)
        self._fail(exc)
        return exc

    # -- callbacks from the wire ----------------------------------------------------------

    def _on_response(self, records: list[Record]) -> None:
        first = records[0]
        head = first[0] if isinstance(first, tuple) else first
        if self._trace is not None:
            self._trace.debug("imap response", line=_clip(head))
        if head.startswith(b"* "):
            records[0] = (head[2:], first[1]) if isinstance(first, tuple) else head[2:]
            self._on_untagged(parse_untagged(records))
        elif head.startswith(b"+"):
            cmd = self._pending
            if cmd is None or cmd.on_continuation is None:
                raise ImapProtocolError("unexpected continuation request")
            cmd.on_continuation(head[1:].strip())
        else:
            tag, _, rest = head.partition(b" ")
            status, _, text = rest.partition(b" ")
            code, data, human = split_status(text)
            tagged = Tagged(status.decode("ascii", "replace").upper(), code, data, human)
            cmd = self._pending
            if cmd is None or cmd.tag != tag:
                raise ImapProtocolError(f"response for unknown tag {tag[:20]!r}")
            if tagged.code == "CAPABILITY":
                self._capabilities = _words(tagged.code_data)
            if not cmd.future.done():
                cmd.future.set_result(tagged)
            if cmd.follow is not None:
                # Before the next response is framed: it may be the follower's.
                self._pending = cmd.follow

    def _on_untagged(self, response: Untagged) -> None:
        kind = response.kind
        if self._greeting is not None:
            if kind in ("OK", "PREAUTH"):
                if not self._greeting.done():
                    self._greeting.set_result(response)
                return
            if kind == "BYE":
                self._fail(ImapByeError(split_status(response.text())[2]))
                return
            raise ImapProtocolError(f"unexpected greeting {kind}")
        if kind == "CAPABILITY":
            self._capabilities = _words(response.text())
        elif kind in _STATUS_WORDS:
            code, data, _ = split_status(response.text())
            if code == "CAPABILITY":
                self._capabilities = _words(data)
        cmd = self._pending
        if kind == "BYE":
            if cmd is not None and "BYE" in cmd.owns:
                cmd.untagged.append(response)
                return
            self._deliver(Bye(split_status(response.text())[2]))
            self._fail(ImapByeError(split_status(response.text())[2]))
            return
        if cmd is not None and kind in cmd.owns:
            cmd.untagged.append(response)
            return
        self._deliver(to_update(response))

    def _deliver(self, update: Update) -> None:
        if self._on_update is not None:
            try:
                self._on_update(update)
            except Exception as exc:
                self._loop.call_exception_handler(
                    {"message": "IMAP on_update callback failed", "exception": exc}
                )
            return
        if self._updates is None:
            self._updates = deque()
        if len(self._updates) >= self._options.max_pending_updates:
            self._fail(ImapError("too many unread IMAP updates; resynchronise"))
            return
        self._updates.append(update)
        waiter = self._update_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._fail(ImapConnectionError("connection closed by the server"))
        else:
            error = ImapConnectionError(f"connection lost: {exc}")
            error.__cause__ = exc
            self._fail(error)

    def _fail(self, exc: ImapError) -> None:
        """End the connection with ``exc`` and wake everything that waits on it."""
        if self._error is not None:
            return
        self._error = exc
        wire = self._wire
        if wire is not None and wire.transport is not None:
            wire.transport.abort()
        futures: list[asyncio.Future[Any]] = []
        if self._pending is not None:
            futures.append(self._pending.future)
        if self._greeting is not None:
            futures.append(self._greeting)
        for future in futures:
            if not future.done():
                future.set_exception(exc)
                # Also delivered via .error / next_update(); do not log it as unretrieved.
                future.exception()
        if self._update_waiter is not None and not self._update_waiter.done():
            self._update_waiter.set_result(None)
        if not self._closed.done():
            self._closed.set_result(exc)
        self._idle = None


def _chain(error: BaseException | None) -> list[BaseException]:
    """``error`` and the errors it was raised from or while handling."""
    chain: list[BaseException] = []
    while error is not None and all(error is not e for e in chain):
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


# Commands whose arguments are credentials: only their name is logged.
_SECRET_COMMANDS = frozenset({"LOGIN", "AUTHENTICATE"})
_TRACE_LINE = 300


def _clip(line: bytes) -> str:
    """The start of a protocol line, for the protocol log."""
    text = line[:_TRACE_LINE].decode("utf-8", "replace")
    return text + "..." if len(line) > _TRACE_LINE else text


def _shown(tag: bytes, name: str, payload: bytes) -> str:
    """What the protocol log shows of a command: its first line, credentials masked."""
    if name in _SECRET_COMMANDS:
        return f"{tag.decode()} {name} [redacted]"
    return _clip(tag + b" " + payload.split(b"\r\n", 1)[0])


def _fetch_result(untagged: Iterable[Untagged]) -> FetchResult:
    messages: list[FetchedMessage] = []
    ranges: list[tuple[int, int]] = []
    for response in untagged:
        if response.kind == "FETCH":
            messages.append(parse_fetch(response))
        elif response.kind == "VANISHED":
            ranges.extend(parse_vanished(response).uids.ranges)
    return FetchResult(tuple(messages), UidSet(tuple(ranges)))


@functools.lru_cache(maxsize=64)
def _words(data: bytes) -> frozenset[str]:
    # Cached: thousands of connections to one server then share one capability set (~4 KiB
    # each otherwise).
    return frozenset(data.decode("ascii", "replace").upper().split())


_FETCH_OWNS = frozenset({"FETCH", "VANISHED"})


def _fetch_line(
    uids: str | int | Iterable[int],
    items: str | Sequence[str],
    changedsince: int | None,
    vanished: bool,
) -> bytes:
    """``UID FETCH set items [(CHANGEDSINCE n [VANISHED])]``, without tag and CRLF."""
    what = items.encode("ascii") if isinstance(items, str) else _paren(items)
    line = b"UID FETCH " + sequence_set(uids) + b" " + what
    if changedsince is not None:
        line += b" (CHANGEDSINCE %d%s)" % (changedsince, b" VANISHED" if vanished else b"")
    return line


def _paren(items: Iterable[str]) -> bytes:
    text = " ".join(items)
    if "\r" in text or "\n" in text:
        raise ValueError("items must be one line")
    return b"(" + text.encode("ascii") + b")"


def _set_keepalive(transport: asyncio.BaseTransport, options: ClientOptions) -> None:
    """Turn on TCP keepalive so a silently vanished peer is noticed by the kernel too."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", options.keepalive_idle),
            ("TCP_KEEPINTVL", options.keepalive_interval),
            ("TCP_KEEPCNT", options.keepalive_count),
        ):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
