"""The Microsoft identity platform, through msal (delegated) and azure-identity (app-only).

:class:`MicrosoftIdentity` is the only place that talks to the token endpoints. It takes its
endpoints from :class:`~relay.config.MicrosoftSettings` (``authority_host``, ``ca_bundle``), so
the same code talks to Microsoft or to ``relay sandbox``.

msal is synchronous (``requests``): every msal call runs in a worker thread. One msal client
is kept per OAuth2 application (building one fetches the tenant's OpenID configuration); it
is rebuilt when the application's settings change. Its token cache is disabled: tokens live
encrypted in the store and nowhere else.

Failures are sorted into the error tree:

- :class:`GrantInvalid` (a :class:`~relay.errors.ConsentRequired`): the user's grant is gone
  (``invalid_grant``: revoked, expired, code already redeemed). Only new consent helps.
- :class:`ResourceConsentMissing` (also ``ConsentRequired``): the grant works, but the user
  never consented to the permissions asked for (AADSTS65001).
- :class:`~relay.errors.TokenRefreshFailed`: the endpoint could not be reached or failed
  (5xx, ``temporarily_unavailable``); try again later.
- :class:`~relay.errors.AuthError`: anything else (a wrong client secret, an unknown client
  id): the application's settings need fixing.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msal
import requests
import structlog
from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError
from azure.identity.aio import ClientSecretCredential
from requests.adapters import HTTPAdapter

from relay.auth.crypto import Cipher
from relay.auth.scopes import app_only_scope, by_resource, consent_scopes, msal_scopes
from relay.config import MicrosoftSettings
from relay.errors import AuthError, ConsentRequired, TokenRefreshFailed

__all__ = [
    "AppConfig",
    "GrantInvalid",
    "MicrosoftIdentity",
    "ResourceConsentMissing",
    "TokenResult",
]

log = structlog.get_logger(__name__)

# Seconds one request to the token endpoint may take.
HTTP_TIMEOUT = 30.0
_CONSENT_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required"})
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
_NOT_CONSENTED = 65001


class GrantInvalid(ConsentRequired):
    """The user's grant (refresh token or authorization code) no longer works."""


class ResourceConsentMissing(ConsentRequired):
    """The user has not consented to the permissions asked for (AADSTS65001)."""


def _secret_context(app_id: str) -> str:
    # The same context relay.api.oauth2_apps encrypts client secrets with.
    return f"oauth2_apps/{app_id}/client_secret"


@dataclass(frozen=True, slots=True)
class AppConfig:
    """An OAuth2 application as the token endpoints need it (the client secret decrypted)."""

    id: str
    provider: str
    enabled: bool
    client_id: str
    client_secret: str | None = field(repr=False)
    tenant: str
    redirect_url: str | None
    base_scopes: str
    extra_scopes: tuple[str, ...]
    skip_scopes: tuple[str, ...]
    updated_ms: int

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], cipher: Cipher) -> AppConfig:
        """Build from an ``oauth2_apps`` row."""
        secret = (
            cipher.decrypt(row["client_secret"], context=_secret_context(row["id"])).decode()
            if row["client_secret"] is not None
            else None
        )
        return cls(
            id=str(row["id"]),
            provider=str(row["provider"]),
            enabled=bool(row["enabled"]),
            client_id=str(row["client_id"]),
            client_secret=secret,
            tenant=str(row["authority"]),
            redirect_url=row["redirect_url"],
            base_scopes=str(row["base_scopes"]),
            extra_scopes=tuple(row["extra_scopes"]),
            skip_scopes=tuple(row["skip_scopes"]),
            updated_ms=int(row["updated_ms"]),
        )

    @property
    def scopes(self) -> tuple[str, ...]:
        """Every scope consent asks for."""
        return consent_scopes(self.base_scopes, self.extra_scopes, self.skip_scopes)

    def resource_scopes(self, resource: str) -> tuple[str, ...]:
        """The scopes of one resource; AuthError when the application asks none of it."""
        scopes = by_resource(self.scopes).get(resource)
        if not scopes:
            raise AuthError(
                f"OAuth2 application {self.id!r} asks for no permission of {resource}"
                " (see its baseScopes, extraScopes and skipScopes)"
            )
        return scopes


@dataclass(frozen=True, slots=True)
class TokenResult:
    """What a token request returned."""

    access_token: str = field(repr=False)
    expires_ms: int
    scopes: tuple[str, ...]
    refresh_token: str | None = field(default=None, repr=False)
    # The signed-in user (from the ID token), when the response had one.
    user: str | None = None
    name: str | None = None


