"""The consent flow's pieces that are not HTTP: which links may be made, and the link itself.

Flow (the HTTP side is ``relay.api.authentication``)::

    POST /v1/authentication/form (or POST /v1/account with oauth2.authorize)
      -> signed link {serviceUrl}/oauth/start?data=..&sig=..   (valid consent_link_ttl)
    browser opens the link -> relay starts msal's auth code flow (state + PKCE), keeps it in
      oauth2_flows (FLOW_TTL) -> 302 to Microsoft's sign-in and consent page
    Microsoft POSTs code + state to {redirectUrl} (/oauth, form_post) -> relay takes the flow
      (once), redeems the code in a worker thread, stores the tokens encrypted, creates or
      updates the account -> 302 to the link's redirectUrl
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.auth.crypto import Cipher
from relay.auth.links import LINK_KEY_PURPOSE, sign
from relay.errors import InputError, NotFound
from relay.store import accounts as accounts_store
from relay.store import events as events_store
from relay.store import oauth2_apps as apps_store

START_PATH = "/oauth/start"
CALLBACK_PATH = "/oauth"
# How long a started sign-in waits for the redirect back (Microsoft's sign-in page keeps a
# pending sign-in for about as long).
FLOW_TTL_MS = 3600 * 1000


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """What a consent link asks for.

    ``account`` is the account payload to create or update (``account``, ``name``, ``email``
    and optional settings such as ``imap`` or ``path``; never a secret). ``delegated`` makes
    the account a shared mailbox with its own tokens: the signed-in user's token opens the
    mailbox at ``account.email``.
    """

    app: str
    redirect_url: str
    delegated: bool = False
    account: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The link's payload."""
        return {
            "type": self.app,
            "redirectUrl": self.redirect_url,
            "delegated": self.delegated,
            "account": self.account,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ConsentRequest:
        """Inverse of :meth:`to_json` (on a payload this relay signed)."""
        account = value.get("account")
        return cls(
            app=str(value["type"]),
            redirect_url=str(value["redirectUrl"]),
            delegated=bool(value.get("delegated")),
            account=dict(account) if isinstance(account, dict) else {},
        )


async def consent_app(conn: AsyncConnection, app_id: str, *, field: str = "type") -> RowMapping:
    """The OAuth2 application a consent may use: it exists, is enabled and is delegated."""
    row = await apps_store.get(conn, app_id)
    if row is None:
        raise NotFound(f"{field}: unknown OAuth2 application {app_id!r}", field=field)
    if not row["enabled"]:
        raise InputError(f"{field}: OAuth2 application {app_id!r} is disabled", field=field)
    if row["provider"] != "outlook":
        raise InputError(
            f"{field}: OAuth2 application {app_id!r} is app-only ({row['provider']}); users"
            " consent only to delegated (outlook) applications",
            field=field,
        )
    if not row["client_secret"]:
        raise InputError(
            f"{field}: OAuth2 application {app_id!r} has no client secret", field=field
        )
    return row


async def check_consent_account(conn: AsyncConnection, account: str | None) -> None:
    """A consent may create an account or renew one with its own tokens, not a shared one."""
    if account is None:
        return
    row = await accounts_store.get(conn, account)
    if row is not None and row["delegated_account"] is not None:
        raise InputError(
            f"account: {account!r} uses the tokens of {row['delegated_account']!r}; ask that"
            " account's user to consent instead",
            field="account",
        )


async def consent_link(
    conn: AsyncConnection,
    cipher: Cipher,
    request: ConsentRequest,
    *,
    default_service_url: str,
    ttl: float,
    app_field: str = "type",
) -> str:
    """Check ``request`` and return a signed link to ``/oauth/start`` valid for ``ttl`` s.

    ``app_field`` names the application's input field in errors.
    """
    await consent_app(conn, request.app, field=app_field)
    account = request.account.get("account")
    await check_consent_account(conn, str(account) if account is not None else None)
    base = await events_store.service_url(conn, default_service_url)
    data, sig = sign(
        cipher.subkey(LINK_KEY_PURPOSE), request.to_json(), expires_at=int(time.time() + ttl)
    )
    return f"{base}{START_PATH}?{urlencode({'data': data, 'sig': sig})}"


def redirect_uri(app: RowMapping, service_url: str) -> str:
    """Where Microsoft sends the browser back: the application's redirectUrl, else /oauth."""
    return str(app["redirect_url"] or f"{service_url}{CALLBACK_PATH}")
