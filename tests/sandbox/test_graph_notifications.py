"""Change and lifecycle notifications: payloads, batching, retries, slow endpoints, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from relay.sandbox.graph.mail import MessageInput
from relay.sandbox.graph.notifier import RETRY_DELAYS
from relay.sandbox.server import RunningSandbox

from .graph_helpers import (
    MAIN,
    SHARED,
    Graph,
    Receiver,
    admin,
    app_only,
    deliver,
    expires_in,
    subscription_body,
)

Receivers = Callable[[], Awaitable[Receiver]]


async def _settle(sandbox: RunningSandbox) -> None:
    async with asyncio.timeout(5):
        await sandbox.notifier.settle()


async def _subscribe(graph: Graph, sandbox: RunningSandbox, url: str, **fields: Any) -> str:
    created = await graph.ok("POST", "subscriptions", subscription_body(sandbox, url, **fields))
    subscription_id: str = created["id"]
    return subscription_id


async def _stats(http: aiohttp.ClientSession, sandbox: RunningSandbox, url: str) -> dict[str, Any]:
    body = await admin(http, sandbox, "GET", "notifications")
    found: list[dict[str, Any]] = [e for e in body["endpoints"] if e["url"] == url]
    assert len(found) == 1, body
    return found[0]


async def test_a_new_message_is_notified(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """A delivered message yields one created notification shaped like Graph's."""
    subscription_id = await _subscribe(graph, sandbox, receiver.url)

    message = await deliver(http, sandbox)
    await _settle(sandbox)

    [post] = receiver.posts
    [note] = post["value"]
    owner = sandbox.state.users[MAIN].object_id
    resource = f"Users/{owner}/Messages/{message['id']}"
    assert note == {
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": note["subscriptionExpirationDateTime"],
        "changeType": "created",
        "resource": resource,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Message",
            "@odata.id": resource,
            "@odata.etag": message["@odata.etag"],
            "id": message["id"],
        },
        "clientState": "secret-state",
        "tenantId": sandbox.state.tenant_id,
    }
    assert note["subscriptionExpirationDateTime"].endswith("+00:00")


async def test_updates_deletes_and_moves_are_notified(
    http: aiohttp.ClientSession,
    graph: Graph,
    sandbox: RunningSandbox,
    receivers: Receivers,
) -> None:
    """A folder subscription sees a move out as deleted; a mailbox one also sees the new id."""
    inbox, mailbox = await receivers(), await receivers()
    await _subscribe(graph, sandbox, inbox.url)
    await _subscribe(graph, sandbox, mailbox.url, resource=f"users/{MAIN}/messages")
    read = await deliver(http, sandbox, subject="read me")
    moved = await deliver(http, sandbox, subject="move me")
    deleted = await deliver(http, sandbox, subject="delete me")
    await _settle(sandbox)
    inbox.posts.clear()
    mailbox.posts.clear()

    await graph.ok("PATCH", f"me/messages/{read['id']}", {"isRead": True})
    new = await graph.ok("POST", f"me/messages/{moved['id']}/move", {"destinationId": "drafts"})
    await graph.call("DELETE", f"me/messages/{deleted['id']}")
    await _settle(sandbox)

    def seen(receiver: Receiver) -> list[tuple[str, str]]:
        return [(n["changeType"], n["resourceData"]["id"]) for n in receiver.notifications]

    assert seen(inbox) == [
        ("updated", read["id"]),
        ("deleted", moved["id"]),
        ("deleted", deleted["id"]),
    ]
    assert seen(mailbox) == [
        ("updated", read["id"]),
        ("deleted", moved["id"]),
        ("created", new["id"]),
        ("deleted", deleted["id"]),
    ]


