"""Delta query over one mail folder (pure): tokens, rounds and pages.

A round starts from a delta token (or from nothing, for the initial sync) and covers every
change up to the mailbox sequence number current when the round began, so changes made
while a client is paging show up in the next round rather than shifting pages. A message
changed during paging may therefore come twice; clients de-duplicate, as with Graph.

Tokens are opaque to clients: base64url JSON naming the folder, the folder's sync epoch
(changed by the admin API to expire tokens), the range of sequence numbers and the
``$select`` of the first request, which Graph also carries in its tokens. They carry no id
type: as in Graph, ``Prefer: IdType="ImmutableId"`` applies to each request on its own and
a round may switch between default and immutable ids at any page.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from relay.sandbox.graph.mail import Folder, Message, Removed

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000


class TokenInvalid(Exception):
    """The token is malformed or belongs to another folder."""


class TokenExpired(Exception):
    """The token's sync state is gone (its folder's tokens were expired)."""


@dataclass(frozen=True)
class Cursor:
    """Where a delta round stands: changes with ``after < seq <= until`` come next.

    ``since`` is where the round started (0 for an initial sync, which skips removals);
    ``until`` is None in a delta token (the round has not started yet).
    """

    folder_id: str
    epoch: str
    since: int
    after: int
    until: int | None
    select: tuple[str, ...] | None

    def encode(self) -> str:
        """The opaque token."""
        raw = {
            "f": self.folder_id,
            "e": self.epoch,
            "s": self.since,
            "a": self.after,
            "u": self.until,
            "p": list(self.select) if self.select is not None else None,
        }
        data = json.dumps(raw, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def decode(token: str, folder: Folder) -> Cursor:
    """The cursor in a token issued for ``folder``; TokenInvalid or TokenExpired otherwise."""
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        raw = json.loads(data)
        select = raw["p"]
        cursor = Cursor(
            folder_id=str(raw["f"]),
            epoch=str(raw["e"]),
            since=int(raw["s"]),
            after=int(raw["a"]),
            until=None if raw["u"] is None else int(raw["u"]),
            select=None if select is None else tuple(str(name) for name in select),
        )
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise TokenInvalid(str(exc)) from None
    if cursor.folder_id != folder.id:
        raise TokenInvalid("the token was issued for another folder")
    if cursor.epoch != folder.sync_epoch:
        raise TokenExpired(cursor.folder_id)
    return cursor


def start(folder: Folder, sequence: int, select: tuple[str, ...] | None) -> Cursor:
    """A round with no token: every message now in the folder, nothing removed."""
    return Cursor(folder.id, folder.sync_epoch, since=0, after=0, until=sequence, select=select)


def resume(token: Cursor, sequence: int) -> Cursor:
    """The round that a delta token starts: changes since it, up to ``sequence``."""
    return Cursor(
        token.folder_id,
        token.epoch,
        since=token.since,
        after=token.since,
        until=sequence,
        select=token.select,
    )


@dataclass(frozen=True)
class Page:
    """One page: live messages and tombstones of removed ones, in change order."""

    messages: list[Message | Removed]
    next: Cursor | None
    delta: Cursor | None


def page(folder: Folder, cursor: Cursor, size: int) -> Page:
    """The next ``size`` changes of a round, then the cursor that continues it."""
    assert cursor.until is not None
    changes: list[tuple[int, Message | Removed]] = [
        (m.seq, m) for m in folder.messages.values() if cursor.after < m.seq <= cursor.until
    ]
    if cursor.since > 0:
        changes += [
            (gone.seq, gone)
            for gone in folder.removed.values()
            if cursor.after < gone.seq <= cursor.until
        ]
    changes.sort(key=lambda change: change[0])
    taken = changes[:size]
    if len(changes) > size:
        last = taken[-1][0]
        following = Cursor(
            cursor.folder_id, cursor.epoch, cursor.since, last, cursor.until, cursor.select
        )
        return Page([item for _, item in taken], next=following, delta=None)
    final = Cursor(cursor.folder_id, cursor.epoch, cursor.until, cursor.until, None, cursor.select)
    return Page([item for _, item in taken], next=None, delta=final)
