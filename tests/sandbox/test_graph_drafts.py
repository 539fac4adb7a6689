"""Drafts: POST .../messages creates one, POST .../messages/{id}/send sends it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from relay.sandbox.server import RunningSandbox

from .graph_helpers import (
    MAIN,
    SHARED,
    Graph,
    Receiver,
    admin,
    app_only,
    deliver,
    mint,
    subscription_body,
)

IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


def _draft(to: str = "customer@example.net", **fields: Any) -> dict[str, Any]:
    return {
        "Subject": "Quote",
        "Body": {"ContentType": "Text", "Content": "Here it is"},
        "ToRecipients": [{"EmailAddress": {"Address": to}}],
        **fields,
    }


async def _folder_messages(graph: Graph, user: str, folder: str) -> list[dict[str, Any]]:
    listed = await graph.ok("GET", f"users/{user}/mailFolders/{folder}/messages")
    return list(listed["value"])


async def test_a_new_message_is_a_draft_in_drafts(graph: Graph, sandbox: RunningSandbox) -> None:
    """POST messages saves a draft in Drafts; POST mailFolders/{id}/messages in that folder."""
    status, draft = await graph.call("POST", "me/messages", _draft())
    status_elsewhere, elsewhere = await graph.call(
        "POST", "me/mailFolders/archive/messages", {"subject": "Notes"}
    )

    drafts = await graph.ok("GET", "me/mailFolders/drafts")
    archive = await graph.ok("GET", "me/mailFolders/archive")
    assert (status, status_elsewhere) == (201, 201)
    assert draft["@odata.context"].endswith("/messages/$entity")
    assert (draft["isDraft"], draft["isRead"], draft["sentDateTime"]) == (True, True, None)
    assert draft["parentFolderId"] == drafts["id"]
    assert draft["subject"] == "Quote"
    assert draft["body"] == {"contentType": "text", "content": "Here it is"}
    assert draft["toRecipients"][0]["emailAddress"]["address"] == "customer@example.net"
    assert (elsewhere["parentFolderId"], elsewhere["isDraft"]) == (archive["id"], True)
    patched = await graph.ok("PATCH", f"me/messages/{draft['id']}", {"subject": "Quote v2"})
    assert patched["subject"] == "Quote v2"
    assert [m["id"] for m in await _folder_messages(graph, MAIN, "drafts")] == [draft["id"]]


async def test_sending_a_draft_keeps_its_immutable_id(
    graph: Graph, sandbox: RunningSandbox
) -> None:
    """The sent draft is in Sent Items under a new default id and the same immutable id."""
    draft = await graph.ok("POST", "me/messages", _draft(to=SHARED), headers=IMMUTABLE)
    default_id = (await graph.ok("GET", f"me/messages/{draft['id']}"))["id"]

    status, body = await graph.call("POST", f"me/messages/{draft['id']}/send")

    sent = await graph.ok("GET", f"me/messages/{draft['id']}", headers=IMMUTABLE)
    sent_items = await graph.ok("GET", "me/mailFolders/sentitems")
    assert (status, body) == (202, None)
    assert draft["id"].startswith("AAkALg")
    assert sent["id"] == draft["id"]
    assert sent["parentFolderId"] == sent_items["id"]
    assert (sent["isDraft"], sent["isRead"]) == (False, True)
    assert sent["sentDateTime"] is not None
    assert sent["from"]["emailAddress"]["address"] == MAIN
    assert await graph.error("GET", f"me/messages/{default_id}") == (404, "ErrorItemNotFound")
    assert await _folder_messages(graph, MAIN, "drafts") == []
    [received] = await _folder_messages(graph, SHARED, "inbox")
    assert received["subject"] == "Quote"
    assert received["isRead"] is False
    assert received["from"]["emailAddress"]["address"] == MAIN
    assert received["internetMessageId"] == sent["internetMessageId"]


async def test_send_checks_send_as_like_send_mail(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """A draft sent as the shared mailbox needs Send As or Send on Behalf (403 otherwise)."""
    in_shared = await graph.ok("POST", f"users/{SHARED}/messages", _draft())
    from_shared = await graph.ok(
        "POST", "me/messages", _draft(From={"EmailAddress": {"Address": SHARED}})
    )
    await admin(http, sandbox, "POST", "grants", {"user": MAIN, "mailbox": SHARED})

    assert await graph.error("POST", f"users/{SHARED}/messages/{in_shared['id']}/send") == (
        403,
        "ErrorSendAsDenied",
    )
    assert await graph.error("POST", f"me/messages/{from_shared['id']}/send") == (
        403,
        "ErrorSendAsDenied",
    )
    assert len(await _folder_messages(graph, SHARED, "drafts")) == 1
    await admin(
        http, sandbox, "POST", "grants", {"user": MAIN, "mailbox": SHARED, "sendOnBehalf": True}
    )
    await graph.ok("POST", f"users/{SHARED}/messages/{in_shared['id']}/send")

    [sent] = await _folder_messages(graph, SHARED, "sentitems")
    assert sent["from"]["emailAddress"]["address"] == SHARED
    assert sent["sender"]["emailAddress"]["address"] == MAIN
    assert await _folder_messages(graph, SHARED, "drafts") == []


async def test_what_cannot_be_sent(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Not a draft is 400 ErrorInvalidRequest; no recipients 400; no Mail.Send 403."""
    received = await deliver(http, sandbox)
    empty = await graph.ok("POST", "me/messages", {"subject": "nobody"})
    draft = await graph.ok("POST", "me/messages", _draft(), headers=IMMUTABLE)
    no_send = mint(sandbox, scopes=["Mail.ReadWrite"])
    reader = mint(sandbox, scopes=["Mail.Read", "Mail.Send"])

    assert await graph.error("POST", f"me/messages/{received['id']}/send") == (
        400,
        "ErrorInvalidRequest",
    )
    assert await graph.error("POST", f"me/messages/{empty['id']}/send") == (
        400,
        "ErrorInvalidRecipients",
    )
    assert await graph.error("POST", f"me/messages/{draft['id']}/send", token=no_send) == (
        403,
        "ErrorAccessDenied",
    )
    assert await graph.error("POST", "me/messages", _draft(), token=reader) == (
        403,
        "ErrorAccessDenied",
    )
    assert await graph.error("POST", "me/messages", _draft(Colour="red")) == (
        400,
        "RequestBroker--ParseUri",
    )
    await graph.ok("POST", f"me/messages/{draft['id']}/send")
    assert await graph.error("POST", f"me/messages/{draft['id']}/send") == (
        400,
        "ErrorInvalidRequest",
    )
    assert await graph.error("GET", f"me/messages/{draft['id']}/send") == (405, "BadRequest")


