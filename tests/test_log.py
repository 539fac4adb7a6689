"""Secrets never reach the logs."""

from __future__ import annotations

import io
import json
import logging

import structlog
from aiohttp.test_utils import TestClient

from relay.config import LogSettings
from relay.log import REDACTED, configure, redact
from tests.api.helpers import add_app, add_main, call


def test_redact_by_key_and_by_shape() -> None:
    """Secret keys are masked anywhere; bearer tokens and whsec_ secrets inside strings too."""
    event = redact(
        None,
        "info",
        {
            "event": "calling with Authorization: Bearer abc.def-123",
            "password": "p",
            "accessToken": "t",
            "nested": {"refresh_token": "r", "clientSecret": "c", "ok": "fine"},
            "list": ["whsec_c2VjcmV0", "user=a\x01auth=Bearer tok\x01\x01"],
        },
    )
    assert event["password"] == REDACTED
    assert event["accessToken"] == REDACTED
    assert event["nested"] == {"refresh_token": REDACTED, "clientSecret": REDACTED, "ok": "fine"}
    assert "abc.def-123" not in event["event"]
    assert "c2VjcmV0" not in event["list"][0]
    assert "tok" not in event["list"][1]


def test_stdlib_logs_are_redacted_too() -> None:
    """Library log records pass the same redaction."""
    out = io.StringIO()
    configure(LogSettings(level="info", format="json"), stream=out)
    try:
        logging.getLogger("some.library").warning("header was Bearer sekrit-token-value")
        structlog.get_logger("t").info("event", password="hunter2")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    text = out.getvalue()
    assert "sekrit-token-value" not in text
    assert "hunter2" not in text
    assert all(json.loads(line) for line in text.splitlines())


async def test_api_flow_logs_no_secret(client: TestClient) -> None:
    """Adding apps and accounts with secrets logs none of them."""
    with structlog.testing.capture_logs() as logs:
        app_id = await add_app(client)
        await add_main(client, app_id)
        await call(
            client, "POST", "/v1/account", {"account": "x", "name": "n", "email": "bad"}, status=400
        )
        await call(client, "GET", "/v1/account/my-account")
    text = json.dumps(logs, default=str)
    for secret in ("app-secret-value", "main-access-token", "main-refresh-token"):
        assert secret not in text
