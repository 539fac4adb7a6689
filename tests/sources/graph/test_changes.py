"""Delta pages to events: moves, deletes, de-duplication (pure)."""

from __future__ import annotations

from typing import Any

from relay.events.normalize import Report
from relay.graph.folders import INBOX_FOLDER, GraphFolder
from relay.sources.graph.changes import Changes, Delta, Extra, FolderState

ARCHIVE = GraphFolder("AQMkArchive", "Archive", "\\Archive")
DRAFTS = GraphFolder("AQMkDrafts", "Drafts", "\\Drafts")
SENT = GraphFolder("AQMkSent", "Sent Items", "\\Sent")


def _item(graph_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": graph_id, "subject": f"about {graph_id}", "isRead": False, **extra}


def _removed(graph_id: str) -> dict[str, Any]:
    return {"id": graph_id, "@removed": {"reason": "deleted"}}


def _states(*folders: GraphFolder) -> dict[str, FolderState]:
    return {
        f.key: FolderState(f, link="old", uid_next=10, synced_ms=0, stored=True) for f in folders
    }


def _known(changes: Changes) -> dict[str, Any]:
    """The rows the catch-up would write: id -> (folder, uid, flags), None when removed."""
    out: dict[str, Any] = dict(changes.upserts)
    out.update({graph_id: None for graph_id in changes.removed})
    return out


def _names(changes: Changes) -> list[tuple[str, str | None]]:
    return [(e.event, e.path) for e in changes.events]


def test_new_message_is_reported_once_even_when_delta_repeats_it() -> None:
    """A repeated ``created`` (the same id twice, or again in the next round) is one event."""
    states = _states(INBOX_FOLDER)
    changes = Changes("a", states, {}, 1)
    changes.apply("inbox", Delta([_item("m1"), _item("m1")], "next"))
    assert changes.settle() == []
    assert _names(changes) == [("messageNew", "INBOX")]
    assert _known(changes) == {"m1": ("inbox", 10, [])}
    again = Changes("a", states, dict(changes.upserts), 2)
    again.apply("inbox", Delta([_item("m1")], "next2"))
    again.settle()
    assert again.events == []
    assert again.upserts == {}
    assert states["inbox"].link == "next2"


def test_first_baseline_reports_nothing() -> None:
    states = {"inbox": FolderState(INBOX_FOLDER)}
    changes = Changes("a", states, {}, 1)
    changes.apply("inbox", Delta([_item("m1"), _item("m2")], "l1", full=True))
    changes.settle()
    assert changes.events == []
    assert sorted(changes.upserts) == ["m1", "m2"]
    assert states["inbox"].uid_next == 3


def test_move_between_watched_folders_in_one_pass_is_one_update() -> None:
    """Removed from INBOX and new in Archive with the same (immutable) id: a move."""
    states = _states(INBOX_FOLDER, ARCHIVE)
    changes = Changes("a", states, {"m1": ("inbox", 3, ["\\Seen"])}, 1)
    changes.apply("inbox", Delta([_removed("m1")], "i2"))
    changes.apply(ARCHIVE.key, Delta([_item("m1", isRead=True)], "a2"))
    assert changes.settle() == []
    (event,) = changes.events
    assert (event.event, event.path, event.special_use) == ("messageUpdated", "INBOX", "\\Inbox")
    assert event.data == {
        "id": "m1",
        "uid": 3,
        "changes": {
            "path": {"old": "INBOX", "new": "Archive"},
            "specialUse": {"old": "\\Inbox", "new": "\\Archive"},
            "uid": {"old": 3, "new": 10},
        },
    }
    assert _known(changes) == {"m1": (ARCHIVE.key, 10, ["\\Seen"])}
    assert changes.dirty == {"inbox", ARCHIVE.key}


def test_new_in_one_folder_before_the_other_folder_reports_its_removal() -> None:
    """Only Archive was notified so far: the message it gained is INBOX's, moved. INBOX's
    removal, when its delta comes, is then nothing new."""
    states = _states(INBOX_FOLDER, ARCHIVE)
    changes = Changes("a", states, {"m1": ("inbox", 3, [])}, 1)
    changes.apply(ARCHIVE.key, Delta([_item("m1")], "a2"))
    changes.settle()
    assert _names(changes) == [("messageUpdated", "INBOX")]
    later = Changes("a", states, dict(changes.upserts), 2)
    later.apply("inbox", Delta([_removed("m1")], "i2"))
    assert later.settle() == []
    assert later.events == []


def test_removal_without_a_new_home_is_left_to_look_up() -> None:
    states = _states(INBOX_FOLDER)
    changes = Changes("a", states, {"m1": ("inbox", 3, []), "m2": ("inbox", 4, [])}, 1)
    changes.apply("inbox", Delta([_removed("m1"), _removed("m2"), _removed("never")], "i2"))
    assert changes.settle() == [("m1", "inbox"), ("m2", "inbox")]
    changes.resolve("m1", "inbox", None, deleted=True)
    changes.resolve("m2", "inbox", ARCHIVE, deleted=False)
    deleted, moved = changes.events
    assert (deleted.event, deleted.data) == ("messageDeleted", {"id": "m1", "uid": 3})
    assert moved.event == "messageUpdated"
    assert moved.data["changes"]["path"] == {"old": "INBOX", "new": "Archive"}
    assert "uid" not in moved.data["changes"]
    assert _known(changes) == {"m1": None, "m2": None}


def test_lookup_that_finds_the_message_where_it_was_changes_nothing() -> None:
    states = _states(INBOX_FOLDER)
    changes = Changes("a", states, {"m1": ("inbox", 3, [])}, 1)
    changes.apply("inbox", Delta([_removed("m1")], "i2"))
    (left,) = changes.settle()
    changes.resolve(*left, INBOX_FOLDER, deleted=False)
    assert changes.events == []
    assert _known(changes) == {}


def test_move_into_a_watched_folder_found_by_lookup_is_known_there() -> None:
    """INBOX -> Archive found by looking the message up: Archive's own delta later lists it
    as a known message, so no messageNew follows."""
    states = _states(INBOX_FOLDER, ARCHIVE)
    changes = Changes("a", states, {"m1": ("inbox", 3, [])}, 1)
    changes.apply("inbox", Delta([_removed("m1")], "i2"))
    (left,) = changes.settle()
    changes.resolve(*left, ARCHIVE, deleted=False)
    assert _known(changes) == {"m1": (ARCHIVE.key, 10, [])}
    later = Changes("a", states, dict(changes.upserts), 2)
    later.apply(ARCHIVE.key, Delta([_item("m1")], "a2"))
    later.settle()
    assert later.events == []


def test_sent_draft_is_one_move_not_a_delete_and_a_new() -> None:
    """Drafts -> Sent Items keeps the immutable id: one messageUpdated (path and \\Draft)."""
    states = _states(DRAFTS, SENT)
    changes = Changes("a", states, {"d1": (DRAFTS.key, 1, ["\\Draft"])}, 1)
    changes.apply(DRAFTS.key, Delta([_removed("d1")], "d2"))
    changes.apply(SENT.key, Delta([_item("d1", isRead=True)], "s2"))
    changes.settle()
    (event,) = changes.events
    assert event.event == "messageUpdated"
    assert event.data["changes"]["path"] == {"old": "Drafts", "new": "Sent Items"}
    assert event.data["changes"]["flags"] == {
        "added": ["\\Seen"],
        "deleted": ["\\Draft"],
        "removed": ["\\Draft"],
        "value": ["\\Seen"],
    }


def test_flag_change_is_an_update() -> None:
    states = _states(INBOX_FOLDER)
    changes = Changes("a", states, {"m1": ("inbox", 3, [])}, 1)
    changes.apply("inbox", Delta([_item("m1", isRead=True)], "i2"))
    changes.settle()
    (event,) = changes.events
    assert event.data["changes"]["flags"]["added"] == ["\\Seen"]
    assert _known(changes) == {"m1": ("inbox", 3, ["\\Seen"])}


def test_rebaseline_reports_only_recent_mail_and_what_went_missing() -> None:
    """A full listing after an expired token: old mail is not new again; mail received
    since the last sync is; a known message missing from the listing left."""
    states = _states(INBOX_FOLDER)
    known = {"old": ("inbox", 1, []), "gone": ("inbox", 2, [])}
    items = [
        _item("old"),
        _item("older", receivedDateTime="2020-01-01T00:00:00Z"),
        _item("fresh", receivedDateTime="2030-01-01T00:00:00Z"),
    ]
    changes = Changes("a", states, known, 1)
    changes.apply("inbox", Delta(items, "l", full=True, since_ms=1_700_000_000_000))
    assert changes.settle() == [("gone", "inbox")]
    assert [e.data["id"] for e in changes.events] == ["fresh"]


def test_reported_lists_what_settle_reports_as_new() -> None:
    """reported() names the new messages (not moves, not a baseline) before settle()."""
    states = _states(INBOX_FOLDER, ARCHIVE)
    states[SENT.key] = FolderState(SENT)
    changes = Changes("a", states, {"m1": ("inbox", 3, [])}, 1)
    changes.apply("inbox", Delta([_removed("m1"), _item("m2")], "i2"))
    changes.apply(ARCHIVE.key, Delta([_item("m1"), _item("m3")], "a2"))
    changes.apply(SENT.key, Delta([_item("s1")], "s1", full=True))
    assert [(key, item["id"]) for key, item in changes.reported()] == [
        ("inbox", "m2"),
        (ARCHIVE.key, "m3"),
    ]
    changes.settle()
    assert [(e.event, e.data["id"]) for e in changes.events] == [
        ("messageNew", "m2"),
        ("messageUpdated", "m1"),
        ("messageNew", "m3"),
    ]


def test_settle_adds_what_was_read_besides_delta() -> None:
    """The header and report read for a new message, and its folder's special use, reach its
    messageNew; a message nothing was read for still gets the folder's special use."""
    states = _states(INBOX_FOLDER)
    changes = Changes("a", states, {}, 1)
    changes.apply("inbox", Delta([_item("m1"), _item("m2")], "next"))
    report = Report(
        status=({"final-recipient": ["rfc822; a@example.net"], "action": ["failed"]},),
        original={"message-id": ["<t1@example.com>"]},
    )
    headers = [{"name": "Auto-Submitted", "value": "auto-replied"}]
    changes.settle({"m1": Extra({"internetMessageHeaders": headers}, report)})
    assert _names(changes) == [
        ("messageNew", "INBOX"),
        ("messageBounce", None),
        ("messageNew", "INBOX"),
    ]
    first, bounce, second = (e.data for e in changes.events)
    assert first["isAutoReply"] is True
    assert first["isBounce"] is True
    assert first["relatedMessageId"] == "<t1@example.com>"
    assert first["messageSpecialUse"] == "\\Inbox"
    assert bounce == {
        "bounceMessage": "m1",
        "recipient": "a@example.net",
        "action": "failed",
        "messageId": "<t1@example.com>",
    }
    assert changes.events[1].special_use is None
    assert second["messageSpecialUse"] == "\\Inbox"
    assert not {"isAutoReply", "isBounce", "relatedMessageId"} & set(second)


def test_new_messages_have_path_and_a_seen_key_by_message_id() -> None:
    """messageNew has the folder's path after uid and seemsLikeNew (true until the store
    finds its Message-ID seen); in Sent Items it is false and the message is not looked up.
    Graph's id is not the key: a copy of a message gets a new one."""
    states = _states(INBOX_FOLDER, SENT)
    changes = Changes("a", states, {}, 1)
    changes.apply("inbox", Delta([_item("m1", internetMessageId="<x@example.com>")], "n1"))
    changes.apply("inbox", Delta([_item("m2")], "n2"))
    changes.apply(SENT.key, Delta([_item("m3", internetMessageId="<y@example.com>")], "n3"))
    changes.settle()
    inbox, bare, sent = changes.events
    assert list(inbox.data)[:4] == ["id", "uid", "path", "emailId"]
    assert (inbox.data["path"], inbox.data["seemsLikeNew"]) == ("INBOX", True)
    assert inbox.seen_key == "<x@example.com>"
    assert (bare.data["seemsLikeNew"], bare.seen_key) == (True, None)
    assert (sent.data["path"], sent.data["seemsLikeNew"], sent.seen_key) == (
        "Sent Items",
        False,
        None,
    )
    assert "seen_key" not in inbox.payload("https://relay.example.com")
