"""Who is calling Graph, and what their token lets them do with a mailbox (pure rules).

- A **delegated** token reaches the signed-in user's own mailbox with ``Mail.Read``,
  ``Mail.ReadBasic`` or ``Mail.ReadWrite`` (or their ``.Shared`` forms), and another mailbox
  only with a ``.Shared`` scope *and* a Full Access grant. Writing needs ``ReadWrite``;
  sending needs ``Mail.Send`` (own address) or ``Mail.Send.Shared`` plus Send As or Send on
  Behalf (another address).
- An **app-only** token reaches every mailbox of the tenant with the roles ``Mail.Read``,
  ``Mail.ReadBasic(.All)`` or ``Mail.ReadWrite`` (no application access policy is
  modelled); ``Mail.Send`` sends as anyone in the tenant.
- Change notifications need a read permission that is not a ``.Shared`` one, and a
  delegated token may only watch the signed-in user's own mailbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from relay.sandbox.graph.errors import (
    GraphError,
    access_denied,
    bad_request,
    invalid_token,
    send_as_denied,
)
from relay.sandbox.scopes import GRAPH
from relay.sandbox.state import AccessToken, SandboxState, User


class Need(Enum):
    """What a request does to a mailbox."""

    READ = "read"
    WRITE = "write"


_READ_OWN = frozenset(
    s.casefold()
    for s in (
        "Mail.Read",
        "Mail.ReadBasic",
        "Mail.ReadWrite",
        "Mail.Read.Shared",
        "Mail.ReadBasic.Shared",
        "Mail.ReadWrite.Shared",
    )
)
_WRITE_OWN = frozenset(s.casefold() for s in ("Mail.ReadWrite", "Mail.ReadWrite.Shared"))
_READ_SHARED = frozenset(
    s.casefold() for s in ("Mail.Read.Shared", "Mail.ReadBasic.Shared", "Mail.ReadWrite.Shared")
)
_WRITE_SHARED = frozenset({"Mail.ReadWrite.Shared".casefold()})
_FULL_READ = frozenset(
    s.casefold()
    for s in ("Mail.Read", "Mail.ReadWrite", "Mail.Read.Shared", "Mail.ReadWrite.Shared")
)
_SEND = frozenset(s.casefold() for s in ("Mail.Send", "Mail.Send.Shared"))
_SEND_SHARED = "Mail.Send.Shared".casefold()
_APP_READ = frozenset(
    s.casefold() for s in ("Mail.Read", "Mail.ReadBasic", "Mail.ReadBasic.All", "Mail.ReadWrite")
)
_APP_FULL_READ = frozenset(s.casefold() for s in ("Mail.Read", "Mail.ReadWrite"))
_APP_WRITE = frozenset({"Mail.ReadWrite".casefold()})
_APP_SEND = "Mail.Send".casefold()
_SUBSCRIBE = frozenset(s.casefold() for s in ("Mail.Read", "Mail.ReadBasic", "Mail.ReadWrite"))
_SUBSCRIBE_APP = _APP_READ
_USER_READ_OWN = frozenset(
    s.casefold() for s in ("User.Read", "User.ReadBasic.All", "User.Read.All")
)
_USER_READ_ALL = frozenset(s.casefold() for s in ("User.ReadBasic.All", "User.Read.All"))


@dataclass(frozen=True)
class Caller:
    """The bearer of a valid Graph access token."""

    token: AccessToken
    user: User | None
    scopes: frozenset[str]
    roles: frozenset[str]

    @property
    def app_only(self) -> bool:
        """Whether the token was issued to the application itself."""
        return self.user is None

    @property
    def client_id(self) -> str:
        """The application the token was issued to."""
        return self.token.client_id


@dataclass(frozen=True)
class SendRights:
    """Who a message is sent by: ``from_`` is the sending address, ``sender`` who sent it."""

    from_: User
    sender: User


def authenticate(state: SandboxState, header: str | None) -> Caller:
    """The caller behind an ``Authorization`` header; 401 ``InvalidAuthenticationToken``."""
    if not header or not header.strip():
        raise invalid_token("Access token is empty.")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise invalid_token("Access token is empty.")
    if value.count(".") != 2:
        raise invalid_token("IDX14100: JWT is not well formed, there are no dots (.).")
    token = state.access_tokens.get(value)
    if token is None:
        raise invalid_token("Access token validation failure. Invalid signature.")
    if token.resource != GRAPH:
        raise invalid_token("Access token validation failure. Invalid audience.")
    if token.revoked:
        raise invalid_token("Access token has been revoked.")
    if token.expires_at <= state.now():
        raise invalid_token("Lifetime validation failed, the token is expired.")
    user = state.users.get(token.user) if token.user is not None else None
    return Caller(
        token=token,
        user=user,
        scopes=frozenset(s.casefold() for s in token.scopes),
        roles=frozenset(r.casefold() for r in token.roles),
    )


def resolve_user(state: SandboxState, caller: Caller, key: str | None) -> User:
    """The user a path names: ``me`` (None), an object id or a user principal name."""
    if key is None:
        if caller.user is None:
            raise bad_request("/me request is only valid with delegated authentication flow.")
        return caller.user
    lowered = key.strip().lower()
    for user in state.users.values():
        if user.object_id == lowered or user.email == lowered:
            return user
    raise GraphError(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid.")


def check_mailbox(state: SandboxState, caller: Caller, mailbox: User, need: Need) -> bool:
    """Raise 403 unless the caller may read (or write) ``mailbox``.

    Returns whether the caller may see message bodies (not with ``ReadBasic`` only).
    """
    if caller.user is None:
        allowed = _APP_WRITE if need is Need.WRITE else _APP_READ
        if not caller.roles & allowed:
            raise access_denied()
        return bool(caller.roles & _APP_FULL_READ)
    if caller.user.email == mailbox.email:
        allowed = _WRITE_OWN if need is Need.WRITE else _READ_OWN
    else:
        if (caller.user.email, mailbox.email) not in state.grants:
            raise access_denied()
        allowed = _WRITE_SHARED if need is Need.WRITE else _READ_SHARED
    if not caller.scopes & allowed:
        raise access_denied()
    return bool(caller.scopes & _FULL_READ)


def check_user_read(caller: Caller, user: User) -> None:
    """Raise 403 unless the caller may read ``user``'s directory entry."""
    if caller.user is None:
        allowed = "user.read.all" in caller.roles
    else:
        own = caller.user.email == user.email
        allowed = bool(caller.scopes & (_USER_READ_OWN if own else _USER_READ_ALL))
    if not allowed:
        raise GraphError(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )


