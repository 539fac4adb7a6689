"""Sending over SMTP with aiosmtplib: password or XOAUTH2, STARTTLS when offered.

An :class:`SmtpSession` is one logged-in connection that sends messages one after another
(``MAIL``, ``RCPT``..., ``DATA``; ``RSET`` after a refusal); :mod:`relay.send.smtp_pool`
keeps them open between messages.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib

from relay.log import protocol_log
from relay.proxy import connect as proxied
from relay.proxy import redacted
from relay.send.outcome import PermanentFailure, RetryLater, SendFailed

# Reply codes after which the server will not take another message on this connection.
_CLOSING = frozenset({421})
# QUIT is a courtesy: do not let a slow server hold up shutdown.
_QUIT_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """Where and as whom to send."""

    host: str
    port: int
    # True: TLS from the start (465). False: STARTTLS when the server offers it.
    secure: bool
    user: str
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    verify: bool = True
    # The account's ``proxy`` URL (relay.proxy).
    proxy: str | None = field(default=None, repr=False)
    # The account whose ``logs`` setting is on: its SMTP dialogue goes to the protocol log.
    logs: str | None = None

    def fingerprint(self) -> str:
        """Identifies server, user, credential and route: a changed password, new token or
        other proxy differs."""
        secret = f"{self.password or ''}\x00{self.token or ''}\x00{self.proxy or ''}"
        material = f"{self.host}\x00{self.port}\x00{self.secure}\x00{self.verify}\x00{self.user}"
        return hashlib.sha256(f"{material}\x00{self.logs}\x00{secret}".encode()).hexdigest()


def _traced(
    trace: Any, command: str, reply: aiosmtplib.SMTPResponse | Exception | None, **extra: Any
) -> None:
    """One line of the protocol log: a command sent (``reply`` None) or the server's reply."""
    if trace is None:
        return
    if reply is None:
        trace.debug("smtp command", line=command, **extra)
    elif isinstance(reply, aiosmtplib.SMTPResponseException | aiosmtplib.SMTPResponse):
        trace.debug("smtp response", command=command, line=f"{reply.code} {reply.message}")


class StaleSession(RetryLater):
    """A kept connection turned out closed before any of the message went out."""


def _classify(code: int, message: str, *, command: str, error_code: str) -> SendFailed:
    """A reply of the server: 4xx is transient, the rest permanent."""
    reason = f"{code} {message}".strip()
    kind = RetryLater if 400 <= code < 500 else PermanentFailure
    return kind(reason, code=code, error_code=error_code, command=command, response=reason)


def _refused(exc: aiosmtplib.SMTPRecipientsRefused) -> SendFailed:
    worst = max(exc.recipients, key=lambda e: e.code, default=None)
    detail = "; ".join(f"{e.recipient}: {e.code} {e.message}" for e in exc.recipients)
    failure = _classify(
        worst.code if worst else 550,
        f"all recipients refused ({detail})",
        command="RCPT TO",
        error_code="EENVELOPE",
    )
    if worst is not None:
        failure.response = f"{worst.code} {worst.message}"
    return failure


def _broken(exc: BaseException, command: str) -> RetryLater:
    """The connection failed without a reply: timed out, cut, refused."""
    timeout = isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError)
    return RetryLater(
        f"{exc.__class__.__name__}: {exc}",
        error_code="ETIMEDOUT" if timeout else "ECONNECTION",
        command=command,
    )


