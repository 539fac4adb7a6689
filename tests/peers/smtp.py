"""An SMTP server for tests: aiosmtpd on a free port of 127.0.0.1, in the test's event loop.

It records what it accepts, answers scripted replies, checks passwords, and checks XOAUTH2
tokens the way Exchange Online does: through a ``check_token(user, token)`` callback (the
sandbox's introspection), and a ``From`` other than the authenticated user only with Send As.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default
from email.utils import parseaddr
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

# (user, token) -> the introspection answer ({"active", "user", "sendAs", ...}) or None.
# aiosmtpd logs every command at INFO, and a deprecation notice on each AUTH.
logging.getLogger("mail.log").setLevel(logging.ERROR)

CheckToken = Callable[[str, str], Awaitable[dict[str, Any] | None]]
OnSent = Callable[["Received"], Awaitable[None]]


@dataclass
class Received:
    """One accepted message."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None

    @property
    def header_from(self) -> str:
        msg = message_from_bytes(self.data, policy=default)
        return parseaddr(str(msg.get("From", "")))[1]

    @property
    def message_id(self) -> str:
        msg = message_from_bytes(self.data, policy=default)
        return str(msg.get("Message-ID", ""))


class _ExchangeSMTP(SMTP):
    # XOAUTH2 carries a JWT on the AUTH line; Exchange takes lines far longer than 512 bytes.
    line_length_limit = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command_size_limits = collections.defaultdict(lambda: 65536)


@dataclass
class SmtpPeer:
    """The handler and what it saw; ``replies`` are answered to DATA first, in order."""

    passwords: dict[str, str] = field(default_factory=dict)
    check_token: CheckToken | None = None
    on_sent: OnSent | None = None
    replies: list[str] = field(default_factory=list)
    # Recipients refused at RCPT TO (550 5.1.1).
    unknown: set[str] = field(default_factory=set)
    # Seconds each DATA takes before the reply (a slow server).
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _grants: dict[int, dict[str, Any]] = field(default_factory=dict)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> SmtpPeer:
        loop = asyncio.get_running_loop()

        def protocol() -> SMTP:
            with warnings.catch_warnings():
                # AUTH without TLS: the tests talk plain SMTP on loopback on purpose.
                warnings.simplefilter("ignore", UserWarning)
                return _ExchangeSMTP(
                    self,
                    hostname="smtp.test",
                    authenticator=self._password,
                    auth_require_tls=False,
                    auth_required=bool(self.passwords or self.check_token),
                )

        self._server = await loop.create_server(protocol, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(self, count: int, seconds: float | None = 10.0) -> list[Received]:
        """Wait until ``count`` messages have been accepted."""
        async with asyncio.timeout(seconds):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received

    # -- aiosmtpd hooks ----------------------------------------------------------------------

    def _password(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False)
        user, password = data.login.decode(), data.password.decode()
        ok = user in self.passwords and self.passwords[user] == password
        return AuthResult(success=ok, auth_data=user if ok else None)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) > 1:
            blob = args[1].encode()
        else:
            answer = await server.challenge_auth("", encode_to_b64=False)
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=False)
            blob = base64.b64encode(answer)
        fields = dict(
            part.split("=", 1) for part in base64.b64decode(blob).decode().split("\x01") if part
        )
        user = fields.get("user", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        granted = await self.check_token(user, token) if self.check_token else None
        if not granted or not granted.get("active") or granted.get("user") != user:
            error = {"status": "401", "schemes": "bearer", "scope": "https://outlook.office.com/"}
            await server.challenge_auth(json.dumps(error))
            return AuthResult(success=False, handled=False)
        self._grants[id(server)] = granted
        return AuthResult(success=True, auth_data=user)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.lower() in self.unknown:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.replies:
            return self.replies.pop(0)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        data = bytes(envelope.original_content or b"")
        got = Received(str(envelope.mail_from), list(envelope.rcpt_tos), data, login)
        granted = self._grants.get(id(server))
        allowed = [login, *(a.lower() for a in (granted or {}).get("sendAs", []))]
        if granted is not None and got.header_from.lower() not in allowed:
            return "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
        if self.on_sent is not None:
            await self.on_sent(got)
        self.received.append(got)
        self._arrived.set()
        return f"250 2.0.0 OK queued as {len(self.received)}"
