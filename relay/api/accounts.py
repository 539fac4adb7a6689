"""``/v1/account`` and ``/v1/accounts``: mailboxes to watch (EmailEngine-compatible).

Shared mailboxes: ``oauth2.auth.delegatedUser`` is the shared address and
``oauth2.auth.delegatedAccount`` names the account whose OAuth2 application and tokens it
uses; the provider and tokens then come from that account (the seed payload needs nothing
else). Deleting an account that shared accounts still delegate to is refused (409) so no
mailbox is silently left without credentials.

``oauth2.authorize: true`` (with ``oauth2.provider`` and ``oauth2.redirectUrl``) does not
create the account: the answer is ``{redirect}``, a consent link; the account is created when
the user has signed in and consented (see ``relay.api.authentication``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field, RootModel
from sqlalchemy.ext.asyncio import AsyncConnection

from relay import proxy
from relay.api.account_schema import (
    AccountCreate,
    AccountFields,
    AccountUpdate,
    join_secrets,
    merge,
    payload_dict,
    secret_flags,
    split_secrets,
)
from relay.api.endpoint import Endpoint, json_response, read_body, read_query, validate
from relay.api.keys import AUTH_CACHE, BUS, CIPHER, SETTINGS, STORE, SUPERVISOR
from relay.api.middleware import check_account, request_grant
from relay.api.models import Body, Out, Paging
from relay.auth.consent import ConsentRequest, consent_link
from relay.auth.crypto import Cipher
from relay.auth.delegation import delegation_problem
from relay.auth.grants import Permission
from relay.errors import Conflict, InputError, NotFound
from relay.events.model import Event, iso_ms
from relay.store import accounts as accounts_store
from relay.store import events as events_store
from relay.store import graph as graph_store
from relay.store import oauth2_apps as apps_store
from relay.store import tokens as tokens_store
from relay.store.engine import now_ms
from relay.store.schema import AccountState
from relay.webhooks.account_route import sync_account_route

TAG = "Accounts"


class AccountCreated(Out):
    account: str
    state: str = Field(description="new or existing")


class AuthorizeRedirect(Out):
    redirect: str = Field(description="Consent link: the account is created after consent")


class AccountAdded(RootModel[AccountCreated | AuthorizeRedirect]):
    """``{account, state}``, or ``{redirect}`` for ``oauth2.authorize: true``."""


class AccountRef(Out):
    account: str


class AccountDeleted(Out):
    account: str
    deleted: bool = True


class GraphFolderView(Out):
    path: str | None = None
    specialUse: str | None = None
    subscriptionId: str | None = None
    expires: str | None = Field(default=None, description="When the subscription expires")


class GraphView(Out):
    mode: str = Field(description="subscription | polling")
    subscriptionId: str | None = Field(default=None, description="INBOX's subscription")
    expires: str | None = Field(default=None, description="When INBOX's subscription expires")
    lastError: dict[str, Any] | None = None
    folders: list[GraphFolderView] = Field(
        default_factory=list, description="Every watched folder and its subscription"
    )


def graph_view(row: Any, folders: Any, subscriptions: Any) -> GraphView:
    """What the Graph tables show of an account (never a clientState)."""
    by_folder = {str(s["folder"]): s for s in subscriptions}
    views = []
    for key in sorted(folders, key=lambda k: (k != "inbox", str(folders[k]["path"] or ""))):
        sub = by_folder.get(key)
        views.append(
            GraphFolderView(
                path=folders[key]["path"],
                specialUse=folders[key]["special_use"],
                subscriptionId=sub["subscription_id"] if sub is not None else None,
                expires=iso_ms(sub["expires_ms"]) if sub is not None else None,
            )
        )
    inbox = by_folder.get("inbox")
    return GraphView(
        mode=row["mode"],
        subscriptionId=inbox["subscription_id"] if inbox is not None else None,
        expires=iso_ms(inbox["expires_ms"]) if inbox is not None else None,
        lastError=row["last_error"],
        folders=views,
    )


class AccountView(Out):
    account: str
    name: str
    email: str
    state: str
    backend: str
    imap: dict[str, Any] | None = None
    smtp: dict[str, Any] | None = None
    oauth2: dict[str, Any] | None = None
    path: list[str] | None = None
    notifyFrom: str | None = None
    webhooks: str | None = None
    sentCopy: str | None = None
    subconnections: list[str] | None = None
    locale: str | None = None
    tz: str | None = None
    copy_: bool | None = Field(default=None, alias="copy")
    logs: bool = False
    proxy: str | None = Field(default=None, description="The proxy URL without its password")
    syncFrom: str | None = None
    secrets: dict[str, bool] = Field(description="Which secrets are stored (never their values)")
    lastError: dict[str, Any] | None = None
    graph: GraphView | None = Field(
        default=None, description="Graph accounts: how the mailbox is watched"
    )
    reconnectRequested: str | None = None
    syncRequested: str | None = None
    created: str
    updated: str


class AccountList(Out):
    total: int
    page: int
    pages: int
    accounts: list[AccountView]


class AccountQuery(Paging):
    state: str | None = Field(default=None, pattern="^(" + "|".join(AccountState.ALL) + ")$")
    query: str | None = Field(default=None, max_length=256)


class ReconnectBody(Body):
    reconnect: bool = True


class SyncBody(Body):
    sync: bool = True


class Requested(Out):
    reconnect: bool | None = None
    sync: bool | None = None


def notify_supervisor(app: web.Application, account: str) -> None:
    """Let the node that watches ``account`` act on the change now: this node's supervisor,
    and the other nodes' through the wake-up bus."""
    supervisor = app.get(SUPERVISOR)
    if supervisor is not None:
        supervisor.notify(account)
    bus = app.get(BUS)
    if bus is not None:
        bus.send("account", account)


