"""End to end: Graph accounts watched by subscription or delta polling against the sandbox."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from blockbuster import blockbuster_ctx

from relay.api.keys import STORE
from relay.app import create_app
from relay.config import GraphSettings, ServerSettings, Settings
from relay.sandbox.server import RunningSandbox
from relay.store.graph import get_account, pending, queue, subscriptions_of
from tests.api.helpers import call
from tests.auth.conftest import (
    MAIN,
    SHARED,
    SHARED_PAYLOAD,
    add_sandbox_app,
    consented_main,
    sandbox_admin,
    with_microsoft,
)
from tests.blocking import allow_known
from tests.conftest import API_TOKEN
from tests.events.test_reports import ARF, POSTFIX, dsn
from tests.peers.receiver import Receiver
from tests.proc import free_port
from tests.sandbox.graph_helpers import admin, deliver
from tests.sources.imap.relay_support import (
    relay_settings,
    stored_events,
    wait_events,
    wait_state,
    wait_until,
)
from tests.sources.imap.test_listener import AUTO_REPLY, BOUNCE
from tests.webhooks.conftest import loopback_settings

# What a shared mailbox needs on top of the api base scopes.
SHARED_SCOPES = ["Mail.ReadWrite.Shared", "Mail.Send.Shared", "User.ReadBasic.All"]
Start = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def start(
    aiohttp_client: Any, settings: Settings, sandbox: RunningSandbox, tmp_path: Path
) -> AsyncIterator[Start]:
    """Start a relay on a fixed loopback port that Graph can notify (http allowed)."""
    port = free_port()
    guards: list[Any] = []

    async def make(**graph: Any) -> TestClient:
        while guards:
            # A restart has its own start-up work to do.
            guards.pop().__exit__(None, None, None)
        values = {"retry_min": 0.2, "poll_interval": 0.3, **graph}
        base = relay_settings(
            loopback_settings(with_microsoft(settings, sandbox, graph_url=sandbox.url))
        )
        configured = dataclasses.replace(
            base,
            server=ServerSettings(
                host="127.0.0.1", port=port, service_url=f"http://127.0.0.1:{port}"
            ),
            graph=GraphSettings(**values),
        )
        client: TestClient = await aiohttp_client(
            create_app(configured, base_dir=tmp_path),
            server_kwargs={"port": port},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        guard = blockbuster_ctx()
        allow_known(guard.__enter__())
        guards.append(guard)
        return client

    yield make
    # Notifications still on their way (an account with every folder watched has several
    # subscriptions) finish while the relay is up, so no connection is cut half-way.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await sandbox.notifier.settle()
    for guard in guards:
        guard.__exit__(None, None, None)


async def _graph_main(
    client: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> str:
    """Register the sandbox app for Graph and consent as the main user (``my-account``)."""
    await sandbox_admin(http, sandbox, "settings", {"allowHttpNotifications": True})
    return await consented_main(client, http, sandbox, baseScopes="api", extraScopes=SHARED_SCOPES)


async def _route(client: TestClient, rx: Receiver) -> None:
    created = await call(client, "POST", "/v1/webhooks", {"url": rx.url}, status=201)
    rx.secret = created["secret"]


async def _graph_state(client: TestClient, account: str) -> Any:
    """``mode`` and INBOX's ``subscription_id`` (None while polling or not subscribed)."""
    async with client.app[STORE].read() as conn:
        row = await get_account(conn, account)
        subs = {s["folder"]: s for s in await subscriptions_of(conn, account)}
    inbox = subs.get("inbox")
    return {
        "mode": row["mode"] if row is not None else None,
        "subscription_id": inbox["subscription_id"] if inbox is not None else None,
    }


