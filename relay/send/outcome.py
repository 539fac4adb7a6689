"""How an attempt ended, as exceptions the worker sorts in one place, and the retry backoff."""

from __future__ import annotations

from relay.errors import RelayError


class SendFailed(RelayError):
    """An attempt failed, described the way EmailEngine's ``messageDeliveryError`` does.

    ``code`` is the SMTP reply code or Graph's HTTP status, when there was one;
    ``error_code`` nodemailer's kind of failure (``EENVELOPE``, ``EMESSAGE``, ``EAUTH``,
    ``ECONNECTION``, ``ETIMEDOUT``, ``EPROTOCOL``) or Graph's error code; ``command`` the SMTP
    command that failed (``RCPT TO``...), ``response`` the server's whole reply.
    """

    def __init__(
        self,
        reason: str,
        *,
        code: int | None = None,
        error_code: str = "EPROTOCOL",
        command: str | None = None,
        response: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.error_code = error_code
        self.command = command
        self.response = response

    def event_data(self) -> dict[str, object]:
        """The failure's fields of ``messageDeliveryError``; those that do not apply are left
        out, as EmailEngine leaves them (a Graph failure has no SMTP reply)."""
        smtp = self.command is not None or self.response is not None
        fields: dict[str, object | None] = {
            "error": self.reason,
            "errorCode": self.error_code,
            "smtpResponse": self.response,
            "smtpResponseCode": self.code if smtp else None,
            "smtpCommand": self.command,
            "statusCode": None if smtp else self.code,
        }
        return {key: value for key, value in fields.items() if value is not None}


class RetryLater(SendFailed):
    """Transient: a 4xx SMTP reply, a broken connection, Graph 429/5xx, a token refresh failure."""


class PermanentFailure(SendFailed):
    """Final: a 5xx SMTP reply, a Graph 4xx (``ErrorSendAsDenied``), lost consent."""


def retry_delay(attempt: int, *, minimum: float, maximum: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): doubling, capped."""
    return float(min(maximum, minimum * 2 ** max(0, attempt - 1)))
