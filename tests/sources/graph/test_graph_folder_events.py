"""Graph accounts against the sandbox: folders created, renamed and deleted are reported as
mailboxNew / mailboxDeleted, with the paths Exchange's IMAP server would show."""

from __future__ import annotations

import aiohttp

from relay.sandbox.server import RunningSandbox
from tests.api.helpers import call
from tests.auth.conftest import MAIN
from tests.sandbox.graph_helpers import admin, deliver
from tests.sources.graph.test_graph_backend import (  # noqa: F401
    Start,
    _graph_main,
    start,
)
from tests.sources.imap.relay_support import (
    settle,
    stored_events,
    wait_events,
    wait_state,
    wait_until,
)


async def test_folder_changes_are_reported_once(
    start: Start,  # noqa: F811 (the fixture imported above)
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """The folders the mailbox starts with are no news; a folder created later is a
    mailboxNew (path, name, specialUse false; Graph has no UIDVALIDITY) and is watched, a
    rename is a mailboxDeleted and a mailboxNew, a delete a mailboxDeleted (and, as Exchange
    keeps a deleted folder in Deleted Items, a mailboxNew there)."""
    client = await start(poll_interval=600.0)
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    await call(client, "POST", "/v1/account/my-account/mailbox", {"path": "Clients"})
    await call(client, "POST", "/v1/account/my-account/mailbox", {"path": "Clients/Acme"})
    await call(client, "PUT", "/v1/account/my-account/sync", {"sync": True})
    created = await wait_events(client, "my-account", "mailboxNew", 2)
    by_path = {e["data"]["path"]: e for e in created}
    assert set(by_path) == {"Clients", "Clients/Acme"}
    acme = by_path["Clients/Acme"]
    assert acme["path"] == "Clients/Acme"
    assert acme["data"] == {"path": "Clients/Acme", "name": "Acme", "specialUse": False}

    async def watched() -> bool:
        view = await call(client, "GET", "/v1/account/my-account")
        folders = (view.get("graph") or {}).get("folders", [])
        return any(f["path"] == "Clients/Acme" and f.get("subscriptionId") for f in folders)

    # What a folder holds when it is first seen is its baseline, as in EmailEngine.
    await wait_until(watched, "the new folder subscribed")
    folders = await admin(http, sandbox, "GET", f"mailboxes/{MAIN}/folders")
    acme_id = next(f["id"] for f in folders if f["displayName"] == "Acme")
    await deliver(http, sandbox, folder=acme_id, subject="filed")
    (new,) = await wait_events(client, "my-account", "messageNew")
    assert new["path"] == "Clients/Acme"

    await call(
        client,
        "PUT",
        "/v1/account/my-account/mailbox",
        {"path": "Clients/Acme", "newPath": "Clients/Apex"},
    )
    await call(client, "PUT", "/v1/account/my-account/sync", {"sync": True})
    (gone,) = await wait_events(client, "my-account", "mailboxDeleted")
    assert gone["data"] == {"path": "Clients/Acme", "name": "Acme", "specialUse": False}
    created = await wait_events(client, "my-account", "mailboxNew", 3)
    assert created[2]["data"]["path"] == "Clients/Apex"

    await call(client, "DELETE", "/v1/account/my-account/mailbox?path=Clients")
    await call(client, "PUT", "/v1/account/my-account/sync", {"sync": True})
    deleted = await wait_events(client, "my-account", "mailboxDeleted", 3)
    assert {e["data"]["path"] for e in deleted[1:]} == {"Clients", "Clients/Apex"}
    # Exchange moves a deleted folder into Deleted Items (where it is a new folder).
    created = await wait_events(client, "my-account", "mailboxNew", 5)
    assert {e["data"]["path"] for e in created[3:]} == {
        "Deleted Items/Clients",
        "Deleted Items/Clients/Apex",
    }
    await settle()
    assert len(await stored_events(client, "my-account", "mailboxNew")) == 5
    assert len(await stored_events(client, "my-account", "mailboxDeleted")) == 3
