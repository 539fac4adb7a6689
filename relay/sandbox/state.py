"""The sandbox tenant, held in memory: users, mailboxes, grants, apps, consent, codes, tokens.

Model:

- A **user** is a directory account that owns one mailbox at its address. A **shared
  mailbox** is a user with ``shared=True``: it owns a mailbox but cannot sign in (Microsoft
  creates shared mailboxes with a disabled account).
- A **grant** lets a user open another mailbox (Exchange *Full Access*), optionally with
  *Send As* or *Send on Behalf*. A user's mailboxes are its own (unless it is shared) plus
  every granted one.
- Every user and shared mailbox has a mailbox with folders and messages (``mail``, see
  :mod:`relay.sandbox.graph.mail`); ``subscriptions`` holds Graph change subscriptions;
  ``throttling`` the mailboxes told to answer 429 and the requests each mailbox received;
  ``faults`` the outages switched on (503, 504, hangs, resets).
- An **app** is a confidential client: id, secret, exact redirect URIs and the application
  permissions an administrator consented to (used by ``client_credentials``).
- **Consent** is remembered per (user, app) as full scope strings; a token carries every
  consented permission of its resource, as Microsoft's do.
- Codes, refresh tokens and access tokens are records looked up by their string. Access
  tokens are signed JWTs shaped like Microsoft's; nobody has to verify them.

Everything reads time from an injectable clock, so expiry can be tested by advancing it;
``clock_listeners`` are told when it is advanced (the notifier re-plans its deliveries).
``version`` grows with every change, so a writer can tell when the grants snapshot is stale.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from relay.errors import Conflict, InputError, NotFound
from relay.sandbox.errors import IdentityError
from relay.sandbox.graph.faults import Faults
from relay.sandbox.graph.mail import MailStore
from relay.sandbox.graph.throttling import Throttling
from relay.sandbox.scopes import ScopeSet
from relay.sandbox.signing import Signer, b64url, b64url_json

if TYPE_CHECKING:
    from relay.sandbox.graph.subscriptions import Subscription

DEFAULT_TENANT_ID = "5b1e7c4a-0d1f-4c39-9a51-6e0c2f7d8a10"
DEFAULT_TENANT_NAME = "sandbox"

CODE_LIFETIME = 600.0
SIGN_IN_LIFETIME = 3600.0
# Microsoft picks 60-90 minutes at random; a fixed value keeps tests predictable.
ACCESS_TOKEN_LIFETIME = 3599
ID_TOKEN_LIFETIME = 3600
REFRESH_TOKEN_LIFETIME = 90 * 86400.0

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NAMESPACE = uuid.UUID("0c6f3c55-9a43-4b8e-8f4e-2f2b8c1d7e61")
_SENDING_ROLES = frozenset({"Mail.Send", "SMTP.SendAsApp", "full_access_as_app"})


class Clock(Protocol):
    """Where the sandbox reads the time (seconds since the epoch)."""

    def now(self) -> float: ...


class SandboxClock:
    """Wall-clock time plus an offset that the admin API can only move forward."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        """Wall-clock time shifted by the offset."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.offset += seconds


def object_id(name: str) -> str:
    """A stable directory object id for a name, so ids survive a restart of the sandbox."""
    return str(uuid.uuid5(_NAMESPACE, name.lower()))


@dataclass
class User:
    """A directory account and the mailbox at its address."""

    email: str
    display_name: str
    password: str | None
    shared: bool
    object_id: str
    tokens_valid_from: float = 0.0


