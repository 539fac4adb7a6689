"""The webhook routes and settings API (delivery itself is tested in tests/webhooks)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from relay.api.keys import STORE
from relay.store.schema import deliveries, settings, webhook_routes
from tests.api.helpers import call

ROUTE = {"url": "https://hooks.example.com/in", "events": ["messageNew", "accountAdded"]}


async def test_secret_returned_once_and_encrypted(client: TestClient) -> None:
    """Create returns the whsec_ secret; reads never do; the store holds it encrypted."""
    created = await call(
        client, "POST", "/v1/webhooks", {**ROUTE, "headers": {"X-Api-Key": "k-123"}}, status=201
    )
    assert created["secret"].startswith("whsec_")
    route = await call(client, "GET", f"/v1/webhooks/{created['id']}")
    assert "secret" not in route
    assert route["headers"] == {"X-Api-Key": "[redacted]"}
    listing = await call(client, "GET", "/v1/webhooks")
    text = json.dumps(listing)
    assert created["secret"] not in text
    assert "k-123" not in text
    async with client.app[STORE].read() as conn:
        (row,) = (await conn.execute(select(webhook_routes))).mappings().all()
    assert created["secret"].encode() not in row["secret"]
    assert "k-123" not in json.dumps(row["headers"])


async def test_rotation_returns_new_secret_and_marks_overlap(client: TestClient) -> None:
    """rotateSecret issues a new secret and keeps the old one signing for a while."""
    created = await call(client, "POST", "/v1/webhooks", ROUTE, status=201)
    rotated = await call(client, "PUT", f"/v1/webhooks/{created['id']}", {"rotateSecret": True})
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != created["secret"]
    assert rotated["secretRotating"] is True


async def test_events_are_fanned_out_to_matching_routes(client: TestClient) -> None:
    """An event queues one delivery per matching route (event and account filters)."""
    all_events = await call(
        client, "POST", "/v1/webhooks", {"url": "https://a.example.com/"}, status=201
    )
    only_new = await call(
        client,
        "POST",
        "/v1/webhooks",
        {"url": "https://b.example.com/", "events": ["messageNew"]},
        status=201,
    )
    other_acct = await call(
        client,
        "POST",
        "/v1/webhooks",
        {"url": "https://c.example.com/", "accounts": ["other"]},
        status=201,
    )
    await call(client, "PUT", f"/v1/webhooks/{all_events['id']}", {"enabled": False})
    body = {
        "account": "pw",
        "name": "P",
        "email": "pw@example.com",
        "imap": {"host": "127.0.0.1", "auth": {"user": "u", "pass": "p"}},
    }
    await call(client, "POST", "/v1/account", body)
    async with client.app[STORE].read() as conn:
        rows = (await conn.execute(select(deliveries.c.route_id))).scalars().all()
    # A disabled route still queues (nothing is lost while it is off); filters exclude the others.
    assert rows == [all_events["id"]]
    assert only_new["id"] not in rows
    assert other_acct["id"] not in rows


async def test_settings_drive_default_route(client: TestClient) -> None:
    """POST /v1/settings webhooks creates the default route; later calls update it."""
    out = await call(
        client,
        "POST",
        "/v1/settings",
        {
            "webhooks": "https://ee.example.com/hook",
            "webhookEvents": ["messageNew"],
            "serviceSecret": "a-service-secret",
        },
    )
    assert out["webhooksSecret"].startswith("whsec_")
    assert out["updated"] == ["serviceSecret", "webhookEvents", "webhooks"]
    read = await call(client, "GET", "/v1/settings")
    assert read == {
        "webhooks": "https://ee.example.com/hook",
        "webhookEvents": ["messageNew"],
        "webhooksEnabled": True,
        "serviceUrl": "https://relay.example.com",
        "serviceSecret": True,
        "serviceSecretSet": True,
    }
    asked = await call(client, "GET", "/v1/settings?webhooks=true&notifyText=true&serviceSecret=1")
    assert asked == {
        "webhooks": "https://ee.example.com/hook",
        "notifyText": None,
        "serviceSecret": True,
    }
    again = await call(
        client,
        "POST",
        "/v1/settings",
        {"webhooksEnabled": False, "serviceUrl": "https://relay2.example.com/"},
    )
    assert "webhooksSecret" not in again
    read = await call(client, "GET", "/v1/settings")
    assert read["webhooksEnabled"] is False
    assert read["serviceUrl"] == "https://relay2.example.com"
    async with client.app[STORE].read() as conn:
        stored = json.dumps((await conn.execute(select(settings.c.value))).scalars().all())
    assert "a-service-secret" not in stored


BAD_ROUTES = [
    ({"url": "ftp://x.example.com/"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"events": ["messageNope"]}, "events.0"),
    ({"events": []}, "events"),
    ({"headers": {"webhook-signature": "x"}}, "headers"),
    ({"headers": {"User-Agent": "x"}}, "headers"),
    ({"headers": {"Transfer-Encoding": "chunked"}}, "headers"),
    ({"headers": {"bad header": "x"}}, "headers"),
    ({"headers": {"X-A": "a\r\nb"}}, "headers"),
    ({"retrySchedule": [-1]}, "retrySchedule.0"),
    ({"retrySchedule": []}, "retrySchedule"),
    ({"ordering": "lifo"}, "ordering"),
    ({"accounts": ["a/b"]}, "accounts.0"),
    ({"surprise": True}, "surprise"),
]


@pytest.mark.parametrize(("patch", "field"), BAD_ROUTES)
async def test_bad_route_input(client: TestClient, patch: dict[str, Any], field: str) -> None:
    """Malformed routes are 400s naming the field; nothing is stored."""
    err = await call(client, "POST", "/v1/webhooks", {**ROUTE, **patch}, status=400)
    assert err["field"] == field, err
    assert (await call(client, "GET", "/v1/webhooks"))["total"] == 0


async def test_unknown_route_and_delivery(client: TestClient) -> None:
    """Unknown ids are 404s."""
    for method, path in (
        ("GET", "/v1/webhooks/nope"),
        ("DELETE", "/v1/webhooks/nope"),
        ("GET", "/v1/webhooks/nope/deliveries"),
        ("POST", "/v1/deliveries/12345/retry"),
        ("POST", "/v1/deliveries/abc/retry"),
    ):
        err = await call(client, method, path, status=404)
        assert err["code"] == "NotFound"
    await call(
        client, "POST", "/v1/webhooks/nope/recover", {"since": "2026-01-01T00:00:00Z"}, status=404
    )
    created = await call(client, "POST", "/v1/webhooks", ROUTE, status=201)
    err = await call(
        client, "POST", f"/v1/webhooks/{created['id']}/recover", {"since": "yesterday"}, status=400
    )
    assert err["field"] == "since"
    for until in ("2026-01-01T00:00:00Z", "2026-01-01T00:30:00+01:00", "soon"):
        err = await call(
            client,
            "POST",
            f"/v1/webhooks/{created['id']}/recover",
            {"since": "2026-01-01T00:00:00Z", "until": until},
            status=400,
        )
        assert err["field"] == "until", until
    ok = await call(
        client,
        "POST",
        f"/v1/webhooks/{created['id']}/recover",
        {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:01Z"},
    )
    assert ok == {"requeued": 0}


async def test_emailengine_event_names_are_accepted_in_filters(client: TestClient) -> None:
    """An integration written for EmailEngine may name its events (messageMissing, trackOpen)
    in webhookEvents and route filters; names nobody has are still refused."""
    await call(
        client,
        "POST",
        "/v1/settings",
        {
            "webhooks": "https://ee.example.com/hook",
            "webhookEvents": ["messageNew", "messageMissing"],
        },
    )
    read = await call(client, "GET", "/v1/settings")
    assert read["webhookEvents"] == ["messageNew", "messageMissing"]
    route = {"url": "https://b.example.com/", "events": ["trackOpen", "mailboxNew"]}
    await call(client, "POST", "/v1/webhooks", route, status=201)
    refused = await call(
        client, "POST", "/v1/settings", {"webhookEvents": ["messageNope"]}, status=400
    )
    assert refused["field"] == "webhookEvents.0"
