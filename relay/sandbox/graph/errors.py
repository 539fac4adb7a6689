"""Microsoft Graph's error answers, as the sandbox gives them.

Graph answers ``{"error": {"code", "message", "innerError": {"date", "request-id",
"client-request-id"}}}``; :class:`GraphError` carries the status, code and message (and
headers of the answer, such as ``Retry-After``) and :func:`error_body` adds the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


class GraphError(Exception):
    """An error answer: HTTP status, Graph's error code and message, extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_body(exc: GraphError, now: float, request_id: str, client_request_id: str) -> Any:
    """The JSON body of an error answer."""
    date = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "error": {
            "code": exc.code,
            "message": exc.message,
            "innerError": {
                "date": date,
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        }
    }


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    """400 with ``code``."""
    return GraphError(400, code, message)


def access_denied() -> GraphError:
    """403 ``ErrorAccessDenied``, Exchange's answer to a missing permission or grant."""
    return GraphError(
        403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
    )


def send_as_denied() -> GraphError:
    """403 ``ErrorSendAsDenied``: no Send As / Send on Behalf right on the sending mailbox."""
    return GraphError(
        403,
        "ErrorSendAsDenied",
        "The user account which was used to submit this request does not have the right to "
        "send mail on behalf of the specified sending account., Cannot submit message.",
    )


def item_not_found() -> GraphError:
    """404 ``ErrorItemNotFound`` for a message or folder id that does not exist."""
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def malformed_id() -> GraphError:
    """400 ``ErrorInvalidIdMalformed`` for an id that cannot be an Exchange id."""
    return GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")


def invalid_token(message: str) -> GraphError:
    """401 ``InvalidAuthenticationToken``."""
    return GraphError(401, "InvalidAuthenticationToken", message)


def extension_error(status: int, operation: str, reason: str) -> GraphError:
    """Exchange's subscription errors, which Graph wraps as ``ExtensionError``."""
    reasons = {400: "BadRequest", 403: "Forbidden", 404: "NotFound"}
    return GraphError(
        status,
        "ExtensionError",
        f"Operation: {operation}; Exception: [Status Code: {reasons.get(status, status)}; "
        f"Reason: {reason}]",
    )


def throttled(code: str, message: str, retry_after: int) -> GraphError:
    """429 ``Too Many Requests`` with ``Retry-After`` in seconds, as Graph throttles."""
    return GraphError(429, code, message, {"Retry-After": str(retry_after)})
