"""Which folders an account's ``path`` and ``subconnections`` select."""

from __future__ import annotations

import pytest

from relay.events.mailboxes import Listed
from relay.imap.parse import Mailbox
from relay.sources.imap.poller import listing_of, resolve_folders
from relay.sources.specs import folder_specs, idle_specs, watch_specs

BOXES = [
    Mailbox("INBOX", "/", ("\\HasNoChildren",)),
    Mailbox("Sent", "/", ("\\HasNoChildren", "\\Sent")),
    Mailbox("Trash", "/", ("\\Trash",)),
    Mailbox("Projects", "/", ("\\Noselect", "\\HasChildren")),
    Mailbox("Projects/Work", "/", ()),
]


@pytest.mark.parametrize(
    ("path", "specs"),
    [
        (None, ["*"]),
        ("", ["*"]),
        ("INBOX", []),
        ([], []),
        ("\\Sent", ["\\Sent"]),
        (["inbox", "Work", "Work", "*"], ["Work", "*"]),
    ],
)
def test_watch_specs(path: object, specs: list[str]) -> None:
    """No ``path`` watches every folder (EmailEngine's default); a ``path`` narrows it to
    the folders it names, once each; INBOX is always watched and never a spec."""
    assert watch_specs(path) == specs


def test_subconnections_add_to_path() -> None:
    """``subconnections`` are watched whatever ``path`` says, each once."""
    assert idle_specs(["INBOX", "Work", "Work", 7]) == ["Work"]
    assert idle_specs(None) == []
    assert folder_specs("\\Sent", ["Work", "\\Sent"]) == ["\\Sent", "Work"]
    assert folder_specs(None, ["Work"]) == ["*", "Work"]


def test_listing_keeps_selectable_folders_with_their_names() -> None:
    """The recorded listing: every selectable folder, its last path segment as name."""
    assert listing_of(BOXES) == {
        "INBOX": Listed("INBOX", None),
        "Sent": Listed("Sent", "\\Sent"),
        "Trash": Listed("Trash", "\\Trash"),
        "Projects/Work": Listed("Work", None),
    }


@pytest.mark.parametrize(
    ("specs", "resolved"),
    [
        ([], {}),
        (["\\sent"], {"Sent": "\\Sent"}),
        (["Projects/Work", "Missing"], {"Projects/Work": None}),
        (["*"], {"Sent": "\\Sent", "Trash": "\\Trash", "Projects/Work": None}),
        (["Projects"], {}),
    ],
)
def test_resolve_folders(specs: list[str], resolved: dict[str, str | None]) -> None:
    """Special-use names and paths match LIST entries; \\Noselect folders never do."""
    assert resolve_folders(specs, BOXES) == resolved
