"""Folder listings compared, and the mailboxNew / mailboxDeleted data built from them."""

from __future__ import annotations

import pytest

from relay.events.mailboxes import (
    Listed,
    ListingChange,
    diff,
    folder_name,
    mailbox_deleted,
    mailbox_new,
)


@pytest.mark.parametrize(
    ("path", "delimiter", "name"),
    [
        ("INBOX", "/", "INBOX"),
        ("Projects/Work", "/", "Work"),
        ("Projects.Work", ".", "Work"),
        ("Projects/Work", None, "Projects/Work"),
        ("a/b/c", "/", "c"),
    ],
)
def test_folder_name_is_the_last_segment(path: str, delimiter: str | None, name: str) -> None:
    """A folder's name is the last segment of its path under the server's delimiter."""
    assert folder_name(path, delimiter) == name


def test_diff_reports_added_and_removed_in_path_order() -> None:
    """Folders only in the new listing are added, only in the old one removed; a folder
    whose special use changed is neither (a rename is one of each)."""
    old = {"INBOX": Listed("INBOX"), "Old": Listed("Old"), "Sent": Listed("Sent", "\\Sent")}
    new = {
        "INBOX": Listed("INBOX"),
        "Sent": Listed("Sent", None),
        "Zeta": Listed("Zeta"),
        "Alpha": Listed("Alpha"),
    }
    assert diff(old, new) == ListingChange(added=("Alpha", "Zeta"), removed=("Old",))
    assert not diff(new, dict(new))


def test_event_data_has_emailengine_fields() -> None:
    """mailboxNew: path, name, specialUse (false for none) and uidValidity as a string;
    mailboxDeleted the same without uidValidity."""
    assert mailbox_new("Projects/Work", Listed("Work"), 1700) == {
        "path": "Projects/Work",
        "name": "Work",
        "specialUse": False,
        "uidValidity": "1700",
    }
    assert mailbox_new("Archive", Listed("Archive", "\\Archive"), None) == {
        "path": "Archive",
        "name": "Archive",
        "specialUse": "\\Archive",
    }
    assert mailbox_deleted("Junk", Listed("Junk", "\\Junk")) == {
        "path": "Junk",
        "name": "Junk",
        "specialUse": "\\Junk",
    }


def test_stored_form_round_trips() -> None:
    """What is stored reads back the same; unreadable stored values read as nameless."""
    folder = Listed("Work", "\\Archive")
    assert Listed.from_json(folder.to_json()) == folder
    assert Listed.from_json({"name": "X", "specialUse": None}) == Listed("X")
    assert Listed.from_json("junk") == Listed("")
