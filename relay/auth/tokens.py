"""The token manager: a valid access token for any OAuth2 account, refreshed when needed.

``await tokens.access_token(account, resource) -> (user, token)``

* **Shared mailboxes** resolve through their ``delegatedAccount`` chain: the token is the
  root account's, the user is the shared mailbox's address (``delegatedUser``), which is how
  Exchange Online opens a shared mailbox over IMAP XOAUTH2.
* **Per resource**: Exchange (IMAP, SMTP) and Graph tokens are requested and cached
  separately (``oauth2_tokens``); the one refresh token (with the account's secrets) mints both.
* **Refresh ahead**: a cached token is used until ``refresh_margin`` seconds before it
  expires. One refresh at a time per root account on this node (an ``asyncio.Lock``); across
  nodes, the rotated refresh token is written in the same transaction as the new access
  token, and only if the stored refresh token is still the one that was used (otherwise the
  other writer's tokens are kept). Microsoft keeps a refresh token valid after it rotated, so
  two nodes refreshing at once both succeed.
* **invalid_grant** (revoked, expired): the dead refresh token and the cached tokens are
  dropped and, in one transaction, the root account and every account that depends on it get
  state ``authenticationError`` and an ``authenticationError`` event. From then on
  :class:`~relay.errors.ConsentRequired` is raised at once, without a request, until new
  consent stores a new grant.
* **Transient failures** raise :class:`~relay.errors.TokenRefreshFailed`; further attempts for
  that account fail fast for a growing pause (1 s doubling to 5 min) so that many listeners
  cannot hammer the token endpoint.
* **App-only** applications (``outlookService``) get client-credentials tokens through
  azure-identity, cached until they are about to expire.

An access token handed in through the API (``oauth2.accessToken``) counts as the token of the
application's main resource until ``oauth2.expires``; without ``expires`` it is assumed to
last an hour when a refresh token is there to replace it, and forever when not.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from relay.auth.crypto import Cipher
from relay.auth.identity import AppConfig, GrantInvalid, MicrosoftIdentity, TokenResult
from relay.auth.scopes import EXCHANGE, PRIMARY_RESOURCE, canonical_resource
from relay.errors import AuthError, ConsentRequired, NotFound, TokenRefreshFailed
from relay.events.model import Event, parse_iso
from relay.store import Store
from relay.store import accounts as accounts_store
from relay.store import events as events_store
from relay.store import oauth2 as oauth2_store
from relay.store import oauth2_apps as apps_store
from relay.store.engine import now_ms
from relay.store.schema import AccountState

__all__ = ["ACCESS_TOKEN", "REFRESH_TOKEN", "TokenManager", "account_user"]

log = structlog.get_logger(__name__)

ACCESS_TOKEN = "oauth2.accessToken"  # noqa: S105 - the name of a secret, not one
REFRESH_TOKEN = "oauth2.refreshToken"  # noqa: S105
# How long an access token given without `expires` is trusted while a refresh token exists.
ASSUMED_LIFETIME_MS = 3600 * 1000
_BACKOFF_MIN = 1.0
_BACKOFF_MAX = 300.0
# Re-reads when another writer changed the account while a refresh was running.
_ATTEMPTS = 3
# Refused tokens remembered at most (a token lives an hour; this is plenty).
_MAX_REJECTED = 10_000


def secrets_context(account: str) -> str:
    """The encryption context of an account's secrets (the same as the accounts API uses)."""
    return f"accounts/{account}/secrets"


def _token_context(account: str, resource: str) -> str:
    return f"oauth2_tokens/{account}/{resource}"