def _notify_supervisor(request: web.Request, account: str) -> None:
    notify_supervisor(request.app, account)


def _secrets_context(account: str) -> str:
    return f"accounts/{account}/secrets"


def _load_secrets(cipher: Cipher, row: Any) -> dict[str, str]:
    if row["secrets"] is None:
        return {}
    value = cipher.decrypt_json(row["secrets"], context=_secrets_context(row["id"]))
    return dict(value)


def _view(row: Any, cipher: Cipher) -> AccountView:
    config = dict(row["config"])
    oauth2 = config.get("oauth2")
    path = config.get("path")
    secrets = _load_secrets(cipher, row)
    proxy_url = secrets.get("proxy")
    return AccountView(
        account=row["id"],
        name=row["name"],
        email=row["email"],
        state=row["state"],
        backend=row["backend"],
        imap=config.get("imap"),
        smtp=config.get("smtp"),
        oauth2=oauth2,
        path=[path] if isinstance(path, str) else path,
        notifyFrom=config.get("notifyFrom"),
        webhooks=config.get("webhooks"),
        sentCopy=config.get("sentCopy"),
        subconnections=config.get("subconnections"),
        locale=config.get("locale"),
        tz=config.get("tz"),
        copy=config.get("copy"),
        logs=bool(config.get("logs")),
        proxy=proxy.redacted(proxy_url) if proxy_url else None,
        syncFrom=config.get("syncFrom"),
        secrets=secret_flags(secrets),
        lastError=row["last_error"],
        reconnectRequested=iso_ms(row["reconnect_requested_ms"])
        if row["reconnect_requested_ms"]
        else None,
        syncRequested=iso_ms(row["sync_requested_ms"]) if row["sync_requested_ms"] else None,
        created=iso_ms(row["created_ms"]),
        updated=iso_ms(row["updated_ms"]),
    )


async def _resolve(conn: AsyncConnection, account: str, fields: AccountFields) -> dict[str, Any]:
    """Check the cross-field and cross-record rules; return the columns derived from them."""
    derived = await _derive(conn, account, fields)
    if fields.proxy is not None and derived["backend"] == "graph":
        raise InputError(
            "proxy: Microsoft Graph accounts connect to Graph directly; a proxy is for IMAP"
            " and SMTP connections only",
            field="proxy",
        )
    return derived


