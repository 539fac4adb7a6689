"""Graph message JSON -> event data: the same keys and values as IMAP for the same message."""

from __future__ import annotations

from typing import Any

import pytest

from relay.events.model import Event
from relay.events.normalize import (
    AUTO_REPLY_HEADERS,
    Report,
    graph_flags,
    graph_headers,
    graph_message_deleted,
    graph_message_to_event,
    graph_message_updated,
    graph_report_wanted,
    imap_fetch_to_event,
    message_deleted,
    message_updated,
)
from tests.events.test_normalize import fetch

# One message as IMAP FETCH returns it and as Graph returns it.
IMAP_FETCH = (
    b'FLAGS (\\Seen \\Flagged) INTERNALDATE "17-Oct-2022 06:42:08 +0000" RFC822.SIZE 1200'
    b" EMAILID (M1) THREADID (T1)"
    b' ENVELOPE ("Mon, 17 Oct 2022 09:42:07 +0300" "Quarterly numbers"'
    b' (("J\\"urgen" NIL "j" "example.org")) (("Secretary" NIL "s" "example.org"))'
    b' (("Replies" NIL "r" "example.org")) (("A" NIL "a" "example.com"))'
    b' (("C" NIL "c" "example.com")) NIL NIL "<x1@example.org>")'
    b' BODYSTRUCTURE ("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)'
)
GRAPH: dict[str, Any] = {
    "id": "AAMkAD-graph-id",
    "internetMessageId": "<x1@example.org>",
    "conversationId": "T1",
    "subject": "Quarterly numbers",
    "from": {"emailAddress": {"name": 'J"urgen', "address": "j@example.org"}},
    "sender": {"emailAddress": {"name": "Secretary", "address": "s@example.org"}},
    "toRecipients": [{"emailAddress": {"name": "A", "address": "a@example.com"}}],
    "ccRecipients": [{"emailAddress": {"name": "C", "address": "c@example.com"}}],
    "bccRecipients": [],
    "replyTo": [{"emailAddress": {"name": "Replies", "address": "r@example.org"}}],
    "sentDateTime": "2022-10-17T06:42:07Z",
    "receivedDateTime": "2022-10-17T06:42:08Z",
    "isRead": True,
    "isDraft": False,
    "flag": {"flagStatus": "flagged"},
}


def test_imap_and_graph_produce_the_same_keys_and_values() -> None:
    """The same message gives the same data keys and header values from IMAP and Graph."""
    imap = imap_fetch_to_event(fetch(IMAP_FETCH), folder_no=1, uidvalidity=5)
    graph = graph_message_to_event(GRAPH, uid=imap["uid"])

    assert sorted(graph) == sorted(imap)
    for key in ("messageId", "subject", "from", "sender", "to", "cc", "replyTo", "date"):
        assert graph[key] == imap[key], key
    assert graph["flags"] == imap["flags"] == ["\\Seen", "\\Flagged"]
    assert graph["unseen"] is imap["unseen"] is False


def test_imap_and_graph_give_the_same_emailengine_fields() -> None:
    """With header fields and the folder's special use both sources add the same fields."""
    header_item = "BODY[HEADER.FIELDS (" + " ".join(AUTO_REPLY_HEADERS).upper() + ")]"
    attributes = {**fetch(IMAP_FETCH), header_item: b"Auto-Submitted: auto-replied\r\n\r\n"}
    imap = imap_fetch_to_event(attributes, folder_no=1, uidvalidity=5, special_use="\\Inbox")
    headers = [{"name": "Auto-Submitted", "value": "auto-replied"}]
    graph = graph_message_to_event(
        {**GRAPH, "internetMessageHeaders": headers}, uid=imap["uid"], special_use="\\Inbox"
    )
    assert sorted(graph) == sorted(imap)
    for key in ("flagged", "isAutoReply", "messageSpecialUse"):
        assert graph[key] == imap[key], key
    assert graph["text"] == {"id": "AAMkAD-graph-id", "encodedSize": {}}
    assert imap["text"]["id"] == imap["id"]


@pytest.mark.parametrize(
    ("headers", "subject", "expected"),
    [
        ([{"name": "X-Autoreply", "value": "yes"}], "Hi", True),
        ([{"name": "Precedence", "value": "bulk"}], "Hi", False),
        # The subject rule needs In-Reply-To, which Graph has in the header only.
        ([{"name": "In-Reply-To", "value": "<t@example.com>"}], "OOF: away", True),
        ([], "OOF: away", False),
        (None, "OOF: away", False),
    ],
)
def test_graph_auto_reply_from_internet_message_headers(
    headers: list[dict[str, str]] | None, subject: str, expected: bool
) -> None:
    """isAutoReply comes from internetMessageHeaders; without them it is not decided."""
    message = {**GRAPH, "subject": subject}
    if headers is not None:
        message["internetMessageHeaders"] = headers
    data = graph_message_to_event(message, uid=1)
    assert data.get("isAutoReply", False) is expected