class _NoCache(msal.TokenCache):  # type: ignore[misc]
    """A token cache that keeps nothing: the store is the only place tokens live."""

    def add(self, event: Any, now: Any = None) -> None:
        return None


def _describe(result: Mapping[str, Any]) -> str:
    """The first line of Microsoft's error description (the rest is trace and correlation ids)."""
    description = str(result.get("error_description") or "").strip()
    first = description.splitlines()[0].strip() if description else ""
    return first or str(result.get("error") or "unknown error")


def _raise_for(result: Mapping[str, Any], what: str) -> None:
    error = result.get("error")
    if not error:
        return
    message = f"{what} failed: {error}: {_describe(result)}"
    codes = {int(c) for c in result.get("error_codes") or () if isinstance(c, int)}
    if error in _CONSENT_ERRORS:
        if _NOT_CONSENTED in codes or result.get("suberror") == "consent_required":
            raise ResourceConsentMissing(message)
        raise GrantInvalid(message)
    if error in _TRANSIENT_ERRORS:
        raise TokenRefreshFailed(message)
    raise AuthError(message)


def _result(response: Mapping[str, Any], now_ms: int) -> TokenResult:
    claims = response.get("id_token_claims") or {}
    user = claims.get("preferred_username") or claims.get("email") or claims.get("upn")
    return TokenResult(
        access_token=str(response["access_token"]),
        expires_ms=now_ms + int(response.get("expires_in") or 3600) * 1000,
        scopes=tuple(str(response.get("scope") or "").split()),
        refresh_token=response.get("refresh_token"),
        user=str(user) if user else None,
        name=str(claims["name"]) if claims.get("name") else None,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _http_client(verify: str | bool, timeout: float) -> requests.Session:
    """msal's HTTP client, trusting ``verify`` whatever the environment says.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override a session's ``verify``
    (but not a per-request one), which would silently ignore ``microsoft.ca_bundle``.
    """
    session = requests.Session()
    # As msal's own client does: one retry on a broken connection.
    session.mount("https://", HTTPAdapter(max_retries=1))
    session.mount("http://", HTTPAdapter(max_retries=1))
    session.request = functools.partial(  # type: ignore[method-assign]
        session.request, timeout=timeout, verify=verify
    )
    return session


class MicrosoftIdentity:
    """Token requests for OAuth2 applications (see the module docstring)."""

    def __init__(self, settings: MicrosoftSettings, *, timeout: float = HTTP_TIMEOUT) -> None:
        self._settings = settings
        self._timeout = timeout
        self._clients: dict[str, tuple[int, msal.ConfidentialClientApplication]] = {}
        self._credentials: dict[str, tuple[int, ClientSecretCredential]] = {}
        self._app_tokens: dict[tuple[str, int, str], TokenResult] = {}
        self._lock = asyncio.Lock()

    @property
    def _verify(self) -> str | bool:
        return self._settings.ca_bundle or True

    def authority(self, app: AppConfig) -> str:
        """The authority URL of ``app`` (``{authority_host}/{tenant}``)."""
        return f"{self._settings.authority_host.rstrip('/')}/{app.tenant}"

    # -- delegated (msal) -------------------------------------------------------------------

    async def _client(self, app: AppConfig) -> msal.ConfidentialClientApplication:
        cached = self._clients.get(app.id)
        if cached is not None and cached[0] == app.updated_ms:
            return cached[1]
        async with self._lock:
            cached = self._clients.get(app.id)
            if cached is not None and cached[0] == app.updated_ms:
                return cached[1]
            if not app.client_secret:
                raise AuthError(f"OAuth2 application {app.id!r} has no client secret")
            try:
                client = await asyncio.to_thread(
                    msal.ConfidentialClientApplication,
                    app.client_id,
                    client_credential=app.client_secret,
                    authority=self.authority(app),
                    instance_discovery=False,
                    http_client=_http_client(self._verify, self._timeout),
                    token_cache=_NoCache(),
                )
            except (requests.RequestException, ValueError) as exc:
                raise TokenRefreshFailed(
                    f"cannot reach the identity platform at {self.authority(app)}:"
                    f" {type(exc).__name__}"
                ) from exc
            self._clients[app.id] = (app.updated_ms, client)
            if cached is not None:
                await asyncio.to_thread(cached[1].http_client.close)
            return client

    async def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await asyncio.to_thread(function, *args, **kwargs)
        except requests.RequestException as exc:
            raise TokenRefreshFailed(
                f"{what} failed: cannot reach the identity platform ({type(exc).__name__})"
            ) from exc
        _raise_for(result, what)
        return result

    async def start_flow(
        self, app: AppConfig, redirect_uri: str, *, login_hint: str | None = None
    ) -> dict[str, Any]:
        """Start an authorization code flow (PKCE, ``form_post``) asking for every scope.

        Returns msal's flow: ``auth_uri`` is where the browser goes, the rest must be kept
        (it holds the PKCE verifier) until the redirect back.
        """
        client = await self._client(app)
        flow: dict[str, Any] = await asyncio.to_thread(
            client.initiate_auth_code_flow,
            msal_scopes(app.scopes),
            redirect_uri=redirect_uri,
            login_hint=login_hint,
            response_mode="form_post",
        )
        return flow

    async def redeem(
        self, app: AppConfig, flow: dict[str, Any], response: Mapping[str, str], resource: str
    ) -> TokenResult:
        """Redeem the code of a sign-in for a token of ``resource``.

        ``response`` is what came back to the redirect URI (``code``, ``state``). A state
        that does not belong to ``flow`` raises :class:`~relay.errors.AuthError`.
        """
        client = await self._client(app)
        scopes = msal_scopes(app.resource_scopes(resource))
        try:
            result = await self._call(
                "redeeming the authorization code",
                client.acquire_token_by_auth_code_flow,
                flow,
                dict(response),
                scopes=scopes,
            )
        except ValueError as exc:
            raise AuthError("the sign-in response does not belong to this sign-in") from exc
        return _result(result, _now_ms())

    async def refresh(self, app: AppConfig, refresh_token: str, resource: str) -> TokenResult:
        """A new access token for ``resource`` (and usually a new refresh token)."""
        client = await self._client(app)
        result = await self._call(
            "refreshing the access token",
            client.acquire_token_by_refresh_token,
            refresh_token,
            msal_scopes(app.resource_scopes(resource)),
        )
        return _result(result, _now_ms())

    # -- app-only (azure-identity) ----------------------------------------------------------

    def _credential(self, app: AppConfig) -> ClientSecretCredential:
        cached = self._credentials.get(app.id)
        if cached is not None and cached[0] == app.updated_ms:
            return cached[1]
        if not app.client_secret:
            raise AuthError(f"OAuth2 application {app.id!r} has no client secret")
        kwargs: dict[str, Any] = {"authority": self._settings.authority_host}
        if self._settings.ca_bundle:
            kwargs["connection_verify"] = self._settings.ca_bundle
        credential = ClientSecretCredential(app.tenant, app.client_id, app.client_secret, **kwargs)
        self._credentials[app.id] = (app.updated_ms, credential)
        if cached is not None:
            task = asyncio.get_running_loop().create_task(cached[1].close())
            task.add_done_callback(lambda t: t.exception())
        return credential

    async def app_only(self, app: AppConfig, resource: str, *, margin_ms: int = 0) -> TokenResult:
        """An app-only token for ``resource`` (client credentials), cached until it is
        ``margin_ms`` from expiry."""
        key = (app.id, app.updated_ms, resource)
        cached = self._app_tokens.get(key)
        if cached is not None and cached.expires_ms - margin_ms > _now_ms():
            return cached
        scope = app_only_scope(resource)
        try:
            token = await self._credential(app).get_token(scope)
        except ServiceRequestError as exc:
            raise TokenRefreshFailed(
                f"app-only token for {resource} failed: cannot reach the identity platform"
            ) from exc
        except ClientAuthenticationError as exc:
            raise AuthError(
                f"app-only token for {resource} failed: {_first_line(exc.message)}"
            ) from exc
        except AzureError as exc:
            raise TokenRefreshFailed(
                f"app-only token for {resource} failed: {type(exc).__name__}"
            ) from exc
        result = TokenResult(
            access_token=token.token, expires_ms=int(token.expires_on) * 1000, scopes=(scope,)
        )
        # Tokens minted under older settings of this application are of no use any more.
        self._app_tokens = {
            k: v for k, v in self._app_tokens.items() if k[0] != app.id or k[1] == app.updated_ms
        }
        self._app_tokens[key] = result
        return result

    async def close(self) -> None:
        """Release the HTTP clients."""
        clients = [c for _, c in self._clients.values()]
        credentials = [c for _, c in self._credentials.values()]
        self._clients.clear()
        self._credentials.clear()
        self._app_tokens.clear()
        for client in clients:
            await asyncio.to_thread(client.http_client.close)
        for credential in credentials:
            await credential.close()


def _first_line(message: str | None) -> str:
    text = (message or "").strip()
    for line in text.splitlines():
        if "AADSTS" in line:
            return line.strip()
    return text.splitlines()[0].strip() if text else "authentication failed"
