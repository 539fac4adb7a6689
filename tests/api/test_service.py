"""API tokens, health, metrics and the OpenAPI document."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from relay.api.admin.pages import PREFIX as ADMIN
from relay.config import Settings
from tests.api.helpers import call
from tests.conftest import MakeClient


async def test_v1_needs_a_token(make_client: MakeClient, settings: Settings) -> None:
    """Without a token, or with a wrong one, /v1 answers 401 JSON."""
    anon = await make_client(settings, token=None)
    resp = await anon.get("/v1/accounts")
    assert resp.status == 401
    body = await resp.json()
    assert body["statusCode"] == 401
    assert body["code"] == "Unauthorized"
    resp = await anon.get("/v1/accounts", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    resp = await anon.get("/v1/accounts", headers={"Authorization": "Basic abc"})
    assert resp.status == 401


async def test_token_as_query_argument(make_client: MakeClient, settings: Settings) -> None:
    """EmailEngine clients may pass the token as ?access_token=."""
    anon = await make_client(settings, token=None)
    resp = await anon.get(f"/v1/accounts?access_token={settings.security.api_token}")
    assert resp.status == 200


async def test_health_is_public_and_metrics_count(
    make_client: MakeClient, settings: Settings
) -> None:
    """/health checks the store without a token; /metrics (with one) exposes Prometheus text
    including request counters."""
    anon = await make_client(settings, token=None)
    health = await anon.get("/health")
    assert health.status == 200
    assert (await health.json())["store"] == "ok"
    await anon.get("/v1/accounts")
    metrics = await anon.get(
        "/metrics", headers={"Authorization": f"Bearer {settings.security.api_token}"}
    )
    text = await metrics.text()
    assert metrics.status == 200
    assert 'relay_http_requests_total{method="GET",route="/v1/accounts",status="401"} 1.0' in text
    assert 'relay_accounts{state="init"}' in text


async def test_unknown_route_is_json_404(client: TestClient) -> None:
    """Unknown paths and methods get the JSON error shape."""
    err = await call(client, "GET", "/v1/nothing-here", status=404)
    assert err["code"] == "NotFound"
    err = await call(client, "PATCH", "/v1/accounts", status=405)
    assert err["statusCode"] == 405


async def test_openapi_describes_every_route(client: TestClient) -> None:
    """Every registered route appears in /openapi.json with its method, except the admin
    UI's HTML pages and files (``/admin``), which are not part of the API."""
    doc = await call(client, "GET", "/openapi.json")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    registered = {
        (r.method, r.resource.canonical)
        for r in client.app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    admin = {(m, p) for m, p in registered if p == ADMIN or p.startswith(ADMIN + "/")}
    assert ("GET", f"{ADMIN}/outbox") in admin
    assert not {p for p in doc["paths"] if p.startswith(ADMIN)}
    assert registered - admin == documented
    create = doc["paths"]["/v1/account"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "AccountCreate"
    )
    assert "401" in create["responses"]
