"""Consent for Microsoft 365: ``POST /v1/authentication/form``, ``/oauth/start``, ``/oauth``.

``POST /v1/authentication/form`` ``{account, name, email, delegated, redirectUrl, type}``
returns ``{url}``: a signed link (see :mod:`relay.auth.links`) that anyone may open in a
browser, for ``consent_link_ttl`` seconds. ``type`` is the id of a delegated (``outlook``)
OAuth2 application; ``account`` is the id to create, or an existing account whose grant the
consent renews in place (new scopes, new tokens); without it an id is made up.
``delegated: true`` makes a shared mailbox with its own tokens: the signed-in user's token
opens the mailbox at ``email``.

The two browser routes live outside ``/v1`` (a browser has no API token):

- ``GET /oauth/start?data&sig`` checks the link, starts msal's auth code flow (state +
  PKCE, ``form_post``), keeps the flow in ``oauth2_flows`` and redirects to Microsoft.
- ``POST /oauth`` (Microsoft's ``form_post``; ``GET`` with a query works too) takes the flow
  named by ``state`` (each flow once), redeems the code in a worker thread, stores the tokens
  encrypted, creates (``accountAdded``) or updates the account and redirects to the link's
  ``redirectUrl`` with ``account`` and ``state`` (``new`` or ``existing``) added to its query.

Problems on the browser routes get an HTML page when the client asks for HTML, the JSON
error shape otherwise; nothing is stored for a failed consent.
"""

from __future__ import annotations

import html
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, HttpUrl
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.api.account_schema import AccountCreate, Email
from relay.api.accounts import change_account, notify_supervisor, save_account
from relay.api.endpoint import Endpoint, json_response, read_body, validate
from relay.api.keys import CIPHER, SETTINGS, STORE, TOKENS
from relay.api.middleware import check_account, error_response
from relay.api.models import Body, Identifier, Out, Text
from relay.auth.consent import (
    CALLBACK_PATH,
    FLOW_TTL_MS,
    START_PATH,
    ConsentRequest,
    check_consent_account,
    consent_app,
    consent_link,
    redirect_uri,
)
from relay.auth.grants import Permission
from relay.auth.identity import AppConfig, TokenResult
from relay.auth.links import LINK_KEY_PURPOSE, verify
from relay.auth.scopes import token_resource
from relay.errors import AuthError, InputError, TokenRefreshFailed
from relay.store import accounts as accounts_store
from relay.store import events as events_store
from relay.store import oauth2 as oauth2_store
from relay.store import oauth2_apps as apps_store
from relay.store.engine import now_ms
from relay.store.schema import AccountState

TAG = "Authentication"

log = structlog.get_logger(__name__)

FolderPath = Annotated[str, Field(min_length=1, max_length=1024)]
# msal's states are URL-safe random strings; anything else names no flow of ours.
_STATE = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


class AuthForm(Body):
    account: Identifier | None = Field(
        default=None, description="Account id to create or renew; made up when left out"
    )
    name: Annotated[Text, Field(min_length=1)] | None = None
    email: Email | None = Field(
        default=None, description="The mailbox address (required with delegated)"
    )
    delegated: bool = Field(
        default=False,
        description="A shared mailbox at `email`, opened with the signed-in user's token",
    )
    redirectUrl: HttpUrl = Field(description="Where the browser goes after consent")
    type: Annotated[Identifier, Field(max_length=64)] = Field(
        description="Id of a delegated (outlook) OAuth2 application"
    )
    path: FolderPath | list[FolderPath] | None = None
    notifyFrom: datetime | None = None


class AuthFormLink(Out):
    url: str = Field(description="Signed consent link to open in a browser")


class StartQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: str = ""
    sig: str = ""


class CallbackQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: str = ""
    state: str = ""
    error: str = ""
    error_description: str = ""


class SignInProblem(InputError):
    """The sign-in could not be completed (declined, replayed, refused by Microsoft)."""


class UpstreamProblem(InputError):
    """The identity platform could not be reached or failed."""

    status = 502
    reason = "Bad Gateway"
    code = "IdentityPlatformError"


# -- POST /v1/authentication/form -------------------------------------------------------------


async def authentication_form(request: web.Request) -> web.Response:
    body = await read_body(request, AuthForm)
    await check_account(request, body.account)
    if body.delegated and not body.email:
        raise InputError(
            "email: is required with delegated (the shared mailbox address)", field="email"
        )
    account = body.model_dump(
        mode="json", include={"account", "name", "email", "path", "notifyFrom"}, exclude_none=True
    )
    consent = ConsentRequest(
        app=body.type,
        redirect_url=str(body.redirectUrl),
        delegated=body.delegated,
        account=account,
    )
    settings = request.app[SETTINGS]
    async with request.app[STORE].read() as conn:
        url = await consent_link(
            conn,
            request.app[CIPHER],
            consent,
            default_service_url=settings.service_url,
            ttl=settings.microsoft.consent_link_ttl,
        )
    return json_response(AuthFormLink(url=url))


