"""``/v1/tokens``: API tokens with grants (EmailEngine-compatible paths and payloads).

A token is shown once, when it is created; afterwards only its id and grant are. A token
mints another only within its own grant (:func:`relay.auth.grants.widening`), and an
account-bound token sees only the tokens of its own account. Deleting a token drops it from
this node's cache of grants, so it is refused on the very next request. ``relay token issue``
validates its options with the same :class:`TokenCreate` and stores through :func:`mint`.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, Field, field_validator, model_validator
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.api.endpoint import Endpoint, json_response, read_body, read_query
from relay.api.keys import AUTH_CACHE, STORE
from relay.api.middleware import request_grant
from relay.api.models import Body, Deleted, Identifier, Out, Paging, Text
from relay.auth.api_tokens import hash_token, new_id, new_token
from relay.auth.grants import (
    ACTIONS,
    GROUPS,
    SCOPES,
    Grant,
    Permission,
    RateLimit,
    Restrictions,
    permissions_from,
    widening,
)
from relay.errors import Conflict, Forbidden, InputError, NotFound, Unauthorized
from relay.events.model import iso_ms
from relay.store import accounts as accounts_store
from relay.store import tokens as tokens_store
from relay.store.engine import now_ms

TAG = "Access tokens"
# Stored metadata is shown on every read: keep it small.
_METADATA_MAX = 64 * 1024


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("must be an IP address or a CIDR range") from None


Address = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_network)]
Referrer = Annotated[Text, Field(min_length=1)]
# "*": every scope (EmailEngine's wildcard).
Scope = Literal["api", "smtp", "metrics", "*"]


def _api_scope() -> list[Scope]:
    return ["api"]


class RateLimitIn(Body):
    maxRequests: int = Field(ge=1, le=1_000_000_000)
    # Seconds.
    timeWindow: int = Field(ge=1, le=366 * 86400)


class RestrictionsIn(Body):
    addresses: list[Address] | None = Field(default=None, min_length=1, max_length=100)
    referrers: list[Referrer] | None = Field(default=None, min_length=1, max_length=100)
    rateLimit: RateLimitIn | None = None


class TokenCreate(Body):
    """A new token's description and grant: the API's body and ``relay token issue``'s options."""

    description: Text = Field(min_length=1)
    account: Identifier | None = None
    shared: bool = False
    scopes: list[Scope] = Field(default_factory=_api_scope, min_length=1, max_length=4)
    permissions: dict[str, list[str]] | None = None
    restrictions: RestrictionsIn | None = None
    expires: datetime | None = None
    metadata: dict[str, Any] | None = None
    # EmailEngine's "IP address of the requestor": accepted, not used.
    ip: Annotated[str, Field(max_length=64)] | None = None

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        # EmailEngine sends metadata as a JSON string.
        if isinstance(value, str):
            try:
                value = json.loads(value) if value else None
            except ValueError:
                raise ValueError("must be an object or a JSON object string") from None
        if value is not None and len(json.dumps(value)) > _METADATA_MAX:
            raise ValueError(f"must be at most {_METADATA_MAX} bytes as JSON")
        return value

    @model_validator(mode="after")
    def _grant_rules(self) -> TokenCreate:
        if self.shared and self.account is None:
            raise InputError("shared: needs account", field="shared")
        for group, actions in (self.permissions or {}).items():
            if group not in GROUPS:
                raise InputError(
                    f"permissions.{group}: unknown group (one of {', '.join(GROUPS)})",
                    field=f"permissions.{group}",
                )
            for i, action in enumerate(actions):
                if action not in ACTIONS:
                    raise InputError(
                        f"permissions.{group}.{i}: unknown action (one of {', '.join(ACTIONS)})",
                        field=f"permissions.{group}.{i}",
                    )
        if self.expires is not None:
            if self.expires.tzinfo is None:
                self.expires = self.expires.replace(tzinfo=UTC)
            if self.expires.timestamp() * 1000 <= now_ms():
                raise InputError("expires: must be in the future", field="expires")
        return self

    def to_grant(self, token_id: str) -> Grant:
        """The grant the new token will hold."""
        r = self.restrictions
        limit = r.rateLimit if r else None
        return Grant(
            token_id=token_id,
            account=self.account,
            shared=self.shared,
            scopes=frozenset(SCOPES) if "*" in self.scopes else frozenset(self.scopes),
            permissions=permissions_from(self.permissions),
            restrictions=Restrictions(
                addresses=tuple(ipaddress.ip_network(a) for a in r.addresses)
                if r and r.addresses is not None
                else None,
                referrers=tuple(r.referrers) if r and r.referrers is not None else None,
                rate_limit=RateLimit(limit.maxRequests, float(limit.timeWindow)) if limit else None,
            ),
            expires_ms=int(self.expires.timestamp() * 1000) if self.expires else None,
        )


