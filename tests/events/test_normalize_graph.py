"""Graph message JSON -> event data: the same keys and values as IMAP for the same message."""

from __future__ import annotations

from typing import Any

import pytest

from relay.events.model import Event
from relay.events.normalize import (
    graph_flags,
    graph_message_deleted,
    graph_message_to_event,
    graph_message_updated,
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
