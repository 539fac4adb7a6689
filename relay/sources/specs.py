"""An account's ``path`` setting: which folders are watched besides INBOX (pure).

A spec is ``*`` (every folder), a special-use flag (``\\Sent``, matched case-insensitively)
or a folder path (matched exactly). IMAP and Graph accounts read it the same way.
"""

from __future__ import annotations

from typing import Any

__all__ = ["INBOX", "folder_specs", "spec_matches"]

INBOX = "INBOX"


def folder_specs(path: Any, subconnections: Any = None) -> list[str]:
    """The folders an account's ``path`` setting (string or list) and EmailEngine's
    ``subconnections`` add to INBOX, in order."""
    items = [path] if isinstance(path, str) else list(path or [])
    items += [item for item in subconnections or () if isinstance(item, str)]
    out: list[str] = []
    for item in items:
        if isinstance(item, str) and item and item.upper() != INBOX and item not in out:
            out.append(item)
    return out


def spec_matches(spec: str, path: str, special_use: str | None) -> bool:
    """Whether ``spec`` names the folder at ``path`` with ``special_use``."""
    if spec == "*" or spec == path:
        return True
    return spec.startswith("\\") and special_use is not None and special_use.lower() == spec.lower()
