"""End to end: a shared mailbox's IMAP listener logs in with the main user's consented token."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from relay.config import Settings
from relay.sandbox.server import RunningSandbox
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.dovecot import DovecotServer, dovecot_server
from tests.sources.imap.relay_support import (
    relay_settings,
    settle,
    stored_events,
    wait_events,
    wait_state,
)
from tests.sources.imap.support import message

from .conftest import (
    DONE,
    MAIN,
    SHARED,
    SHARED_PAYLOAD,
    add_sandbox_app,
    consent,
    form_link,
    grant_current_token,
    sandbox_admin,
    with_microsoft,
)


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    """A Dovecot whose XOAUTH2 accepts the tokens granted in its grants file."""
    with dovecot_server() as server:
        yield server


async def test_shared_mailbox_listener_uses_the_main_users_token(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    dovecot: DovecotServer,
) -> None:
    """user=shared with the main user's token opens the shared mailbox and reports new mail;
    a revoked grant gives one authenticationError per account; new consent and a reconnect
    bring the listener back."""
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
            # Only the shared mailbox is watched here; the main one lends its server and token.
            "imap": {"host": "127.0.0.1", "port": dovecot.port, "secure": False, "disabled": True},
            "oauth2": {"provider": app_id, "authorize": True, "redirectUrl": DONE},
        },
    )
    assert (await consent(client, http, link["redirect"])).status == 302
    await grant_current_token(client, http, sandbox, dovecot)

    await call(client, "POST", "/v1/account", SHARED_PAYLOAD)
    await wait_state(client, "shared", "connected")
    await dovecot.append(SHARED, "INBOX", message("for the shared box"))
    (event,) = await wait_events(client, "shared", "messageNew")
    assert event["data"]["subject"] == "for the shared box"

    # Revoked at Microsoft; the account change restarts the listener, whose refresh fails.
    await sandbox_admin(http, sandbox, f"users/{MAIN}/revoke")
    await call(
        client, "PUT", "/v1/account/my-account", {"oauth2": {"expires": "2020-01-01T00:00:00Z"}}
    )
    await wait_state(client, "shared", "authenticationError")
    await settle()
    (refused,) = await stored_events(client, "shared", "authenticationError")
    assert refused["data"]["serverResponseCode"] == "OauthRenewError"
    assert len(await stored_events(client, "my-account", "authenticationError")) == 1

    response = await consent(client, http, await form_link(client, app_id))
    assert response.status == 302
    await grant_current_token(client, http, sandbox, dovecot)
    await call(client, "PUT", "/v1/account/shared/reconnect", {"reconnect": True})
    await wait_state(client, "shared", "connected")
    await wait_events(client, "shared", "authenticationSuccess")
    await dovecot.append(SHARED, "INBOX", message("after new consent"))
    found = await wait_events(client, "shared", "messageNew", count=2)
    assert [e["data"]["subject"] for e in found] == ["for the shared box", "after new consent"]
    assert len(await stored_events(client, "shared", "authenticationError")) == 1