def _section(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def account_user(row: Mapping[Any, Any]) -> str:
    """The address an account logs in as (XOAUTH2 ``user=``).

    A shared mailbox (``delegatedUser``) logs in as itself with another user's token;
    otherwise the signed-in user (``oauth2.auth.user``), else the account's address.
    """
    if row["delegated_user"]:
        return str(row["delegated_user"])
    auth = _section(_section(row["config"]).get("oauth2")).get("auth")
    user = _section(auth).get("user")
    return str(user or row["email"])


def _expires_ms(value: Any) -> int | None:
    moment = parse_iso(value)
    return int(moment.timestamp() * 1000) if moment is not None else None


@dataclass
class _View:
    """One consistent read of what a token request needs."""

    account: str
    root: str
    root_updated_ms: int
    user: str
    app: AppConfig | None
    secrets: dict[str, str] = field(repr=False)
    # The cached token of the resource, if minted for the root's current settings.
    cached: tuple[str, int] | None = field(repr=False)
    # Expiry of the API-given access token (None: unknown and nothing can replace it).
    given_expires_ms: int | None

    @property
    def main_resource(self) -> str:
        return PRIMARY_RESOURCE.get(self.app.base_scopes, EXCHANGE) if self.app else EXCHANGE


@dataclass
class _Failure:
    until: float
    pause: float
    message: str


class TokenManager:
    """Hands out access tokens (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        cipher: Cipher,
        identity: MicrosoftIdentity,
        *,
        service_url: str,
        refresh_margin: float = 300.0,
        max_payload_bytes: int = 256 * 1024,
    ) -> None:
        """``service_url`` is the default ``serviceUrl`` of the events it records."""
        self.identity = identity
        self._store = store
        self._cipher = cipher
        self._service_url = service_url
        self._margin_ms = int(refresh_margin * 1000)
        self._max_payload_bytes = max_payload_bytes
        self._locks: dict[str, asyncio.Lock] = {}
        self._failures: dict[str, _Failure] = {}
        # Digests of access tokens a server refused before they expired (revoked early, or
        # the server's clock is ahead): never handed out again.
        self._rejected: set[bytes] = set()

    def reject(self, token: str) -> None:
        """A server answered 401 to ``token``: the next request for it refreshes."""
        if len(self._rejected) >= _MAX_REJECTED:
            self._rejected.clear()
        self._rejected.add(hashlib.sha256(token.encode()).digest())

    def _rejected_token(self, token: str) -> bool:
        return bool(self._rejected) and (hashlib.sha256(token.encode()).digest() in self._rejected)

    async def access_token(self, account: str, resource: str = EXCHANGE) -> tuple[str, str]:
        """``(user, access token)`` for ``account`` and ``resource`` (Exchange or Graph).

        Raises :class:`~relay.errors.NotFound` for an unknown account,
        :class:`~relay.errors.ConsentRequired` when only new consent helps,
        :class:`~relay.errors.TokenRefreshFailed` for a transient failure and
        :class:`~relay.errors.AuthError` when the account or its application is unusable.
        """
        resource = canonical_resource(resource)
        for _ in range(_ATTEMPTS):
            view = await self._read(account, resource)
            if view.app is not None and view.app.provider == "outlookService":
                result = await self.identity.app_only(view.app, resource, margin_ms=self._margin_ms)
                return view.user, result.access_token
            token = self._usable(view, resource)
            if token is not None:
                return view.user, token
            async with self._locks.setdefault(view.root, asyncio.Lock()):
                # Whoever held the lock may have refreshed already.
                view = await self._read(account, resource)
                token = self._usable(view, resource)
                if token is None:
                    token = await self._refresh(view, resource)
                if token is not None:
                    return view.user, token
        raise TokenRefreshFailed(
            f"the credentials of {account!r} kept changing during the refresh; try again"
        )

    async def token_for(self, account: Mapping[Any, Any]) -> tuple[str, str]:
        """The IMAP listener's token provider: an Exchange token for an account row."""
        return await self.access_token(str(account["id"]), EXCHANGE)

    async def close(self) -> None:
        """Release the identity platform clients."""
        await self.identity.close()

    # -- reading ----------------------------------------------------------------------------

    async def _read(self, account: str, resource: str) -> _View:
        async with self._store.read() as conn:
            row = await accounts_store.get(conn, account)
            if row is None:
                raise NotFound(f"account {account!r} not found")
            chain = await accounts_store.delegation_chain(conn, account)
            root = row if chain[-1] == account else await accounts_store.get(conn, chain[-1])
            if root is None:
                raise AuthError(
                    f"account {account!r} uses the tokens of {chain[-1]!r}, which does not exist"
                )
            if root["delegated_account"] is not None:
                raise AuthError(
                    f"the delegation of {account!r} does not end at an account with its own tokens"
                )
            app_row = await apps_store.get(conn, root["oauth2_app"]) if root["oauth2_app"] else None
            cached = await oauth2_store.get_token(conn, root["id"], resource)
        secrets: dict[str, str] = {}
        if root["secrets"] is not None:
            raw = self._cipher.decrypt_json(root["secrets"], context=secrets_context(root["id"]))
            secrets = {str(k): str(v) for k, v in dict(raw).items()}
        app = AppConfig.from_row(app_row, self._cipher) if app_row is not None else None
        root_id = str(root["id"])
        cached_token: tuple[str, int] | None = None
        if cached is not None and cached["account_updated_ms"] == root["updated_ms"]:
            value = self._cipher.decrypt(
                cached["access_token"], context=_token_context(root_id, resource)
            ).decode()
            cached_token = (value, int(cached["expires_ms"]))
        given_expires = _expires_ms(_section(root["config"].get("oauth2")).get("expires"))
        if given_expires is None and REFRESH_TOKEN in secrets:
            given_expires = int(root["updated_ms"]) + ASSUMED_LIFETIME_MS
        return _View(
            account=account,
            root=root_id,
            root_updated_ms=int(root["updated_ms"]),
            user=account_user(row),
            app=app,
            secrets=secrets,
            cached=cached_token,
            given_expires_ms=given_expires,
        )

    def _usable(self, view: _View, resource: str) -> str | None:
        """A token that is not about to expire, or None."""
        now = now_ms()
        cached = view.cached
        if (
            cached is not None
            and cached[1] - self._margin_ms > now
            and not self._rejected_token(cached[0])
        ):
            return cached[0]
        given = view.secrets.get(ACCESS_TOKEN)
        if given and resource == view.main_resource and not self._rejected_token(given):
            expires = view.given_expires_ms
            if expires is None or expires - self._margin_ms > now:
                return given
        return None

    # -- refreshing -------------------------------------------------------------------------

    async def _refresh(self, view: _View, resource: str) -> str | None:
        """A new token, or None when the account changed meanwhile (read again)."""
        refresh_token = view.secrets.get(REFRESH_TOKEN)
        if not refresh_token:
            return self._without_refresh_token(view, resource)
        app = view.app
        if app is None:
            raise AuthError(f"account {view.root!r} has no OAuth2 application")
        if not app.enabled:
            raise AuthError(f"OAuth2 application {app.id!r} is disabled")
        failure = self._failures.get(view.root)
        if failure is not None and time.monotonic() < failure.until:
            raise TokenRefreshFailed(failure.message)
        try:
            result = await self.identity.refresh(app, refresh_token, resource)
        except GrantInvalid as exc:
            if await self._grant_lost(view, app, refresh_token, resource, str(exc)):
                return None
            raise ConsentRequired(
                f"account {view.root!r} needs new consent: {exc}", recorded=True
            ) from exc
        except TokenRefreshFailed as exc:
            self._note_failure(view.root, str(exc))
            raise
        self._failures.pop(view.root, None)
        if not await self._store_refresh(view, refresh_token, resource, result):
            return None
        log.info(
            "access token refreshed",
            account=view.root,
            resource=resource,
            expires_in=int((result.expires_ms - now_ms()) / 1000),
        )
        return result.access_token

    def _without_refresh_token(self, view: _View, resource: str) -> str:
        given = view.secrets.get(ACCESS_TOKEN)
        if given and resource == view.main_resource:
            if view.given_expires_ms is None or view.given_expires_ms > now_ms():
                return given  # the last minutes of a token nothing can replace
            raise ConsentRequired(
                f"the access token of {view.root!r} has expired and there is no refresh token;"
                " consent again (POST /v1/authentication/form)"
            )
        if given:
            raise ConsentRequired(
                f"account {view.root!r} has no refresh token to get a token for {resource}"
            )
        # Accounts of delegated applications are stored with a token, so none means the grant
        # was found dead earlier and that has been recorded.
        raise ConsentRequired(
            f"account {view.root!r} needs new consent (POST /v1/authentication/form)",
            recorded=True,
        )

    def _note_failure(self, root: str, message: str) -> None:
        previous = self._failures.get(root)
        pause = min(_BACKOFF_MAX, previous.pause * 2) if previous else _BACKOFF_MIN
        self._failures[root] = _Failure(time.monotonic() + pause, pause, message)
        log.warning("token refresh failed", account=root, retry_in=pause, error=message)

    async def _store_refresh(
        self, view: _View, used: str, resource: str, result: TokenResult
    ) -> bool:
        """Write the new tokens; False if the account changed since ``view`` was read."""
        async with self._store.write(notify=False) as conn:
            root = await accounts_store.get(conn, view.root)
            if root is None or int(root["updated_ms"]) != view.root_updated_ms:
                return False
            secrets = self._secrets(root)
            rotated = result.refresh_token
            # When another node refreshed meanwhile, its refresh token stays: both are valid.
            if secrets.get(REFRESH_TOKEN) == used and rotated and rotated != used:
                secrets[REFRESH_TOKEN] = rotated
                await oauth2_store.set_secrets(
                    conn,
                    view.root,
                    self._cipher.encrypt_json(secrets, context=secrets_context(view.root)),
                )
            await oauth2_store.put_token(
                conn,
                view.root,
                resource,
                access_token=self._cipher.encrypt(
                    result.access_token.encode(), context=_token_context(view.root, resource)
                ),
                scopes=result.scopes,
                expires_ms=result.expires_ms,
                account_updated_ms=view.root_updated_ms,
            )
        return True

    async def _grant_lost(
        self, view: _View, app: AppConfig, used: str, resource: str, message: str
    ) -> bool:
        """Record that the grant is dead; True if the account changed meanwhile instead."""
        async with self._store.write() as conn:
            root = await accounts_store.get(conn, view.root)
            if root is None or int(root["updated_ms"]) != view.root_updated_ms:
                return True
            secrets = self._secrets(root)
            if secrets.get(REFRESH_TOKEN) != used:
                return True
            secrets.pop(REFRESH_TOKEN, None)
            secrets.pop(ACCESS_TOKEN, None)
            await oauth2_store.set_secrets(
                conn,
                view.root,
                self._cipher.encrypt_json(secrets, context=secrets_context(view.root))
                if secrets
                else None,
            )
            await oauth2_store.forget_tokens(conn, view.root)
            affected = [view.root, *await oauth2_store.dependents_of(conn, view.root)]
            error: dict[str, Any] = {
                "response": message,
                "serverResponseCode": "OauthRenewError",
                "tokenRequest": {
                    "grant": "refresh_token",
                    "provider": app.provider,
                    "clientId": app.client_id,
                    "scopes": list(app.resource_scopes(resource)),
                },
            }
            ms = now_ms()
            for account in affected:
                await accounts_store.set_state(
                    conn, account, AccountState.AUTHENTICATION_ERROR, {**error, "time": ms}
                )
            await events_store.record(
                conn,
                [Event("authenticationError", account, error, ms) for account in affected],
                default_service_url=self._service_url,
                max_bytes=self._max_payload_bytes,
            )
        log.warning(
            "OAuth2 grant lost; new consent needed",
            account=view.root,
            shared_accounts=len(affected) - 1,
            error=message,
        )
        return False

    def _secrets(self, row: Mapping[Any, Any]) -> dict[str, str]:
        if row["secrets"] is None:
            return {}
        raw = self._cipher.decrypt_json(row["secrets"], context=secrets_context(row["id"]))
        return {str(k): str(v) for k, v in dict(raw).items()}
