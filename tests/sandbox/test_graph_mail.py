"""Graph mail endpoints over HTTP: auth, permissions, folders, messages, sendMail."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest

from relay.sandbox.server import RunningSandbox

from .graph_helpers import MAIN, SHARED, Graph, admin, app_only, deliver, mint


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Access token is empty."),
        ("Basic abc", "Access token is empty."),
        ("Bearer not-a-jwt", "IDX14100: JWT is not well formed, there are no dots (.)."),
        ("Bearer a.b.c", "Access token validation failure. Invalid signature."),
    ],
)
async def test_graph_needs_a_sandbox_token(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, header: str | None, message: str
) -> None:
    """A missing or unknown bearer token is 401 InvalidAuthenticationToken in Graph's shape."""
    headers = {"Authorization": header} if header else {}
    headers["client-request-id"] = "c0ffee00-0000-4000-8000-000000000001"
    async with http.get(f"{sandbox.url}/v1.0/me/mailFolders", headers=headers) as response:
        body = await response.json()
        status = response.status
        request_id = response.headers["request-id"]

    assert status == 401
    assert body["error"]["code"] == "InvalidAuthenticationToken"
    assert body["error"]["message"] == message
    inner = body["error"]["innerError"]
    assert inner["request-id"] == request_id
    assert inner["client-request-id"] == "c0ffee00-0000-4000-8000-000000000001"
    assert inner["date"]


async def test_graph_refuses_other_resources_and_expired_tokens(
    graph: Graph, sandbox: RunningSandbox
) -> None:
    """An Exchange token is the wrong audience; an expired Graph token is refused too."""
    outlook = mint(sandbox, scopes=["IMAP.AccessAsUser.All"], resource="https://outlook.office.com")
    assert await graph.error("GET", "me/mailFolders", token=outlook) == (
        401,
        "InvalidAuthenticationToken",
    )
    sandbox.state.advance_clock(3600)

    assert await graph.error("GET", "me/mailFolders") == (401, "InvalidAuthenticationToken")


async def test_folders_are_listed_with_well_known_names(graph: Graph) -> None:
    """mailFolders lists the visible folders; each is reachable by id or well-known name."""
    listed = await graph.ok("GET", "me/mailFolders")
    names = [f["displayName"] for f in listed["value"]]
    inbox = await graph.ok("GET", "me/mailFolders/INBOX")
    by_id = await graph.ok("GET", f"me/mailFolders('{inbox['id']}')")

    assert names == ["Inbox", "Sent Items", "Drafts", "Deleted Items", "Junk Email", "Archive"]
    assert by_id == inbox
    assert inbox["displayName"] == "Inbox"
    assert await graph.error("GET", "me/mailFolders/nosuchfolder") == (
        400,
        "ErrorInvalidIdMalformed",
    )


async def test_localized_folder_names(http: aiohttp.ClientSession, sandbox: RunningSandbox) -> None:
    """A mailbox created with localized names keeps well-known names working."""
    await admin(
        http,
        sandbox,
        "POST",
        "users",
        {
            "email": "anna@example.com",
            "password": "pw",
            "folderNames": {"inbox": "Posteingang", "SentItems": "Gesendete Elemente"},
        },
    )
    graph = Graph(http, sandbox, mint(sandbox, user="anna@example.com"))

    inbox = await graph.ok("GET", "me/mailFolders/inbox")
    sent = await graph.ok("GET", "users/anna@example.com/mailFolders('sentitems')")

    assert inbox["displayName"] == "Posteingang"
    assert sent["displayName"] == "Gesendete Elemente"


