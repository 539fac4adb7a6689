"""Folder listings compared, and EmailEngine's ``mailboxNew`` / ``mailboxDeleted`` data (pure).

A listing maps each folder's path to what is shown of it: its ``name`` (the last segment
of the path) and its special use. Both backends produce one (IMAP LIST; the Graph folder
tree, with paths as Exchange's IMAP server names them), so a folder created, renamed (a
deletion and a creation, as EmailEngine reports it) or deleted reads the same on either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Listed", "ListingChange", "diff", "folder_name", "mailbox_deleted", "mailbox_new"]


@dataclass(frozen=True, slots=True)
class Listed:
    """One folder of a listing."""

    name: str
    special_use: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"name": self.name, "specialUse": self.special_use}

    @classmethod
    def from_json(cls, value: Any) -> Listed:
        """Read the stored form."""
        if not isinstance(value, Mapping):
            return cls(name="")
        use = value.get("specialUse")
        return cls(name=str(value.get("name") or ""), special_use=use if use else None)


@dataclass(frozen=True, slots=True)
class ListingChange:
    """The folders that appeared and went between two listings, each in path order."""

    added: tuple[str, ...]
    removed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def folder_name(path: str, delimiter: str | None) -> str:
    """The last segment of ``path`` (the whole path without a delimiter)."""
    if not delimiter:
        return path
    return path.rsplit(delimiter, 1)[-1]


def diff(old: Mapping[str, Listed], new: Mapping[str, Listed]) -> ListingChange:
    """What changed from ``old`` to ``new`` (a path whose special use changed is neither)."""
    return ListingChange(
        added=tuple(sorted(p for p in new if p not in old)),
        removed=tuple(sorted(p for p in old if p not in new)),
    )


def mailbox_new(path: str, folder: Listed, uidvalidity: int | None) -> dict[str, Any]:
    """``mailboxNew`` data: EmailEngine's ``path, name, specialUse`` (``false`` for none) and
    ``uidValidity`` as a string (only where the backend has one: IMAP)."""
    data: dict[str, Any] = {
        "path": path,
        "name": folder.name,
        "specialUse": folder.special_use or False,
    }
    if uidvalidity is not None:
        data["uidValidity"] = str(uidvalidity)
    return data


def mailbox_deleted(path: str, folder: Listed) -> dict[str, Any]:
    """``mailboxDeleted`` data: ``path, name, specialUse`` (``false`` for none)."""
    return {"path": path, "name": folder.name, "specialUse": folder.special_use or False}