class TokenCreated(Out):
    token: str
    id: str


class TokenOut(Out):
    id: str
    account: str | None = None
    shared: bool
    description: str
    scopes: list[str]
    # Absent: every group and action.
    permissions: dict[str, list[str]] | None = None
    restrictions: RestrictionsIn | None = None
    expires: str | None = None
    metadata: dict[str, Any] | None = None
    created: str
    # "api" (POST /v1/tokens), "issued" (relay token issue) or "config" (security.api_token).
    source: str


class TokenList(Out):
    total: int
    page: int
    pages: int
    tokens: list[TokenOut]


class AccountTokens(Out):
    tokens: list[TokenOut]


class TokenQuery(Paging):
    account: Identifier | None = None


class LogEntry(Out):
    time: str
    method: str
    route: str
    account: str | None = None
    status: int
    address: str | None = None


class LogPage(Out):
    total: int
    page: int
    pages: int
    entries: list[LogEntry]


async def mint(
    conn: AsyncConnection, body: TokenCreate, *, parent: Grant | None, source: str
) -> tuple[str, str]:
    """Store a new token for ``body``; return it and its id. With ``parent`` (the minting
    token's grant) the new one may not be wider (Forbidden naming the field)."""
    grant = body.to_grant(new_id())
    if parent is not None:
        wider = widening(grant, parent)
        if wider is not None:
            raise Forbidden(
                f"{wider}: a token cannot create a token with a wider {wider} than its own",
                field=wider,
            )
    if body.account is not None and await accounts_store.get(conn, body.account) is None:
        raise NotFound(f"Account {body.account!r} not found", field="account")
    token = new_token()
    await tokens_store.create(
        conn,
        token,
        grant,
        description=body.description,
        source=source,
        metadata=body.metadata,
        parent_id=parent.token_id if parent is not None else None,
    )
    return token, grant.token_id


def token_out(row: RowMapping) -> TokenOut:
    grant = tokens_store.grant_of(row)
    restrictions = grant.restrictions.to_json()
    return TokenOut(
        id=row["id"],
        account=row["account"],
        shared=bool(row["shared"]),
        description=row["description"],
        scopes=sorted(grant.scopes),
        permissions=grant.permissions_json(),
        restrictions=RestrictionsIn.model_validate(restrictions) if restrictions else None,
        expires=iso_ms(row["expires_ms"]) if row["expires_ms"] is not None else None,
        metadata=row["metadata"],
        created=iso_ms(row["created_ms"]),
        source=row["source"],
    )


def _requester(request: web.Request) -> Grant:
    """The grant of the token that made the request (set by the authentication middleware)."""
    grant = request_grant(request)
    if grant is None:
        raise Unauthorized("Missing API token: send Authorization: Bearer <token>")
    return grant


def _visible(row: RowMapping | None, grant: Grant) -> RowMapping | None:
    """The row if the requesting token may see it (an account-bound token: its account's)."""
    if row is None or (grant.account is not None and row["account"] != grant.account):
        return None
    return row