async def _derive(conn: AsyncConnection, account: str, fields: AccountFields) -> dict[str, Any]:
    oauth2 = fields.oauth2
    auth = oauth2.auth if oauth2 else None
    delegated_account = auth.delegatedAccount if auth else None
    delegated_user = auth.delegatedUser if auth else None
    if fields.imap is None and oauth2 is None and fields.smtp is None:
        # A send-only account (smtp and no imap) is fine, as in EmailEngine.
        raise InputError("imap: either imap, smtp or oauth2 settings are required", field="imap")
    if delegated_account and not delegated_user:
        raise InputError(
            "oauth2.auth.delegatedUser: is required with delegatedAccount"
            " (the shared mailbox address)",
            field="oauth2.auth.delegatedUser",
        )
    app_id: str | None = oauth2.provider if oauth2 else None
    if delegated_account:
        for key in ("accessToken", "refreshToken"):
            if getattr(oauth2, key) is not None:
                raise InputError(
                    f"oauth2.{key}: not allowed with delegatedAccount; tokens come from"
                    f" {delegated_account!r}",
                    field=f"oauth2.{key}",
                )
        target = await accounts_store.get(conn, delegated_account)
        if target is None and delegated_account != account:
            raise InputError(
                f"oauth2.auth.delegatedAccount: account {delegated_account!r} does not exist",
                field="oauth2.auth.delegatedAccount",
            )
        chain = await accounts_store.delegation_chain(conn, delegated_account)
        problem = delegation_problem(account, delegated_account, chain)
        if problem:
            raise InputError(
                f"oauth2.auth.delegatedAccount: {problem}", field="oauth2.auth.delegatedAccount"
            )
        root = await accounts_store.get(conn, chain[-1])
        assert root is not None  # the chain only holds stored accounts
        if app_id is not None and app_id != root["oauth2_app"]:
            raise InputError(
                f"oauth2.provider: must match the delegated account's application"
                f" ({root['oauth2_app']!r}) or be left out",
                field="oauth2.provider",
            )
        return {
            "oauth2_app": None,
            "delegated_account": delegated_account,
            "delegated_user": delegated_user,
            "backend": root["backend"],
        }
    backend = "imap"
    if app_id is not None:
        app = await apps_store.get(conn, app_id)
        if app is None:
            raise InputError(
                f"oauth2.provider: unknown OAuth2 application {app_id!r}", field="oauth2.provider"
            )
        backend = "graph" if app["base_scopes"] == "api" else "imap"
        if app["provider"] == "outlook" and not (
            oauth2 and (oauth2.accessToken or oauth2.refreshToken)
        ):
            raise InputError(
                "oauth2.refreshToken: a delegated (outlook) application needs accessToken or"
                " refreshToken (or use the consent link of /v1/authentication/form)",
                field="oauth2.refreshToken",
            )
    elif oauth2 is not None:
        raise InputError(
            "oauth2.provider: is required (the id of an OAuth2 application) unless"
            " oauth2.auth.delegatedAccount is set",
            field="oauth2.provider",
        )
    elif fields.imap is not None and (
        fields.imap.auth is None or not (fields.imap.auth.password or fields.imap.auth.accessToken)
    ):
        raise InputError(
            "imap.auth: user and pass (or accessToken) are required without oauth2",
            field="imap.auth",
        )
    return {
        "oauth2_app": app_id,
        "delegated_account": None,
        "delegated_user": delegated_user,
        "backend": backend,
    }


def _columns(
    cipher: Cipher, account: str, fields: AccountFields, derived: dict[str, Any]
) -> dict[str, Any]:
    payload = payload_dict(fields)
    public, secrets = split_secrets(payload)
    public.pop("name", None)
    public.pop("email", None)
    public.pop("account", None)
    oauth2 = public.get("oauth2")
    if isinstance(oauth2, dict):
        # Instructions for this request (start a consent), not settings to keep.
        oauth2.pop("authorize", None)
        oauth2.pop("redirectUrl", None)
    return {
        "name": fields.name,
        "email": fields.email,
        "config": public,
        "secrets": cipher.encrypt_json(secrets, context=_secrets_context(account))
        if secrets
        else None,
        **derived,
    }


async def save_account(
    conn: AsyncConnection, cipher: Cipher, body: AccountCreate, service_url: str
) -> str:
    """Create or replace an account; ``"new"`` (with an ``accountAdded`` event) or
    ``"existing"``. The caller notifies the supervisor after the commit."""
    derived = await _resolve(conn, body.account, body)
    columns = _columns(cipher, body.account, body, derived)
    await sync_account_route(
        conn, cipher, body.account, str(body.webhooks) if body.webhooks else None
    )
    if await accounts_store.insert_new(
        conn, {"id": body.account, "state": AccountState.INIT, **columns}
    ):
        event = Event(
            "accountAdded",
            body.account,
            {"account": body.account, "name": body.name, "email": body.email},
            now_ms(),
        )
        await events_store.append(conn, event, service_url)
        return "new"
    await accounts_store.update(conn, body.account, columns)
    return "existing"


