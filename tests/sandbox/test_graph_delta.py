"""Delta query on a mail folder: pages, delta links, removals, expiry."""

from __future__ import annotations

from typing import Any

import aiohttp

from relay.sandbox.server import RunningSandbox

from .graph_helpers import MAIN, SHARED, Graph, admin, deliver


async def _round(graph: Graph, link: str, page_size: int = 2) -> tuple[list[dict[str, Any]], str]:
    """Follow nextLinks to the deltaLink; every item, then the deltaLink."""
    items: list[dict[str, Any]] = []
    headers = {"Prefer": f"odata.maxpagesize={page_size}"}
    while True:
        page = await graph.ok("GET", link, headers=headers)
        items += page["value"]
        if "@odata.deltaLink" in page:
            return items, page["@odata.deltaLink"]
        assert len(page["value"]) == page_size
        link = page["@odata.nextLink"]


async def test_initial_sync_pages_then_gives_a_delta_link(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """The first round pages through every message (maxpagesize) and ends with a deltaLink."""
    delivered = [await deliver(http, sandbox, subject=f"m{n}") for n in range(5)]

    page = await graph.ok(
        "GET", "me/mailFolders/inbox/messages/delta", headers={"Prefer": "odata.maxpagesize=2"}
    )
    items, delta_link = await _round(graph, "me/mailFolders('Inbox')/messages/delta()")

    assert len(page["value"]) == 2
    assert "$skiptoken=" in page["@odata.nextLink"]
    assert [i["id"] for i in items] == [m["id"] for m in delivered]
    assert all(i["@odata.type"] == "#microsoft.graph.message" for i in items)
    assert "$deltatoken=" in delta_link
    assert delta_link.startswith(f"{sandbox.url}/v1.0/")
    assert (await graph.ok("GET", delta_link))["value"] == []


async def test_delta_link_returns_only_changes(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """After a round, the deltaLink brings new, updated, removed and moved-in messages."""
    kept = await deliver(http, sandbox, subject="kept")
    read = await deliver(http, sandbox, subject="read")
    gone = await deliver(http, sandbox, subject="gone")
    moved_away = await deliver(http, sandbox, subject="moved away")
    elsewhere = await deliver(http, sandbox, folder="drafts", subject="moved in")
    _, delta_link = await _round(graph, "me/mailFolders/inbox/messages/delta")

    new = await deliver(http, sandbox, subject="new")
    await graph.ok("PATCH", f"me/messages/{read['id']}", {"isRead": True})
    await graph.call("DELETE", f"me/messages/{gone['id']}")
    await graph.ok("POST", f"me/messages/{moved_away['id']}/move", {"destinationId": "drafts"})
    moved_in = await graph.ok(
        "POST", f"me/messages/{elsewhere['id']}/move", {"destinationId": "inbox"}
    )
    items, next_delta = await _round(graph, delta_link)

    removed = {i["id"] for i in items if "@removed" in i}
    present = {i["id"]: i for i in items if "@removed" not in i}
    assert removed == {gone["id"], moved_away["id"]}
    assert set(present) == {new["id"], read["id"], moved_in["id"]}
    assert present[read["id"]]["isRead"] is True
    assert kept["id"] not in present
    assert all(i["@removed"] == {"reason": "deleted"} for i in items if "@removed" in i)
    assert (await graph.ok("GET", next_delta))["value"] == []


async def test_changes_while_paging_come_in_the_next_round(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """A message changed between pages is not lost: it comes with the next deltaLink."""
    first = [await deliver(http, sandbox, subject=f"m{n}") for n in range(4)]
    page = await graph.ok(
        "GET", "me/mailFolders/inbox/messages/delta", headers={"Prefer": "odata.maxpagesize=2"}
    )
    await graph.ok("PATCH", f"me/messages/{first[0]['id']}", {"isRead": True})

    rest, delta_link = await _round(graph, page["@odata.nextLink"])
    again = (await graph.ok("GET", delta_link))["value"]

    assert [i["id"] for i in page["value"] + rest] == [m["id"] for m in first]
    assert [(i["id"], i["isRead"]) for i in again] == [(first[0]["id"], True)]


async def test_delta_keeps_the_select_of_the_first_request(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """$select on the initial request applies to every later page and round."""
    await deliver(http, sandbox)
    first = await graph.ok("GET", "me/mailFolders/inbox/messages/delta?$select=subject")
    await deliver(http, sandbox, subject="second")

    later = await graph.ok("GET", first["@odata.deltaLink"])

    assert set(first["value"][0]) == {"@odata.type", "@odata.etag", "id", "subject"}
    assert set(later["value"][0]) == {"@odata.type", "@odata.etag", "id", "subject"}


async def test_expired_delta_token_is_410(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Once the admin API expires a folder's tokens, its deltaLinks answer 410 Gone."""
    await deliver(http, sandbox)
    _, delta_link = await _round(graph, "me/mailFolders/inbox/messages/delta")
    sent = await graph.ok("GET", "me/mailFolders/sentitems/messages/delta")

    await admin(http, sandbox, "POST", f"mailboxes/{MAIN}/folders/inbox/expire-delta")
    status, body = await graph.call("GET", delta_link)

    assert status == 410
    assert body["error"]["code"] == "syncStateNotFound"
    assert (await graph.call("GET", sent["@odata.deltaLink"]))[0] == 200
    restarted, _ = await _round(graph, "me/mailFolders/inbox/messages/delta")
    assert len(restarted) == 1


async def test_delta_tokens_belong_to_their_folder(graph: Graph, sandbox: RunningSandbox) -> None:
    """A deltaLink's token used on another folder, or a garbage token, is a 400."""
    inbox = await graph.ok("GET", "me/mailFolders/inbox/messages/delta")
    token = inbox["@odata.deltaLink"].partition("$deltatoken=")[2]

    assert await graph.error(
        "GET", f"me/mailFolders/drafts/messages/delta?$deltatoken={token}"
    ) == (400, "BadRequest")
    assert await graph.error("GET", "me/mailFolders/inbox/messages/delta?$deltatoken=xyz") == (
        400,
        "BadRequest",
    )
    assert await graph.error("GET", "me/messages/delta") == (400, "BadRequest")


async def test_delta_on_a_shared_mailbox(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Delegated delta works on a shared mailbox with Full Access (the relay's polling mode)."""
    message = await deliver(http, sandbox, mailbox=SHARED)

    items, _ = await _round(graph, f"users/{SHARED}/mailFolders/inbox/messages/delta")

    assert [i["id"] for i in items] == [message["id"]]
