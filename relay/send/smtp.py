"""Sending over SMTP with aiosmtplib: password or XOAUTH2, STARTTLS when offered."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

import aiosmtplib

from relay.send.outcome import PermanentFailure, RetryLater, SendFailed


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


def _classify(code: int, message: str) -> SendFailed:
    reason = f"{code} {message}".strip()
    if 400 <= code < 500:
        return RetryLater(reason, code=code)
    return PermanentFailure(reason, code=code)


async def send_smtp(
    target: SmtpTarget,
    *,
    sender: str,
    recipients: list[str],
    raw: bytes,
    io_timeout: float,
    tls_context: ssl.SSLContext | None = None,
) -> str:
    """Send ``raw`` and return the server's final reply.

    ``io_timeout`` bounds each read and write. Raises RetryLater or PermanentFailure.
    """
    client = aiosmtplib.SMTP(
        hostname=target.host,
        port=target.port,
        use_tls=target.secure,
        start_tls=None if not target.secure else False,
        validate_certs=target.verify,
        tls_context=tls_context,
        timeout=io_timeout,
    )
    try:
        async with client:
            if target.token is not None:
                await client.auth_xoauth2(target.user, target.token)
            elif target.password is not None:
                await client.login(target.user, target.password)
            refused, reply = await client.sendmail(sender, recipients, raw)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [e.code for e in exc.recipients]
        worst = max(codes) if codes else 550
        detail = "; ".join(f"{e.recipient}: {e.code} {e.message}" for e in exc.recipients)
        raise _classify(worst, f"all recipients refused ({detail})") from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise _classify(exc.code, exc.message) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise RetryLater(f"{exc.__class__.__name__}: {exc}") from exc
    if refused:
        detail = "; ".join(f"{r}: {resp.code} {resp.message}" for r, resp in refused.items())
        return f"{reply} (refused: {detail})"
    return reply