async def test_main_mailbox_new_updated_deleted_by_subscription(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Mail delivered to the main mailbox reaches the receiver as a signed messageNew; a flag
    change is a messageUpdated and a delete a messageDeleted, all through the subscription."""
    client = await start()
    async with Receiver(secret="whsec_" + "A" * 44) as rx:
        await _route(client, rx)
        await _graph_main(client, http, sandbox)
        await wait_state(client, "my-account", "connected")
        state = await _graph_state(client, "my-account")
        assert state["mode"] == "subscription"
        assert state["subscription_id"]
        subs = await admin(http, sandbox, "GET", "subscriptions")
        assert any(s["id"] == state["subscription_id"] for s in subs)

        sent = await deliver(http, sandbox, subject="Hello Graph")
        (new,) = await wait_events(client, "my-account", "messageNew")
        assert new["data"]["id"] == sent["immutableId"]
        assert new["data"]["subject"] == "Hello Graph"
        assert new["path"] == "INBOX"
        await wait_until(lambda: _verified(rx, "messageNew"), "signed messageNew")

        await admin(
            http, sandbox, "PATCH", f"mailboxes/{MAIN}/messages/{sent['id']}", {"isRead": True}
        )
        (updated,) = await wait_events(client, "my-account", "messageUpdated")
        assert updated["data"]["changes"]["flags"]["added"] == ["\\Seen"]

        await admin(http, sandbox, "DELETE", f"mailboxes/{MAIN}/messages/{sent['id']}")
        (deleted,) = await wait_events(client, "my-account", "messageDeleted")
        assert deleted["data"] == {"id": sent["immutableId"], "uid": new["data"]["uid"]}
        notes = await admin(http, sandbox, "GET", "notifications")
        assert notes


async def test_auto_reply_and_bounce_are_marked(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """An auto-reply and a DSN delivered as MIME into the inbox: messageNew with isAutoReply
    (from internetMessageHeaders), its size, isBounce and relatedMessageId (from the source),
    messageSpecialUse, and a text id the API reads."""
    client = await start()
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    for raw in (AUTO_REPLY, BOUNCE):
        body = {"folder": "inbox", "mime": base64.b64encode(raw).decode()}
        await admin(http, sandbox, "POST", f"mailboxes/{MAIN}/messages", body)
    found = await wait_events(client, "my-account", "messageNew", 2)
    by_subject = {e["data"]["subject"]: e["data"] for e in found}
    auto = by_subject["Re: Ticket 9"]
    assert auto["isAutoReply"] is True
    # The size is MAPI's PR_MESSAGE_SIZE, read with the message (the MIME's size here).
    assert auto["size"] == len(AUTO_REPLY)
    assert auto["messageSpecialUse"] == "\\Inbox"
    assert auto["text"] == {"id": auto["id"], "encodedSize": {}}
    assert not {"isBounce", "isComplaint", "relatedMessageId"} & set(auto)
    bounce = by_subject["Undelivered Mail Returned to Sender"]
    assert bounce["isBounce"] is True
    assert bounce["relatedMessageId"] == "<ticket-9@example.com>"
    assert bounce["messageSpecialUse"] == "\\Inbox"
    assert "isAutoReply" not in bounce
    text = await call(
        client, "GET", f"/v1/account/my-account/text/{auto['text']['id']}?textType=plain"
    )
    assert "I am away until Monday." in text["plain"]


async def _deliver_mime(
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    raw: bytes,
    *,
    mailbox: str = MAIN,
    folder: str = "inbox",
) -> Any:
    body = {"folder": folder, "mime": base64.b64encode(raw).decode()}
    return await admin(http, sandbox, "POST", f"mailboxes/{mailbox}/messages", body)


async def test_bounces_and_complaints_follow_their_message_new(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A DSN and an ARF report delivered into the inbox: their messageNew (with path and
    seemsLikeNew) is followed by messageBounce / messageComplaint, without path, with
    EmailEngine's fields read from the source; a bounce of mail submitted through the relay
    names its outbox queue id."""
    client = await start()
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    queued = await call(
        client,
        "POST",
        "/v1/account/my-account/submit",
        {"to": [{"address": "missing@example.org"}], "subject": "Hello", "text": "Hi"},
    )
    await _deliver_mime(http, sandbox, POSTFIX)
    await _deliver_mime(http, sandbox, ARF)
    await _deliver_mime(http, sandbox, dsn(queued["messageId"], "missing@example.org"))
    await wait_events(client, "my-account", "messageBounce", 2)
    await wait_events(client, "my-account", "messageComplaint")
    await asyncio.sleep(0.5)
    found = await stored_events(client, "my-account")
    inbox = [e for e in found if e["event"] == "messageNew" and e["path"] == "INBOX"]
    assert len(inbox) == 3
    news = {e["data"]["id"]: e["data"] for e in found if e["event"] == "messageNew"}
    for index, envelope in enumerate(found):
        if envelope["event"] in ("messageBounce", "messageComplaint"):
            assert "path" not in envelope
            before = found[index - 1]
            assert before["event"] == "messageNew"
            own = envelope["data"].get("bounceMessage") or envelope["data"]["complaintMessage"]
            assert own == before["data"]["id"]

    bounces = {e["data"]["messageId"]: e["data"] for e in found if e["event"] == "messageBounce"}
    postfix = bounces["<305eabf4@example.com>"]
    assert news[postfix["bounceMessage"]]["isBounce"] is True
    assert news[postfix["bounceMessage"]]["path"] == "INBOX"
    assert news[postfix["bounceMessage"]]["seemsLikeNew"] is True
    headers = postfix.pop("messageHeaders")
    assert postfix == {
        "bounceMessage": postfix["bounceMessage"],
        "recipient": "missing@example.net",
        "action": "failed",
        "response": {
            "source": "smtp",
            "message": "550 5.1.1 <missing@example.net>: Recipient address rejected: User"
            " unknown in virtual mailbox table",
            "status": "5.1.1",
        },
        "mta": "mx.example.net",
        "queueId": "9441D8220E",
        "messageId": "<305eabf4@example.com>",
    }
    assert headers["subject"] == ["=?UTF-8?Q?Gr=C3=BC=C3=9Fe?="]
    ours = bounces[queued["messageId"]]
    assert ours["sentQueueId"] == queued["queueId"]
    assert "sentQueueId" not in postfix

    (complaint,) = [e["data"] for e in found if e["event"] == "messageComplaint"]
    assert news[complaint["complaintMessage"]]["isComplaint"] is True
    assert complaint["arf"]["originalRcptTo"] == ["user@isp.example.com"]
    assert complaint["arf"]["sourceIp"] == "203.0.113.42"
    assert complaint["headers"]["messageId"] == "<abc123@sender.example.com>"


async def test_shared_mailbox_bounce(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A DSN in a polled shared mailbox is a messageBounce of the shared account."""
    client = await start()
    await _graph_main(client, http, sandbox)
    await call(client, "POST", "/v1/account", SHARED_PAYLOAD)
    await wait_state(client, "shared", "connected")
    await _deliver_mime(http, sandbox, POSTFIX, mailbox=SHARED)
    (new,) = await wait_events(client, "shared", "messageNew")
    (bounce,) = await wait_events(client, "shared", "messageBounce")
    assert new["data"]["isBounce"] is True
    assert bounce["data"]["bounceMessage"] == new["data"]["id"]
    assert bounce["data"]["recipient"] == "missing@example.net"
    assert await stored_events(client, "my-account", "messageBounce") == []


async def test_seems_like_new_by_message_id(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """The same message (Message-ID) delivered twice is new once (Graph's ids differ, so
    they are not the key); a message in Sent Items is never new; data.path is the folder."""
    client = await start(poll_interval=600.0)
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    await _watch_paths(client, ["\\Sent"])
    raw = AUTO_REPLY.replace(b"Re: Ticket 9", b"twice")
    for _ in range(2):
        await _deliver_mime(http, sandbox, raw)
    await _deliver_mime(http, sandbox, raw.replace(b"<ooo-9@", b"<sent-1@"), folder="sentitems")
    found = await wait_events(client, "my-account", "messageNew", 3)
    seen = sorted(
        (e["data"]["path"], e["data"]["uid"], e["data"]["seemsLikeNew"], e["path"]) for e in found
    )
    assert [(path, new, envelope) for path, _, new, envelope in seen] == [
        ("INBOX", True, "INBOX"),
        ("INBOX", False, "INBOX"),
        ("Sent Items", False, "Sent Items"),
    ]


async def _verified(rx: Receiver, event: str) -> bool:
    return any(d.verified and d.json()["event"] == event for d in rx.requests)


async def test_shared_mailbox_is_polled(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A delegated shared mailbox (Graph refuses its subscription) is watched by delta
    polling with the main user's token and its mail arrives as messageNew."""
    client = await start()
    await _graph_main(client, http, sandbox)
    await call(client, "POST", "/v1/account", SHARED_PAYLOAD)
    await wait_state(client, "shared", "connected")
    state = await _graph_state(client, "shared")
    assert state["mode"] == "polling"
    await deliver(http, sandbox, mailbox=SHARED, subject="For the team")
    (new,) = await wait_events(client, "shared", "messageNew")
    assert new["data"]["subject"] == "For the team"


async def test_wrong_client_state_is_ignored_and_handshake_echoes(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """The handshake echoes the token as text/plain; a notification with a wrong
    clientState is answered 202 but stores nothing."""
    client = await start()
    resp = await client.post("/graph/notify?validationToken=a%20b%3Cc%3E")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert await resp.text() == "a b<c>"
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    state = await _graph_state(client, "my-account")
    forged = {
        "value": [
            {
                "subscriptionId": state["subscription_id"],
                "clientState": "not-the-secret",
                "changeType": "created",
                "resource": "x",
            }
        ]
    }
    resp = await client.post("/graph/notify", json=forged)
    assert resp.status == 202
    async with client.app[STORE].read() as conn:
        assert await pending(conn, "my-account") == []


async def test_relay_down_then_delta_catches_up(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Mail that arrives while the relay is down is reported by delta on the next start;
    lifecycle missed triggers a catch-up too."""
    client = await start()
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    await client.close()
    await deliver(http, sandbox, subject="while down")
    client = await start()
    (new,) = await wait_events(client, "my-account", "messageNew")
    assert new["data"]["subject"] == "while down"
    assert len(await stored_events(client, "my-account", "accountInitialized")) == 1


async def _subscription(http: aiohttp.ClientSession, sandbox: RunningSandbox, sub_id: str) -> Any:
    subs = await admin(http, sandbox, "GET", "subscriptions")
    return next((s for s in subs if s["id"] == sub_id), None)


async def test_lifecycle_missed_and_removed_lose_nothing(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """After a subscriptionRemoved the relay subscribes again and catches up with delta; a
    missed event triggers a catch-up too; each message is reported once."""
    client = await start(poll_interval=600.0)
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    first = (await _graph_state(client, "my-account"))["subscription_id"]

    await admin(
        http, sandbox, "POST", f"subscriptions/{first}/lifecycle", {"event": "subscriptionRemoved"}
    )
    # Delivered while no subscription exists: only delta can find it.
    await deliver(http, sandbox, subject="between subscriptions")

    async def recreated() -> Any:
        state = await _graph_state(client, "my-account")
        return state["subscription_id"] not in (None, first)

    await wait_until(recreated, "a new subscription")
    (new,) = await wait_events(client, "my-account", "messageNew")
    assert new["data"]["subject"] == "between subscriptions"
    second = (await _graph_state(client, "my-account"))["subscription_id"]
    assert await _subscription(http, sandbox, second) is not None

    await admin(http, sandbox, "POST", f"subscriptions/{second}/lifecycle", {"event": "missed"})
    await wait_events(client, "my-account", "messageNew")
    await deliver(http, sandbox, subject="after missed")
    found = await wait_events(client, "my-account", "messageNew", count=2)
    assert [e["data"]["subject"] for e in found] == ["between subscriptions", "after missed"]


async def test_reauthorization_required_is_answered(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """reauthorizationRequired makes the relay reauthorize the subscription."""
    client = await start()
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    sub_id = (await _graph_state(client, "my-account"))["subscription_id"]
    await admin(
        http,
        sandbox,
        "POST",
        f"subscriptions/{sub_id}/lifecycle",
        {"event": "reauthorizationRequired"},
    )

    async def reauthorized() -> bool:
        sub = await _subscription(http, sandbox, sub_id)
        return sub is not None and not sub["needsReauthorization"]

    await wait_until(reauthorized, "the subscription reauthorized")


async def test_subscription_is_renewed_before_expiry(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A subscription close to its expiry is renewed (PATCH), so it outlives its first
    lifetime; the account view shows the mode, the id and the expiry."""
    client = await start(subscription_lifetime=3.0, subscription_renew_before=2.0)
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    sub_id = (await _graph_state(client, "my-account"))["subscription_id"]
    created = (await _subscription(http, sandbox, sub_id))["expirationDateTime"]

    async def renewed() -> bool:
        sub = await _subscription(http, sandbox, sub_id)
        return sub is not None and sub["expirationDateTime"] > created

    await wait_until(renewed, "a renewed subscription")
    view = await call(client, "GET", "/v1/account/my-account")
    assert view["graph"]["mode"] == "subscription"
    assert view["graph"]["subscriptionId"] == sub_id
    assert view["graph"]["expires"]
    assert "clientState" not in str(view)


async def test_shared_mailbox_of_app_only_account_is_subscribed(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A shared mailbox of an app-only (outlookService) account is watched by subscription."""
    client = await start(poll_interval=600.0)
    await sandbox_admin(http, sandbox, "settings", {"allowHttpNotifications": True})
    app_id = await add_sandbox_app(client, sandbox, provider="outlookService", baseScopes="api")
    await call(
        client,
        "POST",
        "/v1/account",
        {"account": "svc", "name": "Service", "email": MAIN, "oauth2": {"provider": app_id}},
    )
    await call(
        client,
        "POST",
        "/v1/account",
        {
            **SHARED_PAYLOAD,
            "oauth2": {"auth": {"delegatedUser": SHARED, "delegatedAccount": "svc"}},
        },
    )
    await wait_state(client, "shared", "connected")
    view = await call(client, "GET", "/v1/account/shared")
    assert view["graph"]["mode"] == "subscription"
    await deliver(http, sandbox, mailbox=SHARED, subject="to the team")
    (new,) = await wait_events(client, "shared", "messageNew")
    assert new["data"]["subject"] == "to the team"


async def test_expired_delta_token_rebaselines_without_a_flood(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """An expired delta token (syncStateNotFound) re-baselines: PUT /sync reports the new
    message only, not the mailbox's old ones again."""
    client = await start(poll_interval=600.0)
    for n in range(3):
        await deliver(http, sandbox, subject=f"old {n}")
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    await sandbox_admin(http, sandbox, f"mailboxes/{MAIN}/folders/inbox/expire-delta")
    await deliver(http, sandbox, subject="new one")
    await call(client, "PUT", "/v1/account/my-account/sync", {"sync": True})
    (new,) = await wait_events(client, "my-account", "messageNew")
    assert new["data"]["subject"] == "new one"
    await asyncio.sleep(0.5)
    assert len(await stored_events(client, "my-account", "messageNew")) == 1


async def test_deleting_the_account_deletes_its_subscription(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """DELETE /v1/account/{id} removes the account's subscription at Graph and the
    notifications stored for it."""
    client = await start()
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    sub_id = (await _graph_state(client, "my-account"))["subscription_id"]
    assert await _subscription(http, sandbox, sub_id) is not None
    # A notification stored but not yet consumed when the account goes.
    async with client.app[STORE].write() as conn:
        await queue(
            conn,
            [
                {
                    "account": "my-account",
                    "subscription_id": sub_id,
                    "kind": "created",
                    "lifecycle": 0,
                    "payload": {},
                }
            ],
        )
    await call(client, "DELETE", "/v1/account/my-account")

    async def gone() -> bool:
        return await _subscription(http, sandbox, sub_id) is None

    await wait_until(gone, "the subscription deleted")

    async def dropped() -> bool:
        async with client.app[STORE].read() as conn:
            return list(await pending(conn, "my-account")) == []

    await wait_until(dropped, "its stored notifications dropped")


async def _watch_paths(client: TestClient, paths: list[str]) -> None:
    """Set the account's ``path`` and wait until its watcher has taken it up."""
    await call(client, "PUT", "/v1/account/my-account", {"path": paths})

    async def watching() -> bool:
        view = await call(client, "GET", "/v1/account/my-account")
        graph = view.get("graph") or {}
        subscribed = [f for f in graph.get("folders", []) if f.get("subscriptionId")]
        return view["state"] == "connected" and len(subscribed) == len(paths) + 1

    await wait_until(watching, f"subscriptions for INBOX and {paths}")


async def test_folders_besides_inbox_moves_and_deletes(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """``path`` adds folders by special use or by name, each with its subscription; mail in
    them carries their path and special use. A move between watched folders is one
    messageUpdated (changes.path), a move out of them too; Graph's DELETE is a delete."""
    client = await start(poll_interval=600.0)
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    await admin(http, sandbox, "POST", f"mailboxes/{MAIN}/folders", {"displayName": "Projects"})
    elsewhere = await admin(
        http, sandbox, "POST", f"mailboxes/{MAIN}/folders", {"displayName": "Elsewhere"}
    )
    await _watch_paths(client, ["\\Archive", "Projects"])
    view = await call(client, "GET", "/v1/account/my-account")
    assert [(f["path"], f.get("specialUse")) for f in view["graph"]["folders"]] == [
        ("INBOX", "\\Inbox"),
        ("Archive", "\\Archive"),
        ("Projects", None),
    ]

    filed = await deliver(http, sandbox, folder="archive", subject="filed")
    (new,) = await wait_events(client, "my-account", "messageNew")
    assert (new["path"], new["specialUse"]) == ("Archive", "\\Archive")
    assert new["data"]["id"] == filed["immutableId"]

    first = await deliver(http, sandbox, subject="to be moved")
    await wait_events(client, "my-account", "messageNew", count=2)
    await admin(
        http,
        sandbox,
        "POST",
        f"mailboxes/{MAIN}/messages/{first['id']}/move",
        {"destination": "archive"},
    )
    (moved,) = await wait_events(client, "my-account", "messageUpdated")
    assert (moved["path"], moved["specialUse"]) == ("INBOX", "\\Inbox")
    assert moved["data"]["id"] == first["immutableId"]
    assert moved["data"]["changes"]["path"] == {"old": "INBOX", "new": "Archive"}
    assert moved["data"]["changes"]["specialUse"] == {"old": "\\Inbox", "new": "\\Archive"}

    await admin(
        http,
        sandbox,
        "POST",
        f"mailboxes/{MAIN}/messages/{first['immutableId']}/move",
        {"destination": elsewhere["id"]},
    )
    _, out = await wait_events(client, "my-account", "messageUpdated", count=2)
    assert out["path"] == "Archive"
    assert out["data"]["changes"]["path"] == {"old": "Archive", "new": "Elsewhere"}

    await admin(http, sandbox, "DELETE", f"mailboxes/{MAIN}/messages/{filed['immutableId']}")
    (deleted,) = await wait_events(client, "my-account", "messageDeleted")
    assert deleted["path"] == "Archive"
    assert deleted["data"]["id"] == filed["immutableId"]
    await asyncio.sleep(0.5)
    assert len(await stored_events(client, "my-account", "messageNew")) == 2


async def test_sent_draft_is_one_move_from_drafts_to_sent_items(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Drafts and Sent Items watched: a saved draft is a messageNew in Drafts; sending it is
    one messageUpdated (Drafts -> Sent Items, \\Draft removed), not a delete and a new."""
    client = await start(poll_interval=600.0)
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    await _watch_paths(client, ["\\Drafts", "\\Sent"])
    draft = await admin(
        http,
        sandbox,
        "POST",
        f"mailboxes/{MAIN}/drafts",
        {"subject": "draft", "to": ["bob@example.net"]},
    )
    (new,) = await wait_events(client, "my-account", "messageNew")
    assert (new["path"], new["specialUse"]) == ("Drafts", "\\Drafts")
    assert "\\Draft" in new["data"]["flags"]
    await admin(http, sandbox, "POST", f"mailboxes/{MAIN}/messages/{draft['id']}/send")
    (sent,) = await wait_events(client, "my-account", "messageUpdated")
    assert sent["data"]["id"] == draft["immutableId"]
    assert sent["data"]["changes"]["path"] == {"old": "Drafts", "new": "Sent Items"}
    assert "\\Draft" in sent["data"]["changes"]["flags"]["deleted"]
    await asyncio.sleep(0.5)
    assert len(await stored_events(client, "my-account", "messageNew")) == 1
    assert await stored_events(client, "my-account", "messageDeleted") == []


async def test_renewal_follows_graphs_clock(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """The sandbox clock jumps two days ahead (default lifetime three days, renewed a day
    before expiry): the relay reads Graph's time from its answers and renews at once, with
    an expiry Graph accepts, so the subscription never lapses."""
    client = await start(poll_interval=600.0)
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    sub_id = (await _graph_state(client, "my-account"))["subscription_id"]
    created = (await _subscription(http, sandbox, sub_id))["expirationDateTime"]
    await sandbox_admin(http, sandbox, "clock", {"advanceSeconds": 2 * 86400 + 3600})
    # Any Graph answer tells the relay the new time; a sync makes one.
    await call(client, "PUT", "/v1/account/my-account/sync", {"sync": True})

    async def renewed() -> bool:
        sub = await _subscription(http, sandbox, sub_id)
        return sub is not None and sub["expirationDateTime"] > created

    await wait_until(renewed, "a subscription renewed on Graph's clock")
    await deliver(http, sandbox, subject="after the jump")
    (new,) = await wait_events(client, "my-account", "messageNew")
    assert new["data"]["subject"] == "after the jump"


async def test_star_takes_up_a_folder_created_later_on_sync(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """``path: *`` watches every folder, nested ones by their full path; a folder created
    afterwards is watched once the relay looks again (on PUT /sync, or every 15 minutes)."""
    client = await start(poll_interval=600.0)
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    await call(client, "PUT", "/v1/account/my-account", {"path": "*"})

    async def folders() -> list[str]:
        view = await call(client, "GET", "/v1/account/my-account")
        graph = view.get("graph") or {}
        return [f["path"] for f in graph.get("folders", []) if f.get("subscriptionId")]

    async def all_subscribed() -> bool:
        return "Sent Items" in await folders()

    await wait_until(all_subscribed, "every folder subscribed")
    projects = await admin(
        http, sandbox, "POST", f"mailboxes/{MAIN}/folders", {"displayName": "Projects"}
    )
    await admin(
        http,
        sandbox,
        "POST",
        f"mailboxes/{MAIN}/folders",
        {"displayName": "Alpha", "parentFolderId": projects["id"]},
    )
    await call(client, "PUT", "/v1/account/my-account/sync", {"sync": True})

    async def nested() -> bool:
        return "Projects/Alpha" in await folders()

    await wait_until(nested, "the new folders subscribed")
    alpha = next(
        f
        for f in await admin(http, sandbox, "GET", f"mailboxes/{MAIN}/folders")
        if f["displayName"] == "Alpha"
    )
    await deliver(http, sandbox, folder=alpha["id"], subject="filed deep")
    (new,) = await wait_events(client, "my-account", "messageNew")
    assert (new["path"], new.get("specialUse")) == ("Projects/Alpha", None)


async def test_deletes_list_the_folder_tree_once(
    start: Start, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Telling a delete from a move needs the folder tree; Graph's DELETE puts messages in a
    folder the listing does not show, which must not make every delete list it again."""
    client = await start(poll_interval=600.0)
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    ids = [(await deliver(http, sandbox, subject=f"d{n}"))["immutableId"] for n in range(3)]
    await wait_events(client, "my-account", "messageNew", count=3)
    for n, graph_id in enumerate(ids, start=1):
        await admin(http, sandbox, "DELETE", f"mailboxes/{MAIN}/messages/{graph_id}")
        await wait_events(client, "my-account", "messageDeleted", count=n)
    requests = await admin(http, sandbox, "GET", f"mailboxes/{MAIN}/requests")
    listings = [r for r in requests if r["path"].lower().endswith("/mailfolders")]
    assert len(listings) == 1