async def test_drafts_and_sending_are_notified(
    graph: Graph,
    sandbox: RunningSandbox,
    receivers: Callable[[], Awaitable[Receiver]],
) -> None:
    """Saving is created in Drafts; sending is deleted there, created in Sent Items and in
    the recipient's inbox."""
    own, recipient = await receivers(), await receivers()
    await graph.ok(
        "POST",
        "subscriptions",
        subscription_body(sandbox, own.url, resource=f"users/{MAIN}/messages"),
        headers=IMMUTABLE,
    )
    inbox = f"users/{SHARED}/mailFolders/inbox/messages"
    await graph.ok(
        "POST",
        "subscriptions",
        subscription_body(sandbox, recipient.url, resource=inbox),
        token=app_only(sandbox, "Mail.Read"),
    )

    draft = await graph.ok("POST", "me/messages", _draft(to=SHARED), headers=IMMUTABLE)
    await graph.ok("POST", f"me/messages/{draft['id']}/send")
    async with asyncio.timeout(5):
        await sandbox.notifier.settle()

    assert [(n["changeType"], n["resourceData"]["id"]) for n in own.notifications] == [
        ("created", draft["id"]),
        ("deleted", draft["id"]),
        ("created", draft["id"]),
    ]
    [delivered] = recipient.notifications
    assert delivered["changeType"] == "created"


async def test_admin_drafts_and_send(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """The admin API saves a draft and sends it as the mailbox, as Outlook would."""
    draft = await admin(
        http,
        sandbox,
        "POST",
        f"mailboxes/{MAIN}/drafts",
        {"subject": "From Outlook", "to": [SHARED], "bcc": ["hidden@example.net"]},
    )
    empty = await admin(http, sandbox, "POST", f"mailboxes/{MAIN}/drafts", {"subject": "x"})

    sent = await admin(http, sandbox, "POST", f"mailboxes/{MAIN}/messages/{draft['id']}/send")

    drafts = await graph.ok("GET", "me/mailFolders/drafts")
    sent_items = await graph.ok("GET", "me/mailFolders/sentitems")
    assert (draft["isDraft"], draft["isRead"], draft["parentFolderId"]) == (
        True,
        True,
        drafts["id"],
    )
    assert sent["id"] != draft["id"]
    assert sent["immutableId"] == draft["immutableId"]
    assert (sent["isDraft"], sent["parentFolderId"]) == (False, sent_items["id"])
    assert sent["from"]["emailAddress"] == {"name": "Main User", "address": MAIN}
    assert sent["bccRecipients"][0]["emailAddress"]["address"] == "hidden@example.net"
    [received] = await _folder_messages(graph, SHARED, "inbox")
    assert (received["subject"], received["bccRecipients"]) == ("From Outlook", [])
    for message, field in ((sent, "message"), (empty, "to")):
        path = f"{sandbox.url}/sandbox/mailboxes/{MAIN}/messages/{message['immutableId']}/send"
        async with http.post(path) as response:
            error = await response.json()
            assert (response.status, error["field"]) == (400, field)
