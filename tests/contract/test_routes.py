"""EmailEngine's answers on the routes changed for compatibility: the global webhook settings
and a reply submitted with ``reference`` (against Dovecot and aiosmtpd)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from relay.config import Settings
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.contract.shapes import ROUTES, assert_event, assert_shape
from tests.peers.dovecot import DovecotServer, dovecot_server
from tests.peers.smtp import SmtpPeer
from tests.send.conftest import send_settings, submit
from tests.sources.imap.relay_support import wait_events
from tests.sources.imap.support import message, new_account, user_pool
from tests.webhooks.conftest import loopback_settings


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    """The mailbox a reply's original is read from."""
    with dovecot_server(users=user_pool()) as server:
        yield server


async def test_settings_webhooks_and_custom_headers(
    make_client: MakeClient, settings: Settings
) -> None:
    """POST /v1/settings with webhooksCustomHeaders answers {updated}; GET with keys in the
    query answers those keys, custom headers as [{key, value}] (values masked)."""
    client = await make_client(loopback_settings(settings))
    body = {
        "webhooks": "http://127.0.0.1:9/hooks",
        "webhooksCustomHeaders": [{"key": "X-Tenant", "value": "tenant-7"}],
    }
    answer = await call(client, "POST", "/v1/settings", body)
    assert_shape(ROUTES["settingsUpdated"], answer)
    assert set(answer["updated"]) == {"webhooks", "webhooksCustomHeaders"}
    webhooks = await call(client, "GET", "/v1/settings?webhooks=true")
    assert_shape(ROUTES["settingsWebhooks"], webhooks)
    assert webhooks == {"webhooks": "http://127.0.0.1:9/hooks"}
    headers = await call(client, "GET", "/v1/settings?webhooksCustomHeaders=true")
    assert_shape(ROUTES["settingsCustomHeaders"], headers)
    assert [h["key"] for h in headers["webhooksCustomHeaders"]] == ["X-Tenant"]
    assert "tenant-7" not in str(headers)


async def test_reply_with_reference(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """A submit with reference (a reply) answers {response, messageId, queueId, sendAt} and
    EmailEngine's reference {message, success}; the outbox lists the reply."""
    user = new_account(dovecot)
    await dovecot.append(user.user, "INBOX", message("question"))
    peer = await SmtpPeer(passwords={user.user: user.password}).start()
    try:
        client = await make_client(send_settings(settings))
        auth = {"user": user.user, "pass": user.password}
        account = {
            "account": "acct",
            "name": "Me",
            "email": user.user,
            "imap": {"host": "127.0.0.1", "port": dovecot.port, "secure": False, "auth": auth},
            "smtp": {"host": "127.0.0.1", "port": peer.port, "secure": False, "auth": auth},
        }
        await call(client, "POST", "/v1/account", account)
        listing = await call(client, "GET", "/v1/account/acct/messages?path=INBOX")
        original = listing["messages"][0]["id"]
        reply = {"reference": {"message": original, "action": "reply"}, "text": "Answer"}
        answer = await submit(client, reply)
        assert_shape(ROUTES["submitted"], answer)
        assert answer["reference"] == {"message": original, "success": True}
        missing = {
            "reference": {"message": "AAAAAQAAAAE", "ignoreMissing": True},
            "to": [{"address": "rita@example.net"}],
            "text": "Anyway",
        }
        answer = await submit(client, missing)
        assert_shape(ROUTES["submitted"], answer)
        assert answer["reference"]["success"] is False
        assert_shape(ROUTES["outbox"], await call(client, "GET", "/v1/outbox"))
        for sent in await wait_events(client, "acct", "messageSent", count=2):
            assert_event(sent, "messageSent")
    finally:
        await peer.stop()
