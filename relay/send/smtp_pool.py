"""Kept SMTP connections: one login serves many messages of the same account and server.

Sessions are kept per (account, server, user, credential): a changed password or a refreshed
XOAUTH2 token opens new ones, and the old ones close when idle. A session is used by one
message at a time; concurrent messages of an account open more sessions, which are kept too.
A kept session the server closed meanwhile is noticed before anything of the message is
sent (closed socket, or a failed ``MAIL FROM``) and the message goes over a new one.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from relay.send.outcome import RetryLater
from relay.send.smtp import SmtpSession, SmtpTarget, StaleSession


@dataclass(frozen=True, slots=True)
class Limits:
    """When a kept session is closed instead of reused."""

    # Servers drop idle clients (Exchange Online after about a minute); close before they do.
    idle: float = 30.0
    # Bounds how long one login is trusted (an XOAUTH2 token lives about an hour).
    age: float = 600.0
    messages: int = 100
    # Idle sessions kept over all accounts.
    total: int = 64


def reusable(*, connected: bool, messages: int, age: float, idle: float, limits: Limits) -> bool:
    """Whether a session open ``age`` s, idle ``idle`` s, after ``messages`` may send another."""
    return connected and messages < limits.messages and age < limits.age and idle < limits.idle


class SmtpPool:
    """Open, lend and keep :class:`SmtpSession` objects."""

    def __init__(
        self,
        *,
        io_timeout: float,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.io_timeout = io_timeout
        self.limits = limits or Limits()
        self.clock = clock
        # key -> idle sessions with the moment each became idle (most recent last).
        self._idle: dict[tuple[str, str], list[tuple[SmtpSession, float]]] = {}
        self._local_hostname: str | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.reused = 0

    async def send(
        self,
        account: str,
        target: SmtpTarget,
        *,
        sender: str,
        recipients: list[str],
        raw: bytes,
        tls_context: ssl.SSLContext | None = None,
    ) -> str:
        """Send over a kept session of ``account`` or a new one; return the final reply."""
        key = (account, target.fingerprint())
        session = self._take(key)
        if session is not None:
            try:
                reply = await self._send_on(session, key, sender, recipients, raw)
            except StaleSession:
                pass
            else:
                self.reused += 1
                return reply
        session = await self._open(target, tls_context)
        try:
            return await self._send_on(session, key, sender, recipients, raw)
        except StaleSession as exc:
            # A new session: the server is in trouble; there is no older one to blame.
            raise RetryLater(exc.reason, code=exc.code) from exc

    async def _send_on(
        self,
        session: SmtpSession,
        key: tuple[str, str],
        sender: str,
        recipients: list[str],
        raw: bytes,
    ) -> str:
        try:
            return await session.send(sender=sender, recipients=recipients, raw=raw)
        finally:
            self._give_back(key, session)

    async def _open(self, target: SmtpTarget, tls_context: ssl.SSLContext | None) -> SmtpSession:
        if self._local_hostname is None:
            # aiosmtplib would look it up (in a thread) on every connection.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        session = await SmtpSession.open(
            target,
            io_timeout=self.io_timeout,
            local_hostname=self._local_hostname,
            tls_context=tls_context,
        )
        session.opened = self.clock()
        self.connections += 1
        return session

    def _reusable(self, session: SmtpSession, idle_since: float, now: float) -> bool:
        return reusable(
            connected=session.connected,
            messages=session.messages,
            age=now - session.opened,
            idle=now - idle_since,
            limits=self.limits,
        )

    def _take(self, key: tuple[str, str]) -> SmtpSession | None:
        idle = self._idle.get(key)
        now = self.clock()
        while idle:
            session, since = idle.pop()
            if self._reusable(session, since, now):
                return session
            self._close_later(session)
        self._idle.pop(key, None)
        return None

    def _give_back(self, key: tuple[str, str], session: SmtpSession) -> None:
        now = self.clock()
        if not self._reusable(session, now, now):
            self._close_later(session)
            return
        self._idle.setdefault(key, []).append((session, now))
        if sum(len(v) for v in self._idle.values()) > self.limits.total:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        key, index = min(
            ((k, i) for k, v in self._idle.items() for i in range(len(v))),
            key=lambda ki: self._idle[ki[0]][ki[1]][1],
        )
        session, _ = self._idle[key].pop(index)
        if not self._idle[key]:
            del self._idle[key]
        self._close_later(session)

    def prune(self) -> None:
        """Close the sessions that may not be reused any more (idle too long, too old)."""
        now = self.clock()
        for key in list(self._idle):
            keep = []
            for session, since in self._idle[key]:
                if self._reusable(session, since, now):
                    keep.append((session, since))
                else:
                    self._close_later(session)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    async def close(self) -> None:
        """QUIT every idle session."""
        sessions = [s for v in self._idle.values() for s, _ in v]
        self._idle.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _close_later(self, session: SmtpSession) -> None:
        task = asyncio.get_running_loop().create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
