"""A bounce of mail sent through the outbox: its messageBounce names the outbox queue id."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from relay.config import Settings
from tests.conftest import MakeClient
from tests.events.test_reports import dsn
from tests.peers.dovecot import DovecotServer, dovecot_server
from tests.peers.smtp import SmtpPeer
from tests.sources.imap.relay_support import add_account, relay_settings, wait_events, wait_state

from .conftest import ME, PASSWORD, send_settings, submit

IMAP_PASSWORD = "imap-password"


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    """The account's mailbox, where the bounces arrive."""
    with dovecot_server(users={ME: IMAP_PASSWORD}) as server:
        yield server


async def test_bounce_of_a_submitted_message_has_its_queue_id(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer, dovecot: DovecotServer
) -> None:
    """Mail submitted through the relay bounces into the account's INBOX: the messageBounce
    has sentQueueId, the submit's queueId; a bounce of mail sent elsewhere has none."""
    client = await make_client(relay_settings(send_settings(settings)))
    await add_account(
        client,
        {
            "account": "acct",
            "name": "Me",
            "email": ME,
            "imap": {
                "host": "127.0.0.1",
                "port": dovecot.port,
                "secure": False,
                "auth": {"user": ME, "pass": IMAP_PASSWORD},
            },
            "smtp": {
                "host": "127.0.0.1",
                "port": smtp.port,
                "secure": False,
                "auth": {"user": ME, "pass": PASSWORD},
            },
        },
    )
    await wait_state(client, "acct", "connected")
    queued = await submit(
        client, {"to": [{"address": "missing@example.net"}], "subject": "Hello", "text": "Hi"}
    )
    await smtp.wait_for(1)
    await dovecot.append(ME, "INBOX", dsn(queued["messageId"], "missing@example.net"))
    (bounce,) = await wait_events(client, "acct", "messageBounce")
    assert bounce["data"]["messageId"] == queued["messageId"]
    assert bounce["data"]["recipient"] == "missing@example.net"
    assert bounce["data"]["sentQueueId"] == queued["queueId"]
    await dovecot.append(ME, "INBOX", dsn("<elsewhere@example.com>", "gone@example.net"))
    second = (await wait_events(client, "acct", "messageBounce", 2))[1]
    assert second["data"]["recipient"] == "gone@example.net"
    assert "sentQueueId" not in second["data"]
