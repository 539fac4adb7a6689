"""One IMAP connection kept open by one task: connect, log in, work, reconnect with backoff.

The IDLE listener of a folder (:mod:`relay.sources.imap.listener`) and the poller of an
account's other folders (:mod:`relay.sources.imap.poller`) differ only in what they do once
logged in (:meth:`KeptConnection._session`); how they connect, report their state and
recover from errors is this one loop::

    connect -> log in -> _session() until it returns (reconnect asked) or fails
    any connection error -> reconnect with backoff (``reconnect_min`` doubling to
    ``reconnect_max``, jittered); refused credentials -> wait ``auth_retry`` s or a request.

An OAuth2 token the server refuses although the relay took it for valid is rejected and the
login tried once more with a fresh one (:func:`relay.mailbox.credentials.log_in`); only a
second refusal is an ``authenticationError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from relay.auth.crypto import Cipher
from relay.config import ImapSettings
from relay.errors import (
    AuthError,
    ConsentRequired,
    LeaseLost,
    NotFound,
    StoreError,
    StoreUnavailable,
    TokenRefreshFailed,
)
from relay.imap.client import ClientOptions, ImapClient
from relay.imap.errors import ImapAuthError, ImapCommandError, ImapError
from relay.imap.parse import Update
from relay.imap.tls import TlsContexts
from relay.mailbox.credentials import Credentials, Endpoint, TokenProvider, log_in, resolve
from relay.sources.imap.sink import FolderSink, StateConflict
from relay.store import Store
from relay.store.outage import retry_level
from relay.store.schema import AccountState

__all__ = ["Backoff", "KeptConnection", "ListenerContext", "Report", "StateReport"]


class Backoff:
    """Reconnect delays: ``low`` doubling up to ``high``, each scaled by a random 0.5-1."""

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = high
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt."""
        base = min(self.high, self.low * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        return base * (0.5 + random.random() / 2)

    def reset(self) -> None:
        """Back to ``low`` (after a connection that worked)."""
        self.attempt = 0


@dataclass(frozen=True, slots=True)
class ListenerContext:
    """What every listener of the process shares."""

    store: Store
    cipher: Cipher
    settings: ImapSettings
    sink: FolderSink
    token_for: TokenProvider
    tls: TlsContexts
    # For the events a connection records itself (mailboxNew / mailboxDeleted).
    service_url: str = ""
    max_payload_bytes: int = 256 * 1024
    # Told the account when a write was refused because another node took it over (the
    # connection has stopped; the supervisor looks at its leases at once).
    lease_lost: Callable[[str], None] = lambda _account: None
    # Told of an OAuth2 token the server refused, so that the next one is fresh.
    reject: Callable[[str], None] = lambda _token: None
    # Told the outcome of every push check (relay.sources.imap.pushcheck): whether it found
    # a change the server had not pushed (metrics count them).
    push_checked: Callable[[bool], None] = lambda _found: None

    def client_options(self) -> ClientOptions:
        """Connection timeouts from the settings."""
        s = self.settings
        return ClientOptions(
            connect_timeout=s.connect_timeout,
            command_timeout=s.command_timeout,
            done_timeout=s.done_timeout,
        )


@dataclass(frozen=True, slots=True)
class StateReport:
    """A connection's state and, for error states, what went wrong."""

    state: str
    error: dict[str, Any] | None = None
    user: str | None = None
    # The authenticationError event is already stored (by the token manager, for every
    # account that shares the lost grant): the supervisor must not add another.
    recorded: bool = False


Report = Callable[["KeptConnection", StateReport], None]


class KeptConnection:
    """One task holding one connection of an account (see the module docstring).

    Subclasses implement :meth:`_session` (what to do once logged in) and may override
    :meth:`_on_update` (untagged responses nobody asked for) and :meth:`_closed`
    (forget per-connection state).
    """

    name = "imap"

    def __init__(
        self,
        ctx: ListenerContext,
        account: str,
        path: str,
        *,
        report: Report,
        account_row: Mapping[Any, Any] | None = None,
    ) -> None:
        """``account_row``, when the caller has just read it, spares the first connect its
        own read (thousands of connections start at once); later connects read afresh."""
        self.ctx = ctx
        self.account = account
        self.path = path
        self.state = AccountState.CONNECTING
        self._report_to = report
        self._task: asyncio.Task[None] | None = None
        self._client: ImapClient | None = None
        self._wake = asyncio.Event()
        # Exists only while the task waits to retry (one Event per connection costs ~0.6 KiB).
        self._retry_now: asyncio.Future[None] | None = None
        self._reconnect = False
        self._sync = False
        self._account_row = account_row
        self._log = structlog.get_logger(__name__).bind(account=account, path=path)

    # -- control ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the task."""
        self._task = asyncio.create_task(
            self._run(), name=f"{self.name} {self.account} {self.path}"
        )

    def reconnect(self) -> None:
        """Drop the connection and open a new one now (also ends an error backoff)."""
        self._reconnect = True
        self._wake.set()
        if self._retry_now is not None and not self._retry_now.done():
            self._retry_now.set_result(None)

    def sync(self) -> None:
        """Run a full catch-up now (on the open connection, or on the next one)."""
        self._sync = True
        self._wake.set()

    async def stop(self) -> None:
        """Stop the task and close the connection. Nothing half-written stays behind."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def running(self) -> bool:
        """Whether the task is alive."""
        return self._task is not None and not self._task.done()

    # -- the loop ---------------------------------------------------------------------------

    def _report(
        self,
        state: str,
        error: dict[str, Any] | None = None,
        user: str | None = None,
        *,
        recorded: bool = False,
    ) -> None:
        self.state = state
        self._report_to(self, StateReport(state, error, user, recorded))

    async def _run(self) -> None:
        settings = self.ctx.settings
        backoff = Backoff(settings.reconnect_min, settings.reconnect_max)
        while True:
            connected = [False]
            self._reconnect = False
            try:
                self._report(AccountState.CONNECTING)
                client, creds = await self._connect()
                await self._hold(client, creds, connected, backoff)
                backoff.reset()
                continue
            except NotFound:
                self._log.info("account gone; connection stops")
                return
            except LeaseLost:
                self._log.info("another node watches the account now; connection stops")
                self.ctx.lease_lost(self.account)
                return
            except TokenRefreshFailed as exc:
                # The token endpoint failed, not the credentials: retry like a network error.
                self._log.info("token refresh failed", error=str(exc))
                self._report(
                    AccountState.CONNECT_ERROR,
                    {"response": str(exc), "serverResponseCode": "OauthRenewError"},
                )
                delay = backoff.next()
            except (ImapAuthError, AuthError) as exc:
                self._log.warning("authentication failed", error=str(exc))
                recorded = isinstance(exc, ConsentRequired) and exc.recorded
                self._report(AccountState.AUTHENTICATION_ERROR, _auth_error(exc), recorded=recorded)
                delay = settings.auth_retry
            except StateConflict as exc:
                self._log.info("folder state changed elsewhere; resyncing", error=str(exc))
                delay = backoff.next()
            except StoreError as exc:
                self._log.log(retry_level(exc), "store failed", error=str(exc))
                self._report(AccountState.DISCONNECTED, {"response": str(exc)})
                delay = backoff.next()
            except (ImapError, OSError) as exc:
                if connected[0]:
                    self._log.info("disconnected", error=str(exc))
                    self._report(AccountState.DISCONNECTED, _connect_error(exc))
                    backoff.reset()
                else:
                    self._log.info("cannot connect", error=str(exc))
                    self._report(AccountState.CONNECT_ERROR, _connect_error(exc))
                delay = backoff.next()
            finally:
                # Whatever happened, the next connection starts from the stored state.
                self._account_row = None
                self._closed()
                if self._client is not None:
                    self._client.discard()
                    self._client = None
            await self._pause(delay)

    async def _hold(
        self, client: ImapClient, creds: Credentials, connected: list[bool], backoff: Backoff
    ) -> None:
        """Run :meth:`_session` on a logged-in connection, keeping the connection while the
        store is unavailable.

        A session that could not store what it read has advanced nothing (the folder state is
        written in the same transaction as the events), so it starts again from the stored
        state on the same connection once the store answers: a database restart costs no
        reconnects and logins (thousands at once on a large node). Untagged responses that
        arrive meanwhile are read by the client and found again by the new session's sync.
        """
        while True:
            try:
                await self._session(client, creds, connected)
                return
            except StoreUnavailable as exc:
                if client.closed or client.idling:
                    raise
                self._log.debug("store unavailable; connection kept", error=str(exc))
                self._closed()
                await self.ctx.store.outage.wait(backoff.next())
                if self._reconnect:
                    return

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a reconnect is (or was, during the attempt) requested."""
        if self._reconnect:
            return
        self._retry_now = asyncio.get_running_loop().create_future()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._retry_now
        finally:
            self._retry_now = None

    async def _connect(self) -> tuple[ImapClient, Credentials]:
        row, self._account_row = self._account_row, None

        async def credentials() -> tuple[Endpoint, Credentials]:
            # The row just read serves the first try only; a retry reads afresh.
            nonlocal row
            given, row = row, None
            return await resolve(
                self.ctx.store, self.ctx.cipher, self.ctx.token_for, self.account, row=given
            )

        async def connect(endpoint: Endpoint) -> ImapClient:
            client = await endpoint.connect(
                self.ctx.tls, self.ctx.client_options(), self._on_update
            )
            self._client = client
            return client

        return await log_in(connect, credentials, self.ctx.reject)

    async def _session(self, client: ImapClient, creds: Credentials, connected: list[bool]) -> None:
        """Work on one logged-in connection until it breaks or a reconnect is requested;
        set ``connected[0]`` once the connection is up (errors after it are disconnects)."""
        raise NotImplementedError

    def _on_update(self, update: Update) -> None:
        """Untagged responses nobody asked for (called from the event loop; must not block)."""

    def _closed(self) -> None:
        """The connection is gone: forget what belonged to it."""


def _auth_error(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, ImapAuthError):
        error: dict[str, Any] = {
            "response": exc.text,
            "serverResponseCode": exc.code or "AUTHENTICATIONFAILED",
        }
        if exc.details:
            error["details"] = exc.details
        return error
    return {"response": str(exc), "serverResponseCode": "NoCredentials"}


def _connect_error(exc: Exception) -> dict[str, Any]:
    error: dict[str, Any] = {"response": str(exc)}
    if isinstance(exc, ImapCommandError):
        error["serverResponseCode"] = exc.code or exc.status
    else:
        error["serverResponseCode"] = type(exc).__name__
    return error
