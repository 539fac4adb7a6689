"""Supervisor helpers: which folders an account's ``path`` selects."""

from __future__ import annotations

import pytest

from relay.imap.parse import Mailbox
from relay.sources.supervisor import folder_specs, resolve_folders

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
        (None, []),
        ("INBOX", []),
        ("\\Sent", ["\\Sent"]),
        (["inbox", "Work", "Work", "*"], ["Work", "*"]),
    ],
)
def test_folder_specs(path: object, specs: list[str]) -> None:
    """INBOX is always watched; ``path`` adds the rest once each."""
    assert folder_specs(path) == specs


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