async def test_shared_mailbox_needs_a_grant_and_a_shared_scope(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Delegated access to a shared mailbox needs Full Access and a .Shared scope."""
    await graph.ok("GET", f"users/{SHARED}/mailFolders")
    own_only = mint(sandbox, scopes=["Mail.ReadWrite", "Mail.Send"])
    assert await graph.error("GET", f"users/{SHARED}/mailFolders", token=own_only) == (
        403,
        "ErrorAccessDenied",
    )
    await admin(http, sandbox, "DELETE", "grants", {"user": MAIN, "mailbox": SHARED})

    assert await graph.error("GET", f"users/{SHARED}/mailFolders") == (403, "ErrorAccessDenied")


async def test_read_only_scopes_cannot_write(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Mail.Read reads the own mailbox but PATCH, DELETE and move need ReadWrite."""
    message = await deliver(http, sandbox)
    reader = mint(sandbox, scopes=["Mail.Read"])
    path = f"me/messages/{message['id']}"

    assert (await graph.ok("GET", path, token=reader))["subject"] == "Hello"
    assert await graph.error("PATCH", path, {"isRead": True}, token=reader) == (
        403,
        "ErrorAccessDenied",
    )
    assert await graph.error("DELETE", path, token=reader) == (403, "ErrorAccessDenied")
    assert await graph.error(
        "POST", f"{path}/move", {"destinationId": "deleteditems"}, token=reader
    ) == (403, "ErrorAccessDenied")


async def test_read_basic_hides_bodies(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """With Mail.ReadBasic only, messages come without body and bodyPreview."""
    message = await deliver(http, sandbox, body="secret text")
    basic = mint(sandbox, scopes=["Mail.ReadBasic"])

    seen = await graph.ok("GET", f"me/messages/{message['id']}", token=basic)
    full = await graph.ok("GET", f"me/messages/{message['id']}")

    assert "body" not in seen
    assert "bodyPreview" not in seen
    assert seen["subject"] == "Hello"
    assert full["body"] == {"contentType": "text", "content": "secret text"}


async def test_app_only_tokens_reach_every_mailbox_by_role(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """App-only tokens read any mailbox with Mail.Read; writing needs Mail.ReadWrite."""
    message = await deliver(http, sandbox, mailbox=SHARED)
    reader = app_only(sandbox, "Mail.Read")
    path = f"users/{SHARED}/messages/{message['id']}"

    assert (await graph.ok("GET", path, token=reader))["id"] == message["id"]
    assert await graph.error("PATCH", path, {"isRead": True}, token=reader) == (
        403,
        "ErrorAccessDenied",
    )
    assert await graph.error("GET", "me/messages", token=reader) == (400, "BadRequest")
    directory_only = app_only(sandbox, "User.Read.All")
    assert await graph.error("GET", f"users/{SHARED}/messages", token=directory_only) == (
        403,
        "ErrorAccessDenied",
    )


async def test_message_resource_fields(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """A message carries Graph's fields: addresses, flag, body, etag from the changeKey."""
    delivered = await deliver(
        http,
        sandbox,
        mailbox=SHARED,
        subject="Invoice",
        body="<p>Dear  team</p>",
        bodyType="html",
        cc=[{"name": "Bob", "address": "bob@example.net"}],
        hasAttachments=True,
        internetMessageId="<abc@example.net>",
    )

    message = await graph.ok("GET", f"users/{SHARED}/messages/{delivered['id']}")

    assert message["@odata.etag"] == f'W/"{message["changeKey"]}"'
    assert message["from"] == {
        "emailAddress": {"name": "alice@example.net", "address": "alice@example.net"}
    }
    assert message["sender"] == message["from"]
    assert message["toRecipients"][0]["emailAddress"]["address"] == SHARED
    assert message["ccRecipients"] == [
        {"emailAddress": {"name": "Bob", "address": "bob@example.net"}}
    ]
    assert message["body"] == {"contentType": "html", "content": "<p>Dear  team</p>"}
    assert message["bodyPreview"] == "Dear team"
    assert message["flag"] == {"flagStatus": "notFlagged"}
    assert (message["isRead"], message["isDraft"], message["hasAttachments"]) == (
        False,
        False,
        True,
    )
    assert message["internetMessageId"] == "<abc@example.net>"
    assert message["importance"] == "normal"
    inbox = await graph.ok("GET", f"users/{SHARED}/mailFolders/inbox")
    assert message["parentFolderId"] == inbox["id"]
    for name in ("createdDateTime", "lastModifiedDateTime", "receivedDateTime", "sentDateTime"):
        assert message[name].endswith("Z")
    assert message["conversationId"]


async def test_listing_pages_with_top_select_and_next_link(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """$top pages newest first with @odata.nextLink; $select keeps id and etag."""
    for n in range(5):
        await deliver(http, sandbox, subject=f"m{n}")
        sandbox.state.advance_clock(1)

    first = await graph.ok("GET", "me/mailFolders/inbox/messages?$top=2&$select=Subject,isRead")
    second = await graph.ok("GET", first["@odata.nextLink"])
    third = await graph.ok("GET", second["@odata.nextLink"])

    subjects = [m["subject"] for page in (first, second, third) for m in page["value"]]
    assert subjects == ["m4", "m3", "m2", "m1", "m0"]
    assert "@odata.nextLink" not in third
    assert set(first["value"][0]) == {"@odata.etag", "id", "subject", "isRead"}
    assert await graph.error("GET", "me/messages?$select=nope") == (
        400,
        "RequestBroker--ParseUri",
    )


async def test_patch_changes_read_state_flag_and_categories(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """PATCH sets isRead, flag and categories, matching property names in any case."""
    message = await deliver(http, sandbox)

    patched = await graph.ok(
        "PATCH",
        f"me/messages/{message['id']}",
        {"IsRead": True, "flag": {"FlagStatus": "flagged"}, "categories": ["Red"]},
    )

    assert (patched["isRead"], patched["flag"], patched["categories"]) == (
        True,
        {"flagStatus": "flagged"},
        ["Red"],
    )
    assert patched["changeKey"] != message["changeKey"]
    assert await graph.error("PATCH", f"me/messages/{message['id']}", {"subject": "x"}) == (
        400,
        "ErrorInvalidPropertyUpdateSentMessage",
    )
    assert await graph.error("PATCH", f"me/messages/{message['id']}", {"isRead": "yes"}) == (
        400,
        "ErrorInvalidArgument",
    )


async def test_move_gives_the_message_a_new_id(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """move returns 201 with the message under a new id in the destination folder."""
    message = await deliver(http, sandbox)

    moved = await graph.ok(
        "POST",
        f"me/messages/{message['id']}/microsoft.graph.move",
        {"DestinationId": "DeletedItems"},
    )

    deleted = await graph.ok("GET", "me/mailFolders/deleteditems")
    assert moved["id"] != message["id"]
    assert moved["parentFolderId"] == deleted["id"]
    assert moved["subject"] == "Hello"
    assert await graph.error("GET", f"me/messages/{message['id']}") == (404, "ErrorItemNotFound")
    assert (await graph.ok("GET", f"me/messages/{moved['id']}"))["id"] == moved["id"]


async def test_delete_is_a_soft_delete_into_recoverable_items(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """DELETE removes the message from view into the hidden Recoverable Items folder."""
    message = await deliver(http, sandbox)

    status, _ = await graph.call("DELETE", f"me/messages/{message['id']}")

    assert status == 204
    assert await graph.error("GET", f"me/messages/{message['id']}") == (404, "ErrorItemNotFound")
    deleted_items = await graph.ok("GET", "me/mailFolders/deleteditems/messages")
    assert deleted_items["value"] == []
    hidden = await graph.ok("GET", "me/mailFolders/recoverableitemsdeletions/messages")
    assert [m["subject"] for m in hidden["value"]] == ["Hello"]
    listed = await graph.ok("GET", "me/mailFolders?includeHiddenFolders=true")
    assert "Deletions" in [f["displayName"] for f in listed["value"]]


async def test_permanent_delete_purges(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """permanentDelete removes the message from every folder."""
    message = await deliver(http, sandbox)

    status, _ = await graph.call("POST", f"me/messages/{message['id']}/permanentDelete")

    assert status == 204
    for folder in ("inbox", "recoverableitemsdeletions"):
        assert (await graph.ok("GET", f"me/mailFolders/{folder}/messages"))["value"] == []


async def test_paths_tolerate_encoding_double_slashes_and_case(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Percent-encoded users, // and mixed-case segments reach the same resource."""
    message = await deliver(http, sandbox, mailbox=SHARED)
    shared_id = sandbox.state.users[SHARED].object_id

    for path in (
        f"users/shared%40example.com/messages/{message['id']}",
        f"/users//{SHARED}//Messages/{message['id']}",
        f"Users('{shared_id}')/MailFolders('Inbox')/messages('{message['id']}')",
        f"users/{SHARED}/mailFolders/inbox/messages/{message['id'].replace('=', '%3D')}",
    ):
        assert (await graph.ok("GET", path))["id"] == message["id"], path


async def test_unknown_segments_and_users(graph: Graph) -> None:
    """Unknown segments are 400 BadRequest; unknown users 404 ErrorInvalidUser."""
    assert await graph.error("GET", "me/calendars") == (400, "BadRequest")
    assert await graph.error("GET", "users/nobody@example.com/messages") == (
        404,
        "ErrorInvalidUser",
    )
    assert await graph.error("GET", "me/messages/not-an-id") == (400, "ErrorInvalidIdMalformed")


def _send_body(**message: Any) -> dict[str, Any]:
    return {
        "Message": {
            "Subject": "Quote",
            "Body": {"ContentType": "Text", "Content": "Here it is"},
            "ToRecipients": [{"EmailAddress": {"Address": "customer@example.net"}}],
            **message,
        },
        "SaveToSentItems": True,
    }


async def test_send_mail_as_shared_lands_in_the_shared_sent_items(
    graph: Graph, sandbox: RunningSandbox
) -> None:
    """sendMail on the shared mailbox (PascalCase body) is 202 and saved in its Sent Items."""
    status, body = await graph.call("POST", f"users/{SHARED}/sendMail", _send_body())

    assert (status, body) == (202, None)
    shared_sent = await graph.ok("GET", f"users/{SHARED}/mailFolders/sentitems/messages")
    own_sent = await graph.ok("GET", "me/mailFolders/sentitems/messages")
    assert own_sent["value"] == []
    [copy] = shared_sent["value"]
    assert copy["from"]["emailAddress"] == {"name": "Shared Mailbox", "address": SHARED}
    assert copy["sender"] == copy["from"]
    assert copy["isRead"] is True
    assert copy["toRecipients"][0]["emailAddress"]["address"] == "customer@example.net"


async def test_send_mail_without_send_as_is_denied(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Without Send As (or without Mail.Send.Shared) sending as the shared mailbox is 403."""
    await admin(http, sandbox, "POST", "grants", {"user": MAIN, "mailbox": SHARED})
    assert await graph.error("POST", f"users/{SHARED}/sendMail", _send_body()) == (
        403,
        "ErrorSendAsDenied",
    )
    await admin(http, sandbox, "POST", "grants", {"user": MAIN, "mailbox": SHARED, "sendAs": True})
    no_shared_send = mint(sandbox, scopes=["Mail.ReadWrite.Shared", "Mail.Send"])

    assert await graph.error(
        "POST", f"users/{SHARED}/sendMail", _send_body(), token=no_shared_send
    ) == (403, "ErrorSendAsDenied")
    from_shared = _send_body(From={"EmailAddress": {"Address": SHARED}})
    no_send = mint(sandbox, scopes=["Mail.ReadWrite"])
    assert await graph.error("POST", "me/sendMail", from_shared, token=no_send) == (
        403,
        "ErrorAccessDenied",
    )
    assert (await graph.ok("GET", f"users/{SHARED}/mailFolders/sentitems/messages"))["value"] == []


async def test_send_on_behalf_keeps_the_user_as_sender(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """With Send on Behalf only, from is the shared mailbox and sender the signed-in user."""
    await admin(
        http, sandbox, "POST", "grants", {"user": MAIN, "mailbox": SHARED, "sendOnBehalf": True}
    )

    await graph.ok("POST", f"users/{SHARED}/sendMail", _send_body())

    [copy] = (await graph.ok("GET", f"users/{SHARED}/mailFolders/sentitems/messages"))["value"]
    assert copy["from"]["emailAddress"]["address"] == SHARED
    assert copy["sender"]["emailAddress"]["address"] == MAIN


async def test_sent_mail_reaches_sandbox_recipients(graph: Graph, sandbox: RunningSandbox) -> None:
    """Recipients that are sandbox mailboxes get the message in their inbox, unread."""
    body = _send_body(
        ToRecipients=[{"EmailAddress": {"Address": SHARED}}],
        BccRecipients=[{"EmailAddress": {"Address": "nobody@example.net"}}],
    )
    body["SaveToSentItems"] = False

    await graph.ok("POST", "me/sendMail", body)

    [received] = (await graph.ok("GET", f"users/{SHARED}/mailFolders/inbox/messages"))["value"]
    assert received["from"]["emailAddress"]["address"] == MAIN
    assert received["isRead"] is False
    assert received["bccRecipients"] == []
    assert (await graph.ok("GET", "me/mailFolders/sentitems/messages"))["value"] == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"message": {"subject": "x"}}, "ErrorInvalidRecipients"),
        (
            {"message": {"toRecipients": [{"emailAddress": {"address": "not an address"}}]}},
            "ErrorInvalidRecipients",
        ),
        ({"saveToSentItems": True}, "ErrorInvalidParameter"),
        (
            {
                "message": {"toRecipients": [{"emailAddress": {"address": "a@example.net"}}]},
                "saveToSentItems": "yes",
            },
            "ErrorInvalidParameter",
        ),
    ],
)
async def test_send_mail_rejects_bad_messages(
    graph: Graph, body: dict[str, Any], code: str
) -> None:
    """sendMail without valid recipients or with malformed fields is a 400."""
    assert await graph.error("POST", "me/sendMail", body) == (400, code)


async def test_user_entry(graph: Graph, sandbox: RunningSandbox) -> None:
    """GET users/{upn} returns the directory entry with the object id."""
    user = await graph.ok("GET", f"users/{SHARED}")

    assert user["id"] == sandbox.state.users[SHARED].object_id
    assert user["mail"] == SHARED


async def test_bodies_that_are_not_json_are_400(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Undecodable, non-JSON or non-object bodies are 400 BadRequest, never a 500."""
    for data in (b"\xff\xfe\x00", b"{not json", b"[1, 2]", b""):
        async with http.post(
            f"{sandbox.url}/v1.0/me/sendMail",
            data=data,
            headers={"Authorization": f"Bearer {graph.token}", "Content-Type": "application/json"},
        ) as response:
            body = await response.json()
            assert (response.status, body["error"]["code"]) == (400, "BadRequest"), data


_IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$"
)


async def test_date_header_follows_the_sandbox_clock(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Every Graph answer, errors too, has an IMF-fixdate Date read from the sandbox clock."""
    _, before, _ = await graph.exchange("GET", "me/mailFolders")
    await admin(http, sandbox, "POST", "clock", {"advanceSeconds": 86400 * 3})
    _, after, _ = await graph.exchange("GET", "me/mailFolders")
    status, refused, _ = await graph.exchange("GET", "me/mailFolders", token="a.b.c")

    assert _IMF_FIXDATE.match(before["Date"]), before["Date"]
    assert _IMF_FIXDATE.match(after["Date"]), after["Date"]
    wall = datetime.now(UTC)
    assert abs((parsedate_to_datetime(before["Date"]) - wall).total_seconds()) < 60
    ahead = parsedate_to_datetime(after["Date"]) - wall
    assert timedelta(days=3, minutes=-1) < ahead < timedelta(days=3, minutes=1)
    assert status == 401
    gap = parsedate_to_datetime(refused["Date"]) - parsedate_to_datetime(after["Date"])
    assert abs(gap) < timedelta(minutes=1)
