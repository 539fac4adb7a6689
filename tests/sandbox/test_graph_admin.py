"""The admin API for mailboxes: delivery, changes, folders, and bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from relay.sandbox.server import RunningSandbox

from .graph_helpers import MAIN, SHARED, Graph, Receiver, admin, deliver, subscription_body


async def test_admin_changes_are_mailbox_changes(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Admin flag, read, move and delete show up in Graph, delta and notifications."""
    await graph.ok(
        "POST", "subscriptions", subscription_body(sandbox, receiver.url, resource="me/messages")
    )
    message = await deliver(http, sandbox, subject="admin")
    base = f"mailboxes/{MAIN}/messages/{message['id']}"

    patched = await admin(http, sandbox, "PATCH", base, {"isRead": True, "flag": "flagged"})
    moved = await admin(http, sandbox, "POST", f"{base}/move", {"destination": "drafts"})
    await admin(http, sandbox, "DELETE", f"mailboxes/{MAIN}/messages/{moved['id']}")
    async with asyncio.timeout(5):
        await sandbox.notifier.settle()

    assert (patched["isRead"], patched["flag"]) == (True, {"flagStatus": "flagged"})
    assert moved["id"] != message["id"]
    assert [n["changeType"] for n in receiver.notifications] == [
        "created",
        "updated",
        "deleted",
        "created",
        "deleted",
    ]
    folders = await admin(http, sandbox, "GET", f"mailboxes/{MAIN}/folders")
    hidden = [f for f in folders if f["hidden"]]
    assert [(f["wellKnownName"], f["totalItemCount"]) for f in hidden] == [
        ("recoverableitemsdeletions", 1)
    ]


async def test_delivered_message_fields(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Delivery takes a date, draft state, categories and importance."""
    message = await deliver(
        http,
        sandbox,
        folder="drafts",
        receivedDateTime="2026-01-02T03:04:05Z",
        isDraft=True,
        categories=["Blue"],
        importance="high",
        replyTo=[{"name": "Help", "address": "help@example.net"}],
    )

    seen = await graph.ok("GET", f"me/messages/{message['id']}")

    assert seen["receivedDateTime"] == "2026-01-02T03:04:05Z"
    assert (seen["isDraft"], seen["sentDateTime"]) == (True, None)
    assert (seen["categories"], seen["importance"]) == (["Blue"], "high")
    assert seen["replyTo"] == [{"emailAddress": {"name": "Help", "address": "help@example.net"}}]
    patched = await graph.ok("PATCH", f"me/messages/{message['id']}", {"subject": "Draft 2"})
    assert patched["subject"] == "Draft 2"


async def test_custom_folders_and_listing(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """A created folder is listed by Graph and can be a move destination."""
    folder = await admin(
        http, sandbox, "POST", f"mailboxes/{SHARED}/folders", {"displayName": "Orders"}
    )
    message = await deliver(http, sandbox, mailbox=SHARED)

    await graph.ok(
        "POST", f"users/{SHARED}/messages/{message['id']}/move", {"destinationId": folder["id"]}
    )

    names = [
        f["displayName"] for f in (await graph.ok("GET", f"users/{SHARED}/mailFolders"))["value"]
    ]
    listed = await admin(
        http, sandbox, "GET", f"mailboxes/{SHARED}/folders/{folder['id']}/messages"
    )
    assert "Orders" in names
    assert [m["subject"] for m in listed] == ["Hello"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("POST", "mailboxes/nobody@example.com/messages", {}, 404, "mailbox"),
        ("POST", f"mailboxes/{MAIN}/messages", {"folder": "nope"}, 404, "folder"),
        ("POST", f"mailboxes/{MAIN}/messages", {"from": "not-an-address"}, 400, "from"),
        ("POST", f"mailboxes/{MAIN}/messages", {"to": "a@example.net"}, 400, "to"),
        ("POST", f"mailboxes/{MAIN}/messages", {"flag": "red"}, 400, "flag"),
        ("POST", f"mailboxes/{MAIN}/messages", {"isRead": "yes"}, 400, "isRead"),
        (
            "POST",
            f"mailboxes/{MAIN}/messages",
            {"receivedDateTime": "soon"},
            400,
            "receivedDateTime",
        ),
        ("PATCH", f"mailboxes/{MAIN}/messages/AAMkAnone", {"isRead": True}, 404, "message"),
        ("POST", f"mailboxes/{MAIN}/messages/AAkALgnone/send", {}, 404, "message"),
        ("POST", f"mailboxes/{MAIN}/drafts", {"bcc": "a@example.net"}, 400, "bcc"),
        ("POST", f"mailboxes/{MAIN}/drafts", {"folder": "nope"}, 404, "folder"),
        ("POST", f"mailboxes/{MAIN}/folders", {"displayName": "inbox"}, 409, "displayName"),
        (
            "POST",
            f"mailboxes/{MAIN}/folders",
            {"displayName": "Orders", "parentFolderId": "AQMkAnone"},
            404,
            "parentFolderId",
        ),
        ("POST", "subscriptions/none/lifecycle", {"event": "missed"}, 404, "id"),
        ("POST", "settings", {"allowHttpNotifications": "on"}, 400, "allowHttpNotifications"),
        (
            "POST",
            "users",
            {"email": "x@example.com", "password": "p", "folderNames": {"junk": "Spam"}},
            400,
            "folderNames",
        ),
    ],
)
async def test_bad_admin_input_changes_nothing(
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    method: str,
    path: str,
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    """Bad admin input is a 4xx naming the field, and no message or user appears."""
    before = sum(len(f.messages) for f in sandbox.state.mail.mailbox(MAIN).folders.values())
    users = set(sandbox.state.users)

    async with http.request(method, f"{sandbox.url}/sandbox/{path}", json=body) as response:
        got = response.status
        error = await response.json()

    assert (got, error["field"]) == (status, field)
    assert sum(len(f.messages) for f in sandbox.state.mail.mailbox(MAIN).folders.values()) == before
    assert set(sandbox.state.users) == users
    assert sandbox.state.allow_http_notifications is False
