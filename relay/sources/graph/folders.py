"""Which folders of a Graph mailbox are watched, and listing them through msgraph-sdk.

The tree itself (paths as Exchange's IMAP names them, special uses) is
:mod:`relay.graph.folders`. :func:`select` is pure; :func:`load_tree` asks Graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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

from relay.graph.folders import (
    DELETIONS,
    INBOX_FOLDER,
    INBOX_KEY,
    SPECIAL_USES,
    FolderTree,
    GraphFolder,
    build_tree,
)
from relay.sources.graph.client import AccountClient, gather_all
from relay.sources.specs import spec_matches

__all__ = ["load_tree", "select"]

_SELECT = ["id", "displayName", "parentFolderId", "childFolderCount"]
_PAGE = 100


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