def _pages(total: int, size: int) -> int:
    return max(1, -(-total // size))


async def create_token(request: web.Request) -> web.Response:
    body = await read_body(request, TokenCreate)
    parent = _requester(request)
    async with request.app[STORE].write() as conn:
        token, token_id = await mint(conn, body, parent=parent, source="api")
    return json_response(TokenCreated(token=token, id=token_id))


async def list_tokens(request: web.Request) -> web.Response:
    query = read_query(request, TokenQuery)
    grant = _requester(request)
    account = query.account
    if grant.account is not None:
        if account is not None and account != grant.account:
            return json_response(TokenList(total=0, page=query.page, pages=1, tokens=[]))
        account = grant.account
    async with request.app[STORE].read() as conn:
        total, rows = await tokens_store.page(
            conn, query.page * query.pageSize, query.pageSize, account=account
        )
    return json_response(
        TokenList(
            total=total,
            page=query.page,
            pages=_pages(total, query.pageSize),
            tokens=[token_out(r) for r in rows],
        )
    )


async def account_tokens(request: web.Request) -> web.Response:
    account = request.match_info["account"]
    grant = _requester(request)
    async with request.app[STORE].read() as conn:
        if (grant.account is not None and account != grant.account) or (
            await accounts_store.get(conn, account) is None
        ):
            raise NotFound(f"Account {account!r} not found", field="account")
        _, rows = await tokens_store.page(conn, 0, 1000, account=account)
    return json_response(AccountTokens(tokens=[token_out(r) for r in rows]))


class TokenNotFound(NotFound):
    code = "TokenNotFound"


def _not_found(token_id: str | None) -> TokenNotFound:
    named = f" {token_id!r}" if token_id is not None else ""
    return TokenNotFound(f"Token{named} not found", field="token")


async def get_token(request: web.Request) -> web.Response:
    token_id = request.match_info["token"]
    grant = _requester(request)
    async with request.app[STORE].read() as conn:
        row = _visible(await tokens_store.get(conn, token_id), grant)
    if row is None:
        raise _not_found(token_id)
    return json_response(token_out(row))


async def _delete(request: web.Request, row: RowMapping | None, shown: str | None) -> web.Response:
    grant = _requester(request)
    row = _visible(row, grant)
    if row is None:
        raise _not_found(shown)
    if row["source"] == "config":
        raise Conflict(
            "token: this token comes from the security.api_token setting; change the setting",
            field="token",
        )
    async with request.app[STORE].write() as conn:
        if not await tokens_store.delete(conn, row["id"]):
            raise _not_found(shown)
    request.app[AUTH_CACHE].forget(row["id"])
    return json_response(Deleted())


async def delete_token(request: web.Request) -> web.Response:
    token_id = request.match_info["token"]
    async with request.app[STORE].read() as conn:
        row = await tokens_store.get(conn, token_id)
    return await _delete(request, row, token_id)


async def delete_token_by_value(request: web.Request) -> web.Response:
    """EmailEngine's older form: the path carries the token itself."""
    token = request.match_info["token"]
    async with request.app[STORE].read() as conn:
        row = await tokens_store.get_by_hash(conn, hash_token(token))
    # Never echo the secret back.
    return await _delete(request, row, None)


async def token_log(request: web.Request) -> web.Response:
    token_id = request.match_info["token"]
    paging = read_query(request, Paging)
    grant = _requester(request)
    async with request.app[STORE].read() as conn:
        if _visible(await tokens_store.get(conn, token_id), grant) is None:
            raise _not_found(token_id)
        total, rows = await tokens_store.log_page(
            conn, token_id, paging.page * paging.pageSize, paging.pageSize
        )
    return json_response(
        LogPage(
            total=total,
            page=paging.page,
            pages=_pages(total, paging.pageSize),
            entries=[
                LogEntry(
                    time=iso_ms(r["created_ms"]),
                    method=r["method"],
                    route=r["route"],
                    account=r["account"],
                    status=r["status"],
                    address=r["address"],
                )
                for r in rows
            ],
        )
    )


_NOT_FOUND = {404: "Unknown token (or one of another account)"}
_READ = Permission("token", "read")
_WRITE = Permission("token", "write")
_DELETE = Permission("token", "destructive")
_CREATE_ERRORS = {
    403: "The new token would be wider than the requesting one",
    404: "Unknown account",
}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/tokens",
        create_token,
        "Create an API token (shown only in this answer)",
        TAG,
        body=TokenCreate,
        response=TokenCreated,
        errors=_CREATE_ERRORS,
        permission=_WRITE,
    ),
    Endpoint(
        "GET",
        "/v1/tokens",
        list_tokens,
        "List API tokens (never the tokens themselves)",
        TAG,
        query=TokenQuery,
        response=TokenList,
        permission=_READ,
    ),
    # Before /v1/tokens/{token}/log, which would otherwise match .../account/log.
    Endpoint(
        "GET",
        "/v1/tokens/account/{account}",
        account_tokens,
        "List an account's API tokens (EmailEngine's older form of GET /v1/tokens?account=)",
        TAG,
        response=AccountTokens,
        errors={404: "Unknown account"},
        permission=_READ,
    ),
    Endpoint(
        "GET",
        "/v1/tokens/{token}",
        get_token,
        "Read an API token's grant",
        TAG,
        response=TokenOut,
        errors=_NOT_FOUND,
        permission=_READ,
    ),
    Endpoint(
        "GET",
        "/v1/tokens/{token}/log",
        token_log,
        "Page a token's audit log, newest first",
        TAG,
        query=Paging,
        response=LogPage,
        errors=_NOT_FOUND,
        permission=_READ,
    ),
    Endpoint(
        "DELETE",
        "/v1/tokens/{token}",
        delete_token,
        "Delete an API token: it is refused from the next request on",
        TAG,
        response=Deleted,
        errors={**_NOT_FOUND, 409: "The token is configured in the settings"},
        permission=_DELETE,
    ),
    Endpoint(
        "POST",
        "/v1/token",
        create_token,
        "Create an API token (EmailEngine's older path)",
        TAG,
        body=TokenCreate,
        response=TokenCreated,
        errors=_CREATE_ERRORS,
        permission=_WRITE,
    ),
    Endpoint(
        "DELETE",
        "/v1/token/{token}",
        delete_token_by_value,
        "Delete an API token given the token itself (EmailEngine's older path)",
        TAG,
        response=Deleted,
        errors={**_NOT_FOUND, 409: "The token is configured in the settings"},
        permission=_DELETE,
    ),
]