async def change_account(
    conn: AsyncConnection, cipher: Cipher, account: str, change: dict[str, Any]
) -> None:
    """Merge ``change`` (wire names; null removes a key) into a stored account."""
    row = await _row_or_404(conn, account)
    stored = join_secrets(dict(row["config"]), _load_secrets(cipher, row))
    stored["name"] = row["name"]
    stored["email"] = row["email"]
    fields = validate(AccountFields, merge(stored, change))
    derived = await _resolve(conn, account, fields)
    await accounts_store.update(conn, account, _columns(cipher, account, fields, derived))
    await sync_account_route(
        conn, cipher, account, str(fields.webhooks) if fields.webhooks else None
    )


def _consent_request(body: AccountCreate) -> ConsentRequest:
    """What a consent link for ``oauth2.authorize`` must carry; refuses what it cannot."""
    oauth2 = body.oauth2
    assert oauth2 is not None
    if not oauth2.provider:
        raise InputError(
            "oauth2.provider: is required with authorize (the OAuth2 application to consent to)",
            field="oauth2.provider",
        )
    if oauth2.redirectUrl is None:
        raise InputError(
            "oauth2.redirectUrl: is required with authorize (where the browser goes after consent)",
            field="oauth2.redirectUrl",
        )
    auth = oauth2.auth
    if auth is not None and auth.delegatedAccount:
        raise InputError(
            "oauth2.auth.delegatedAccount: a shared account uses another account's consent;"
            " add it without authorize",
            field="oauth2.auth.delegatedAccount",
        )
    payload = payload_dict(body)
    public, secrets = split_secrets(payload)
    if secrets:
        first = sorted(secrets)[0]
        raise InputError(f"{first}: not allowed with authorize", field=first)
    public.pop("oauth2", None)
    delegated_user = auth.delegatedUser if auth else None
    if delegated_user:
        public["email"] = delegated_user
    return ConsentRequest(
        app=oauth2.provider,
        redirect_url=str(oauth2.redirectUrl),
        delegated=bool(delegated_user),
        account=public,
    )


async def create_account(request: web.Request) -> web.Response:
    body = await read_body(request, AccountCreate)
    await check_account(request, body.account)
    cipher = request.app[CIPHER]
    settings = request.app[SETTINGS]
    if body.oauth2 is not None and body.oauth2.authorize:
        consent = _consent_request(body)
        async with request.app[STORE].read() as conn:
            url = await consent_link(
                conn,
                cipher,
                consent,
                default_service_url=settings.service_url,
                ttl=settings.microsoft.consent_link_ttl,
                app_field="oauth2.provider",
            )
        return json_response(AccountAdded(AuthorizeRedirect(redirect=url)))
    # Durable before the answer; the listeners start after it (the supervisor is only told).
    async with request.app[STORE].write(notify=False) as conn:
        state = await save_account(conn, cipher, body, settings.service_url)
    _notify_supervisor(request, body.account)
    return json_response(AccountAdded(AccountCreated(account=body.account, state=state)))