class SmtpSession:
    """One connection, logged in, that sends messages in turn (never two at once)."""

    def __init__(self, client: aiosmtplib.SMTP, target: SmtpTarget, trace: Any = None) -> None:
        self._client = client
        self.target = target
        self._trace = trace
        # When it was opened (by the clock of whoever keeps it).
        self.opened = 0.0
        self.messages = 0
        # False once the connection's state is unknown (a timeout, a cut, a 421).
        self.usable = True

    @classmethod
    async def open(
        cls,
        target: SmtpTarget,
        *,
        io_timeout: float,
        local_hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> SmtpSession:
        """Connect and log in; raises RetryLater or PermanentFailure."""
        trace = protocol_log("smtp", target.logs) if target.logs else None
        client = aiosmtplib.SMTP(
            hostname=target.host,
            port=None if target.proxy else target.port,
            use_tls=target.secure,
            start_tls=None if not target.secure else False,
            validate_certs=target.verify,
            tls_context=tls_context,
            local_hostname=local_hostname,
            timeout=io_timeout,
        )
        command = "CONN"
        try:
            if trace is not None:
                trace.debug(
                    "smtp connect",
                    host=target.host,
                    port=target.port,
                    tls=target.secure,
                    proxy=redacted(target.proxy) if target.proxy else None,
                )
            if target.proxy:
                sock = await proxied(target.proxy, target.host, target.port, seconds=io_timeout)
                try:
                    greeting = await client.connect(sock=sock)
                except BaseException:
                    sock.close()
                    raise
            else:
                greeting = await client.connect()
            _traced(trace, "CONN", greeting)
            if target.token is not None:
                command = "AUTH XOAUTH2"
                _traced(trace, command, None)
                _traced(trace, command, await client.auth_xoauth2(target.user, target.token))
            elif target.password is not None:
                command = "AUTH"
                _traced(trace, "AUTH LOGIN", None)
                _traced(trace, command, await client.login(target.user, target.password))
        except BaseException as exc:
            if trace is not None:
                trace.debug("smtp failed", command=command, error=str(exc))
            client.close()
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                kind = "EAUTH" if command.startswith("AUTH") else "ECONNECTION"
                raise _classify(exc.code, exc.message, command=command, error_code=kind) from exc
            if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
                raise _broken(exc, command) from exc
            raise
        return cls(client, target, trace)

    @property
    def connected(self) -> bool:
        return self.usable and self._client.is_connected

    async def send(self, *, sender: str, recipients: list[str], raw: bytes) -> str:
        """Send ``raw`` and return the server's final reply.

        Raises :class:`StaleSession` when the connection was found closed at ``MAIL FROM``
        (nothing of the message was sent), else RetryLater or PermanentFailure. A refusal
        leaves the session usable (the envelope is reset); anything else does not.
        """
        client = self._client
        options = [f"SIZE={len(raw)}"] if client.supports_extension("size") else []
        trace = self._trace
        try:
            _traced(trace, f"MAIL FROM:<{sender}>", None)
            _traced(trace, "MAIL FROM", await client.mail(sender, options=options))
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            self.usable = False
            raise StaleSession(f"{exc.__class__.__name__}: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(exc.code)
            if exc.code in _CLOSING and self.messages:
                raise StaleSession(f"{exc.code} {exc.message}") from exc
            raise _classify(
                exc.code, exc.message, command="MAIL FROM", error_code="EENVELOPE"
            ) from exc
        except BaseException:
            self.usable = False
            raise
        try:
            refused: list[aiosmtplib.SMTPRecipientRefused] = []
            for recipient in recipients:
                try:
                    _traced(trace, f"RCPT TO:<{recipient}>", None)
                    _traced(trace, "RCPT TO", await client.rcpt(recipient))
                except aiosmtplib.SMTPRecipientRefused as exc:
                    _traced(trace, "RCPT TO", exc)
                    if exc.code in _CLOSING:
                        raise
                    refused.append(exc)
            if len(refused) == len(recipients):
                raise aiosmtplib.SMTPRecipientsRefused(refused)
            _traced(trace, "DATA", None, size=len(raw))
            reply = await client.data(raw)
            _traced(trace, "DATA", reply)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self._reset(0)
            raise _refused(exc) from exc
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(exc.code)
            raise _classify(exc.code, exc.message, command="DATA", error_code="EMESSAGE") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self.usable = False
            raise _broken(exc, "DATA") from exc
        except BaseException:
            # Cancelled mid-command: the connection is in an unknown state.
            self.usable = False
            raise
        self.messages += 1
        if refused:
            detail = "; ".join(f"{e.recipient}: {e.code} {e.message}" for e in refused)
            return f"{reply.message} (refused: {detail})"
        return reply.message

    async def _reset(self, code: int) -> None:
        """Clear the envelope after a refusal; a failed reset or a 421 ends the session."""
        if code in _CLOSING:
            self.usable = False
            return
        try:
            await self._client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            self.usable = False

    async def close(self) -> None:
        """Say QUIT when the connection is in a known state, then close it."""
        try:
            if self.connected:
                await self._client.quit(timeout=_QUIT_TIMEOUT)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        finally:
            self._client.close()
