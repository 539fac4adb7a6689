"""Input at the edges, in process: bodies over the limit, bodies that are not JSON, wrong
content types. Each refused request is checked to leave the store as it was."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from relay.api.body import MAX_DEPTH
from relay.api.keys import STORE
from relay.api.limits import body_limit
from relay.api.routes import endpoints
from relay.config import SendSettings, ServerSettings, Settings
from relay.store.schema import metadata
from tests.api.helpers import call
from tests.conftest import MakeClient

LIMIT = 32768
MESSAGE_LIMIT = 60_000
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
    "smtp": {"host": "127.0.0.1", "port": 1025, "auth": {"user": "pw@example.com", "pass": "x"}},
}
SUBMIT = {"to": [{"address": "rita@example.net"}], "subject": "Hello", "text": "Hi."}
JSON = {"Content-Type": "application/json"}


async def snapshot(client: TestClient, *, audit: bool = True) -> dict[str, list[str]]:
    """Every row of every table (the audit log only with ``audit``: it records refused writes
    that reached their handler, by design). Event stream positions are left out: the node's
    sequencer gives them after each commit, whatever the requests do."""
    out: dict[str, list[str]] = {}
    async with client.app[STORE].read() as conn:
        for table in metadata.sorted_tables:
            if (table.name == "token_log" and not audit) or table.name == "event_stream":
                continue
            columns = [c for c in table.columns if not (table.name == "events" and c.name == "pos")]
            rows = (await conn.execute(select(*columns))).all()
            out[table.name] = sorted(repr(tuple(r)) for r in rows)
    return out


def small(settings: Settings) -> Settings:
    """``settings`` with small body and message limits (and no outbox worker)."""
    return dataclasses.replace(
        settings,
        server=dataclasses.replace(settings.server, max_body_bytes=LIMIT),
        send=SendSettings(deliver=False, max_message_bytes=MESSAGE_LIMIT),
    )


@pytest.fixture
async def relay(make_client: MakeClient, settings: Settings) -> TestClient:
    """A relay with small limits and one password account (``pw``) that can submit."""
    client = await make_client(small(settings))
    await call(client, "POST", "/v1/account", ACCOUNT)
    return client


def padded(size: int, base: dict[str, Any] | None = None) -> bytes:
    """A JSON object of exactly ``size`` bytes: ``base`` plus a padding key."""
    body = {**(base or {}), "pad": ""}
    empty = len(json.dumps(body).encode())
    body["pad"] = "x" * (size - empty)
    raw = json.dumps(body).encode()
    assert len(raw) == size
    return raw


def body_routes() -> list[tuple[str, str, bool]]:
    """(method, path with parameters filled in, carries a message) of every route that reads a
    JSON body, from the route table."""
    return [
        (
            ep.method,
            re.sub(r"\{account\}", "pw", re.sub(r"\{(?!account)\w+\}", "x", ep.path)),
            ep.carries_message,
        )
        for ep in endpoints()
        if ep.body is not None
    ]


def test_body_limit_follows_the_settings() -> None:
    """The limit is server.max_body_bytes; message routes add the message limit as base64."""
    settings = Settings(
        server=ServerSettings(max_body_bytes=5000), send=SendSettings(max_message_bytes=3001)
    )
    (submit,) = [ep for ep in endpoints() if ep.path.endswith("/submit")]
    (account,) = [ep for ep in endpoints() if ep.method == "POST" and ep.path == "/v1/account"]
    assert body_limit(settings, account) == 5000
    assert body_limit(settings, submit) == 5000 + 4004
    assert body_limit(settings, None) == 5000


def route_limit(message: bool) -> int:
    return LIMIT + (-(-MESSAGE_LIMIT // 3) * 4 if message else 0)


async def test_every_body_route_refuses_a_body_over_its_limit(relay: TestClient) -> None:
    """On each route that reads a body (graph notifications included), a body one byte over
    the route's limit is a 413 naming the limit, and nothing is stored, not even in the audit
    log (it is refused before the token is looked at); a body at the limit gets past that."""
    routes = body_routes()
    assert ("POST", "/graph/notify", False) in routes
    assert ("POST", "/v1/account/pw/submit", True) in routes
    before = await snapshot(relay)
    for method, path, message in routes:
        limit = route_limit(message)
        resp = await relay.request(method, path, data=padded(limit + 1), headers=JSON)
        err = await resp.json()
        assert resp.status == 413, (method, path, err)
        assert err == {
            "statusCode": 413,
            "error": "Payload Too Large",
            "message": f"Request body is larger than the limit of {limit} bytes",
            "code": "PayloadTooLarge",
            "field": "body",
        }
    assert await snapshot(relay) == before
    for method, path, message in routes:
        resp = await relay.request(method, path, data=padded(route_limit(message)), headers=JSON)
        assert resp.status != 413, (method, path, await resp.text())


async def chunks(raw: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


@pytest.mark.parametrize(
    ("path", "base"),
    [("/v1/account", ACCOUNT), ("/v1/account/pw/submit", SUBMIT), ("/graph/notify", None)],
)
async def test_chunked_body_over_the_limit(
    relay: TestClient, path: str, base: dict[str, Any] | None
) -> None:
    """A chunked body (no Content-Length) is refused with 413 once it passes the limit, and
    nothing is stored; the same body chunked within the limit is read."""
    limit = route_limit(path.endswith("/submit"))
    # Read by the handler, after authentication: the audit log records the refusal.
    before = await snapshot(relay, audit=False)
    resp = await relay.post(path, data=chunks(padded(limit + 1, base)), headers=JSON)
    err = await resp.json()
    assert resp.status == 413, err
    assert err["message"] == f"Request body is larger than the limit of {limit} bytes"
    assert await snapshot(relay, audit=False) == before
    # Within the limit the chunked body is parsed: the padding key is what is refused.
    resp = await relay.post(path, data=chunks(padded(limit, base)), headers=JSON)
    err = await resp.json()
    assert resp.status == 400, err
    assert err["field"] == ("value" if base is None else "pad")


def attachment(size: int) -> dict[str, str]:
    return {
        "filename": "a.bin",
        "content": base64.b64encode(b"\x01" * size).decode(),
        "contentType": "application/octet-stream",
    }


async def test_submit_takes_a_message_up_to_the_send_limit(relay: TestClient) -> None:
    """A submit whose attachment makes the body far larger than server.max_body_bytes is
    queued when its MIME fits send.max_message_bytes; a larger one is the send limit's 413
    (MessageTooLarge), and nothing is queued."""
    body = {**SUBMIT, "attachments": [attachment(40_000)]}
    assert len(json.dumps(body)) > LIMIT
    queued = await call(relay, "POST", "/v1/account/pw/submit", body)
    assert queued["queueId"]
    before = await snapshot(relay, audit=False)
    body = {**SUBMIT, "attachments": [attachment(45_000)]}
    assert len(json.dumps(body)) < route_limit(True)
    err = await call(relay, "POST", "/v1/account/pw/submit", body, status=413)
    assert err["code"] == "MessageTooLarge"
    assert err["field"] == "attachments"
    assert await snapshot(relay, audit=False) == before


NOT_JSON = [
    pytest.param(b"garbage", "Request body is not valid JSON: Expecting value", id="garbage"),
    pytest.param(
        b'{"account": "pw", "na', "Request body is not valid JSON: Unterminated", id="cut"
    ),
    pytest.param(b"[1, 2]", "Request body must be a JSON object, not an array", id="array"),
    pytest.param(b'"pw"', "Request body must be a JSON object, not a string", id="string"),
    pytest.param(b"42", "Request body must be a JSON object, not a number", id="number"),
    pytest.param(b"null", "Request body must be a JSON object, not null", id="null"),
    pytest.param(b'{"name": "\xff\xfe"}', "Request body is not valid UTF-8 (byte 10)", id="utf8"),
    pytest.param(
        b"[" * 10_000 + b"]" * 10_000,
        f"Request body is nested more than {MAX_DEPTH} levels deep",
        id="deep-10000",
    ),
    pytest.param(
        b'{"a":' * 100 + b"1" + b"}" * 100,
        f"Request body is nested more than {MAX_DEPTH} levels deep",
        id="deep-100",
    ),
    pytest.param(b'{"name": NaN}', "Request body is not valid JSON: NaN is not", id="nan"),
    pytest.param(b'{"name": "\\ud800"}', "Request body has a string with a lone", id="surrogate"),
]


@pytest.mark.parametrize(("raw", "message"), NOT_JSON)
async def test_body_that_is_not_a_json_object(relay: TestClient, raw: bytes, message: str) -> None:
    """A body that is not a JSON object (garbage, cut short, another JSON value, invalid UTF-8,
    nested 10,000 deep, NaN, a lone surrogate) is a 400 naming the body on every kind of body
    route, and nothing is stored."""
    before = await snapshot(relay, audit=False)
    for path in ("/v1/account", "/v1/webhooks", "/v1/account/pw/submit", "/graph/notify"):
        resp = await relay.post(path, data=raw, headers=JSON)
        err = await resp.json()
        assert resp.status == 400, (path, err)
        assert err["code"] == "InputValidationError"
        assert err["field"] == "body", (path, err)
        assert err["message"].startswith(message), (path, err)
    assert await snapshot(relay, audit=False) == before


WRONG_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/json; charset=iso-8859-1",
]


@pytest.mark.parametrize("content_type", WRONG_TYPES)
async def test_wrong_content_type_is_415(relay: TestClient, content_type: str) -> None:
    """A valid JSON body sent as another type is a 415 naming Content-Type and the expected
    type on JSON routes (Graph's included), refused before the token is looked at: nothing is
    stored, not even in the audit log."""
    before = await snapshot(relay)
    for path, body in (
        ("/v1/account", {**ACCOUNT, "account": "other"}),
        ("/v1/webhooks", {"url": "https://hooks.example.com/in"}),
        ("/v1/account/pw/submit", SUBMIT),
        ("/graph/notify", {"value": []}),
    ):
        raw = json.dumps(body).encode()
        resp = await relay.post(path, data=raw, headers={"Content-Type": content_type})
        err = await resp.json()
        assert resp.status == 415, (path, err)
        assert err["code"] == "UnsupportedMediaType"
        assert err["error"] == "Unsupported Media Type"
        assert err["field"] == "Content-Type"
        assert "application/json" in err["message"] or "utf-8" in err["message"]
    assert await snapshot(relay) == before


async def test_json_without_content_type_is_read(relay: TestClient) -> None:
    """A JSON body without a Content-Type is read as JSON, as EmailEngine does (clients that
    leave the header out keep working); so are application/json with utf-8 and +json types."""
    for name, headers in (
        ("bare", {}),
        ("utf8", {"Content-Type": "application/json; charset=UTF-8"}),
        ("vendor", {"Content-Type": "application/vnd.relay+json"}),
    ):
        raw = json.dumps({**ACCOUNT, "account": name}).encode()
        resp = await relay.post(
            "/v1/account", data=raw, headers=headers, skip_auto_headers=["Content-Type"]
        )
        assert resp.status == 200, await resp.text()
    accounts = await call(relay, "GET", "/v1/accounts")
    assert {a["account"] for a in accounts["accounts"]} == {"pw", "bare", "utf8", "vendor"}


async def test_graph_notifications_are_read_whole(client: TestClient) -> None:
    """A notification body that arrives in many pieces is read to its end (it once stopped
    at the first piece and answered 400)."""
    raw = b'{"value": [' + b" " * 200_000 + b"]}"
    resp = await client.post("/graph/notify", data=chunks(raw), headers=JSON)
    assert resp.status == 202, await resp.text()


async def test_graph_validation_needs_no_json(relay: TestClient) -> None:
    """Graph's validation request (text/plain, no body) is still answered with the token."""
    resp = await relay.post(
        "/graph/notify?validationToken=abc", data=b"", headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 200
    assert await resp.text() == "abc"


async def test_refusals_are_in_the_document(relay: TestClient) -> None:
    """/openapi.json declares what these answers are: 413 and 415 on every route that reads a
    body, 414 and 431 on every route, each with the error shape; the answers match it."""
    doc = await call(relay, "GET", "/openapi.json")
    error = {"$ref": "#/components/schemas/Error"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            statuses = {"414", "431"} | ({"413", "415"} if "requestBody" in op else set())
            for status in statuses:
                declared = op["responses"].get(status)
                assert declared is not None, (method, path, status)
                assert declared["content"]["application/json"]["schema"] == error
    schema = doc["components"]["schemas"]["Error"]
    resp = await relay.post("/v1/webhooks", data=b"{}", headers={"Content-Type": "text/plain"})
    resp2 = await relay.post("/v1/webhooks", data=padded(LIMIT + 1), headers=JSON)
    for answer in (resp, resp2):
        err = await answer.json()
        assert set(schema["required"]) <= set(err) <= set(schema["properties"])
        assert str(answer.status) in doc["paths"]["/v1/webhooks"]["post"]["responses"]


@pytest.mark.parametrize("field", ["raw", "attachments"])
async def test_an_upload_over_the_send_limit_is_refused_before_the_mailbox(
    relay: TestClient, field: str
) -> None:
    """Storing a message in a folder takes the same message limit as a submit: over it, a 413
    naming what made it large, before the mailbox is opened (this account's server is not
    there: reaching it would be a 503)."""
    if field == "raw":
        mime = b"Subject: big\r\n\r\n" + b"x" * MESSAGE_LIMIT
        body: dict[str, Any] = {"path": "INBOX", "raw": base64.b64encode(mime).decode()}
    else:
        body = {"path": "INBOX", "subject": "big", "attachments": [attachment(45_000)]}
    err = await call(relay, "POST", "/v1/account/pw/message", body, status=413)
    assert (err["code"], err["field"]) == ("MessageTooLarge", field)
