"""The folder tree of a Graph mailbox, named the way Exchange's IMAP server names folders.

Display names joined with ``/``, the inbox called ``INBOX`` (its subfolders ``INBOX/...``),
special uses from Graph's well-known folder names (``sentitems`` is ``\\Sent``, and so on),
so that an account's ``path`` setting and the events' ``path`` mean the same on both
backends. Pure: the listing comes from whoever asked Graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DELETIONS",
    "INBOX",
    "INBOX_FOLDER",
    "INBOX_KEY",
    "SPECIAL_USES",
    "FolderTree",
    "GraphFolder",
    "build_tree",
]

INBOX = "INBOX"
# Well-known folder name -> the special use IMAP gives that folder.
SPECIAL_USES: Mapping[str, str] = {
    "inbox": "\\Inbox",
    "sentitems": "\\Sent",
    "drafts": "\\Drafts",
    "deleteditems": "\\Trash",
    "junkemail": "\\Junk",
    "archive": "\\Archive",
}
# Where Graph's DELETE puts a message (a soft delete): a message found there was deleted.
DELETIONS = "recoverableitemsdeletions"
# The store key and URL segment of the inbox (Graph accepts the well-known name).
INBOX_KEY = "inbox"


@dataclass(frozen=True, slots=True)
class GraphFolder:
    """One folder: ``key`` names it in the store and in URLs (``inbox`` or Graph's id)."""

    key: str
    path: str
    special_use: str | None
    # The display name (the last segment of ``path``, unless it holds a "/" itself).
    name: str = ""


INBOX_FOLDER = GraphFolder(INBOX_KEY, INBOX, SPECIAL_USES["inbox"], INBOX)


@dataclass(frozen=True)
class FolderTree:
    """Every folder of a mailbox by Graph id, and the ids that mean "deleted"."""

    folders: Mapping[str, GraphFolder]
    deletions: frozenset[str]

    def find(self, folder_id: str) -> GraphFolder | None:
        """The folder with Graph id ``folder_id``."""
        return self.folders.get(folder_id)

    def knows(self, folder_id: str) -> bool:
        """Whether ``folder_id`` is a listed folder or a deletions folder."""
        return folder_id in self.folders or folder_id in self.deletions


def build_tree(listing: Sequence[Mapping[str, Any]], well_known: Mapping[str, str]) -> FolderTree:
    """The tree of ``listing`` (``{id, displayName, parentFolderId}`` of every folder).

    ``well_known`` maps well-known names to folder ids. A folder whose parent is not in the
    listing is a top-level one.
    """
    by_id = {str(f["id"]): f for f in listing if f.get("id")}
    uses = {
        folder_id: SPECIAL_USES[name]
        for name, folder_id in well_known.items()
        if name in SPECIAL_USES
    }
    inbox_id = well_known.get("inbox")
    paths: dict[str, str] = {}

    def path_of(folder_id: str, depth: int = 0) -> str:
        known = paths.get(folder_id)
        if known is not None:
            return known
        folder = by_id[folder_id]
        name = INBOX if folder_id == inbox_id else str(folder.get("displayName") or folder_id)
        parent = str(folder.get("parentFolderId") or "")
        if parent in by_id and parent != folder_id and depth < 64:
            name = f"{path_of(parent, depth + 1)}/{name}"
        paths[folder_id] = name
        return name

    folders = {}
    for folder_id in by_id:
        key = INBOX_KEY if folder_id == inbox_id else folder_id
        name = INBOX if folder_id == inbox_id else str(by_id[folder_id].get("displayName") or "")
        folders[folder_id] = GraphFolder(key, path_of(folder_id), uses.get(folder_id), name)
    if inbox_id is not None:
        folders[INBOX_KEY] = folders.get(inbox_id, INBOX_FOLDER)
    deletions = frozenset(v for k, v in well_known.items() if k == DELETIONS)
    return FolderTree(folders, deletions)
