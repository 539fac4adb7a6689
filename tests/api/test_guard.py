"""Token restrictions (addresses, referrers, rate limits), ?access_token= and the audit log,
through the real application."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from sqlalchemy import select
from structlog.testing import capture_logs

from relay.api import guard
from relay.api.keys import AUDIT_LOG, RATE_LIMITER, SETTINGS, STORE
from relay.auth.api_tokens import new_id, new_token
from relay.auth.grants import Grant, Permission, RateLimit, Restrictions
from relay.auth.ratelimit import RateLimiter
from relay.config import SendSettings, Settings, StoreSettings
from relay.errors import Forbidden, RateLimited
from relay.store import Store, tokens
from relay.store import token_log as token_log_store
from relay.store.batched import Appends
from relay.store.schema import token_log
from tests.api.helpers import call
from tests.conftest import MakeClient

ACCOUNT = {
    "account": "pw",
    "name": "Password user",
    "email": "pw@example.com",
    "imap": {
        "host": "127.0.0.1",
        "port": 1143,
        "secure": False,
        "auth": {"user": "pw@example.com", "pass": "hunter2-imap"},
    },
    "smtp": {
        "host": "127.0.0.1",
        "port": 1025,
        "auth": {"user": "pw@example.com", "pass": "hunter2-smtp"},
    },
}


def with_security(settings: Settings, **changes: Any) -> Settings:
    security = dataclasses.replace(settings.security, **changes)
    # Submits are queued only: nothing tries to reach the account's SMTP server.
    return dataclasses.replace(settings, security=security, send=SendSettings(deliver=False))


async def start(make_client: MakeClient, settings: Settings, **security: Any) -> TestClient:
    """The relay with an account ``pw`` (added with the configured full token)."""
    client = await make_client(with_security(settings, **security))
    await call(client, "POST", "/v1/account", ACCOUNT)
    return client


async def issue(client: TestClient, **grant: Any) -> tuple[str, str]:
    """A new token with ``grant`` stored directly; returns (token, id)."""
    token, token_id = new_token(), new_id()
    async with client.app[STORE].write() as conn:
        await tokens.create(
            conn, token, Grant(token_id=token_id, **grant), description="test", source="api"
        )
    return token, token_id


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def networks(*cidrs: str) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


async def test_address_restriction(make_client: MakeClient, settings: Settings) -> None:
    """A token limited to an address range is refused from outside it and admitted inside;
    X-Forwarded-For is ignored without trusted proxies."""
    client = await start(make_client, settings)
    outside, _ = await issue(
        client, account="pw", restrictions=Restrictions(addresses=networks("10.0.0.0/8"))
    )
    inside, _ = await issue(
        client, account="pw", restrictions=Restrictions(addresses=networks("127.0.0.0/8"))
    )
    resp = await client.get("/v1/account/pw", headers=bearer(outside))
    body = await resp.json()
    assert resp.status == 403, body
    assert body["code"] == "Forbidden"
    assert body["message"] == "Access from this address is not allowed for this token"
    assert "field" not in body
    # The test client connects from 127.0.0.1: claiming 10.1.2.3 changes nothing.
    resp = await client.get(
        "/v1/account/pw", headers=bearer(outside, **{"X-Forwarded-For": "10.1.2.3"})
    )
    assert resp.status == 403
    resp = await client.get("/v1/account/pw", headers=bearer(inside))
    assert resp.status == 200, await resp.text()


async def test_forwarded_for_from_trusted_proxy(
    make_client: MakeClient, settings: Settings
) -> None:
    """With the connecting address a trusted proxy, the right-most untrusted
    X-Forwarded-For address is the client's."""
    client = await start(make_client, settings, trusted_proxies=("127.0.0.0/8",))
    token, _ = await issue(
        client, account="pw", restrictions=Restrictions(addresses=networks("10.0.0.0/8"))
    )
    admitted = [
        "10.1.2.3",
        "192.0.2.9, 10.1.2.3",  # the client's own claim (left) is not believed
        "10.1.2.3, 127.0.0.2",  # a second proxy of ours in the chain
    ]
    for forwarded in admitted:
        resp = await client.get(
            "/v1/account/pw", headers=bearer(token, **{"X-Forwarded-For": forwarded})
        )
        assert resp.status == 200, forwarded
    refused = ["192.0.2.9", "10.1.2.3, 192.0.2.9", "garbage", ""]
    for forwarded in refused:
        resp = await client.get(
            "/v1/account/pw", headers=bearer(token, **{"X-Forwarded-For": forwarded})
        )
        assert resp.status == 403, forwarded
    # No header: the proxy itself is the client.
    assert (await client.get("/v1/account/pw", headers=bearer(token))).status == 403


