"""The messages API on Graph accounts against the sandbox: a main and a shared mailbox."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from relay.sandbox.server import RunningSandbox
from tests.api.helpers import call
from tests.auth.conftest import MAIN, SHARED, SHARED_PAYLOAD
from tests.mailbox.mail import PNG, rich_message
from tests.sandbox.graph_helpers import admin
from tests.sources.graph.test_graph_backend import Start, _graph_main, start
from tests.sources.imap.relay_support import wait_events, wait_state

__all__ = ["start"]


async def _deliver_mime(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, mailbox: str, raw: bytes
) -> dict[str, Any]:
    body = {"folder": "inbox", "mime": base64.b64encode(raw).decode()}
    found: dict[str, Any] = await admin(
        http, sandbox, "POST", f"mailboxes/{mailbox}/messages", body
    )
    return found


async def _bytes(client: TestClient, path: str) -> tuple[int, bytes, Any]:
    response = await client.get(path)
    return response.status, await response.read(), response.headers


async def _read_back(
    client: TestClient, account: str, message: str, raw: bytes, payload: bytes
) -> None:
    """The message, its text, headers, source and big attachment through the API."""
    listing = await call(client, "GET", f"/v1/account/{account}/messages?path=INBOX")
    assert [m["id"] for m in listing["messages"]] == [message]
    assert listing["messages"][0]["subject"] == "Ticket 4711"

    details = await call(client, "GET", f"/v1/account/{account}/message/{message}?textType=*")
    assert details["size"] == len(raw)
    assert "<b>from</b>" in details["text"]["html"]
    assert "support queue" in details["text"]["plain"]
    assert details["headers"]["x-ticket"] == ["4711"]
    assert details["path"] == "INBOX"
    names = {a["filename"]: a for a in details["attachments"]}
    assert names["logo.png"]["embedded"] is True

    safe = await call(client, "GET", f"/v1/account/{account}/message/{message}?webSafeHtml=true")
    for hostile in ("<script", "onerror", "javascript:", "tracker.example"):
        assert hostile not in safe["text"]["html"].lower()
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in safe["text"]["html"]

    status, source, headers = await _bytes(
        client, f"/v1/account/{account}/message/{message}/source"
    )
    assert status == 200
    assert source == raw
    status, body, headers = await _bytes(
        client, f"/v1/account/{account}/attachment/{names['report.bin']['id']}"
    )
    assert status == 200
    assert body == payload
    assert 'filename="report.bin"' in headers["Content-Disposition"]


@pytest.mark.slow
async def test_graph_main_mailbox_read_changed_and_moved_through_the_api(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A Graph account's messageNew carries the configured content; the API reads the same
    message (text, headers, source and a 10 MiB attachment byte for byte); flags, a move and
    a delete through the API come back as the events the README promises."""
    client = await start()
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    (success,) = await wait_events(client, "my-account", "authenticationSuccess")
    assert success["data"] == {"user": MAIN}
    await call(
        client,
        "POST",
        "/v1/settings",
        {
            "notifyText": True,
            "notifyHeaders": ["x-ticket"],
            "notifyAttachments": True,
            "notifyAttachmentSize": 2000,
        },
    )
    raw, payload = rich_message()
    sent = await _deliver_mime(http, sandbox, MAIN, raw)
    (new,) = await wait_events(client, "my-account", "messageNew")
    data = new["data"]
    assert data["id"] == sent["immutableId"]
    assert "support queue" in data["text"]["plain"]
    assert data["headers"] == {"x-ticket": ["4711"]}
    logo = next(a for a in data["attachments"] if a.get("filename") == "logo.png")
    assert base64.b64decode(logo["content"]) == PNG

    await _read_back(client, "my-account", data["id"], raw, payload)

    assert await call(
        client,
        "PUT",
        f"/v1/account/my-account/message/{data['id']}",
        {"flags": {"add": ["\\Flagged", "\\Seen"]}},
    ) == {"flags": {"add": True}}
    (updated,) = await wait_events(client, "my-account", "messageUpdated")
    assert set(updated["data"]["changes"]["flags"]["added"]) == {"\\Flagged", "\\Seen"}
    refused = await client.put(
        f"/v1/account/my-account/message/{data['id']}", json={"flags": {"add": ["\\Answered"]}}
    )
    assert refused.status == 400
    assert (await refused.json())["field"] == "flags"

    found = await call(
        client,
        "POST",
        "/v1/account/my-account/search?path=INBOX",
        {"search": {"flagged": True, "subject": "Ticket"}},
    )
    assert [m["id"] for m in found["messages"]] == [data["id"]]

    boxes = await call(client, "GET", "/v1/account/my-account/mailboxes?counters=true")
    inbox = boxes["mailboxes"][0]
    assert (inbox["path"], inbox["specialUse"]) == ("INBOX", "\\Inbox")
    assert inbox["status"] == {"messages": 1, "unseen": 0}
    created = await call(client, "POST", "/v1/account/my-account/mailbox", {"path": "Tickets"})
    assert created["created"] is True
    assert (await call(client, "POST", "/v1/account/my-account/mailbox", {"path": "Tickets"}))[
        "created"
    ] is False

    moved = await call(
        client, "PUT", f"/v1/account/my-account/message/{data['id']}/move", {"path": "\\Archive"}
    )
    assert moved["id"] == data["id"]
    events = await wait_events(client, "my-account", "messageUpdated", count=2)
    assert events[-1]["data"]["changes"]["path"]["old"] == "INBOX"

    renamed = await call(
        client, "PUT", "/v1/account/my-account/mailbox", {"path": "Tickets", "newPath": "Done"}
    )
    assert renamed["renamed"] is True
    assert (await call(client, "DELETE", "/v1/account/my-account/mailbox?path=Done"))["deleted"]
    missing = await client.get("/v1/account/my-account/messages?path=Tickets")
    assert missing.status == 404
    assert (await missing.json())["code"] == "FolderNotFound"

    deleted = await call(client, "DELETE", f"/v1/account/my-account/message/{data['id']}")
    assert deleted["deleted"] is False
    assert deleted["moved"]["destination"] == "Deleted Items"


@pytest.mark.slow
async def test_graph_shared_mailbox_is_read_with_the_main_token_and_ids_stay_apart(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A shared mailbox (delta polling) is read through /users/{shared}: message, source and
    attachment byte for byte; its ids are 404 on the main account and vice versa."""
    client = await start()
    await _graph_main(client, http, sandbox)
    await call(client, "POST", "/v1/account", SHARED_PAYLOAD)
    await wait_state(client, "shared", "connected")
    raw, payload = rich_message("Ticket 4711", to=SHARED)
    await _deliver_mime(http, sandbox, SHARED, raw)
    (new,) = await wait_events(client, "shared", "messageNew")
    message = new["data"]["id"]
    await _read_back(client, "shared", message, raw, payload)

    mine = await _deliver_mime(
        http, sandbox, MAIN, rich_message("Main only", attachment_size=10)[0]
    )
    for path in (
        f"/v1/account/my-account/message/{message}",
        f"/v1/account/my-account/message/{message}/source",
        f"/v1/account/shared/message/{mine['immutableId']}",
    ):
        response = await client.get(path)
        assert response.status == 404, path
        assert (await response.json())["code"] == "MessageNotFound"
