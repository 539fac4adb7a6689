"""EmailEngine's shapes on the message events of a Graph account, produced by the sandbox's
change notifications."""

from __future__ import annotations

import base64

import aiohttp

from relay.sandbox.server import RunningSandbox
from tests.auth.conftest import MAIN
from tests.contract.shapes import assert_event
from tests.contract.test_imap_events import RICH
from tests.sandbox.graph_helpers import admin
from tests.sources.graph.test_graph_backend import Start, _graph_main, start
from tests.sources.imap.relay_support import wait_events, wait_state

__all__ = ["start"]


async def test_graph_message_new_updated_deleted(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Mail delivered to a Graph mailbox, marked read, then deleted: messageNew,
    messageUpdated and messageDeleted in EmailEngine's shapes."""
    client = await start()
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    body = {"folder": "inbox", "mime": base64.b64encode(RICH).decode()}
    delivered = await admin(http, sandbox, "POST", f"mailboxes/{MAIN}/messages", body)
    (new,) = await wait_events(client, "my-account", "messageNew")
    assert_event(new, "messageNew")
    message = f"mailboxes/{MAIN}/messages/{delivered['id']}"
    await admin(http, sandbox, "PATCH", message, {"isRead": True})
    (updated,) = await wait_events(client, "my-account", "messageUpdated")
    assert_event(updated, "messageUpdated")
    await admin(http, sandbox, "DELETE", message)
    (deleted,) = await wait_events(client, "my-account", "messageDeleted")
    assert_event(deleted, "messageDeleted")