async def test_referrer_restriction(make_client: MakeClient, settings: Settings) -> None:
    """A token limited to referrers needs a Referer starting with one of them."""
    client = await start(make_client, settings)
    token, _ = await issue(
        client, account="pw", restrictions=Restrictions(referrers=("https://app.example.com/",))
    )
    ok = await client.get(
        "/v1/account/pw", headers=bearer(token, Referer="https://app.example.com/inbox")
    )
    assert ok.status == 200
    for headers in ({"Referer": "https://evil.example.com/"}, {}):
        resp = await client.get("/v1/account/pw", headers=bearer(token, **headers))
        body = await resp.json()
        assert resp.status == 403, headers
        assert body["message"] == "Access from this referrer is not allowed for this token"


async def test_rate_limit_under_concurrency(make_client: MakeClient, settings: Settings) -> None:
    """50 concurrent requests with a limit of 10: exactly 10 admitted, the rest 429 with
    Retry-After and RateLimit-* headers."""
    client = await start(make_client, settings)
    token, _ = await issue(
        client, account="pw", restrictions=Restrictions(rate_limit=RateLimit(10, 60.0))
    )

    async def one() -> tuple[int, dict[str, str], dict[str, Any]]:
        resp = await client.get("/v1/account/pw", headers=bearer(token))
        return resp.status, dict(resp.headers), await resp.json()

    results = await asyncio.gather(*(one() for _ in range(50)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 10 + [429] * 40
    remaining = sorted(int(h["RateLimit-Remaining"]) for s, h, _ in results if s == 200)
    assert remaining == list(range(10))
    for status, headers, body in results:
        assert headers["RateLimit-Limit"] == "10"
        assert 1 <= int(headers["RateLimit-Reset"]) <= 60
        if status == 429:
            assert body["code"] == "RateLimited"
            assert body["statusCode"] == 429
            assert headers["RateLimit-Remaining"] == "0"
            assert 1 <= int(headers["Retry-After"]) <= 6
        else:
            assert "Retry-After" not in headers
    # Another token is not affected, and an unlimited one carries no RateLimit headers.
    other, _ = await issue(
        client, account="pw", restrictions=Restrictions(rate_limit=RateLimit(10, 60.0))
    )
    assert (await client.get("/v1/account/pw", headers=bearer(other))).status == 200
    full = await client.get("/v1/account/pw")
    assert full.status == 200
    assert "RateLimit-Limit" not in full.headers


async def test_query_token_can_be_turned_off(make_client: MakeClient, settings: Settings) -> None:
    """With security.query_token false, ?access_token= is refused with 401 naming the header;
    the header still works."""
    client = await make_client(with_security(settings, query_token=False), token=None)
    token = settings.security.api_token
    resp = await client.get(f"/v1/accounts?access_token={token}")
    body = await resp.json()
    assert resp.status == 401
    assert "Authorization: Bearer" in body["message"]
    assert (await client.get("/v1/accounts", headers=bearer(token))).status == 200


async def _log(client: TestClient) -> list[dict[str, Any]]:
    async with client.app[STORE].read() as conn:
        rows = await conn.execute(select(token_log).order_by(token_log.c.seq))
        return [dict(r) for r in rows.mappings()]


async def test_audit_log_records_writes_sends_and_deletes(
    make_client: MakeClient, settings: Settings
) -> None:
    """A write, a send and a delete are one entry each with route template, account, status
    and address; a read is none; no entry holds a token, a password or a body."""
    client = await start(make_client, settings)
    bound, bound_id = await issue(client, account="pw")
    full, full_id = await issue(client)
    created = await call(client, "POST", "/v1/webhooks", {"url": "https://hooks.example.com/"}, 201)
    before = await _log(client)

    assert (await client.get("/v1/account/pw", headers=bearer(bound))).status == 200
    assert await _log(client) == before
    resp = await client.put(
        "/v1/account/pw",
        json={"name": "Renamed", "imap": {"auth": {"pass": "new-imap-password"}}},
        headers=bearer(bound),
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post(
        "/v1/account/pw/submit?access_token=ignored-by-header",
        json={
            "from": {"address": "pw@example.com"},
            "to": [{"address": "someone@example.com"}],
            "subject": "Quarterly numbers",
            "text": "The secret plan is in the attachment.",
        },
        headers=bearer(bound),
    )
    assert resp.status == 200, await resp.text()
    resp = await client.delete(f"/v1/webhooks/{created['id']}", headers=bearer(full))
    assert resp.status == 200, await resp.text()
    # A refused write is recorded with its status too.
    resp = await client.put("/v1/account/nope", json={"name": "x"}, headers=bearer(full))
    assert resp.status == 404

    entries = [
        {k: v for k, v in e.items() if k not in ("seq", "created_ms")} for e in await _log(client)
    ]
    assert entries[len(before) :] == [
        {
            "token_id": bound_id,
            "method": "PUT",
            "route": "/v1/account/{account}",
            "account": "pw",
            "status": 200,
            "address": "127.0.0.1",
        },
        {
            "token_id": bound_id,
            "method": "POST",
            "route": "/v1/account/{account}/submit",
            "account": "pw",
            "status": 200,
            "address": "127.0.0.1",
        },
        {
            "token_id": full_id,
            "method": "DELETE",
            "route": "/v1/webhooks/{id}",
            "account": None,
            "status": 200,
            "address": "127.0.0.1",
        },
        {
            "token_id": full_id,
            "method": "PUT",
            "route": "/v1/account/{account}",
            "account": "nope",
            "status": 404,
            "address": "127.0.0.1",
        },
    ]
    dump = json.dumps(await _log(client))
    for secret in (bound, full, "new-imap-password", "hunter2", "Quarterly", "secret plan"):
        assert secret not in dump
    assert "access_token" not in dump


async def test_audit_write_failure_is_logged_not_raised(tmp_path: Path) -> None:
    """When the audit entry cannot be written it is logged and the request's answer stands."""
    app = web.Application()
    app[SETTINGS] = Settings()
    # A database without the token_log table: every audit write fails.
    app[STORE] = Store.open(StoreSettings(url=f"sqlite:///{tmp_path / 'empty.db'}"))
    app[AUDIT_LOG] = Appends(app[STORE], token_log_store.append)
    app.router.add_put("/v1/account/{account}", mock.AsyncMock())
    request = make_mocked_request("PUT", "/v1/account/pw", app=app)
    match_info = await app.router.resolve(request)  # the real route, not a mock
    match_info.add_app(app)
    request._match_info = match_info
    try:
        with capture_logs() as logs:
            await guard.audit(request, Grant(token_id="t1"), Permission("account", "write"), 200)
    finally:
        await app[STORE].close()
    assert [e["event"] for e in logs] == ["audit log write failed"]
    assert logs[0]["route"] == "/v1/account/{account}"
    assert logs[0]["account"] == "pw"


def _request(peer: str, settings: Settings, headers: dict[str, str] | None = None) -> web.Request:
    """A request from ``peer`` to an application holding only what admit reads."""
    app = web.Application()
    app[SETTINGS] = settings
    app[RATE_LIMITER] = RateLimiter()
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default
    )
    return make_mocked_request("GET", "/v1/account/pw", headers, app=app, transport=transport)


@pytest.mark.parametrize(
    ("peer", "trusted", "forwarded", "client"),
    [
        ("192.0.2.1", (), "10.0.0.1", "192.0.2.1"),
        ("10.9.0.1", ("10.9.0.0/16",), "203.0.113.5", "203.0.113.5"),
        ("10.9.0.1", ("10.9.0.0/16",), "198.51.100.1, 203.0.113.5, 10.9.0.2", "203.0.113.5"),
        ("10.9.0.1", ("10.9.0.0/16",), None, "10.9.0.1"),
        ("10.9.0.1", ("10.9.0.0/16",), "10.9.0.3, 10.9.0.2", "10.9.0.3"),
        ("192.0.2.1", ("10.9.0.0/16",), "203.0.113.5", "192.0.2.1"),
        ("::1", ("::1/128",), "2001:db8::7", "2001:db8::7"),
    ],
)
def test_client_address(
    peer: str, trusted: tuple[str, ...], forwarded: str | None, client: str
) -> None:
    """X-Forwarded-For is read only from a trusted proxy, right to left past our proxies."""
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else None
    request = _request(peer, with_security(Settings(), trusted_proxies=trusted), headers)
    assert guard.client_address(request) == client


async def test_admit_counts_without_yielding() -> None:
    """admit checks and counts before any await: 50 concurrent calls admit exactly 10."""
    grant = Grant(token_id="t", restrictions=Restrictions(rate_limit=RateLimit(10, 1.0)))
    request = _request("192.0.2.1", Settings())

    async def one() -> str | None:
        try:
            await guard.admit(request, grant)
        except RateLimited as exc:
            return exc.headers["Retry-After"]
        return None

    outcomes = await asyncio.gather(*(one() for _ in range(50)))
    assert outcomes.count(None) == 10
    assert set(outcomes) - {None} == {"1"}
    restricted = Grant(token_id="u", restrictions=Restrictions(addresses=networks("10.0.0.0/8")))
    with pytest.raises(Forbidden):
        await guard.admit(request, restricted)
