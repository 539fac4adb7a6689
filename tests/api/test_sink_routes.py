"""Queue sink routes through /v1/webhooks: validation, passwords kept out of answers and
stored encrypted, updates checked as a whole, the OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from relay.api.keys import CIPHER, STORE
from relay.store.schema import webhook_routes
from relay.webhooks.routes import route_from_row
from tests.api.helpers import call

PASSWORD = "broker-pa55word-value"
AMQP = {
    "type": "amqp",
    "url": f"amqp://relay:{PASSWORD}@mq.example.com:5672/mail",
    "exchange": "mail.events",
    "routingKeyPrefix": "relay",
}
NATS = {"type": "nats", "url": f"nats://relay:{PASSWORD}@nats.example.com:4222", "subject": "mail"}
REDIS = {"type": "redis", "url": f"redis://:{PASSWORD}@redis.example.com:6379/2", "stream": "mail"}


async def _stored(client: TestClient) -> str:
    async with client.app[STORE].read() as conn:
        rows = (await conn.execute(select(webhook_routes))).mappings().all()
    return repr([dict(r) for r in rows])


@pytest.mark.parametrize("route", [AMQP, NATS, REDIS], ids=["amqp", "nats", "redis"])
async def test_sink_route_never_shows_or_stores_its_password(
    client: TestClient, route: dict[str, Any]
) -> None:
    """Create, read, list and update answer the broker URL with the password as ***; the
    stored row holds it only encrypted."""
    created = await call(client, "POST", "/v1/webhooks", route, status=201)
    assert created["type"] == route["type"]
    assert PASSWORD not in json.dumps(created)
    assert created["url"] == route["url"].replace(PASSWORD, "***")
    for key in ("exchange", "routingKeyPrefix", "subject", "stream"):
        assert created.get(key) == route.get(key)
    route_id = created["id"]
    read = await call(client, "GET", f"/v1/webhooks/{route_id}")
    listed = await call(client, "GET", "/v1/webhooks")
    updated = await call(client, "PUT", f"/v1/webhooks/{route_id}", {"description": "d"})
    for answer in (read, listed, updated):
        assert PASSWORD not in json.dumps(answer)
    assert updated["url"] == created["url"]
    assert PASSWORD not in await _stored(client)


async def test_http_routes_are_unchanged(client: TestClient) -> None:
    """A route without a type is an http route, as before, and says so."""
    created = await call(
        client, "POST", "/v1/webhooks", {"url": "https://hooks.example.com/in"}, status=201
    )
    assert created["type"] == "http"
    assert created["url"] == "https://hooks.example.com/in"
    assert "exchange" not in created


BAD = [
    ({**AMQP, "url": "https://mq.example.com/"}, "url"),
    ({**AMQP, "url": "amqp://"}, "url"),
    ({**AMQP, "url": "amqp://mq.example.com:99999/"}, "url"),
    ({**AMQP, "url": "amqp://mq.example.com/?heartbeat=5"}, "url"),
    ({k: v for k, v in AMQP.items() if k != "exchange"}, "exchange"),
    ({**AMQP, "exchange": "has space"}, "exchange"),
    ({**AMQP, "routingKeyPrefix": "a.#"}, "routingKeyPrefix"),
    ({**AMQP, "subject": "mail"}, "subject"),
    ({**AMQP, "headers": {"X-A": "b"}}, "headers"),
    ({**NATS, "url": "nats://nats.example.com:4222/path"}, "url"),
    ({k: v for k, v in NATS.items() if k != "subject"}, "subject"),
    ({**NATS, "subject": "mail.>"}, "subject"),
    ({**NATS, "subject": "mail..x"}, "subject"),
    ({**NATS, "stream": "a.b"}, "stream"),
    ({**NATS, "exchange": "x"}, "exchange"),
    ({**REDIS, "url": "redis://redis.example.com/16"}, "url"),
    ({**REDIS, "url": "redis://redis.example.com/zero"}, "url"),
    ({k: v for k, v in REDIS.items() if k != "stream"}, "stream"),
    ({**REDIS, "maxLen": 0}, "maxLen"),
    ({**REDIS, "routingKeyPrefix": "x"}, "routingKeyPrefix"),
    ({**REDIS, "type": "kafka"}, "type"),
    ({"url": "https://hooks.example.com/", "stream": "s"}, "stream"),
    ({"url": "amqp://mq.example.com/"}, "url"),
]


async def test_bad_sink_route_is_a_400_naming_the_field(client: TestClient) -> None:
    """A URL or sink field that does not fit the route's type is refused, naming the field;
    nothing is stored."""
    for body, field in BAD:
        err = await call(client, "POST", "/v1/webhooks", body, status=400)
        assert err["field"] == field, (body, err)
        assert PASSWORD not in json.dumps(err)
    assert (await call(client, "GET", "/v1/webhooks"))["total"] == 0


async def test_update_checks_the_route_as_a_whole(client: TestClient) -> None:
    """PUT merges with what is stored: a sink field alone changes, null removes an optional
    one, a field of another type is refused, a new type needs its URL and drops the old
    type's fields, and the stored password survives changes that do not give a URL."""
    created = await call(client, "POST", "/v1/webhooks", AMQP, status=201)
    path = f"/v1/webhooks/{created['id']}"
    changed = await call(client, "PUT", path, {"exchange": "other"})
    assert changed["exchange"] == "other"
    assert changed["routingKeyPrefix"] == "relay"
    changed = await call(client, "PUT", path, {"routingKeyPrefix": None})
    assert "routingKeyPrefix" not in changed
    err = await call(client, "PUT", path, {"stream": "s"}, status=400)
    assert err["field"] == "stream"
    err = await call(client, "PUT", path, {"exchange": None}, status=400)
    assert err["field"] == "exchange"
    err = await call(client, "PUT", path, {"type": "redis"}, status=400)
    assert err["field"] == "url"
    async with client.app[STORE].read() as conn:
        row = (
            (await conn.execute(select(webhook_routes).where(webhook_routes.c.id == created["id"])))
            .mappings()
            .one()
        )
    assert route_from_row(row, client.app[CIPHER], 0).url == AMQP["url"], "password kept"
    moved = await call(client, "PUT", path, {"type": "redis", "url": REDIS["url"], "stream": "s"})
    assert moved["type"] == "redis"
    assert "exchange" not in moved
    assert moved["stream"] == "s"
    back = await call(
        client, "PUT", path, {"type": "http", "url": "https://hooks.example.com/x", "stream": None}
    )
    assert back["type"] == "http"
    assert back["url"] == "https://hooks.example.com/x"
    assert "stream" not in back
    assert PASSWORD not in await _stored(client)


async def test_openapi_describes_route_types_and_sink_fields(client: TestClient) -> None:
    """The OpenAPI document lists the route types and each sink field."""
    resp = await client.get("/openapi.json")
    doc = await resp.json()
    schemas = doc["components"]["schemas"]
    create = schemas["RouteCreate"]["properties"]
    assert set(create["type"]["enum"]) == {"http", "amqp", "nats", "redis"}
    for field in ("exchange", "routingKeyPrefix", "subject", "stream", "maxLen"):
        assert field in create, field
        assert field in schemas["RouteOut"]["properties"], field
    assert "***" in schemas["RouteOut"]["properties"]["url"]["description"]
