"""Immutable ids: ``Prefer: IdType="ImmutableId"`` on reads, moves, delta and notifications."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
from multidict import CIMultiDictProxy

from relay.sandbox.server import RunningSandbox

from .graph_helpers import MAIN, Graph, Receiver, admin, deliver, subscription_body

IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


def _applied(headers: CIMultiDictProxy[str]) -> set[str]:
    """The preferences a response says it applied."""
    raw = headers.get("Preference-Applied", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


async def test_immutable_ids_look_like_exchange_ones(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """The admin API shows both ids; the immutable one has Exchange's AAkALg prefix."""
    message = await deliver(http, sandbox)

    assert message["id"].startswith("AAMk")
    assert message["immutableId"].startswith("AAkALg")
    assert message["immutableId"] != message["id"]
    [listed] = await admin(http, sandbox, "GET", f"mailboxes/{MAIN}/folders/inbox/messages")
    assert (listed["id"], listed["immutableId"]) == (message["id"], message["immutableId"])


async def test_the_prefer_header_switches_ids_per_request(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """With the header ids are immutable and Preference-Applied says so; without, default."""
    message = await deliver(http, sandbox)
    default, immutable = message["id"], message["immutableId"]

    status, headers, seen = await graph.exchange("GET", f"me/messages/{default}", headers=IMMUTABLE)
    _, plain_headers, plain = await graph.exchange("GET", f"me/messages/{immutable}")
    listed = await graph.ok("GET", "me/mailFolders/inbox/messages", headers=IMMUTABLE)

    assert (status, seen["id"]) == (200, immutable)
    assert 'IdType="ImmutableId"' in _applied(headers)
    assert plain["id"] == default
    assert "Preference-Applied" not in plain_headers
    assert [m["id"] for m in listed["value"]] == [immutable]


async def test_moves_and_delete_keep_the_immutable_id(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """move, DELETE (into Recoverable Items) and PATCH all address the same immutable id."""
    message = await deliver(http, sandbox)
    immutable = message["immutableId"]

    moved = await graph.ok(
        "POST", f"me/messages/{immutable}/move", {"destinationId": "archive"}, headers=IMMUTABLE
    )
    moved_default = await graph.ok("GET", f"me/messages/{immutable}")
    patched = await graph.ok(
        "PATCH", f"me/messages/{immutable}", {"isRead": True}, headers=IMMUTABLE
    )
    status, _ = await graph.call("DELETE", f"me/messages/{immutable}")
    deleted = await graph.ok("GET", f"me/messages/{immutable}", headers=IMMUTABLE)

    archive = await graph.ok("GET", "me/mailFolders/archive")
    deletions = await graph.ok("GET", "me/mailFolders/recoverableitemsdeletions")
    assert moved["id"] == immutable
    assert moved["parentFolderId"] == archive["id"]
    assert moved_default["id"] not in (message["id"], immutable)
    assert (patched["id"], patched["isRead"]) == (immutable, True)
    assert status == 204
    assert (deleted["id"], deleted["parentFolderId"]) == (immutable, deletions["id"])
    assert await graph.error("GET", f"me/messages/{message['id']}") == (404, "ErrorItemNotFound")
    status, _ = await graph.call("POST", f"me/messages/{immutable}/permanentDelete")
    assert status == 204
    assert await graph.error("GET", f"me/messages/{immutable}") == (404, "ErrorItemNotFound")


async def test_admin_api_takes_either_id(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Admin PATCH and move accept an immutable id; a move keeps it."""
    message = await deliver(http, sandbox)
    base = f"mailboxes/{MAIN}/messages/{message['immutableId']}"

    patched = await admin(http, sandbox, "PATCH", base, {"isRead": True})
    moved = await admin(http, sandbox, "POST", f"{base}/move", {"destination": "junkemail"})

    assert patched["isRead"] is True
    assert moved["immutableId"] == message["immutableId"]
    assert moved["id"] != message["id"]
    seen = await graph.ok("GET", f"me/messages/{moved['id']}", headers=IMMUTABLE)
    assert seen["id"] == message["immutableId"]


async def test_delta_gives_immutable_ids_when_asked_on_each_request(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """A delta round without the header continues with it: ids and @removed are immutable."""
    stays = await deliver(http, sandbox, subject="stays")
    leaves = await deliver(http, sandbox, subject="leaves")
    first = await graph.ok("GET", "me/mailFolders/inbox/messages/delta")
    await graph.ok("PATCH", f"me/messages/{stays['id']}", {"isRead": True})
    await graph.ok("POST", f"me/messages/{leaves['id']}/move", {"destinationId": "archive"})
    new = await deliver(http, sandbox, subject="new")

    status, headers, changes = await graph.exchange(
        "GET",
        first["@odata.deltaLink"],
        headers={"Prefer": 'odata.maxpagesize=5, idtype = "immutableid"'},
    )
    again = await graph.ok("GET", first["@odata.deltaLink"])

    assert [m["id"] for m in first["value"]] == [stays["id"], leaves["id"]]
    assert status == 200
    assert _applied(headers) == {"odata.maxpagesize=5", 'IdType="ImmutableId"'}
    assert [(m["id"], "@removed" in m) for m in changes["value"]] == [
        (stays["immutableId"], False),
        (leaves["immutableId"], True),
        (new["immutableId"], False),
    ]
    assert [m["id"] for m in again["value"] if "@removed" in m] == [leaves["id"]]


Receivers = Callable[[], Awaitable[Receiver]]


async def test_subscriptions_keep_the_id_type_of_their_creation(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receivers: Receivers
) -> None:
    """A subscription created with the header notifies immutable ids; one without, default."""
    immutable_receiver, default_receiver = await receivers(), await receivers()
    resource = f"users/{MAIN}/messages"
    status, headers, created = await graph.exchange(
        "POST",
        "subscriptions",
        subscription_body(sandbox, immutable_receiver.url, resource=resource),
        headers=IMMUTABLE,
    )
    await graph.ok(
        "POST", "subscriptions", subscription_body(sandbox, default_receiver.url, resource=resource)
    )
    message = await deliver(http, sandbox)
    # Later requests with or without the header do not change what a subscription sends.
    moved = await graph.ok(
        "POST", f"me/messages/{message['id']}/move", {"destinationId": "archive"}
    )
    async with asyncio.timeout(5):
        await sandbox.notifier.settle()

    assert status == 201
    assert 'IdType="ImmutableId"' in _applied(headers)
    owner = sandbox.state.users[MAIN].object_id
    immutable = message["immutableId"]
    assert [
        (n["changeType"], n["resourceData"]["id"], n["resource"], n["resourceData"]["@odata.id"])
        for n in immutable_receiver.notifications
    ] == [
        (
            change,
            immutable,
            f"Users/{owner}/Messages/{immutable}",
            f"Users/{owner}/Messages/{immutable}",
        )
        for change in ("created", "deleted", "created")
    ]
    assert [(n["changeType"], n["resourceData"]["id"]) for n in default_receiver.notifications] == [
        ("created", message["id"]),
        ("deleted", message["id"]),
        ("created", moved["id"]),
    ]
    listed = {s["id"]: s for s in await admin(http, sandbox, "GET", "subscriptions")}
    assert listed[created["id"]]["immutableIds"] is True
    assert [s["immutableIds"] for s in listed.values()].count(False) == 1


async def test_ids_that_are_not_exchange_ids_are_malformed(graph: Graph) -> None:
    """An id without an Exchange prefix is 400; an unknown immutable id is 404."""
    assert await graph.error("GET", "me/messages/XYZ", headers=IMMUTABLE) == (
        400,
        "ErrorInvalidIdMalformed",
    )
    assert await graph.error("GET", "me/messages/AAkALgAAnothere", headers=IMMUTABLE) == (
        404,
        "ErrorItemNotFound",
    )
