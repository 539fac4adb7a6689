"""Graph mail folders: well-known folders, child folders, hidden folders, paging."""

from __future__ import annotations

from typing import Any

import aiohttp

from relay.sandbox.server import RunningSandbox

from .graph_helpers import MAIN, SHARED, Graph, admin, deliver, mint


async def _child(graph: Graph, parent: str, name: str, **fields: Any) -> dict[str, Any]:
    status, body = await graph.call(
        "POST", f"me/mailFolders/{parent}/childFolders", {"displayName": name, **fields}
    )
    assert status == 201, body
    return dict(body)


async def _names(graph: Graph, path: str) -> list[str]:
    return [f["displayName"] for f in (await graph.ok("GET", path))["value"]]


async def test_junk_email_and_archive_are_well_known_folders(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Every mailbox has Junk Email and Archive, by well-known name, localizable."""
    junk = await graph.ok("GET", "me/mailFolders/JunkEmail")
    archive = await graph.ok("GET", f"users/{SHARED}/mailFolders('archive')")
    await admin(
        http,
        sandbox,
        "POST",
        "users",
        {
            "email": "anna@example.com",
            "password": "pw",
            "folderNames": {"junkemail": "Junk-E-Mail", "Archive": "Archiv"},
        },
    )
    anna = Graph(http, sandbox, mint(sandbox, user="anna@example.com"))

    assert (junk["displayName"], junk["isHidden"]) == ("Junk Email", False)
    assert archive["displayName"] == "Archive"
    root = (await graph.ok("GET", "me/mailFolders/inbox"))["parentFolderId"]
    assert junk["parentFolderId"] == root
    assert (await anna.ok("GET", "me/mailFolders/junkemail"))["displayName"] == "Junk-E-Mail"
    assert (await anna.ok("GET", "me/mailFolders/archive"))["displayName"] == "Archiv"


async def test_child_folders_nest_under_their_parent(
    http: aiohttp.ClientSession, graph: Graph
) -> None:
    """childFolders creates and lists children; mailFolders lists the top level only."""
    inbox = await graph.ok("GET", "me/mailFolders/inbox")

    orders = await _child(graph, "inbox", "Orders")
    year = await _child(graph, orders["id"], "2026")

    assert orders["parentFolderId"] == inbox["id"]
    assert year["parentFolderId"] == orders["id"]
    assert (orders["childFolderCount"], orders["totalItemCount"], orders["isHidden"]) == (
        0,
        0,
        False,
    )
    assert "Orders" not in await _names(graph, "me/mailFolders")
    assert await _names(graph, "me/mailFolders/inbox/childFolders") == ["Orders"]
    nested = f"me/mailFolders/inbox/childFolders/{orders['id']}/childFolders"
    assert await _names(graph, nested) == ["2026"]
    assert (await graph.ok("GET", "me/mailFolders/inbox"))["childFolderCount"] == 1
    by_path = await graph.ok("GET", f"me/mailFolders('inbox')/childFolders('{orders['id']}')")
    assert by_path["childFolderCount"] == 1
    assert await graph.error("GET", f"me/mailFolders/drafts/childFolders/{orders['id']}") == (
        404,
        "ErrorItemNotFound",
    )


async def test_folder_names_are_unique_among_siblings(graph: Graph) -> None:
    """A name taken by a sibling (any case) is 409 ErrorFolderExists; cousins may share it."""
    await _child(graph, "inbox", "Orders")

    assert await graph.error(
        "POST", "me/mailFolders/inbox/childFolders", {"displayName": "ORDERS"}
    ) == (409, "ErrorFolderExists")
    assert await graph.error("POST", "me/mailFolders", {"displayName": "inbox"}) == (
        409,
        "ErrorFolderExists",
    )
    top = await graph.ok("POST", "me/mailFolders", {"DisplayName": "Orders"})
    assert await graph.error("POST", "me/mailFolders/inbox/childFolders", {"isHidden": True}) == (
        400,
        "ErrorInvalidParameter",
    )
    assert await graph.error(
        "POST", "me/mailFolders/inbox/childFolders", {"displayName": "x", "colour": "red"}
    ) == (400, "RequestBroker--ParseUri")
    root = (await graph.ok("GET", "me/mailFolders/inbox"))["parentFolderId"]
    assert top["parentFolderId"] == root
    assert (await _names(graph, "me/mailFolders")).count("Orders") == 1


async def test_counts_and_hidden_child_folders(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Item counts follow the messages; hidden children are listed on request only."""
    orders = await _child(graph, "inbox", "Orders")
    await _child(graph, "inbox", "Secret", isHidden=True)
    await deliver(http, sandbox, folder=orders["id"], subject="one")
    await deliver(http, sandbox, folder=orders["id"], subject="two", isRead=True)

    counted = await graph.ok("GET", f"me/mailFolders/{orders['id']}")
    visible = await _names(graph, "me/mailFolders/inbox/childFolders")
    everything = await _names(graph, "me/mailFolders/inbox/childFolders?includeHiddenFolders=true")
    inbox = await graph.ok("GET", "me/mailFolders/inbox?$select=childFolderCount")

    assert (counted["totalItemCount"], counted["unreadItemCount"]) == (2, 1)
    assert visible == ["Orders"]
    assert everything == ["Orders", "Secret"]
    assert inbox == {"id": inbox["id"], "childFolderCount": 2}
    listed = await graph.ok("GET", "me/messages")
    assert {m["subject"] for m in listed["value"]} == {"one", "two"}


async def test_folder_lists_page_and_keep_their_options(graph: Graph) -> None:
    """$top pages with nextLinks that keep $select and includeHiddenFolders."""
    for n in range(5):
        await _child(graph, "inbox", f"f{n}", isHidden=n == 4)

    pages = [
        await graph.ok(
            "GET",
            "me/mailFolders/inbox/childFolders?includeHiddenFolders=true&$top=2"
            "&$select=displayName",
        )
    ]
    while "@odata.nextLink" in pages[-1]:
        pages.append(await graph.ok("GET", pages[-1]["@odata.nextLink"]))
    top_level = await graph.ok("GET", "me/mailFolders?includeHiddenFolders=true&$top=4")
    rest = await graph.ok("GET", top_level["@odata.nextLink"])

    assert [len(p["value"]) for p in pages] == [2, 2, 1]
    assert [f["displayName"] for p in pages for f in p["value"]] == [f"f{n}" for n in range(5)]
    assert all(set(f) == {"id", "displayName"} for p in pages for f in p["value"])
    names = [f["displayName"] for f in top_level["value"] + rest["value"]]
    assert names == [
        "Inbox",
        "Sent Items",
        "Drafts",
        "Deleted Items",
        "Junk Email",
        "Archive",
        "Deletions",
    ]
    assert await graph.error("GET", "me/mailFolders?$select=colour") == (
        400,
        "RequestBroker--ParseUri",
    )


async def test_child_folders_hold_messages_like_any_folder(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """A nested folder created through the admin API takes moves, listing and delta."""
    orders = await admin(
        http,
        sandbox,
        "POST",
        f"mailboxes/{MAIN}/folders",
        {"displayName": "Orders", "parentFolderId": "inbox"},
    )
    message = await deliver(http, sandbox)

    moved = await graph.ok(
        "POST", f"me/messages/{message['id']}/move", {"destinationId": orders["id"]}
    )

    inbox = await graph.ok("GET", "me/mailFolders/inbox")
    assert orders["parentFolderId"] == inbox["id"]
    assert moved["parentFolderId"] == orders["id"]
    path = f"me/mailFolders/inbox/childFolders/{orders['id']}/messages"
    assert [m["id"] for m in (await graph.ok("GET", path))["value"]] == [moved["id"]]
    delta = await graph.ok("GET", f"me/mailFolders/{orders['id']}/messages/delta")
    assert [m["id"] for m in delta["value"]] == [moved["id"]]
    folders = await admin(http, sandbox, "GET", f"mailboxes/{MAIN}/folders")
    by_name = {f["displayName"]: f for f in folders}
    assert by_name["Inbox"]["childFolderCount"] == 1
    assert by_name["Orders"]["parentFolderId"] == inbox["id"]
    assert by_name["Inbox"]["parentFolderId"] == inbox["parentFolderId"]


async def test_read_only_scopes_cannot_create_folders(
    graph: Graph, sandbox: RunningSandbox
) -> None:
    """Creating a folder needs Mail.ReadWrite; listing children needs a read scope only."""
    reader = mint(sandbox, scopes=["Mail.Read"])

    assert await graph.error(
        "POST", "me/mailFolders/inbox/childFolders", {"displayName": "x"}, token=reader
    ) == (403, "ErrorAccessDenied")
    assert (await graph.ok("GET", "me/mailFolders/inbox/childFolders", token=reader))["value"] == []
