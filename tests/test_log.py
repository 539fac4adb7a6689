"""Secrets never reach the logs; an account's ``logs`` setting gives it a protocol log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from aiohttp.http_exceptions import LineTooLong
from aiohttp.test_utils import TestClient

from relay.config import LogSettings, Settings
from relay.log import REDACTED, configure, protocol_log, redact
from tests.api.helpers import add_app, add_main, call
from tests.conftest import MakeClient
from tests.peers.dovecot import DovecotServer, dovecot_server
from tests.peers.smtp import SmtpPeer
from tests.send.conftest import ME, PASSWORD, add_password_account, send_settings, submit
from tests.sources.imap.relay_support import (
    password_account,
    relay_settings,
    wait_events,
    wait_state,
)
from tests.sources.imap.support import new_account, user_pool


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


def test_protocol_log_passes_the_configured_level() -> None:
    """An account's protocol log writes debug lines at level info; other debug lines stay out."""
    out = io.StringIO()
    configure(LogSettings(level="info", format="json"), stream=out)
    try:
        protocol_log("imap", "loud").debug("imap command", line="R1 NOOP")
        structlog.get_logger("t").debug("not wanted")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    (line,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert line["event"] == "imap command"
    assert (line["account"], line["protocol"], line["level"]) == ("loud", "imap", "debug")


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    """A Dovecot for the protocol log tests."""
    with dovecot_server(users=user_pool()) as server:
        yield server


def _lines(logs: list[dict[str, Any]], account: str, protocol: str) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("account") == account and e.get("protocol") == protocol]


async def test_imap_protocol_log_only_for_accounts_with_logs(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """``logs: true`` puts the account's IMAP commands and responses in the log (LOGIN masked);
    an account without it logs no protocol line."""
    loud, quiet = new_account(dovecot), new_account(dovecot)
    client = await make_client(relay_settings(settings))
    with structlog.testing.capture_logs() as logs:
        await call(
            client, "POST", "/v1/account", password_account("loud", loud, dovecot.port, logs=True)
        )
        await call(client, "POST", "/v1/account", password_account("quiet", quiet, dovecot.port))
        for account in ("loud", "quiet"):
            await wait_state(client, account, "connected")
            await call(client, "GET", f"/v1/account/{account}/messages?path=INBOX")
    assert (await call(client, "GET", "/v1/account/loud"))["logs"] is True
    assert (await call(client, "GET", "/v1/account/quiet"))["logs"] is False
    lines = _lines(logs, "loud", "imap")
    commands = [e["line"] for e in lines if e["event"] == "imap command"]
    assert any(c.endswith("LOGIN [redacted]") for c in commands), commands
    assert any(" SELECT " in c or " EXAMINE " in c for c in commands), commands
    assert any(e["event"] == "imap response" and " OK " in e["line"] for e in lines)
    assert all(e["log_level"] == "debug" for e in lines)
    assert loud.password not in json.dumps(lines)
    assert _lines(logs, "quiet", "imap") == []


async def test_smtp_protocol_log(make_client: MakeClient, settings: Settings) -> None:
    """``logs: true`` puts the SMTP dialogue of a send in the log, without the password."""
    peer = await SmtpPeer(passwords={ME: PASSWORD}).start()
    try:
        client = await make_client(send_settings(settings))
        await add_password_account(client, peer)
        await call(client, "PUT", "/v1/account/acct", {"logs": True})
        with structlog.testing.capture_logs() as logs:
            await submit(client, {"to": [{"address": "rita@example.net"}], "text": "x"})
            await wait_events(client, "acct", "messageSent")
    finally:
        await peer.stop()
    lines = _lines(logs, "acct", "smtp")
    shown = [(e["event"], e.get("command"), e["line"]) for e in lines if "line" in e]
    assert ("smtp command", None, f"MAIL FROM:<{ME}>") in shown
    assert ("smtp command", None, "RCPT TO:<rita@example.net>") in shown
    assert any(e == "smtp response" and c == "DATA" and ln.startswith("250") for e, c, ln in shown)
    assert any(e == "smtp response" and c == "AUTH" and ln.startswith("235") for e, c, ln in shown)
    assert PASSWORD not in json.dumps(lines)


def test_malformed_requests_are_logged_without_their_bytes() -> None:
    """A request aiohttp's parser refused is logged at info by its kind, without the bytes
    (a giant Authorization header would otherwise reach the log)."""
    out = io.StringIO()
    configure(LogSettings(level="info", format="json"), stream=out)
    try:
        try:
            raise LineTooLong(b"Authorization: Bearer sekrit-" + b"x" * 90, "8190")
        except LineTooLong as exc:
            logging.getLogger("aiohttp.server").error(
                "Error handling request from %s", "127.0.0.1", exc_info=exc
            )
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    (line,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "sekrit" not in out.getvalue()
    assert line["level"] == "info"
    assert line["event"] == "malformed HTTP request refused: LineTooLong (400)"
