"""An account's ``path`` and ``subconnections``: which folders are watched (pure).

As in EmailEngine, an account watches every folder unless its ``path`` (a string or a
list) narrows that; INBOX is always watched. A spec is ``*`` (every folder), a special-use
flag (``\\Sent``, matched case-insensitively) or a folder path (matched exactly).
``subconnections`` names folders that get their own IDLE connection (IMAP) instead of the
account's poller; they are watched whatever ``path`` says. IMAP and Graph accounts read
them the same way.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EVERY_FOLDER", "INBOX", "folder_specs", "idle_specs", "spec_matches", "watch_specs"]

INBOX = "INBOX"
EVERY_FOLDER = "*"


def _specs(items: list[Any]) -> list[str]:
    out: list[str] = []
    for item in items:
        if isinstance(item, str) and item and item.upper() != INBOX and item not in out:
            out.append(item)
    return out


def watch_specs(path: Any) -> list[str]:
    """The folders ``path`` names besides INBOX; no ``path`` (None or ``""``) is every folder."""
    if path is None or path == "":
        return [EVERY_FOLDER]
    return _specs([path] if isinstance(path, str) else list(path))


def idle_specs(subconnections: Any) -> list[str]:
    """The folders ``subconnections`` names besides INBOX (which always has IDLE)."""
    return _specs(list(subconnections or ()))


def folder_specs(path: Any, subconnections: Any = None) -> list[str]:
    """Every folder spec an account watches besides INBOX: ``path``'s and
    ``subconnections``', in order."""
    out = watch_specs(path)
    out += [spec for spec in idle_specs(subconnections) if spec not in out]
    return out


def spec_matches(spec: str, path: str, special_use: str | None) -> bool:
    """Whether ``spec`` names the folder at ``path`` with ``special_use``."""
    if spec in (EVERY_FOLDER, path):
        return True
    return spec.startswith("\\") and special_use is not None and special_use.lower() == spec.lower()
