"""The one exception tree of mailrelay.

    RelayError
    ├── ConfigError            a setting is missing or malformed (start-up stops)
    ├── InputError             a request is malformed; carries the field and an HTTP status
    │   ├── NotFound           the named resource does not exist (404)
    │   ├── Conflict           the request contradicts the stored state (409)
    │   ├── Forbidden          the token may not do this (403)
    │   └── RateLimited        the token made too many requests (429)
    ├── Unauthorized           missing or unknown API token (401)
    ├── Unavailable            a mailbox server cannot be used right now (503)
    ├── StoreError             the database failed or is unreachable
    │   └── StoreUnavailable   transient: the database is down, restarting, full or busy
    ├── AuthError              credentials for a mailbox could not be obtained
    │   ├── TokenRefreshFailed transient: the token endpoint failed, try again later
    │   └── ConsentRequired    permanent until the user consents again (invalid_grant)
    ├── SourceError            a mailbox source failed
    │   ├── ImapError
    │   ├── GraphError
    │   └── LeaseLost          another node owns the account now: this node's write is refused
    └── DeliveryError          a webhook could not be delivered

Library exceptions are converted where they cross into our code (``raise ... from exc``);
the API maps this tree to status codes in one middleware (``relay.api.middleware``).
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error mailrelay raises on purpose."""


class ConfigError(RelayError):
    """A setting is missing or malformed; ``key`` names it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class InputError(RelayError):
    """A request is malformed. ``field`` is the dotted path of the offending input."""

    status = 400
    reason = "Bad Request"
    code = "InputValidationError"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(InputError):
    """The named resource does not exist."""

    status = 404
    reason = "Not Found"
    code = "NotFound"


class Conflict(InputError):
    """The request contradicts what is stored (e.g. deleting an account others delegate to)."""

    status = 409
    reason = "Conflict"
    code = "Conflict"


class Forbidden(InputError):
    """The token may not do what the request asks; ``field`` names what it lacks."""

    status = 403
    reason = "Forbidden"
    code = "Forbidden"


class RateLimited(InputError):
    """The token's rate limit is used up; ``headers`` (``Retry-After``, ``RateLimit-*``) say
    when it may try again."""

    status = 429
    reason = "Too Many Requests"
    code = "RateLimited"

    def __init__(self, message: str, *, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.headers = headers


class Unauthorized(RelayError):
    """Missing or unknown API token."""


class Unavailable(RelayError):
    """A mailbox's server cannot be used right now (503); ``code`` says why, EmailEngine's way
    (``IMAPUnavailable``, ``AuthenticationFails``, ``GraphUnavailable``)."""

    status = 503
    reason = "Service Unavailable"

    def __init__(self, message: str, *, code: str = "IMAPUnavailable") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class StoreError(RelayError):
    """The database failed or is unreachable."""


class StoreUnavailable(StoreError):
    """The database cannot be used right now (down, restarting, out of disk or too busy);
    writes are worth retrying, and the API answers 503 with ``Retry-After``."""


class AuthError(RelayError):
    """Credentials for a mailbox could not be obtained."""


class TokenRefreshFailed(AuthError):
    """A transient failure at the token endpoint; retry with backoff."""


class ConsentRequired(AuthError):
    """The grant is gone (``invalid_grant``); only new consent helps, so never retry in a loop.

    ``recorded`` means the ``authenticationError`` state and event of every account that uses
    the grant are already stored, so whoever catches this need not report them again.
    """

    def __init__(self, message: str, *, recorded: bool = False) -> None:
        super().__init__(message)
        self.recorded = recorded


class SourceError(RelayError):
    """A mailbox source (IMAP or Graph) failed."""


class ImapError(SourceError):
    """The IMAP server refused or broke the conversation."""


class GraphError(SourceError):
    """Microsoft Graph answered with an error."""


class LeaseLost(SourceError):
    """Another node took over the account (its lease epoch moved on): nothing was written,
    and this node's watcher of the account must stop."""

    def __init__(self, account: str) -> None:
        super().__init__(f"account {account} is watched by another node now")
        self.account = account


class DeliveryError(RelayError):
    """A webhook could not be delivered."""