@dataclass(frozen=True)
class App:
    """A registered confidential client."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    display_name: str
    object_id: str
    app_permissions: Mapping[str, frozenset[str]]


@dataclass
class Grant:
    """``user`` may open ``mailbox`` (Full Access), and send as it when ``send_as``.

    ``send_on_behalf`` lets the user send for the mailbox with themselves as the sender.
    """

    user: str
    mailbox: str
    send_as: bool
    send_on_behalf: bool = False


@dataclass
class PendingSignIn:
    """A validated authorize request waiting for the user to sign in and consent."""

    id: str
    client_id: str
    redirect_uri: str
    state: str | None
    response_mode: str
    scopes: ScopeSet
    raw_scope: str
    code_challenge: str
    nonce: str | None
    login_hint: str
    expires_at: float


@dataclass
class AuthCode:
    """An authorization code; single use, short-lived."""

    value: str
    client_id: str
    user: str
    redirect_uri: str
    scopes: ScopeSet
    code_challenge: str
    nonce: str | None
    issued_at: float
    redeemed: bool = False


@dataclass
class RefreshToken:
    """A refresh token; it can mint access tokens for every resource the user consented to."""

    value: str
    client_id: str
    user: str
    issued_at: float
    expires_at: float


@dataclass
class AccessToken:
    """An access token for one resource; ``user`` is None for an app-only token."""

    value: str
    client_id: str
    user: str | None
    resource: str
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    expires_at: float
    revoked: bool = False


@dataclass
class SandboxState:
    """The whole tenant. Mutating methods raise :class:`relay.errors.InputError` subclasses."""

    tenant_id: str = DEFAULT_TENANT_ID
    tenant_name: str = DEFAULT_TENANT_NAME
    clock: Clock = field(default_factory=SandboxClock)
    signer: Signer = field(default_factory=Signer)
    users: dict[str, User] = field(default_factory=dict)
    apps: dict[str, App] = field(default_factory=dict)
    grants: dict[tuple[str, str], Grant] = field(default_factory=dict)
    consent: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    pending: dict[str, PendingSignIn] = field(default_factory=dict)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    throttling: Throttling = field(default_factory=Throttling)
    faults: Faults = field(default_factory=Faults)
    allow_http_notifications: bool = False
    clock_listeners: list[Callable[[], None]] = field(default_factory=list)
    version: int = 0
    mail: MailStore = field(init=False)

    def __post_init__(self) -> None:
        self.mail = MailStore(self.now)

    # -- directory -------------------------------------------------------------------

    def now(self) -> float:
        """The sandbox's current time."""
        return self.clock.now()

    def changed(self) -> None:
        """Note a change that the grants snapshot may reflect."""
        self.version += 1

    @property
    def domains(self) -> frozenset[str]:
        """Domain names of the tenant: its onmicrosoft.com name and every user's domain."""
        names = {f"{self.tenant_name}.onmicrosoft.com"}
        names.update(email.rpartition("@")[2] for email in self.users)
        return frozenset(names)

    def resolve_tenant(self, segment: str) -> str | None:
        """The tenant id a path segment names; None for ``common`` and ``organizations``."""
        lowered = segment.lower()
        if lowered in ("common", "organizations"):
            return None
        if lowered == self.tenant_id or lowered in self.domains:
            return self.tenant_id
        raise IdentityError(
            "invalid_tenant",
            90002,
            f"Tenant '{segment}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )

    def add_user(
        self,
        email: str,
        *,
        password: str | None,
        display_name: str | None = None,
        shared: bool = False,
        folder_names: Mapping[str, str] | None = None,
    ) -> User:
        """Create a user (or a shared mailbox, which has no password) and its mailbox.

        ``folder_names`` gives the well-known folders localized display names.
        """
        key = email.strip().lower()
        if not _EMAIL.match(key):
            raise InputError(f"email: {email!r} is not an email address", field="email")
        if key in self.users:
            raise Conflict(f"email: user {key} already exists", field="email")
        if shared and password:
            raise InputError("password: a shared mailbox cannot sign in", field="password")
        if not shared and not password:
            raise InputError("password: required for a user who signs in", field="password")
        user = User(
            email=key,
            display_name=display_name or key.partition("@")[0],
            password=None if shared else password,
            shared=shared,
            object_id=object_id(key),
        )
        self.mail.create_mailbox(key, user.object_id, folder_names)
        self.users[key] = user
        self.changed()
        return user

    def user(self, email: str, *, field_name: str = "user") -> User:
        """The user at ``email``; NotFound names ``field_name``."""
        found = self.users.get(email.strip().lower())
        if found is None:
            raise NotFound(f"{field_name}: no user {email!r}", field=field_name)
        return found

    def set_grant(
        self, user: str, mailbox: str, *, send_as: bool = False, send_on_behalf: bool = False
    ) -> Grant:
        """Let ``user`` open ``mailbox`` (and send as or for it); replaces an earlier grant."""
        grantee = self.user(user, field_name="user")
        target = self.user(mailbox, field_name="mailbox")
        if grantee.shared:
            raise InputError("user: a shared mailbox cannot sign in to use a grant", field="user")
        if grantee.email == target.email:
            raise InputError("mailbox: a user always has their own mailbox", field="mailbox")
        grant = Grant(
            user=grantee.email,
            mailbox=target.email,
            send_as=send_as,
            send_on_behalf=send_on_behalf,
        )
        self.grants[(grantee.email, target.email)] = grant
        self.changed()
        return grant

    def remove_grant(self, user: str, mailbox: str) -> None:
        """Take a grant away."""
        key = (user.strip().lower(), mailbox.strip().lower())
        if self.grants.pop(key, None) is None:
            raise NotFound(f"mailbox: {key[0]} has no grant on {key[1]}", field="mailbox")
        self.changed()

    def mailboxes_of(self, email: str) -> list[str]:
        """Mailboxes ``email`` may open: its own, unless shared, and every granted one."""
        own = [] if self.users[email].shared else [email]
        return own + sorted(g.mailbox for g in self.grants.values() if g.user == email)

    def send_as_of(self, email: str) -> list[str]:
        """Addresses ``email`` may send as."""
        own = [] if self.users[email].shared else [email]
        return own + sorted(
            g.mailbox for g in self.grants.values() if g.user == email and g.send_as
        )

    def add_app(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: Iterable[str],
        *,
        display_name: str | None = None,
        app_permissions: Mapping[str, frozenset[str]] | None = None,
    ) -> App:
        """Register a confidential client."""
        if client_id in self.apps:
            raise Conflict(f"clientId: app {client_id} already exists", field="clientId")
        app = App(
            client_id=client_id,
            client_secret=client_secret,
            redirect_uris=tuple(redirect_uris),
            display_name=display_name or client_id,
            object_id=object_id(f"app:{client_id}"),
            app_permissions=dict(app_permissions or {}),
        )
        self.apps[client_id] = app
        return app

    def revoke_user(self, email: str, *, access_tokens: bool = False) -> tuple[int, int]:
        """Invalidate every refresh token of a user, like ``revokeSignInSessions``.

        Access tokens stay valid until they expire, as Microsoft's do, unless
        ``access_tokens`` is set. Returns how many refresh and access tokens were cut off.
        """
        user = self.user(email)
        now = self.now()
        user.tokens_valid_from = now
        refresh = sum(
            1
            for rt in self.refresh_tokens.values()
            if rt.user == user.email and rt.expires_at > now
        )
        revoked = 0
        if access_tokens:
            for token in self.access_tokens.values():
                if token.user == user.email and not token.revoked and token.expires_at > now:
                    token.revoked = True
                    revoked += 1
        self.changed()
        return refresh, revoked

    def revoke_access_token(self, value: str) -> AccessToken:
        """Make one access token invalid before it expires, as Microsoft does for critical
        events (continuous access evaluation); refresh tokens keep working, so a client that
        gets the token refused can have a new one. NotFound for an unknown token."""
        token = self.access_tokens.get(value)
        if token is None:
            raise NotFound("token: no such access token", field="token")
        token.revoked = True
        self.changed()
        return token

    def advance_clock(self, seconds: float) -> float:
        """Move the sandbox clock forward; returns the new time."""
        if not isinstance(self.clock, SandboxClock):
            raise InputError(
                "advanceSeconds: this sandbox's clock cannot be moved", field="advanceSeconds"
            )
        self.clock.advance(seconds)
        self.changed()
        for listener in list(self.clock_listeners):
            listener()
        return self.now()

    # -- consent, codes and tokens ---------------------------------------------------

    def consented(self, user: str, client_id: str) -> set[str]:
        """Full scope strings ``user`` consented to for ``client_id``."""
        return self.consent.setdefault((user, client_id), set())

    def keep_pending(self, pending: PendingSignIn) -> None:
        """Keep a validated authorize request until the sign-in form comes back."""
        self._forget_expired(self.now())
        self.pending[pending.id] = pending

    def new_code(self, pending: PendingSignIn, user: str) -> AuthCode:
        """Issue an authorization code for a completed sign-in."""
        code = AuthCode(
            value=secrets.token_urlsafe(48),
            client_id=pending.client_id,
            user=user,
            redirect_uri=pending.redirect_uri,
            scopes=pending.scopes,
            code_challenge=pending.code_challenge,
            nonce=pending.nonce,
            issued_at=self.now(),
        )
        self.codes[code.value] = code
        return code

    def new_refresh_token(self, client_id: str, user: str) -> RefreshToken:
        """Issue a refresh token."""
        now = self.now()
        token = RefreshToken(
            value=secrets.token_urlsafe(64),
            client_id=client_id,
            user=user,
            issued_at=now,
            expires_at=now + REFRESH_TOKEN_LIFETIME,
        )
        self.refresh_tokens[token.value] = token
        return token

    def new_access_token(
        self,
        app: App,
        *,
        issuer: str,
        resource: str,
        user: User | None = None,
        scopes: Iterable[str] = (),
        roles: Iterable[str] = (),
    ) -> AccessToken:
        """Issue an access token (a signed JWT) and remember what it grants."""
        now = int(self.now())
        scope_list = tuple(sorted(scopes, key=str.casefold))
        role_list = tuple(sorted(roles, key=str.casefold))
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": f"{issuer}/{self.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + ACCESS_TOKEN_LIFETIME,
            "appid": app.client_id,
            "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        if user is None:
            claims.update(idtyp="app", oid=app.object_id, sub=app.object_id, roles=role_list)
        else:
            claims.update(
                idtyp="user",
                oid=user.object_id,
                sub=pairwise_subject(user, app.client_id),
                upn=user.email,
                unique_name=user.email,
                name=user.display_name,
                scp=" ".join(scope_list),
            )
        token = AccessToken(
            value=self.signer.encode(claims),
            client_id=app.client_id,
            user=None if user is None else user.email,
            resource=resource,
            scopes=scope_list,
            roles=role_list,
            expires_at=now + ACCESS_TOKEN_LIFETIME,
        )
        self.access_tokens[token.value] = token
        self.changed()
        return token

    def id_token(self, app: App, user: User, *, issuer: str, nonce: str | None, email: bool) -> str:
        """A signed OpenID Connect ID token for ``user`` signed in to ``app``."""
        now = int(self.now())
        claims: dict[str, Any] = {
            "aud": app.client_id,
            "iss": f"{issuer}/{self.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + ID_TOKEN_LIFETIME,
            "name": user.display_name,
            "oid": user.object_id,
            "preferred_username": user.email,
            "sub": pairwise_subject(user, app.client_id),
            "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "2.0",
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if email:
            claims["email"] = user.email
        return self.signer.encode(claims)

    def client_info(self, user: User) -> str:
        """Microsoft's ``client_info``: base64url JSON ``{uid, utid}``."""
        return b64url_json({"uid": user.object_id, "utid": self.tenant_id})

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, p in self.pending.items() if p.expires_at <= now]:
            del self.pending[key]
        for key in [k for k, c in self.codes.items() if c.issued_at + 2 * CODE_LIFETIME <= now]:
            del self.codes[key]

    # -- introspection ---------------------------------------------------------------

    def _grants_of(self, token: AccessToken) -> dict[str, Any]:
        if token.user is not None:
            mailboxes = self.mailboxes_of(token.user)
            send_as = self.send_as_of(token.user)
        else:
            # An app-only token with any role reaches every mailbox of the tenant (no
            # application access policy is modelled).
            everyone = sorted(self.users) if token.roles else []
            mailboxes = everyone
            send_as = everyone if _SENDING_ROLES.intersection(token.roles) else []
        return {
            "clientId": token.client_id,
            "tenantId": self.tenant_id,
            "resource": token.resource,
            "scopes": list(token.scopes),
            "roles": list(token.roles),
            "mailboxes": mailboxes,
            "sendAs": send_as,
            "expiresAt": int(token.expires_at),
        }

    def _inactive_reason(self, token: AccessToken | None, now: float) -> str | None:
        if token is None:
            return "unknown"
        if token.revoked:
            return "revoked"
        if token.expires_at <= now:
            return "expired"
        return None

    def introspect(self, value: str) -> dict[str, Any]:
        """What an access token grants, for mail servers that accept it.

        ``{active: true, user, clientId, tenantId, resource, scopes, roles, mailboxes, sendAs,
        expiresAt}``, or ``{active: false, reason}`` for an unknown, expired or revoked token.
        """
        token = self.access_tokens.get(value)
        reason = self._inactive_reason(token, self.now())
        if token is None or reason is not None:
            return {"active": False, "reason": reason}
        return {"active": True, "user": token.user, **self._grants_of(token)}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every active access token and what it grants: ``{token: {owner, mailboxes, ...}}``."""
        now = self.now()
        return {
            value: {"owner": token.user, **self._grants_of(token)}
            for value, token in self.access_tokens.items()
            if self._inactive_reason(token, now) is None
        }


def pairwise_subject(user: User, client_id: str) -> str:
    """The ``sub`` claim: stable per user and app, different across apps."""
    return b64url(hashlib.sha256(f"{user.object_id}:{client_id}".encode()).digest())[:43]


def secrets_match(given: str, expected: str) -> bool:
    """Compare secrets in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())
