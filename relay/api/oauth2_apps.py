"""``/v1/oauth2``: OAuth2 applications (EmailEngine-compatible).

``provider`` is ``outlook`` (delegated: a user consents, the relay holds refresh tokens) or
``outlookService`` (app-only: client credentials, needs a tenant id as ``authority``).
The client secret is encrypted at rest and never returned; responses say whether one is set.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, Field, HttpUrl, model_validator

from relay.api.endpoint import Endpoint, json_response, read_body, read_query
from relay.api.keys import CIPHER, STORE
from relay.api.models import Body, Deleted, Out, Paging, Text
from relay.auth.grants import Permission
from relay.errors import Conflict, InputError, NotFound
from relay.events.model import iso_ms
from relay.store import oauth2_apps as apps_store

TAG = "OAuth2 applications"
_TENANT_ALIASES = ("common", "organizations", "consumers")
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,253}$")


def _authority(value: str) -> str:
    if value not in _TENANT_ALIASES and not _TENANT_ID.match(value):
        raise ValueError("must be common, organizations, consumers, a tenant id or a tenant domain")
    return value


def _scope(value: str) -> str:
    if not value or any(c.isspace() for c in value) or len(value) > 256:
        raise ValueError("must be a single scope without spaces")
    return value


Scope = Annotated[str, AfterValidator(_scope)]
Authority = Annotated[str, AfterValidator(_authority)]
Provider = Literal["outlook", "outlookService"]
BaseScopes = Literal["imap", "api"]


class AppCreate(Body):
    name: Text = Field(min_length=1)
    description: Text = ""
    provider: Provider
    enabled: bool = True
    clientId: Annotated[str, Field(min_length=1, max_length=256)]
    clientSecret: Annotated[str | None, Field(max_length=1024)] = None
    authority: Authority = "common"
    redirectUrl: HttpUrl | None = None
    baseScopes: BaseScopes = "imap"
    extraScopes: list[Scope] = Field(default_factory=list, max_length=50)
    skipScopes: list[Scope] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _app_only_rules(self) -> AppCreate:
        _check_provider_rules(self.provider, self.authority, self.clientSecret)
        return self


_NOT_NULL = ("name", "enabled", "clientId", "authority", "baseScopes", "extraScopes", "skipScopes")


class AppUpdate(Body):
    name: Annotated[Text | None, Field(min_length=1)] = None
    description: Text | None = None
    enabled: bool | None = None
    clientId: Annotated[str | None, Field(min_length=1, max_length=256)] = None
    clientSecret: Annotated[str | None, Field(max_length=1024)] = None
    authority: Authority | None = None
    redirectUrl: HttpUrl | None = None
    baseScopes: BaseScopes | None = None
    extraScopes: list[Scope] | None = Field(default=None, max_length=50)
    skipScopes: list[Scope] | None = Field(default=None, max_length=50)

    @model_validator(mode="after")
    def _no_null_for_required(self) -> AppUpdate:
        for key in _NOT_NULL:
            if key in self.model_fields_set and getattr(self, key) is None:
                raise InputError(f"{key}: must not be null", field=key)
        return self


class AppCreated(Out):
    id: str
    created: bool = True


class AppUpdated(Out):
    id: str
    updated: bool = True


class AppDeleted(Deleted):
    id: str


class AppOut(Out):
    id: str
    name: str
    description: str
    provider: Provider
    enabled: bool
    clientId: str
    hasClientSecret: bool
    authority: str
    redirectUrl: str | None = None
    baseScopes: BaseScopes
    extraScopes: list[str]
    skipScopes: list[str]
    created: str
    updated: str


class AppList(Out):
    total: int
    page: int
    pages: int
    apps: list[AppOut]


def _check_provider_rules(provider: str, authority: str, client_secret: str | None) -> None:
    if provider == "outlookService":
        if authority in _TENANT_ALIASES:
            raise InputError(
                "authority: an app-only (outlookService) application needs a tenant id,"
                f" not {authority!r}",
                field="authority",
            )
        if not client_secret:
            raise InputError(
                "clientSecret: an app-only (outlookService) application needs a client secret",
                field="clientSecret",
            )


def secret_context(app_id: str) -> str:
    return f"oauth2_apps/{app_id}/client_secret"


def app_out(row: Any) -> AppOut:
    return AppOut(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        provider=row["provider"],
        enabled=bool(row["enabled"]),
        clientId=row["client_id"],
        hasClientSecret=row["client_secret"] is not None,
        authority=row["authority"],
        redirectUrl=row["redirect_url"],
        baseScopes=row["base_scopes"],
        extraScopes=list(row["extra_scopes"]),
        skipScopes=list(row["skip_scopes"]),
        created=iso_ms(row["created_ms"]),
        updated=iso_ms(row["updated_ms"]),
    )


async def create_app(request: web.Request) -> web.Response:
    body = await read_body(request, AppCreate)
    app_id = secrets.token_urlsafe(9)
    cipher = request.app[CIPHER]
    secret = (
        cipher.encrypt(body.clientSecret.encode(), context=secret_context(app_id))
        if body.clientSecret
        else None
    )
    async with request.app[STORE].write() as conn:
        await apps_store.insert(
            conn,
            {
                "id": app_id,
                "name": body.name,
                "description": body.description,
                "provider": body.provider,
                "client_id": body.clientId,
                "client_secret": secret,
                "authority": body.authority,
                "redirect_url": str(body.redirectUrl) if body.redirectUrl else None,
                "base_scopes": body.baseScopes,
                "extra_scopes": body.extraScopes,
                "skip_scopes": body.skipScopes,
                "enabled": int(body.enabled),
            },
        )
    return json_response(AppCreated(id=app_id))


async def list_apps(request: web.Request) -> web.Response:
    paging = read_query(request, Paging)
    async with request.app[STORE].read() as conn:
        total, rows = await apps_store.page(conn, paging.page * paging.pageSize, paging.pageSize)
    pages = max(1, -(-total // paging.pageSize))
    return json_response(
        AppList(total=total, page=paging.page, pages=pages, apps=[app_out(r) for r in rows])
    )


async def get_app(request: web.Request) -> web.Response:
    app_id = request.match_info["app"]
    async with request.app[STORE].read() as conn:
        row = await apps_store.get(conn, app_id)
    if row is None:
        raise NotFound(f"OAuth2 application {app_id!r} not found", field="app")
    return json_response(app_out(row))


async def update_app(request: web.Request) -> web.Response:
    app_id = request.match_info["app"]
    body = await read_body(request, AppUpdate)
    changes = body.model_dump(exclude_unset=True)
    async with request.app[STORE].write() as conn:
        row = await apps_store.get(conn, app_id)
        if row is None:
            raise NotFound(f"OAuth2 application {app_id!r} not found", field="app")
        values: dict[str, Any] = {}
        columns = {
            "name": "name",
            "description": "description",
            "clientId": "client_id",
            "authority": "authority",
            "baseScopes": "base_scopes",
            "extraScopes": "extra_scopes",
            "skipScopes": "skip_scopes",
        }
        for key, column in columns.items():
            if key in changes:
                values[column] = changes[key] if changes[key] is not None else ""
        if "enabled" in changes:
            values["enabled"] = int(bool(changes["enabled"]))
        if "redirectUrl" in changes:
            values["redirect_url"] = str(body.redirectUrl) if body.redirectUrl else None
        secret_set = row["client_secret"] is not None
        if "clientSecret" in changes:
            secret_set = bool(body.clientSecret)
            values["client_secret"] = (
                request.app[CIPHER].encrypt(
                    body.clientSecret.encode(), context=secret_context(app_id)
                )
                if body.clientSecret
                else None
            )
        _check_provider_rules(
            row["provider"],
            values.get("authority", row["authority"]),
            "set" if secret_set else None,
        )
        await apps_store.update(conn, app_id, values)
    return json_response(AppUpdated(id=app_id))


async def delete_app(request: web.Request) -> web.Response:
    app_id = request.match_info["app"]
    async with request.app[STORE].write() as conn:
        if await apps_store.get(conn, app_id) is None:
            raise NotFound(f"OAuth2 application {app_id!r} not found", field="app")
        users = await apps_store.users_of(conn, app_id)
        if users:
            raise Conflict(
                f"OAuth2 application {app_id!r} is used by accounts {', '.join(users[:10])};"
                " delete or change them first",
                field="app",
            )
        await apps_store.delete(conn, app_id)
    return json_response(AppDeleted(id=app_id))


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/oauth2",
        create_app,
        "Register an OAuth2 application",
        TAG,
        body=AppCreate,
        response=AppCreated,
        permission=Permission("oauth2", "write"),
    ),
    Endpoint(
        "GET",
        "/v1/oauth2",
        list_apps,
        "List OAuth2 applications",
        TAG,
        query=Paging,
        response=AppList,
        permission=Permission("oauth2", "read"),
    ),
    Endpoint(
        "GET",
        "/v1/oauth2/{app}",
        get_app,
        "Read an OAuth2 application",
        TAG,
        response=AppOut,
        errors={404: "Unknown application"},
        permission=Permission("oauth2", "read"),
    ),
    Endpoint(
        "PUT",
        "/v1/oauth2/{app}",
        update_app,
        "Update an OAuth2 application",
        TAG,
        body=AppUpdate,
        response=AppUpdated,
        errors={404: "Unknown application"},
        permission=Permission("oauth2", "write"),
    ),
    Endpoint(
        "DELETE",
        "/v1/oauth2/{app}",
        delete_app,
        "Delete an unused OAuth2 application",
        TAG,
        response=AppDeleted,
        errors={404: "Unknown application", 409: "Accounts still use it"},
        permission=Permission("oauth2", "destructive"),
    ),
]
