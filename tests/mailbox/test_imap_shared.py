"""The messages API on a shared IMAP mailbox: XOAUTH2 as the shared address, main user's token."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from relay.config import Settings
from relay.sandbox.server import RunningSandbox
from tests.api.helpers import call
from tests.auth.conftest import (
    DONE,
    MAIN,
    SHARED,
    SHARED_PAYLOAD,
    add_sandbox_app,
    consent,
    grant_until_connected,
    with_microsoft,
)
from tests.conftest import MakeClient
from tests.mailbox.mail import PLAIN, rich_message
from tests.peers.dovecot import DovecotServer, dovecot_server
from tests.sources.imap.relay_support import relay_settings, wait_events, wait_state
from tests.sources.imap.support import message


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    """A Dovecot whose XOAUTH2 accepts the tokens granted in its grants file."""
    with dovecot_server() as server:
        yield server


async def test_shared_imap_mailbox_is_read_with_the_main_users_token(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    dovecot: DovecotServer,
) -> None:
    """The shared mailbox's messageNew id reads its message, text, source and attachment
    through the API (logged in as user=shared with the main user's token); the main mailbox
    reads its own; an id that only the shared mailbox has is a 404 on the main account."""
    client = await make_client(relay_settings(with_microsoft(settings, sandbox)))
    app_id = await add_sandbox_app(client, sandbox)
    link = await call(
        client,
        "POST",
        "/v1/account",
        {
            "account": "my-account",
            "name": "Main",
            "email": MAIN,
            "imap": {"host": "127.0.0.1", "port": dovecot.port, "secure": False},
            "oauth2": {"provider": app_id, "authorize": True, "redirectUrl": DONE},
        },
    )
    assert (await consent(client, http, link["redirect"])).status == 302
    await grant_until_connected(client, http, sandbox, dovecot)
    await call(client, "POST", "/v1/account", SHARED_PAYLOAD)
    await wait_state(client, "shared", "connected")

    raw, payload = rich_message(to=SHARED)
    await dovecot.append(SHARED, "INBOX", message("first in shared"))
    await dovecot.append(SHARED, "INBOX", raw)
    await dovecot.append(MAIN, "INBOX", message("main mail"))
    _, new = await wait_events(client, "shared", "messageNew", count=2)
    (main_new,) = await wait_events(client, "my-account", "messageNew")
    shared_id = new["data"]["id"]

    details = await call(client, "GET", f"/v1/account/shared/message/{shared_id}?textType=plain")
    assert details["text"]["plain"] == PLAIN
    source = await client.get(f"/v1/account/shared/message/{shared_id}/source")
    assert await source.read() == raw
    attachment = next(a for a in details["attachments"] if a.get("filename") == "report.bin")
    body = await client.get(f"/v1/account/shared/attachment/{attachment['id']}")
    assert await body.read() == payload
    mine = await call(client, "GET", f"/v1/account/my-account/message/{main_new['data']['id']}")
    assert mine["subject"] == "main mail"

    foreign = await client.get(f"/v1/account/my-account/message/{shared_id}")
    assert foreign.status == 404
    await call(
        client, "PUT", f"/v1/account/shared/message/{shared_id}", {"flags": {"add": ["\\Seen"]}}
    )
    (updated,) = await wait_events(client, "shared", "messageUpdated")
    assert updated["data"]["changes"]["flags"]["added"] == ["\\Seen"]