def test_graph_report_and_flags() -> None:
    """A report found in the source gives isBounce and relatedMessageId; flags only when set."""
    report = Report(
        status=({"final-recipient": ["rfc822; a@example.net"], "action": ["failed"]},),
        original={"message-id": ["<t1@example.com>"]},
    )
    data = graph_message_to_event(
        {**GRAPH, "isDraft": True, "flag": {"flagStatus": "notFlagged"}},
        uid=1,
        special_use="\\Drafts",
        report=report,
    )
    assert data["isBounce"] is True
    assert data["relatedMessageId"] == "<t1@example.com>"
    assert data["draft"] is True
    assert "flagged" not in data
    assert "answered" not in data
    assert data["messageSpecialUse"] == "\\Drafts"


def test_graph_headers() -> None:
    """internetMessageHeaders become lower-case names with their values in order."""
    assert graph_headers(
        [
            {"name": "Received", "value": "a"},
            {"name": "received", "value": "b"},
            {"name": "Subject", "value": "=?UTF-8?Q?caf=C3=A9?="},
            {"value": "no name"},
            "junk",
        ]
    ) == {"received": ["a", "b"], "subject": ["café"]}
    assert graph_headers(None) == {}


DSN_TYPE = "multipart/report; report-type=delivery-status; boundary=b"


@pytest.mark.parametrize(
    ("sender", "subject", "content_type", "inbox", "expected"),
    [
        ("ann@example.com", "Hi", DSN_TYPE, True, True),
        ("ann@example.com", "Hi", DSN_TYPE, False, False),
        ("ann@example.com", "Hi", "multipart/mixed; boundary=b", True, False),
        ("MAILER-DAEMON@example.com", "Undelivered", "text/plain", True, True),
        ("postmaster@example.com", "Undelivered", None, True, True),
        ("staff@hotmail.com", "complaint about message", None, True, True),
        ("staff@hotmail.com", "Welcome", None, True, False),
        (None, "Hi", None, True, False),
    ],
)
def test_graph_report_wanted(
    sender: str | None, subject: str, content_type: str | None, inbox: bool, expected: bool
) -> None:
    """The source is read for INBOX messages that may be reports: multipart/report, mail from
    a mailer daemon or postmaster, Hotmail's complaint mail."""
    message: dict[str, Any] = {"id": "g", "subject": subject}
    if sender is not None:
        message["from"] = {"emailAddress": {"name": "", "address": sender}}
    headers = {"content-type": [content_type]} if content_type else {}
    assert graph_report_wanted(message, headers, inbox=inbox) is expected


def test_graph_report_wanted_by_sender_name() -> None:
    """A sender named "Mail Delivery System" (EmailEngine's sign) is worth a look too."""
    message = {"from": {"emailAddress": {"name": "Mail Delivery System", "address": "x@y"}}}
    assert graph_report_wanted(message, {}, inbox=True) is True


def test_imap_and_graph_envelopes_have_the_same_keys() -> None:
    """Events from both sources for INBOX have identical envelope keys."""
    imap = Event("messageNew", "a", {}, 0, path="INBOX", special_use="\\Inbox")
    graph = Event(
        "messageNew",
        "a",
        graph_message_to_event(GRAPH, uid=1),
        0,
        path="INBOX",
        special_use="\\Inbox",
    )
    assert list(imap.envelope("u")) == list(graph.envelope("u"))


def test_deleted_and_updated_match_imap_shapes() -> None:
    """messageDeleted and messageUpdated data have IMAP's keys."""
    assert sorted(graph_message_deleted("g", 4)) == sorted(message_deleted(1, 5, 4))
    graph = graph_message_updated("g", 4, [], ["\\Seen"])
    imap = message_updated(1, 5, 4, [], [b"\\Seen"])
    assert graph is not None
    assert imap is not None
    assert sorted(graph) == sorted(imap)
    assert graph["changes"] == imap["changes"]
    assert graph_message_updated("g", 4, ["\\Seen"], ["\\Seen"]) is None


@pytest.mark.parametrize(
    ("message", "flags"),
    [
        ({}, []),
        ({"isRead": True}, ["\\Seen"]),
        ({"flag": {"flagStatus": "complete"}}, []),
        ({"flag": {"flagStatus": "flagged"}, "isDraft": True}, ["\\Flagged", "\\Draft"]),
    ],
)
def test_graph_flags(message: dict[str, Any], flags: list[str]) -> None:
    """isRead, flag and isDraft map to IMAP's system flags."""
    assert graph_flags(message) == flags
