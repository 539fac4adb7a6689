"""Every folder watched by default, against a real Dovecot: INBOX and subconnections with
IDLE, the other folders by the account's poller, and folders created or deleted reported as
mailboxNew / mailboxDeleted."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from relay.api.keys import STORE
from relay.config import Settings
from relay.store.schema import folder_lists
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.dovecot import DovecotServer

from .relay_support import (
    PLAIN,
    add_account,
    folder_row,
    fresh_account,
    mailbox,
    password_account,
    relay_settings,
    settle,
    start_relay,
    stored_events,
    subjects,
    wait_events,
    wait_state,
    wait_until,
)
from .support import message

_fresh = fresh_account
_start = start_relay


async def _listed(client: TestClient, account: str) -> dict[str, Any] | None:
    async with client.app[STORE].read() as conn:
        found = await conn.scalar(
            select(folder_lists.c.folders).where(folder_lists.c.account == account)
        )
    return dict(found) if found is not None else None


async def _synced(client: TestClient, account: str, path: str) -> bool:
    row = await folder_row(client, account, path)
    return row is not None and bool(row.synced_ms)


async def test_every_folder_is_watched_by_default(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """Without ``path`` new mail, flag changes and deletions are reported in every folder
    (the polled ones within a poll round), each once, with the folder's path."""
    user = await _fresh(dovecot)
    await dovecot.doveadm("mailbox", "create", "-u", user.user, "Projects/Work")
    client = await _start(make_client, settings)
    await add_account(client, password_account("all", user, dovecot.port))
    await wait_state(client, "all", "connected")
    for path in ("Sent", "Trash", "Drafts", "Junk", "Projects/Work"):
        await wait_until(lambda p=path: _synced(client, "all", p), f"{path} synced")
    other = await mailbox(dovecot, user)
    sent = (await other.append("Sent", message("sent mail"))).uid
    await other.append("Projects/Work", message("work mail"))
    await other.append("INBOX", message("inbox mail"))
    found = await wait_events(client, "all", "messageNew", 3)
    by_subject = {e["data"]["subject"]: e for e in found}
    assert by_subject["sent mail"]["path"] == "Sent"
    assert by_subject["sent mail"]["specialUse"] == "\\Sent"
    assert by_subject["work mail"]["path"] == "Projects/Work"
    assert by_subject["inbox mail"]["path"] == "INBOX"

    await other.select("Sent")
    await other.uid_store(sent, "+FLAGS", ["\\Flagged"])
    (updated,) = await wait_events(client, "all", "messageUpdated")
    assert updated["path"] == "Sent"
    assert updated["data"]["id"] == by_subject["sent mail"]["data"]["id"]
    assert updated["data"]["changes"]["flags"]["added"] == ["\\Flagged"]
    await other.uid_store(sent, "+FLAGS.SILENT", ["\\Deleted"])
    await other.expunge()
    (deleted,) = await wait_events(client, "all", "messageDeleted")
    assert deleted["path"] == "Sent"
    await other.logout()
    await settle()
    assert Counter(subjects(await stored_events(client, "all", "messageNew"))) == {
        "sent mail": 1,
        "work mail": 1,
        "inbox mail": 1,
    }
    assert not await stored_events(client, "all", "mailboxNew")


