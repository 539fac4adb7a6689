"""Graph folder paths, special uses and the account's ``path`` setting (pure)."""

from __future__ import annotations

from relay.graph.folders import INBOX_FOLDER, build_tree
from relay.sources.graph.folders import select

LISTING = [
    {"id": "F-in", "displayName": "Posteingang", "parentFolderId": "ROOT"},
    {"id": "F-sent", "displayName": "Gesendete Elemente", "parentFolderId": "ROOT"},
    {"id": "F-arch", "displayName": "Archiv", "parentFolderId": "ROOT"},
    {"id": "F-proj", "displayName": "Projects", "parentFolderId": "ROOT"},
    {"id": "F-sub", "displayName": "Alpha", "parentFolderId": "F-proj"},
    {"id": "F-insub", "displayName": "Urgent", "parentFolderId": "F-in"},
]
WELL_KNOWN = {
    "inbox": "F-in",
    "sentitems": "F-sent",
    "archive": "F-arch",
    "recoverableitemsdeletions": "F-del",
}


def test_paths_follow_exchange_imap_naming_and_special_uses_the_well_known_names() -> None:
    """Localized display names do not matter for special uses; the inbox is ``INBOX``."""
    tree = build_tree(LISTING, WELL_KNOWN)
    inbox = tree.find("F-in")
    assert inbox is not None
    assert inbox.key == "inbox"
    paths = {fid: (f.path, f.special_use) for fid, f in tree.folders.items()}
    assert paths["F-in"] == ("INBOX", "\\Inbox")
    assert paths["F-insub"] == ("INBOX/Urgent", None)
    assert paths["F-sent"] == ("Gesendete Elemente", "\\Sent")
    assert paths["F-sub"] == ("Projects/Alpha", None)
    assert tree.deletions == frozenset({"F-del"})


def test_select_by_special_use_path_and_star() -> None:
    tree = build_tree(LISTING, WELL_KNOWN)
    chosen, missing = select(["\\sent", "Projects/Alpha", "Nope"], tree)
    assert [f.path for f in chosen] == ["INBOX", "Gesendete Elemente", "Projects/Alpha"]
    assert chosen[0] == INBOX_FOLDER
    assert missing == ["Nope"]
    everything, missing = select(["*"], tree)
    assert [f.path for f in everything] == [
        "INBOX",
        "Archiv",
        "Gesendete Elemente",
        "INBOX/Urgent",
        "Projects",
        "Projects/Alpha",
    ]
    assert missing == []
