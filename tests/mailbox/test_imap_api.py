"""The messages API against a real Dovecot: read, stream, change and search a mailbox."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.api.keys import MAILBOXES
from relay.config import MailboxSettings, Settings
from relay.mailbox.pool import ImapPool
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.mailbox.mail import PLAIN, PNG, rich_message
from tests.peers.dovecot import DovecotServer, dovecot_server
from tests.sources.imap.relay_support import (
    folder_row,
    password_account,
    relay_settings,
    wait_events,
    wait_state,
    wait_until,
)
from tests.sources.imap.support import Account, message, new_account, user_pool


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    """A Dovecot for this module's accounts."""
    with dovecot_server(users=user_pool()) as server:
        yield server


async def _raw(client: TestClient, path: str) -> tuple[int, bytes, Any]:
    response = await client.get(path)
    return response.status, await response.read(), response.headers


def _idle(pool: ImapPool) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return pool.in_use("acct0") == 0

    return check


async def _connected(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer, *users: Account
) -> TestClient:
    # Pooled connections go idle quickly, so a test can see a fresh login fail.
    settings = dataclasses.replace(settings, mailbox=MailboxSettings(pool_idle=0.2))
    client = await make_client(relay_settings(settings))
    for n, user in enumerate(users):
        await call(client, "POST", "/v1/account", password_account(f"acct{n}", user, dovecot.port))
        await wait_state(client, f"acct{n}", "connected")
    return client