async def test_change_types_filter_notifications(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """A subscription for created only is not told about updates."""
    await _subscribe(graph, sandbox, receiver.url, changeType="created")
    message = await deliver(http, sandbox)

    await graph.ok("PATCH", f"me/messages/{message['id']}", {"isRead": True})
    await _settle(sandbox)

    assert [n["changeType"] for n in receiver.notifications] == ["created"]


async def test_notifications_are_batched_per_url(
    graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Changes close together, for several subscriptions of one URL, share one POST."""
    first = await _subscribe(graph, sandbox, receiver.url)
    second = await _subscribe(graph, sandbox, receiver.url, resource=f"users/{MAIN}/messages")

    for n in range(3):
        sandbox.state.mail.add_message(MAIN, "inbox", MessageInput(subject=f"m{n}"))
    await _settle(sandbox)

    [post] = receiver.posts
    assert len(post["value"]) == 6
    assert {n["subscriptionId"] for n in post["value"]} == {first, second}


async def test_sent_mail_between_mailboxes_is_notified(
    graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Mail sent to a watched sandbox mailbox arrives as a created notification."""
    token = app_only(sandbox, "Mail.Read", "Mail.Send")
    resource = f"users/{SHARED}/mailFolders/inbox/messages"
    body = subscription_body(sandbox, receiver.url, resource=resource)
    await graph.ok("POST", "subscriptions", body, token=token)

    await graph.ok(
        "POST",
        f"users/{MAIN}/sendMail",
        {"message": {"toRecipients": [{"emailAddress": {"address": SHARED}}]}},
        token=token,
    )
    await _settle(sandbox)

    [note] = receiver.notifications
    assert note["changeType"] == "created"
    assert note["resource"].startswith(f"Users/{sandbox.state.users[SHARED].object_id}/")


async def test_a_failed_post_is_retried_on_the_clock(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """A 500 answer is retried 10 s later (sandbox clock), with the same notification."""
    await _subscribe(graph, sandbox, receiver.url)
    answers = iter([500, 202])
    receiver.answer = lambda _: next(answers)

    await deliver(http, sandbox)
    await _settle(sandbox)
    failed = await _stats(http, sandbox, receiver.url)
    sandbox.state.advance_clock(RETRY_DELAYS[0] - 1)
    await _settle(sandbox)
    early = len(receiver.posts)
    await admin(http, sandbox, "POST", "clock", {"advanceSeconds": 1})
    await _settle(sandbox)

    assert (failed["failedAttempts"], failed["pending"], failed["lastStatus"]) == (1, 1, 500)
    assert early == 1
    assert len(receiver.posts) == 2
    assert receiver.posts[0] == receiver.posts[1]
    stats = await _stats(http, sandbox, receiver.url)
    assert (stats["delivered"], stats["retries"], stats["pending"]) == (1, 1, 0)


async def test_retries_give_up_after_four_hours_and_report_missed(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receivers: Receivers
) -> None:
    """A URL that keeps failing is tried for 4 hours; then the subscription is told missed."""
    notify, lifecycle = await receivers(), await receivers()
    notify.answer = lambda _: 503
    subscription_id = await _subscribe(
        graph,
        sandbox,
        notify.url,
        lifecycleNotificationUrl=lifecycle.url,
        expirationDateTime=expires_in(sandbox, 10000),
    )
    await deliver(http, sandbox)
    await _settle(sandbox)

    for delay in (*RETRY_DELAYS, 3600, 3600, 3600):
        sandbox.state.advance_clock(delay)
        await _settle(sandbox)

    stats = await _stats(http, sandbox, notify.url)
    assert len(notify.posts) == 9
    assert (stats["dropped"], stats["pending"], stats["delivered"]) == (1, 0, 0)
    [missed] = lifecycle.notifications
    assert missed["lifecycleEvent"] == "missed"
    assert missed["subscriptionId"] == subscription_id


async def test_an_answer_after_the_timeout_counts_as_failed(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """A 2xx that takes longer than the response timeout (sandbox clock) is retried."""
    await _subscribe(graph, sandbox, receiver.url)

    def late(_: dict[str, Any]) -> int:
        if len(receiver.posts) == 1:
            sandbox.state.advance_clock(11)
        return 202

    receiver.answer = late
    await deliver(http, sandbox)
    await _settle(sandbox)
    sandbox.state.advance_clock(RETRY_DELAYS[0])
    await _settle(sandbox)

    stats = await _stats(http, sandbox, receiver.url)
    assert len(receiver.posts) == 2
    assert (stats["failedAttempts"], stats["delivered"], stats["slowAnswers"]) == (1, 1, 1)


async def _slow_answers(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, receiver: Receiver, slow: int
) -> None:
    """Ten notifications answered one by one, the first ``slow`` taking 3 s (clock)."""

    def answer(_: dict[str, Any]) -> int:
        if len(receiver.posts) <= slow:
            sandbox.state.advance_clock(3.0)
        return 202

    receiver.answer = answer
    for _ in range(10):
        await deliver(http, sandbox)
        await _settle(sandbox)


async def test_ten_percent_slow_answers_delay_notifications(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """With >= 10 % of answers over 2.9 s, new notifications wait 10 minutes."""
    await _subscribe(graph, sandbox, receiver.url)
    await _slow_answers(http, sandbox, receiver, slow=1)
    stats = await _stats(http, sandbox, receiver.url)

    await deliver(http, sandbox, subject="late")
    await _settle(sandbox)
    held = len(receiver.posts)
    sandbox.state.advance_clock(599)
    await _settle(sandbox)
    still_held = len(receiver.posts)
    sandbox.state.advance_clock(1)
    await _settle(sandbox)

    assert (stats["state"], stats["slowAnswers"], stats["answersInWindow"]) == ("delayed", 1, 10)
    assert stats["slowShare"] == 0.1
    assert stats["delayedUntil"] is not None
    assert held == still_held == 10
    assert len(receiver.posts) == 11
    assert (await _stats(http, sandbox, receiver.url))["delayed"] == 1


async def test_fifteen_percent_slow_answers_drop_notifications(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receivers: Receivers
) -> None:
    """With >= 15 % slow answers, new notifications are dropped and missed is sent."""
    notify, lifecycle = await receivers(), await receivers()
    await _subscribe(graph, sandbox, notify.url, lifecycleNotificationUrl=lifecycle.url)
    await _slow_answers(http, sandbox, notify, slow=2)

    await deliver(http, sandbox, subject="dropped")
    await _settle(sandbox)
    sandbox.state.advance_clock(601)
    await _settle(sandbox)

    stats = await _stats(http, sandbox, notify.url)
    assert len(notify.posts) == 10
    assert stats["dropped"] == 1
    assert [n["lifecycleEvent"] for n in lifecycle.notifications] == ["missed"]


async def test_endpoints_recover_when_the_window_has_passed(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Ten minutes after the slow answers, notifications flow again at once."""
    await _subscribe(graph, sandbox, receiver.url, expirationDateTime=expires_in(sandbox, 120))
    await _slow_answers(http, sandbox, receiver, slow=2)
    sandbox.state.advance_clock(601)

    await deliver(http, sandbox)
    await _settle(sandbox)

    assert len(receiver.posts) == 11
    assert (await _stats(http, sandbox, receiver.url))["state"] == "normal"


async def test_expiry_removes_the_subscription_and_says_so(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receivers: Receivers
) -> None:
    """At expirationDateTime the subscription goes; subscriptionRemoved goes to lifecycle."""
    notify, lifecycle = await receivers(), await receivers()
    subscription_id = await _subscribe(
        graph,
        sandbox,
        notify.url,
        lifecycleNotificationUrl=lifecycle.url,
        expirationDateTime=expires_in(sandbox, 5),
    )

    await admin(http, sandbox, "POST", "clock", {"advanceSeconds": 301})
    await _settle(sandbox)
    await deliver(http, sandbox)
    await _settle(sandbox)

    assert subscription_id not in sandbox.state.subscriptions
    assert notify.posts == []
    [removed] = lifecycle.notifications
    assert removed == {
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": removed["subscriptionExpirationDateTime"],
        "tenantId": sandbox.state.tenant_id,
        "clientState": "secret-state",
        "lifecycleEvent": "subscriptionRemoved",
    }


async def test_pending_retries_stop_with_the_subscription(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Once a subscription is deleted, its queued retries are not sent."""
    subscription_id = await _subscribe(graph, sandbox, receiver.url)
    receiver.answer = lambda _: 500
    await deliver(http, sandbox)
    await _settle(sandbox)

    await graph.call("DELETE", f"subscriptions/{subscription_id}")
    sandbox.state.advance_clock(RETRY_DELAYS[0])
    await _settle(sandbox)

    assert len(receiver.posts) == 1


async def test_admin_fires_lifecycle_events(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receivers: Receivers
) -> None:
    """missed, reauthorizationRequired and subscriptionRemoved reach the lifecycle URL."""
    notify, lifecycle = await receivers(), await receivers()
    subscription_id = await _subscribe(
        graph, sandbox, notify.url, lifecycleNotificationUrl=lifecycle.url
    )
    path = f"subscriptions/{subscription_id}/lifecycle"

    missed = await admin(http, sandbox, "POST", path, {"event": "missed"})
    await admin(http, sandbox, "POST", path, {"event": "reauthorizationRequired"})
    listed = await admin(http, sandbox, "GET", "subscriptions")
    removed = await admin(http, sandbox, "POST", path, {"event": "subscriptionRemoved"})
    await _settle(sandbox)

    assert missed == {"sent": True, "removed": False}
    assert removed == {"sent": True, "removed": True}
    assert [s["needsReauthorization"] for s in listed] == [True]
    assert listed[0]["mailbox"] == MAIN
    assert [n["lifecycleEvent"] for n in lifecycle.notifications] == [
        "missed",
        "reauthorizationRequired",
        "subscriptionRemoved",
    ]
    assert notify.posts == []
    assert await graph.error("GET", f"subscriptions/{subscription_id}") == (
        404,
        "ResourceNotFound",
    )


async def test_lifecycle_events_without_a_lifecycle_url(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Without a lifecycle URL nothing is sent, and unknown events are refused."""
    subscription_id = await _subscribe(graph, sandbox, receiver.url)
    path = f"subscriptions/{subscription_id}/lifecycle"

    sent = await admin(http, sandbox, "POST", path, {"event": "missed"})
    async with http.post(f"{sandbox.url}/sandbox/{path}", json={"event": "other"}) as response:
        refused = response.status
    await _settle(sandbox)

    assert sent == {"sent": False, "removed": False}
    assert refused == 400
    assert receiver.posts == []