async def test_folders_created_and_deleted_are_reported(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """The folders an account starts with are the baseline; a folder created later is a
    mailboxNew (path, name, specialUse false, uidValidity) and is watched; a deleted one a
    mailboxDeleted, and its sync state goes; a rename is one of each."""
    user = await _fresh(dovecot)
    client = await _start(make_client, settings)
    await add_account(client, password_account("boxes", user, dovecot.port))
    await wait_state(client, "boxes", "connected")
    listed = await wait_until(lambda: _listed(client, "boxes"), "first listing")
    assert set(listed) == {"INBOX", "Drafts", "Sent", "Trash", "Junk"}
    assert listed["Sent"] == {"name": "Sent", "specialUse": "\\Sent"}

    await dovecot.doveadm("mailbox", "create", "-u", user.user, "Clients/Acme")
    (created,) = await wait_events(client, "boxes", "mailboxNew")
    assert created["path"] == "Clients/Acme"
    assert "specialUse" not in created
    data = created["data"]
    assert data["path"] == "Clients/Acme"
    assert data["name"] == "Acme"
    assert data["specialUse"] is False
    assert isinstance(data["uidValidity"], str)
    assert int(data["uidValidity"]) > 0
    await wait_until(lambda: _synced(client, "boxes", "Clients/Acme"), "new folder synced")
    other = await mailbox(dovecot, user)
    await other.append("Clients/Acme", message("acme mail"))
    (new,) = await wait_events(client, "boxes", "messageNew")
    assert new["path"] == "Clients/Acme"

    await dovecot.doveadm("mailbox", "rename", "-u", user.user, "Clients/Acme", "Clients/Apex")
    (gone,) = await wait_events(client, "boxes", "mailboxDeleted")
    assert gone["path"] == "Clients/Acme"
    assert gone["data"] == {"path": "Clients/Acme", "name": "Acme", "specialUse": False}
    created_again = await wait_events(client, "boxes", "mailboxNew", 2)
    assert created_again[1]["data"]["path"] == "Clients/Apex"
    assert await folder_row(client, "boxes", "Clients/Acme") is None

    await dovecot.doveadm("mailbox", "delete", "-u", user.user, "Clients/Apex")
    deleted = await wait_events(client, "boxes", "mailboxDeleted", 2)
    assert deleted[1]["data"]["path"] == "Clients/Apex"
    await wait_until(
        lambda: _gone(client, "boxes", "Clients/Apex"), "the deleted folder's state dropped"
    )
    await other.logout()
    await settle()
    assert len(await stored_events(client, "boxes", "mailboxNew")) == 2
    assert len(await stored_events(client, "boxes", "mailboxDeleted")) == 2


async def _gone(client: TestClient, account: str, path: str) -> bool:
    return await folder_row(client, account, path) is None


async def test_restart_reports_folder_changes_made_while_down(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """Folders created and deleted while the relay was stopped are reported once, at the
    next start, against the stored listing."""
    user = await _fresh(dovecot)
    await dovecot.doveadm("mailbox", "create", "-u", user.user, "Old")
    config = relay_settings(settings)
    first = await make_client(config)
    await add_account(first, password_account("down", user, dovecot.port))
    await wait_state(first, "down", "connected")
    await wait_until(lambda: _listed(first, "down"), "first listing")
    await first.close()
    await dovecot.doveadm("mailbox", "create", "-u", user.user, "While Down")
    await dovecot.doveadm("mailbox", "delete", "-u", user.user, "Old")
    second = await make_client(config)
    (created,) = await wait_events(second, "down", "mailboxNew")
    (deleted,) = await wait_events(second, "down", "mailboxDeleted")
    assert created["data"]["path"] == "While Down"
    assert deleted["data"] == {"path": "Old", "name": "Old", "specialUse": False}
    await settle()
    assert len(await stored_events(second, "down", "mailboxNew")) == 1


async def test_subconnections_get_their_own_idle(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """A folder in ``subconnections`` is watched with IDLE: its mail arrives without waiting
    for a poll round (which is far away here); ``path`` narrows the polled folders."""
    user = await _fresh(dovecot)
    await dovecot.doveadm("mailbox", "create", "-u", user.user, "Urgent")
    client = await _start(make_client, settings, poll_interval=600.0)
    await add_account(
        client,
        password_account("sub", user, dovecot.port, path=["INBOX"], subconnections=["Urgent"]),
    )
    await wait_state(client, "sub", "connected")
    await wait_until(lambda: _synced(client, "sub", "Urgent"), "Urgent synced")
    other = await mailbox(dovecot, user)
    await other.append("Urgent", message("urgent mail"))
    (event,) = await wait_events(client, "sub", "messageNew", within=5)
    assert event["path"] == "Urgent"
    assert await folder_row(client, "sub", "Sent") is None
    await other.logout()


async def test_polled_folders_without_condstore(
    plain_dovecot: DovecotServer, make_client: MakeClient, settings: Settings
) -> None:
    """Against a server like Exchange Online (no CONDSTORE, LIST-STATUS or QRESYNC) polled
    folders report new mail from STATUS and flag changes from the periodic full sync."""
    server, user = plain_dovecot, PLAIN
    client = await _start(make_client, settings, full_sync_interval=0.5)
    await add_account(client, password_account("plainpoll", user, server.port))
    await wait_state(client, "plainpoll", "connected")
    await wait_until(lambda: _synced(client, "plainpoll", "Sent"), "Sent synced")
    other = await mailbox(server, user)
    assert "LIST-STATUS" not in other.capabilities
    uid = (await other.append("Sent", message("sent mail"))).uid
    (new,) = await wait_events(client, "plainpoll", "messageNew")
    assert new["path"] == "Sent"
    await other.select("Sent")
    await other.uid_store(uid, "+FLAGS", ["\\Seen"])
    (updated,) = await wait_events(client, "plainpoll", "messageUpdated")
    assert updated["data"]["changes"]["flags"]["added"] == ["\\Seen"]
    await other.logout()
    await settle()
    assert len(await stored_events(client, "plainpoll", "messageUpdated")) == 1


async def test_sync_request_lists_folders_at_once(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """A folder created while poll rounds are far apart is found by a sync request."""
    user = await _fresh(dovecot)
    client = await _start(make_client, settings, poll_interval=600.0)
    await add_account(client, password_account("soon", user, dovecot.port))
    await wait_state(client, "soon", "connected")
    await wait_until(lambda: _listed(client, "soon"), "first listing")
    await dovecot.doveadm("mailbox", "create", "-u", user.user, "Later")
    await call(client, "PUT", "/v1/account/soon/sync", {"sync": True})
    (created,) = await wait_events(client, "soon", "mailboxNew", within=5)
    assert created["data"]["path"] == "Later"
    await wait_until(lambda: _synced(client, "soon", "Later"), "Later synced")