async def list_accounts(request: web.Request) -> web.Response:
    query = read_query(request, AccountQuery)
    cipher = request.app[CIPHER]
    grant = request_grant(request)
    async with request.app[STORE].read() as conn:
        only = await accounts_store.visible_to(conn, grant) if grant is not None else None
        total, rows = await accounts_store.page(
            conn,
            query.page * query.pageSize,
            query.pageSize,
            state=query.state,
            query=query.query,
            only=only,
        )
    pages = max(1, -(-total // query.pageSize))
    return json_response(
        AccountList(
            total=total, page=query.page, pages=pages, accounts=[_view(r, cipher) for r in rows]
        )
    )


async def _row_or_404(conn: AsyncConnection, account: str) -> Any:
    row = await accounts_store.get(conn, account)
    if row is None:
        raise NotFound(f"Account {account!r} not found", field="account")
    return row


async def get_account(request: web.Request) -> web.Response:
    account = request.match_info["account"]
    async with request.app[STORE].read() as conn:
        row = await _row_or_404(conn, account)
        graph = await graph_store.get_account(conn, account)
        if graph is not None:
            folders = await graph_store.folder_paths(conn, account)
            subs = await graph_store.subscriptions_of(conn, account)
    view = _view(row, request.app[CIPHER])
    if graph is not None:
        view.graph = graph_view(graph, folders, subs)
    return json_response(view)


async def update_account(request: web.Request) -> web.Response:
    account = request.match_info["account"]
    body = await read_body(request, AccountUpdate)
    cipher = request.app[CIPHER]
    change = body.model_dump(mode="json", by_alias=True, exclude_unset=True)
    async with request.app[STORE].write() as conn:
        await change_account(conn, cipher, account, change)
    _notify_supervisor(request, account)
    return json_response(AccountRef(account=account))


async def delete_account(request: web.Request) -> web.Response:
    account = request.match_info["account"]
    service_url = request.app[SETTINGS].service_url
    async with request.app[STORE].write() as conn:
        await _row_or_404(conn, account)
        dependents = await accounts_store.dependents(conn, account)
        if dependents:
            raise Conflict(
                f"Account {account!r} is the delegated account of {', '.join(dependents[:10])};"
                " delete those shared accounts (or point them elsewhere) first",
                field="account",
            )
        # The account's tokens go with it (ON DELETE CASCADE); refuse them from now on.
        token_ids = await tokens_store.ids_of_account(conn, account)
        await accounts_store.delete(conn, account)
        await events_store.append(
            conn, Event("accountDeleted", account, {"account": account}, now_ms()), service_url
        )
    for token_id in token_ids:
        request.app[AUTH_CACHE].forget(token_id)
    _notify_supervisor(request, account)
    return json_response(AccountDeleted(account=account))


async def _record_request(request: web.Request, column: str) -> None:
    """Store a reconnect or sync request on the account and tell the supervisor."""
    account = request.match_info["account"]
    async with request.app[STORE].write() as conn:
        await _row_or_404(conn, account)
        await accounts_store.request(conn, account, column)
    _notify_supervisor(request, account)


async def reconnect_account(request: web.Request) -> web.Response:
    body = await read_body(request, ReconnectBody)
    if body.reconnect:
        await _record_request(request, "reconnect_requested_ms")
    return json_response(Requested(reconnect=body.reconnect))


async def sync_account(request: web.Request) -> web.Response:
    body = await read_body(request, SyncBody)
    if body.sync:
        await _record_request(request, "sync_requested_ms")
    return json_response(Requested(sync=body.sync))


_NOT_FOUND = {404: "Unknown account"}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/account",
        create_account,
        "Add (or replace) an account",
        TAG,
        body=AccountCreate,
        response=AccountAdded,
        permission=Permission("account", "write"),
    ),
    Endpoint(
        "GET",
        "/v1/accounts",
        list_accounts,
        "List accounts",
        TAG,
        query=AccountQuery,
        response=AccountList,
        permission=Permission("account", "read"),
    ),
    Endpoint(
        "GET",
        "/v1/account/{account}",
        get_account,
        "Read an account (never its secrets)",
        TAG,
        response=AccountView,
        errors=_NOT_FOUND,
        permission=Permission("account", "read"),
    ),
    Endpoint(
        "PUT",
        "/v1/account/{account}",
        update_account,
        "Update an account",
        TAG,
        body=AccountUpdate,
        response=AccountRef,
        errors=_NOT_FOUND,
        permission=Permission("account", "write"),
    ),
    Endpoint(
        "DELETE",
        "/v1/account/{account}",
        delete_account,
        "Delete an account",
        TAG,
        response=AccountDeleted,
        errors={**_NOT_FOUND, 409: "Shared accounts still delegate to it"},
        permission=Permission("account", "destructive"),
    ),
    Endpoint(
        "PUT",
        "/v1/account/{account}/reconnect",
        reconnect_account,
        "Drop and re-open the account's connections",
        TAG,
        body=ReconnectBody,
        response=Requested,
        errors=_NOT_FOUND,
        permission=Permission("account", "write"),
    ),
    Endpoint(
        "PUT",
        "/v1/account/{account}/sync",
        sync_account,
        "Catch up with the mailbox now",
        TAG,
        body=SyncBody,
        response=Requested,
        errors=_NOT_FOUND,
        permission=Permission("account", "write"),
    ),
]
