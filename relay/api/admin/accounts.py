"""Accounts: the paged list, one account's page and its actions, and the add-account form.

The form is at ``/admin/add-account``, outside ``/admin/accounts/{account}``: an account id
may be any text without a slash, ``new`` included.

Every action is a call of the API's own endpoint (relay.api.dispatch): one validation, one
permission check, one audit line.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from relay.api.admin.forms import ACCOUNT_KINDS, account_payload, field_errors
from relay.api.admin.pages import PREFIX, api, page, read_form, render
from relay.api.admin.session import Session
from relay.api.dispatch import prepare
from relay.api.keys import STORE
from relay.errors import InputError
from relay.events.model import iso_ms
from relay.store import events as events_store
from relay.store import folders as folders_store
from relay.store.schema import AccountState

__all__ = ["PAGE_SIZE", "ROUTES"]

PAGE_SIZE = 50
# The add-account form's inputs, by the API's dotted names (where errors are shown).
ACCOUNT_FIELDS = (
    "kind",
    "account",
    "name",
    "email",
    "imap",
    "imap.host",
    "imap.port",
    "imap.secure",
    "imap.auth",
    "imap.auth.user",
    "imap.auth.pass",
    "smtp",
    "smtp.host",
    "smtp.port",
    "smtp.secure",
    "smtp.auth.user",
    "smtp.auth.pass",
    "oauth2.provider",
    "oauth2.auth.user",
    "oauth2.auth.delegatedAccount",
    "oauth2.auth.delegatedUser",
)


def _v1(account: str, suffix: str = "") -> str:
    return f"/v1/account/{quote(account, safe='')}{suffix}"


def _page_url(account: str, suffix: str = "") -> str:
    return f"{PREFIX}/accounts/{quote(account, safe='')}{suffix}"


def _int(value: str | None, default: int) -> int:
    return int(value) if value and value.isdigit() else default


@page
async def account_list(request: web.Request, session: Session) -> web.StreamResponse:
    number = _int(request.query.get("page"), 1)
    query = request.query.get("query", "").strip()
    state = request.query.get("state", "")
    args: dict[str, Any] = {"page": max(0, number - 1), "pageSize": PAGE_SIZE}
    if query:
        args["query"] = query
    if state in AccountState.ALL:
        args["state"] = state
    listing = await api(request, session, "GET", f"/v1/accounts?{urlencode(args)}")
    keep = {k: v for k, v in (("query", query), ("state", state)) if v}

    def link(n: int) -> str:
        return f"{PREFIX}/accounts?{urlencode({**keep, 'page': n})}"

    return render(
        request,
        session,
        "accounts.html",
        {
            "listing": listing,
            "number": number,
            "query": query,
            "state": state,
            "states": AccountState.ALL,
            "prev": link(number - 1) if number > 1 else None,
            "next": link(number + 1) if number < listing["pages"] else None,
        },
    )


async def _account_page(
    request: web.Request, session: Session, account: str, **extra: Any
) -> web.Response:
    view = await api(request, session, "GET", _v1(account))
    async with request.app[STORE].read() as conn:
        folders = await folders_store.for_account(conn, account)
        recent = await events_store.recent(conn, account, 20)
    for event in recent:
        event["date"] = iso_ms(event.pop("created_ms"))
    return render(
        request,
        session,
        "account.html",
        {
            "a": view,
            "folders": [{"path": f["path"], "special_use": f["special_use"]} for f in folders],
            "events": recent,
            "done": request.query.get("done", ""),
            **extra,
        },
    )


@page
async def account_detail(request: web.Request, session: Session) -> web.StreamResponse:
    return await _account_page(request, session, request.match_info["account"])


def _action(method: str, suffix: str, body: dict[str, Any] | None, done: str) -> Any:
    @page
    async def act(request: web.Request, session: Session) -> web.StreamResponse:
        account = request.match_info["account"]
        call = prepare(request, method, _v1(account, suffix))
        await read_form(request, session)
        await call.run(session.grant, body)
        raise web.HTTPSeeOther(f"{_page_url(account)}?done={quote(done)}")

    return act


@page
async def consent_link(request: web.Request, session: Session) -> web.StreamResponse:
    """A fresh consent link for an OAuth2 account (to renew its tokens), shown to copy."""
    account = request.match_info["account"]
    call = prepare(request, "POST", "/v1/authentication/form")
    await read_form(request, session)
    view = await api(request, session, "GET", _v1(account))
    provider = (view.get("oauth2") or {}).get("provider")
    if not provider:
        raise InputError("Only an OAuth2 account with its own application has a consent link")
    body = {
        "account": account,
        "name": view["name"],
        "email": view["email"],
        "redirectUrl": str(request.url.with_path(_page_url(account)).with_query(None)),
        "type": provider,
    }
    link = await call.run(session.grant, body)
    return await _account_page(request, session, account, consent_url=link["url"])


@page
async def delete_confirm(request: web.Request, session: Session) -> web.StreamResponse:
    account = request.match_info["account"]
    view = await api(request, session, "GET", _v1(account))
    return render(request, session, "account_delete.html", {"a": view})


@page
async def delete_account(request: web.Request, session: Session) -> web.StreamResponse:
    account = request.match_info["account"]
    call = prepare(request, "DELETE", _v1(account))
    await read_form(request, session)
    await call.run(session.grant)
    raise web.HTTPSeeOther(f"{PREFIX}/accounts?{urlencode({'deleted': account})}")


async def _mains(request: web.Request, session: Session) -> list[str]:
    """Accounts a shared mailbox may borrow tokens from (OAuth2 ones)."""
    listing = await api(request, session, "GET", "/v1/accounts?pageSize=1000")
    return [a["account"] for a in listing["accounts"] if a.get("oauth2")]


async def _apps(request: web.Request, session: Session) -> list[dict[str, Any]]:
    listing = await api(request, session, "GET", "/v1/oauth2?pageSize=1000")
    return list(listing.get("apps", []))


async def _new_form(
    request: web.Request,
    session: Session,
    form: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    return render(
        request,
        session,
        "account_new.html",
        {
            "form": form,
            "errors": errors,
            "kinds": ACCOUNT_KINDS,
            "mains": await _mains(request, session),
            "apps": await _apps(request, session),
        },
        status=status,
    )


@page
async def new_account_form(request: web.Request, session: Session) -> web.StreamResponse:
    kind = request.query.get("kind", "imap")
    return await _new_form(request, session, {"kind": kind, "imap.secure": ""}, {})


@page
async def new_account(request: web.Request, session: Session) -> web.StreamResponse:
    call = prepare(request, "POST", "/v1/account")
    form = await read_form(request, session)
    try:
        account = form.get("account", "").strip()
        back = str(request.url.with_path(_page_url(account)).with_query(None))
        result = await call.run(session.grant, account_payload(form, consent_return=back))
    except InputError as exc:
        form.pop("imap.auth.pass", None)
        form.pop("smtp.auth.pass", None)
        return await _new_form(
            request, session, form, field_errors(exc, ACCOUNT_FIELDS), status=exc.status
        )
    if "redirect" in result:
        # An OAuth2 account: Microsoft's consent first; it is created when the user agreed.
        raise web.HTTPSeeOther(result["redirect"])
    raise web.HTTPSeeOther(_page_url(result["account"]))


ROUTES = [
    ("GET", "/accounts", account_list),
    ("GET", "/add-account", new_account_form),
    ("POST", "/add-account", new_account),
    ("GET", "/accounts/{account}", account_detail),
    (
        "POST",
        "/accounts/{account}/reconnect",
        _action("PUT", "/reconnect", {"reconnect": True}, "reconnect requested"),
    ),
    ("POST", "/accounts/{account}/sync", _action("PUT", "/sync", {"sync": True}, "sync requested")),
    ("POST", "/accounts/{account}/consent", consent_link),
    ("GET", "/accounts/{account}/delete", delete_confirm),
    ("POST", "/accounts/{account}/delete", delete_account),
]
