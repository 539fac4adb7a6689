"""Sent Items copies after an SMTP send, per the account's ``sentCopy`` setting.

Exchange keeps a copy of a message sent by SMTP in the authenticated (main) user's Sent Items
and, for a shared ``From``, another in the shared mailbox's. ``sentCopy``:

- ``provider``: leave what the server did.
- ``shared``: keep only the shared mailbox's copy: delete the main user's by Message-ID, and
  append one to the shared Sent folder when the server saved none there.
- ``none``: delete the copies in both Sent folders.

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
    """What was done: copies removed per mailbox, and whether one was appended."""

    removed: dict[str, int] = field(default_factory=dict)
    appended: bool = False


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
) -> Tidied:
    """Apply ``mode`` to the Sent folders; raises the mailbox layer's errors."""
    done = Tidied()
    if mode == "provider" or (mode == "shared" and shared is None):
        return done
    _, ids = await _copies(main, message_id)
    await _delete(main, ids)
    done.removed[main_user] = len(ids)
    if shared is None or shared_user is None:
        return done
    folder, ids = await _copies(shared, message_id)
    if mode == "none" and ids:
        await _delete(shared, ids)
        done.removed[shared_user] = len(ids)
    elif mode == "shared" and not ids:
        await shared.upload(folder, raw, ("\\Seen",))
        done.appended = True
    return done
