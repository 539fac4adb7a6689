"""The folders of a Graph mailbox: their paths, special uses, and which ones are watched.

Paths are built the way Exchange's IMAP server names folders, so that an account's
``path`` setting and the events' ``path`` mean the same on both backends: display names
joined with ``/``, the inbox called ``INBOX`` (its subfolders ``INBOX/...``). Special uses
come from Graph's well-known folder names (``sentitems`` is ``\\Sent``, and so on).

:func:`build_tree` and :func:`select` are pure; :func:`load_tree` asks Graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kiota_abstractions.api_error import APIError
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.users.item.mail_folders.item.child_folders.child_folders_request_builder import (  # noqa: E501
        ChildFoldersRequestBuilder,
    )
    from msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder import (
        MailFolderItemRequestBuilder,
    )
    from msgraph.generated.users.item.mail_folders.mail_folders_request_builder import (
        MailFoldersRequestBuilder,
    )

from relay.sources.graph.client import AccountClient, gather_all
from relay.sources.specs import INBOX, spec_matches

__all__ = [
    "DELETIONS",
    "INBOX_FOLDER",
    "INBOX_KEY",
    "SPECIAL_USES",
    "FolderTree",
    "GraphFolder",
    "build_tree",
    "load_tree",
    "select",
]

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
_SELECT = ["id", "displayName", "parentFolderId", "childFolderCount"]
_PAGE = 100


@dataclass(frozen=True, slots=True)
class GraphFolder:
    """One folder: ``key`` names it in the store and in URLs (``inbox`` or Graph's id)."""

    key: str
    path: str
    special_use: str | None


INBOX_FOLDER = GraphFolder(INBOX_KEY, INBOX, SPECIAL_USES["inbox"])


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
        folders[folder_id] = GraphFolder(key, path_of(folder_id), uses.get(folder_id))
    if inbox_id is not None:
        folders[INBOX_KEY] = folders.get(inbox_id, INBOX_FOLDER)
    deletions = frozenset(v for k, v in well_known.items() if k == DELETIONS)
    return FolderTree(folders, deletions)


def select(specs: Sequence[str], tree: FolderTree) -> tuple[list[GraphFolder], list[str]]:
    """INBOX and the folders ``specs`` name; also the specs that matched nothing."""
    chosen = [INBOX_FOLDER]
    matched: set[str] = set()
    seen = {INBOX_KEY}
    for folder in sorted({f.key: f for f in tree.folders.values()}.values(), key=_by_path):
        if folder.key in seen:
            continue
        hits = [s for s in specs if spec_matches(s, folder.path, folder.special_use)]
        if hits:
            chosen.append(folder)
            seen.add(folder.key)
            matched.update(hits)
    missing = [s for s in specs if s != "*" and s not in matched]
    return chosen, missing


def _by_path(folder: GraphFolder) -> str:
    return folder.path


# -- asking Graph ---------------------------------------------------------------------------


async def load_tree(client: AccountClient) -> FolderTree:
    """List every (visible) folder of the account's mailbox and resolve the well-known ones."""
    folders = client.service.users.by_user_id(await client.user()).mail_folders
    listing: list[dict[str, Any]] = []
    top = await folders.get(
        request_configuration=RequestConfiguration(
            query_parameters=MailFoldersRequestBuilder.MailFoldersRequestBuilderGetQueryParameters(
                select=_SELECT, top=_PAGE
            )
        )
    )
    parents = await _collect(folders, top, listing)
    while parents:
        children = folders.by_mail_folder_id(parents.pop()).child_folders
        page = await children.get(
            request_configuration=RequestConfiguration(
                query_parameters=ChildFoldersRequestBuilder.ChildFoldersRequestBuilderGetQueryParameters(
                    select=_SELECT, top=_PAGE
                )
            )
        )
        parents.extend(await _collect(children, page, listing))
    names = [*SPECIAL_USES, DELETIONS]
    ids = await gather_all(_well_known_id(client, name) for name in names)
    well_known = {name: found for name, found in zip(names, ids, strict=True) if found}
    return build_tree(listing, well_known)


async def _collect(builder: Any, page: Any, listing: list[dict[str, Any]]) -> list[str]:
    """Add every folder of ``page`` and its next pages; the ids that have children."""
    parents: list[str] = []
    while page is not None:
        for folder in page.value or []:
            listing.append(
                {
                    "id": folder.id,
                    "displayName": folder.display_name,
                    "parentFolderId": folder.parent_folder_id,
                }
            )
            if folder.id and (folder.child_folder_count or 0) > 0:
                parents.append(folder.id)
        if not page.odata_next_link:
            break
        page = await builder.with_url(page.odata_next_link).get()
    return parents


async def _well_known_id(client: AccountClient, name: str) -> str | None:
    """The id of a well-known folder; None when the mailbox has none (no archive, say)."""
    builder = client.service.users.by_user_id(await client.user()).mail_folders
    try:
        folder = await builder.by_mail_folder_id(name).get(
            request_configuration=RequestConfiguration(
                query_parameters=MailFolderItemRequestBuilder.MailFolderItemRequestBuilderGetQueryParameters(
                    select=["id"]
                )
            )
        )
    except APIError as exc:
        if exc.response_status_code in (400, 404):
            return None
        raise
    return folder.id if folder is not None else None