def check_send(state: SandboxState, caller: Caller, mailbox: User, from_: User) -> SendRights:
    """Who the message is sent by; 403 ``ErrorAccessDenied`` or ``ErrorSendAsDenied``.

    ``mailbox`` is the one in the URL, ``from_`` the message's ``from`` (or the mailbox).
    """
    if caller.user is None:
        if _APP_SEND not in caller.roles:
            raise access_denied()
        return SendRights(from_=from_, sender=from_)
    if not caller.scopes & _SEND:
        raise access_denied()
    me = caller.user
    on_behalf = False
    for target in dict.fromkeys([mailbox.email, from_.email]):
        if target == me.email:
            continue
        grant = state.grants.get((me.email, target))
        if mailbox.email != me.email and _SEND_SHARED not in caller.scopes:
            raise send_as_denied()
        if grant is None or not (grant.send_as or grant.send_on_behalf):
            raise send_as_denied()
        on_behalf = on_behalf or not grant.send_as
    return SendRights(from_=from_, sender=me if on_behalf else from_)


def check_subscribe(caller: Caller, mailbox: User) -> None:
    """Raise 403 unless the caller may watch ``mailbox`` with change notifications."""
    if caller.user is None:
        if not caller.roles & _SUBSCRIBE_APP:
            raise _subscription_denied("The application lacks a read permission on messages.")
        return
    if caller.user.email != mailbox.email:
        raise _subscription_denied(
            "Change notifications on a shared or delegated mailbox need an application "
            "permission; delegated permissions reach the signed-in user's own mailbox only."
        )
    if not caller.scopes & _SUBSCRIBE:
        raise _subscription_denied(
            "Mail.Read, Mail.ReadBasic or Mail.ReadWrite is needed; .Shared permissions do "
            "not support change notifications."
        )


def _subscription_denied(reason: str) -> GraphError:
    return GraphError(
        403,
        "ExtensionError",
        f"Operation: Create; Exception: [Status Code: Forbidden; Reason: {reason}]",
    )