# -- browser routes ---------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>mailrelay: {title}</title></head>
<body>
<h1>{title}</h1>
<p id="message">{message}</p>
</body>
</html>
"""


def _wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def _problem(request: web.Request, exc: InputError) -> web.Response:
    """An HTML page for a browser, the JSON error shape for everything else."""
    if _wants_html(request):
        page = _PAGE.format(title=html.escape(exc.reason), message=html.escape(exc.message))
        return web.Response(text=page, status=exc.status, content_type="text/html")
    extra = {"field": exc.field} if exc.field else {}
    return error_response(exc.status, exc.reason, exc.message, exc.code, **extra)


def _redirect(location: str) -> web.Response:
    return web.Response(
        status=302, headers={"Location": location}, text="", content_type="text/plain"
    )


async def oauth_start(request: web.Request) -> web.Response:
    try:
        return await _start(request)
    except InputError as exc:
        return _problem(request, exc)


async def _start(request: web.Request) -> web.Response:
    cipher = request.app[CIPHER]
    settings = request.app[SETTINGS]
    payload = verify(
        cipher.subkey(LINK_KEY_PURPOSE),
        request.query.get("data", ""),
        request.query.get("sig", ""),
        now=time.time(),
    )
    try:
        consent = ConsentRequest.from_json(payload)
    except (KeyError, TypeError) as exc:
        raise SignInProblem("This sign-in link is not valid") from exc
    async with request.app[STORE].read() as conn:
        app_row = await consent_app(conn, consent.app)
        account = consent.account.get("account")
        await check_consent_account(conn, str(account) if account is not None else None)
        base = await events_store.service_url(conn, settings.service_url)
    app = AppConfig.from_row(app_row, cipher)
    hint = None if consent.delegated else consent.account.get("email")
    try:
        flow = await request.app[TOKENS].identity.start_flow(
            app, redirect_uri(app_row, base), login_hint=hint
        )
    except TokenRefreshFailed as exc:
        raise UpstreamProblem(f"The Microsoft sign-in service cannot be reached: {exc}") from exc
    except AuthError as exc:
        raise SignInProblem(f"The sign-in cannot start: {exc}") from exc
    state = str(flow["state"])
    async with request.app[STORE].write(notify=False) as conn:
        await oauth2_store.put_flow(
            conn,
            state,
            app.id,
            cipher.encrypt_json(flow, context=_flow_context(state)),
            consent.to_json(),
            now_ms() + FLOW_TTL_MS,
        )
    log.info("consent started", app=app.id, account=account)
    return _redirect(str(flow["auth_uri"]))


def _flow_context(state: str) -> str:
    return f"oauth2_flows/{state}"


async def oauth_callback(request: web.Request) -> web.Response:
    try:
        return await _callback(request)
    except InputError as exc:
        return _problem(request, exc)


async def _response_params(request: web.Request) -> dict[str, str]:
    if request.method == "POST":
        try:
            form = await request.post()
        except ValueError as exc:
            raise InputError("body: must be a form (application/x-www-form-urlencoded)") from exc
        return {k: v for k, v in form.items() if isinstance(v, str)}
    return dict(request.query)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


async def _callback(request: web.Request) -> web.Response:
    cipher = request.app[CIPHER]
    params = await _response_params(request)
    state = params.get("state", "")
    if not state:
        raise InputError("state: is required (the answer of Microsoft's sign-in)", field="state")
    row = None
    if _STATE.match(state):
        async with request.app[STORE].write(notify=False) as conn:
            row = await oauth2_store.take_flow(conn, state)
    if row is None:
        raise SignInProblem(
            "This sign-in is unknown or was already completed; open the consent link again"
        )
    if row["expires_ms"] <= now_ms():
        raise SignInProblem("This sign-in took too long; open the consent link again")
    consent = ConsentRequest.from_json(dict(row["request"]))
    if params.get("error"):
        reason = _first_line(params.get("error_description", "")) or params["error"]
        log.info("consent not given", app=row["app"], error=params["error"])
        raise SignInProblem(f"Microsoft did not grant access ({params['error']}): {reason}")
    if not params.get("code"):
        raise InputError("code: is required (the answer of Microsoft's sign-in)", field="code")
    async with request.app[STORE].read() as conn:
        app_row = await apps_store.get(conn, row["app"])
    if app_row is None or app_row["provider"] != "outlook" or not app_row["client_secret"]:
        raise SignInProblem("The OAuth2 application of this sign-in was deleted or changed")
    app = AppConfig.from_row(app_row, cipher)
    flow = cipher.decrypt_json(row["flow"], context=_flow_context(state))
    try:
        resource = token_resource(app.base_scopes, app.scopes)
    except ValueError as exc:
        raise SignInProblem(f"OAuth2 application {app.id!r}: {exc}") from exc
    try:
        result = await request.app[TOKENS].identity.redeem(app, flow, params, resource)
    except TokenRefreshFailed as exc:
        raise UpstreamProblem(f"The sign-in could not be completed: {exc}") from exc
    except AuthError as exc:
        log.info("consent refused", app=app.id, error=str(exc))
        raise SignInProblem(f"The sign-in could not be completed: {exc}") from exc
    if not result.user:
        raise SignInProblem("Microsoft did not say who signed in (no ID token)")
    if not result.refresh_token:
        raise SignInProblem("Microsoft returned no refresh token (offline_access not granted)")
    async with request.app[STORE].write() as conn:
        account, outcome = await _save(request, conn, consent, app, result)
    notify_supervisor(request.app, account)
    log.info("consent completed", app=app.id, account=account, state=outcome)
    return _redirect(_with_query(consent.redirect_url, account=account, state=outcome))


async def _save(
    request: web.Request,
    conn: AsyncConnection,
    consent: ConsentRequest,
    app: AppConfig,
    result: TokenResult,
) -> tuple[str, str]:
    """Create the account or renew its grant; ``(account id, "new" | "existing")``."""
    cipher = request.app[CIPHER]
    fields = dict(consent.account)
    account = str(fields.pop("account", None) or secrets.token_hex(8))
    await check_consent_account(conn, account)
    user = str(result.user)
    auth: dict[str, Any] = {"user": user}
    auth["delegatedUser"] = fields.get("email") if consent.delegated else None
    oauth2: dict[str, Any] = {
        "provider": app.id,
        "auth": auth,
        "accessToken": result.access_token,
        "refreshToken": result.refresh_token,
        "expires": datetime.fromtimestamp(result.expires_ms / 1000, UTC).isoformat(),
    }
    if await accounts_store.get(conn, account) is not None:
        await change_account(conn, cipher, account, {**fields, "oauth2": oauth2})
        for affected in [account, *await oauth2_store.dependents_of(conn, account)]:
            row = await accounts_store.get(conn, affected)
            if row is not None and row["state"] == AccountState.AUTHENTICATION_ERROR:
                await accounts_store.set_state(conn, affected, AccountState.INIT, None)
        return account, "existing"
    fields.setdefault("email", user)
    fields.setdefault("name", result.name or fields["email"])
    auth = {k: v for k, v in auth.items() if v is not None}
    body = validate(
        AccountCreate, {**fields, "account": account, "oauth2": {**oauth2, "auth": auth}}
    )
    state = await save_account(conn, cipher, body, request.app[SETTINGS].service_url)
    return account, state


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


_BROWSER_ERRORS = {
    400: "Invalid, expired, already used or refused sign-in (an HTML page for browsers)",
    404: "Unknown OAuth2 application",
    502: "The Microsoft identity platform failed or cannot be reached",
}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/authentication/form",
        authentication_form,
        "Make a signed consent link for a Microsoft 365 account",
        TAG,
        body=AuthForm,
        response=AuthFormLink,
        errors={404: "Unknown OAuth2 application"},
        permission=Permission("account", "write"),
    ),
    Endpoint(
        "GET",
        START_PATH,
        oauth_start,
        "Open a consent link: redirects to Microsoft's sign-in",
        TAG,
        query=StartQuery,
        status=302,
        errors=_BROWSER_ERRORS,
        public=True,
        content_type="text/plain",
    ),
    Endpoint(
        "POST",
        CALLBACK_PATH,
        oauth_callback,
        "Microsoft's answer (form_post): stores the tokens, redirects to the link's redirectUrl",
        TAG,
        status=302,
        errors=_BROWSER_ERRORS,
        public=True,
        content_type="text/plain",
    ),
    Endpoint(
        "GET",
        CALLBACK_PATH,
        oauth_callback,
        "Microsoft's answer as a query (response_mode=query)",
        TAG,
        query=CallbackQuery,
        status=302,
        errors=_BROWSER_ERRORS,
        public=True,
        content_type="text/plain",
    ),
]
