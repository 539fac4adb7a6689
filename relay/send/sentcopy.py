"""Sent Items copies after an SMTP send, per the account's ``sentCopy`` setting.

Exchange keeps a copy of a message sent by SMTP in the authenticated (main) user's Sent Items
and, for a shared ``From``, another in the shared mailbox's. ``sentCopy``:

- ``provider``: leave what the server did.
- ``shared``: keep only the shared mailbox's copy: delete the main user's by Message-ID, and
  append one to the shared Sent folder when the server saved none there.
- ``none``: delete the copies in both Sent folders.

EmailEngine's ``copy`` (the account's, overridden by the submit's) and the submit's
``sentMailPath`` decide the upload (:func:`upload_wanted`): ``copy: true`` makes sure the
sending account's Sent folder (or ``sentMailPath``) holds a copy, uploading one when the
server saved none there; ``copy: false`` uploads nothing (what the server saved stays unless
``sentCopy`` removes it). The removals of ``sentCopy`` come first, the upload after them.

Through the mailbox layer (``relay.mailbox``), as every other read and change: the main
account's mailbox, then the shared one (XOAUTH2 as the shared address with the main user's
token), each on the pooled connections of its account.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from relay.mailbox.model import Mailbox, MailboxNotFound, Search

SentCopy = Literal["provider", "shared", "none"]
MODES: tuple[SentCopy, ...] = ("provider", "shared", "none")
# Where a server without special-use folders keeps sent mail (Exchange's name).
_FALLBACK_SENT = "Sent Items"


@dataclass
class Tidied:
    """What was done: copies removed per mailbox, and whether (and where) one was appended."""

    removed: dict[str, int] = field(default_factory=dict)
    appended: bool = False
    path: str | None = None


def upload_wanted(
    mode: SentCopy,
    *,
    shared: bool,
    account_copy: bool | None,
    message_copy: bool | None,
    path: str | None,
) -> bool:
    """Whether a copy is to be uploaded to the sending account's Sent folder (or ``path``).

    The submit's ``copy`` wins, then a ``sentMailPath`` (asking for a folder asks for the
    copy), then the account's ``copy``; without any, ``shared`` mode appends to a shared
    mailbox whose Sent folder the server left without a copy.
    """
    if message_copy is not None:
        return message_copy
    if path is not None:
        return True
    if account_copy is not None:
        return account_copy
    return mode == "shared" and shared


async def _copies(mailbox: Mailbox, message_id: str) -> tuple[str, list[str]]:
    """The Sent folder's path and the ids of the copies of ``message_id`` in it."""
    search = Search(message_id=message_id)
    for path in ("\\Sent", _FALLBACK_SENT):
        try:
            return path, await mailbox.matching(path, search)
        except MailboxNotFound:
            continue
    raise MailboxNotFound()


async def _delete(mailbox: Mailbox, ids: list[str]) -> None:
    for message in ids:
        await mailbox.delete(message, force=True)


async def tidy(
    mode: SentCopy,
    main: Mailbox,
    shared: Mailbox | None,
    *,
    main_user: str,
    shared_user: str | None,
    message_id: str,
    raw: bytes,
    upload: bool = False,
    path: str | None = None,
) -> Tidied:
    """Apply ``mode`` to the Sent folders, then (``upload``) make sure the sending account's
    Sent folder, or ``path``, holds a copy; raises the mailbox layer's errors."""
    done = Tidied()
    if mode != "provider" and not (mode == "shared" and shared is None):
        _, ids = await _copies(main, message_id)
        await _delete(main, ids)
        done.removed[main_user] = len(ids)
        if mode == "none" and shared is not None and shared_user is not None:
            _, ids = await _copies(shared, message_id)
            await _delete(shared, ids)
            if ids:
                done.removed[shared_user] = len(ids)
    if not upload:
        return done
    own = shared if shared is not None else main
    if path is not None:
        folder, ids = path, await own.matching(path, Search(message_id=message_id))
    else:
        folder, ids = await _copies(own, message_id)
    if not ids:
        stored = await own.upload(folder, raw, ("\\Seen",))
        done.appended = True
        done.path = str(stored.get("path") or folder)
    return done
