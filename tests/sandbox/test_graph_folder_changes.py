"""Graph changes: message flags seen by delta, copy, folder rename, delete and move."""

from __future__ import annotations

from typing import Any

import aiohttp

from relay.sandbox.server import RunningSandbox

from .graph_helpers import MAIN, Graph, admin, deliver

IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


async def _folder(graph: Graph, name: str, parent: str | None = None) -> dict[str, Any]:
    path = f"me/mailFolders/{parent}/childFolders" if parent else "me/mailFolders"
    status, body = await graph.call("POST", path, {"displayName": name})
    assert status == 201, body
    return dict(body)


async def _delta_link(graph: Graph, folder: str) -> str:
    page = await graph.ok("GET", f"me/mailFolders/{folder}/messages/delta")
    while "@odata.nextLink" in page:
        page = await graph.ok("GET", page["@odata.nextLink"])
    link: str = page["@odata.deltaLink"]
    return link


async def test_patched_flags_show_up_in_delta(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """PATCH of isRead, flag, categories and importance is a change that delta reports."""
    message = await deliver(http, sandbox)
    link = await _delta_link(graph, "inbox")

    patched = await graph.ok(
        "PATCH",
        f"me/messages/{message['id']}",
        {
            "isRead": True,
            "flag": {"flagStatus": "flagged"},
            "categories": ["Blue"],
            "importance": "High",
        },
    )
    changes = (await graph.ok("GET", link))["value"]

    assert [c["id"] for c in changes] == [message["id"]]
    change = changes[0]
    assert (change["isRead"], change["flag"], change["categories"], change["importance"]) == (
        True,
        {"flagStatus": "flagged"},
        ["Blue"],
        "high",
    )
    assert change["changeKey"] == patched["changeKey"] != message["changeKey"]


async def test_copy_makes_a_new_message_and_keeps_the_original(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """copy answers 201 with a new message (new ids) in the destination; delta sees it."""
    message = await deliver(http, sandbox, subject="Keep me")
    original = await graph.ok("GET", f"me/messages/{message['id']}", headers=IMMUTABLE)
    link = await _delta_link(graph, "archive")

    status, copied = await graph.call(
        "POST", f"me/messages/{message['id']}/microsoft.graph.copy", {"DestinationId": "archive"}
    )
    copied_immutable = await graph.ok("GET", f"me/messages/{copied['id']}", headers=IMMUTABLE)
    archive = await graph.ok("GET", "me/mailFolders/archive")
    added = (await graph.ok("GET", link))["value"]

    assert status == 201
    assert copied["id"] != message["id"]
    assert copied_immutable["id"] != original["id"]
    assert copied["parentFolderId"] == archive["id"]
    assert (copied["subject"], copied["internetMessageId"]) == (
        "Keep me",
        message["internetMessageId"],
    )
    assert (await graph.ok("GET", f"me/messages/{message['id']}"))["subject"] == "Keep me"
    assert [a["id"] for a in added] == [copied["id"]]
    assert await graph.error(
        "POST", f"me/messages/{message['id']}/copy", {"destinationId": "nosuchfolder"}
    ) == (400, "ErrorInvalidIdMalformed")
    assert await graph.error("POST", f"me/messages/{message['id']}/copy", {}) == (
        400,
        "ErrorInvalidParameter",
    )


async def test_rename_folder(graph: Graph) -> None:
    """PATCH displayName renames; a sibling's name is 409; well-known folders keep theirs."""
    orders = await _folder(graph, "Orders", "inbox")
    await _folder(graph, "Invoices", "inbox")

    renamed = await graph.ok("PATCH", f"me/mailFolders/{orders['id']}", {"displayName": "Sales"})
    nested = await graph.ok(
        "GET", f"me/mailFolders/inbox/childFolders/{orders['id']}?$select=displayName"
    )

    assert (renamed["id"], renamed["displayName"]) == (orders["id"], "Sales")
    assert nested["displayName"] == "Sales"
    assert await graph.error(
        "PATCH", f"me/mailFolders/inbox/childFolders/{orders['id']}", {"displayName": "INVOICES"}
    ) == (409, "ErrorFolderExists")
    assert await graph.error("PATCH", "me/mailFolders/inbox", {"displayName": "Mail"}) == (
        400,
        "ErrorInvalidRequest",
    )
    assert await graph.error("PATCH", f"me/mailFolders/{orders['id']}", {"colour": "red"}) == (
        400,
        "RequestBroker--ParseUri",
    )
    assert await graph.error("PATCH", f"me/mailFolders/{orders['id']}", {"displayName": " "}) == (
        400,
        "ErrorInvalidParameter",
    )
    assert (await graph.ok("GET", "me/mailFolders/inbox"))["displayName"] == "Inbox"


async def test_delete_folder_goes_to_deleted_items_then_away(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """DELETE moves a folder and its mail to Deleted Items; deleting it there removes it."""
    orders = await _folder(graph, "Orders")
    child = await _folder(graph, "2026", orders["id"])
    message = await deliver(http, sandbox, folder=child["id"], subject="PO 1")
    deleted_items = await graph.ok("GET", "me/mailFolders/deleteditems")

    status, _ = await graph.call("DELETE", f"me/mailFolders/{orders['id']}")
    moved = await graph.ok("GET", f"me/mailFolders/{orders['id']}")
    still = await graph.ok("GET", f"me/messages/{message['id']}")
    second = await _folder(graph, "Orders")
    await graph.call("DELETE", f"me/mailFolders/{second['id']}")
    names = [
        f["displayName"]
        for f in (await graph.ok("GET", "me/mailFolders/deleteditems/childFolders"))["value"]
    ]
    gone, _ = await graph.call("DELETE", f"me/mailFolders/deleteditems/childFolders/{orders['id']}")

    assert status == 204
    assert moved["parentFolderId"] == deleted_items["id"]
    assert still["parentFolderId"] == child["id"]
    assert sorted(names) == ["Orders", "Orders 1"]
    assert gone == 204
    assert await graph.error("GET", f"me/mailFolders/{orders['id']}") == (404, "ErrorItemNotFound")
    assert await graph.error("GET", f"me/mailFolders/{child['id']}") == (404, "ErrorItemNotFound")
    assert await graph.error("GET", f"me/messages/{message['id']}") == (404, "ErrorItemNotFound")
    assert "Orders" not in [
        f["displayName"] for f in (await graph.ok("GET", "me/mailFolders"))["value"]
    ]
    assert await graph.error("DELETE", "me/mailFolders/inbox") == (
        400,
        "ErrorDeleteDistinguishedFolder",
    )
    folders = await admin(http, sandbox, "GET", f"mailboxes/{MAIN}/folders")
    assert child["id"] not in [f["id"] for f in folders]


async def test_move_folder(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """move puts a folder under another (200); loops, clashes and well-known folders fail."""
    projects = await _folder(graph, "Projects")
    alpha = await _folder(graph, "Alpha")
    await deliver(http, sandbox, folder=alpha["id"])
    await deliver(http, sandbox, folder=alpha["id"], isRead=True)

    status, moved = await graph.call(
        "POST", f"me/mailFolders/{alpha['id']}/move", {"destinationId": projects["id"]}
    )
    inner = await _folder(graph, "Inner", alpha["id"])
    listed = await graph.ok("GET", f"me/mailFolders/{projects['id']}/childFolders")

    assert status == 200
    assert moved["parentFolderId"] == projects["id"]
    assert (moved["totalItemCount"], moved["unreadItemCount"]) == (2, 1)
    assert [f["displayName"] for f in listed["value"]] == ["Alpha"]
    assert await graph.error(
        "POST", f"me/mailFolders/{projects['id']}/move", {"destinationId": inner["id"]}
    ) == (400, "ErrorInvalidRequest")
    assert await graph.error(
        "POST", "me/mailFolders/inbox/move", {"destinationId": projects["id"]}
    ) == (400, "ErrorMoveDistinguishedFolder")
    await _folder(graph, "Alpha")
    assert await graph.error(
        "POST", f"me/mailFolders/{alpha['id']}/move", {"destinationId": "msgfolderroot"}
    ) == (409, "ErrorFolderExists")
    assert await graph.error(
        "POST", f"me/mailFolders/{inner['id']}/move", {"destinationId": "AAMkAGdvbmU="}
    ) == (404, "ErrorItemNotFound")
    back = await graph.ok(
        "POST", f"me/mailFolders/{inner['id']}/move", {"destinationId": "msgfolderroot"}
    )
    top = await graph.ok("GET", "me/mailFolders/inbox")
    assert back["parentFolderId"] == top["parentFolderId"]
