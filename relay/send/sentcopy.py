"""Sent Items copies after an SMTP send, per the account's ``sentCopy`` setting.

Exchange keeps a copy of a message sent by SMTP in the authenticated (main) user's Sent Items
and, for a shared ``From``, another in the shared mailbox's. ``sentCopy``:

- ``provider``: leave what the server did.
- ``shared``: keep only the shared mailbox's copy: delete the main user's by Message-ID, and
  append one to the shared Sent folder when the server saved none there.
- ``none``: delete the copies in both Sent folders.

Over IMAP with the same XOAUTH2 token (``user=`` the main user, then the shared address).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Literal

from relay.sources.imap.client import ClientOptions, ImapClient

SentCopy = Literal["provider", "shared", "none"]
MODES: tuple[SentCopy, ...] = ("provider", "shared", "none")


@dataclass(frozen=True, slots=True)
class ImapTarget:
    host: str
    port: int
    secure: bool
    token: str = field(repr=False)
    tls: ssl.SSLContext | None = None


@dataclass
class Tidied:
    """What was done: copies removed per mailbox, and whether one was appended."""

    removed: dict[str, int] = field(default_factory=dict)
    appended: bool = False


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _open(target: ImapTarget, user: str, command_timeout: float) -> ImapClient:
    options = ClientOptions(connect_timeout=command_timeout, command_timeout=command_timeout)
    client = await ImapClient.connect(
        target.host,
        target.port,
        ssl=target.tls if target.secure else None,
        server_hostname=target.host if target.secure else None,
        options=options,
    )
    await client.authenticate_xoauth2(user, target.token)
    return client


async def _sent_folder(client: ImapClient) -> str:
    boxes = await client.list_mailboxes(special_use_only=True)
    for box in boxes:
        if box.special_use == "\\Sent":
            return box.name
    return "Sent Items"


async def _copies(client: ImapClient, message_id: str) -> tuple[str, tuple[int, ...]]:
    folder = await _sent_folder(client)
    await client.select(folder)
    found = await client.uid_search(f"HEADER Message-ID {_quoted(message_id)}")
    return folder, found.uids


async def _delete(client: ImapClient, uids: tuple[int, ...]) -> None:
    await client.uid_store(uids, "+FLAGS.SILENT", ["\\Deleted"])
    await client.uid_expunge(uids)


async def tidy(
    mode: SentCopy,
    target: ImapTarget,
    *,
    main_user: str,
    shared_user: str | None,
    message_id: str,
    raw: bytes,
    command_timeout: float,
) -> Tidied:
    """Apply ``mode`` to the Sent folders; raises ImapError when the server fails."""
    done = Tidied()
    if mode == "provider" or (mode == "shared" and shared_user is None):
        return done
    main = await _open(target, main_user, command_timeout)
    try:
        _, uids = await _copies(main, message_id)
        if uids:
            await _delete(main, uids)
        done.removed[main_user] = len(uids)
    finally:
        await main.logout()
    if shared_user is None:
        return done
    shared = await _open(target, shared_user, command_timeout)
    try:
        folder, uids = await _copies(shared, message_id)
        if mode == "none" and uids:
            await _delete(shared, uids)
            done.removed[shared_user] = len(uids)
        elif mode == "shared" and not uids:
            await shared.append(folder, raw, flags=["\\Seen"])
            done.appended = True
    finally:
        await shared.logout()
    return done
