"""Per-account IMAP connections for reads and changes, apart from the IDLE listeners.

A listener's connection sits in IDLE; a read on it would have to stop IDLE and could miss or
delay a push. So API reads, webhook content and sent copies use connections of their own:
at most ``pool_size`` per account, logged in exactly as the listener logs in (a shared
mailbox as ``user=`` its address with the main user's token), kept for ``pool_idle``
seconds after their last use and then logged out.

A connection is lent for one operation (``async with pool.connection(account)``) and comes
back selected on whatever folder it used last, so consecutive reads of one folder skip the
SELECT. A connection that failed is dropped, never lent again. Unsolicited updates (EXISTS,
FETCH flags) on these connections are ignored: the listeners report changes, not the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import structlog

from relay.auth.crypto import Cipher
from relay.errors import AuthError, ImapError
from relay.imap.client import ClientOptions, ImapClient
from relay.imap.errors import ImapAuthError
from relay.imap.parse import Update
from relay.imap.tls import TlsContexts
from relay.mailbox.credentials import Credentials, Endpoint, TokenProvider, log_in, resolve
from relay.store import Store

__all__ = ["ImapPool"]

log = structlog.get_logger(__name__)


def _ignore(_: Update) -> None:
    """Pool connections do not report changes: the listeners do."""


@dataclass
class _Slot:
    """The connections of one account: idle ones and how many exist in all."""

    limit: asyncio.Semaphore
    idle: list[tuple[ImapClient, float]] = field(default_factory=list)
    busy: int = 0


class ImapPool:
    """Lends logged-in IMAP connections per account (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        cipher: Cipher,
        token_for: TokenProvider,
        tls: TlsContexts,
        options: ClientOptions,
        *,
        size: int = 2,
        idle: float = 60.0,
        reject: Callable[[str], None] | None = None,
    ) -> None:
        """``reject(token)`` is told of an OAuth2 token the server refused (next one is fresh)."""
        self._store = store
        self._cipher = cipher
        self._token_for = token_for
        self._tls = tls
        self._options = options
        self._size = size
        self._idle = idle
        self._reject = reject or (lambda token: None)
        self._slots: dict[str, _Slot] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self, account: str) -> AsyncIterator[ImapClient]:
        """A logged-in connection of ``account`` for the block; it comes back afterwards.

        Raises :class:`~relay.errors.AuthError` when the account has no usable credentials
        or the server refuses them, :class:`~relay.errors.ImapError` when the server fails.
        """
        if self._closed:
            raise ImapError("the connection pool is closed")
        slot = self._slots.get(account)
        if slot is None:
            slot = self._slots[account] = _Slot(asyncio.Semaphore(self._size))
        slot.busy += 1
        try:
            async with slot.limit:
                client = self._take_idle(slot)
                if client is None:
                    client = await self._open(account)
                healthy = False
                try:
                    yield client
                    healthy = True
                finally:
                    if healthy and not client.closed and not self._closed:
                        slot.idle.append((client, time.monotonic()))
                        self._ensure_reaper()
                    else:
                        client.discard()
        finally:
            slot.busy -= 1

    def in_use(self, account: str) -> int:
        """How many connections of ``account`` are lent out (or waited for) right now."""
        slot = self._slots.get(account)
        return slot.busy if slot is not None else 0

    def drop(self, account: str) -> None:
        """Close the idle connections of ``account`` (its credentials or server changed)."""
        slot = self._slots.get(account)
        if slot is None:
            return
        for client, _ in slot.idle:
            client.discard()
        slot.idle.clear()

    async def close(self) -> None:
        """Log out every idle connection; connections in use are closed when returned."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        clients = [client for slot in self._slots.values() for client, _ in slot.idle]
        self._slots.clear()
        await asyncio.gather(*(self._logout(c) for c in clients))

    def _take_idle(self, slot: _Slot) -> ImapClient | None:
        while slot.idle:
            client, _ = slot.idle.pop()
            if not client.closed:
                return client
        return None

    async def _open(self, account: str) -> ImapClient:
        async def connect(endpoint: Endpoint) -> ImapClient:
            return await endpoint.connect(self._tls, self._options, _ignore)

        async def credentials() -> tuple[Endpoint, Credentials]:
            return await resolve(self._store, self._cipher, self._token_for, account)

        try:
            client, _ = await log_in(connect, credentials, self._reject)
        except ImapAuthError as exc:
            raise AuthError(f"the IMAP server refused the credentials of {account!r}") from exc
        return client

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap(), name="imap pool reaper")

    async def _reap(self) -> None:
        """Log out connections unused for ``pool_idle`` seconds; stop when none is idle."""
        while True:
            await asyncio.sleep(min(self._idle, 5.0))
            now = time.monotonic()
            stale: list[ImapClient] = []
            for slot in self._slots.values():
                fresh = [now - t < self._idle and not c.closed for c, t in slot.idle]
                stale += [c for (c, _), ok in zip(slot.idle, fresh, strict=True) if not ok]
                slot.idle[:] = [kept for kept, ok in zip(slot.idle, fresh, strict=True) if ok]
            for account in [a for a, s in self._slots.items() if not s.idle and not s.busy]:
                del self._slots[account]
            await asyncio.gather(*(self._logout(c) for c in stale))
            if not any(slot.idle for slot in self._slots.values()):
                return

    async def _logout(self, client: ImapClient) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await client.logout()
        client.discard()