async def test_a_message_read_through_the_api_is_the_one_the_webhook_named(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """messageNew's id reads the same message: envelope, text, headers, web-safe HTML, the
    source byte for byte and a 10 MiB attachment byte for byte; nothing marks it seen."""
    user = new_account(dovecot)
    client = await _connected(make_client, settings, dovecot, user)
    # The first login is an authenticationSuccess, as in EmailEngine.
    (success,) = await wait_events(client, "acct0", "authenticationSuccess")
    assert success["data"] == {"user": user.user}
    raw, payload = rich_message()
    await dovecot.append(user.user, "INBOX", raw)
    (event,) = await wait_events(client, "acct0", "messageNew")
    message_id = event["data"]["id"]

    listing = await call(client, "GET", "/v1/account/acct0/messages?path=INBOX")
    assert listing["total"] == 1
    assert listing["pages"] == 1
    assert listing["nextPageCursor"] is None
    (entry,) = listing["messages"]
    assert entry["id"] == message_id
    assert entry["subject"] == "Ticket 4711"
    assert entry["unseen"] is True
    assert "flagged" not in entry
    assert set(entry["text"]["encodedSize"]) == {"plain", "html"}
    names = {a.get("filename"): a for a in entry["attachments"]}
    assert names["logo.png"]["embedded"] is True
    assert names["report.bin"]["encodedSize"] > len(payload)

    details = await call(client, "GET", f"/v1/account/acct0/message/{message_id}?textType=*")
    assert details["text"]["plain"] == PLAIN
    assert "<b>from</b>" in details["text"]["html"]
    assert details["text"]["hasMore"] is False
    assert details["headers"]["x-ticket"] == ["4711"]
    assert details["path"] == "INBOX"
    assert details["specialUse"] == "\\Inbox"
    assert details["unseen"] is True

    safe = await call(client, "GET", f"/v1/account/acct0/message/{message_id}?webSafeHtml=true")
    html = safe["text"]["html"]
    assert safe["text"]["webSafe"] is True
    for hostile in ("<script", "onerror", "javascript:", "tracker.example"):
        assert hostile not in html.lower()
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in html

    cut = await call(
        client, "GET", f"/v1/account/acct0/text/{message_id}?textType=plain&maxBytes=10"
    )
    assert cut == {"plain": PLAIN[:10], "hasMore": True}

    status, source, headers = await _raw(client, f"/v1/account/acct0/message/{message_id}/source")
    assert status == 200
    assert source == raw
    assert headers["Content-Type"] == "message/rfc822"

    attachment = names["report.bin"]["id"]
    status, body, headers = await _raw(client, f"/v1/account/acct0/attachment/{attachment}")
    assert status == 200
    assert body == payload
    assert headers["Content-Type"] == "application/octet-stream"
    assert 'filename="report.bin"' in headers["Content-Disposition"]
    status, body, _ = await _raw(client, f"/v1/account/acct0/attachment/{names['logo.png']['id']}")
    assert body == PNG

    # A client that goes away mid-download ends the transfer and gives the connection back.
    partial = await client.get(f"/v1/account/acct0/attachment/{attachment}")
    assert len(await partial.content.read(65536)) > 0
    partial.close()
    pool = client.app[MAILBOXES].pool
    await wait_until(_idle(pool), "the download to stop")

    again = await call(client, "GET", f"/v1/account/acct0/message/{message_id}")
    assert again["unseen"] is True
    assert set(again["text"]) == {"id", "encodedSize"}
    seen = await call(client, "GET", f"/v1/account/acct0/message/{message_id}?markAsSeen=true")
    assert "\\Seen" in seen["flags"]
    (updated,) = await wait_events(client, "acct0", "messageUpdated")
    assert updated["data"]["changes"]["flags"]["added"] == ["\\Seen"]


async def test_flags_moves_deletes_and_folders_through_the_api_produce_the_events(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """Flags set through the API are messageUpdated; a move answers the new id (the old one
    is gone) and the source folder reports messageDeleted; folders are created, renamed,
    listed with counters and deleted; search and paging find what they should."""
    user = new_account(dovecot)
    client = await _connected(make_client, settings, dovecot, user)
    for n in range(3):
        await dovecot.append(user.user, "INBOX", message(f"note {n}"))
    found = await wait_events(client, "acct0", "messageNew", count=3)
    ids = [e["data"]["id"] for e in found]

    page = await call(client, "GET", "/v1/account/acct0/messages?path=INBOX&pageSize=2")
    assert [m["subject"] for m in page["messages"]] == ["note 2", "note 1"]
    assert page["pages"] == 2
    second = await call(
        client,
        "GET",
        f"/v1/account/acct0/messages?path=INBOX&pageSize=2&cursor={page['nextPageCursor']}",
    )
    assert [m["subject"] for m in second["messages"]] == ["note 0"]
    assert second["prevPageCursor"] is not None

    assert await call(
        client, "PUT", f"/v1/account/acct0/message/{ids[0]}", {"flags": {"add": ["\\Flagged"]}}
    ) == {"flags": {"add": True}}
    (updated,) = await wait_events(client, "acct0", "messageUpdated")
    assert updated["data"]["id"] == ids[0]
    assert updated["data"]["changes"]["flags"]["added"] == ["\\Flagged"]

    flagged = await call(
        client, "POST", "/v1/account/acct0/search?path=INBOX", {"search": {"flagged": True}}
    )
    assert [m["id"] for m in flagged["messages"]] == [ids[0]]
    by_subject = await call(
        client, "POST", "/v1/account/acct0/search?path=INBOX", {"search": {"subject": "note 1"}}
    )
    assert [m["id"] for m in by_subject["messages"]] == [ids[1]]

    created = await call(client, "POST", "/v1/account/acct0/mailbox", {"path": ["Tickets"]})
    assert created == {"path": "Tickets", "created": True}
    moved = await call(
        client, "PUT", f"/v1/account/acct0/message/{ids[1]}/move", {"path": "Tickets"}
    )
    assert moved["path"] == "Tickets"
    (deleted,) = await wait_events(client, "acct0", "messageDeleted")
    assert deleted["data"]["id"] == ids[1]
    gone = await client.get(f"/v1/account/acct0/message/{ids[1]}")
    assert gone.status == 404
    assert (await gone.json())["code"] == "MessageNotFound"
    there = await call(client, "GET", f"/v1/account/acct0/message/{moved['id']}")
    assert there["subject"] == "note 1"
    assert there["path"] == "Tickets"

    before = await call(client, "GET", "/v1/account/acct0/mailboxes")
    assert {b["path"]: b["subscribed"] for b in before["mailboxes"]}["Tickets"] is False
    assert await call(
        client, "PUT", "/v1/account/acct0/mailbox", {"path": "Tickets", "subscribed": True}
    ) == {"path": "Tickets", "subscribed": True}
    nothing = await client.put("/v1/account/acct0/mailbox", json={"path": "Tickets"})
    assert nothing.status == 400
    boxes = await call(client, "GET", "/v1/account/acct0/mailboxes?counters=true")
    by_path = {b["path"]: b for b in boxes["mailboxes"]}
    assert by_path["Tickets"]["subscribed"] is True
    assert boxes["mailboxes"][0]["path"] == "INBOX"
    assert by_path["INBOX"]["status"] == {"messages": 2, "unseen": 2}
    assert by_path["Tickets"]["status"]["messages"] == 1

    renamed = await call(
        client, "PUT", "/v1/account/acct0/mailbox", {"path": "Tickets", "newPath": "Done"}
    )
    assert renamed == {"path": "Tickets", "newPath": "Done", "renamed": True}
    assert await call(client, "DELETE", "/v1/account/acct0/mailbox?path=Done") == {
        "path": "Done",
        "deleted": True,
    }

    assert await call(client, "DELETE", f"/v1/account/acct0/message/{ids[2]}?force=true") == {
        "deleted": True
    }
    deletes = await wait_events(client, "acct0", "messageDeleted", count=2)
    assert deletes[-1]["data"]["id"] == ids[2]

    uploaded = await call(
        client,
        "POST",
        "/v1/account/acct0/message",
        {"path": "INBOX", "flags": ["\\Seen"], "raw": base64.b64encode(message("up")).decode()},
    )
    assert uploaded["path"] == "INBOX"
    news = await wait_events(client, "acct0", "messageNew", count=4)
    assert news[-1]["data"]["id"] == uploaded["id"]
    assert news[-1]["data"]["flags"] == ["\\Seen"]

    composed = await call(
        client,
        "POST",
        "/v1/account/acct0/message",
        {
            "path": "INBOX",
            "to": [{"address": "rita@example.net"}],
            "subject": "draft",
            "text": "Hi",
        },
    )
    built = await call(client, "GET", f"/v1/account/acct0/message/{composed['id']}?textType=plain")
    assert built["from"]["address"] == user.user
    assert built["text"]["plain"].strip() == "Hi"
    assert composed["messageId"] == built["messageId"]


async def test_ids_of_another_account_and_bad_input_change_nothing(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """Another account's message id is a 404 or that account's own message, never the other
    mailbox's data (ids are per account); an unknown folder, an escaping path, an oversized
    page, a part that does not exist are clear 4xx answers."""
    first, second = new_account(dovecot), new_account(dovecot)
    client = await _connected(make_client, settings, dovecot, first, second)
    await dovecot.append(first.user, "INBOX", message("first of acct0"))
    raw, _ = rich_message(attachment_size=1000)
    await dovecot.append(first.user, "INBOX", raw)
    await dovecot.append(second.user, "INBOX", message("other"))
    _, mine = await wait_events(client, "acct0", "messageNew", count=2)
    (theirs,) = await wait_events(client, "acct1", "messageNew")
    message_id = mine["data"]["id"]
    # Both first messages may share an id (same folder number, UIDVALIDITY and UID): each
    # account then reads its own.
    same = await call(client, "GET", f"/v1/account/acct1/message/{theirs['data']['id']}")
    assert same["subject"] == "other"

    for path in (
        f"/v1/account/acct1/message/{message_id}",
        f"/v1/account/acct1/message/{message_id}/source",
        f"/v1/account/acct1/text/{message_id}",
        f"/v1/account/acct1/attachment/{mine['data']['attachments'][0]['id']}",
        "/v1/account/acct0/message/not-an-id",
        f"/v1/account/acct0/attachment/{message_id}",
        "/v1/account/ghost/message/" + message_id,
    ):
        response = await client.get(path)
        assert response.status == 404, path
        assert "Ticket" not in await response.text()

    missing = await client.get("/v1/account/acct0/messages?path=Nowhere")
    assert missing.status == 404
    assert (await missing.json())["code"] == "FolderNotFound"
    for query, field in (
        ("path=../etc", "path"),
        ("path=INBOX&pageSize=5000", "pageSize"),
        ("path=INBOX&cursor=imap_bogus", "cursor"),
        ("pageSize=10", "path"),
    ):
        response = await client.get(f"/v1/account/acct0/messages?{query}")
        assert response.status == 400, query
        assert (await response.json())["field"] == field
    bad_flag = await client.put(
        f"/v1/account/acct0/message/{message_id}", json={"flags": {"add": "x" * 200}}
    )
    assert bad_flag.status == 400
    again = await call(client, "GET", f"/v1/account/acct0/message/{message_id}")
    assert again["flags"] == []


async def test_a_send_only_account_is_accepted_not_watched_and_not_readable(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """An account with an smtp block and no imap block is stored, never connects, and the
    messages API says it has no mailbox."""
    client = await make_client(relay_settings(settings))
    await call(
        client,
        "POST",
        "/v1/account",
        {
            "account": "sender",
            "name": "Sender",
            "email": "sender@example.com",
            "smtp": {
                "host": "127.0.0.1",
                "port": 2525,
                "secure": False,
                "auth": {"user": "sender@example.com", "pass": "pw"},
            },
        },
    )
    response = await client.get("/v1/account/sender/mailboxes")
    assert response.status == 400
    assert (await response.json())["code"] == "NotSupported"
    view = await call(client, "GET", "/v1/account/sender")
    assert view["state"] not in ("connecting", "connected", "connectError")


async def test_message_new_carries_the_content_the_settings_ask_for(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """notifyText/notifyTextSize/notifyWebSafeHtml/notifyHeaders/notifyAttachments shape
    messageNew's data; when the content cannot be read the event is stored anyway, with
    textError."""
    user = new_account(dovecot)
    client = await _connected(make_client, settings, dovecot, user)
    await call(
        client,
        "POST",
        "/v1/settings",
        {
            "notifyText": True,
            "notifyTextSize": 20,
            "notifyWebSafeHtml": True,
            "notifyHeaders": ["X-Ticket", "Subject"],
            "notifyAttachments": True,
            "notifyAttachmentSize": 2000,
        },
    )
    current = await call(client, "GET", "/v1/settings")
    assert current["notifyHeaders"] == ["X-Ticket", "Subject"]
    raw, _ = rich_message(attachment_size=50_000)
    await dovecot.append(user.user, "INBOX", raw)
    (event,) = await wait_events(client, "acct0", "messageNew")
    data = event["data"]
    text = data["text"]
    assert text["id"] == data["id"]
    assert text["plain"] == PLAIN[:20]
    assert text["hasMore"] is True
    assert text["webSafe"] is True
    assert "<script" not in text["html"]
    assert set(text["encodedSize"]) == {"plain", "html"}
    assert data["headers"] == {"x-ticket": ["4711"], "subject": ["Ticket 4711"]}
    by_name = {a["filename"]: a for a in data["attachments"]}
    assert base64.b64decode(by_name["logo.png"]["content"]) == PNG
    assert "content" not in by_name["report.bin"]
    assert "textError" not in data

    # The relay's own reads now fail to log in; the listener's connection stays up.
    await asyncio.to_thread(dovecot.add_user, user.user, "changed elsewhere")
    await asyncio.sleep(1.2)
    await dovecot.append(user.user, "INBOX", message("while content cannot be read"))
    second = (await wait_events(client, "acct0", "messageNew", count=2))[-1]["data"]
    assert second["subject"] == "while content cannot be read"
    assert "textError" in second
    assert "text" not in second or "plain" not in second["text"]


async def test_subconnections_are_watched_and_locale_and_tz_are_kept(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """EmailEngine's account fields: subconnections folders are watched like path (a folder
    created later is taken up on sync); locale and tz are kept and shown; a bad tz is a 400."""
    user = new_account(dovecot)
    client = await make_client(relay_settings(settings))
    payload = password_account("acct0", user, dovecot.port)
    bad = await client.post("/v1/account", json={**payload, "tz": "Mars/Olympus_Mons"})
    assert bad.status == 400
    assert (await bad.json())["field"] == "tz"
    await call(
        client,
        "POST",
        "/v1/account",
        {**payload, "subconnections": ["Tickets"], "locale": "et-EE", "tz": "Europe/Tallinn"},
    )
    await wait_state(client, "acct0", "connected")
    view = await call(client, "GET", "/v1/account/acct0")
    assert (view["subconnections"], view["locale"], view["tz"]) == (
        ["Tickets"],
        "et-EE",
        "Europe/Tallinn",
    )
    await call(client, "POST", "/v1/account/acct0/mailbox", {"path": "Tickets"})
    await call(client, "PUT", "/v1/account/acct0/sync", {"sync": True})

    async def watching() -> bool:
        row = await folder_row(client, "acct0", "Tickets")
        return row is not None and row.uidvalidity is not None

    await wait_until(watching, "the Tickets folder's baseline")
    await dovecot.append(user.user, "Tickets", message("in a subconnection"))
    (new,) = await wait_events(client, "acct0", "messageNew")
    assert (new["path"], new["data"]["subject"]) == ("Tickets", "in a subconnection")


async def test_upload_by_reference_builds_a_reply_or_forward_draft(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """An upload with EmailEngine's ``reference`` is completed from the original as a submit
    is: recipients, ``Re:``/``Fwd:`` subject, In-Reply-To and References; a missing original
    is a 404 naming reference.message, and ``raw`` cannot take a reference."""
    user = new_account(dovecot)
    client = await _connected(make_client, settings, dovecot, user)
    original_mime = (
        b"From: Rita <rita@example.net>\r\nTo: " + user.user.encode() + b"\r\n"
        b"Subject: Quarterly numbers\r\nMessage-ID: <q3@example.net>\r\n"
        b"References: <q2@example.net>\r\n\r\nSee attached.\r\n"
    )
    await dovecot.append(user.user, "INBOX", original_mime)
    (new,) = await wait_events(client, "acct0", "messageNew")
    original = new["data"]["id"]

    reply = await call(
        client,
        "POST",
        "/v1/account/acct0/message",
        {"path": "Drafts", "text": "Thanks!", "reference": {"message": original}},
    )
    draft = await call(client, "GET", f"/v1/account/acct0/message/{reply['id']}?textType=plain")
    assert draft["to"] == [{"name": "Rita", "address": "rita@example.net"}]
    assert draft["subject"] == "Re: Quarterly numbers"
    assert draft["inReplyTo"] == "<q3@example.net>"
    source = await client.get(f"/v1/account/acct0/message/{reply['id']}/source")
    raw = await source.read()
    assert b"References: <q2@example.net> <q3@example.net>" in raw

    forward = await call(
        client,
        "POST",
        "/v1/account/acct0/message",
        {
            "path": "Drafts",
            "to": [{"address": "boss@example.org"}],
            "reference": {"message": original, "action": "forward", "inline": True},
        },
    )
    draft = await call(client, "GET", f"/v1/account/acct0/message/{forward['id']}?textType=plain")
    assert draft["subject"] == "Fwd: Quarterly numbers"
    assert "See attached." in draft["text"]["plain"]

    gone = await client.post(
        "/v1/account/acct0/message",
        json={"path": "Drafts", "reference": {"message": "AAAAAQAAAAAAAAAB"}},
    )
    assert gone.status == 404
    assert (await gone.json())["field"] == "reference.message"
    mixed = await client.post(
        "/v1/account/acct0/message",
        json={
            "path": "Drafts",
            "raw": base64.b64encode(message("r")).decode(),
            "reference": {"message": original},
        },
    )
    assert mixed.status == 400
    assert "raw" in (await mixed.json())["message"]
