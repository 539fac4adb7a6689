"""Recording an account's folder listing: ``mailboxNew`` / ``mailboxDeleted`` when it changed.

Both backends call :func:`record_listing` with what they just listed. The stored listing
(``folder_lists``) is the baseline: the first listing of an account only records it (the
folders an account starts with are not "new"), later ones report each folder that appeared
or went. The new listing, the events and (IMAP) the removal of a deleted folder's sync state
are written in one transaction, so a crash repeats the comparison against the same old
listing: nothing is reported twice or lost.
"""

from __future__ import annotations

from collections.abc import Mapping

from relay.events.mailboxes import Listed, ListingChange, diff, mailbox_deleted, mailbox_new
from relay.events.model import Event
from relay.store import Store, folder_lists, leases
from relay.store import events as events_store
from relay.store.engine import now_ms
from relay.store.leases import Lease

__all__ = ["record_listing", "stored_listing"]

_NONE = ListingChange((), ())


async def stored_listing(store: Store, account: str) -> dict[str, Listed] | None:
    """The account's stored listing; None before its first."""
    async with store.read() as conn:
        raw = await folder_lists.get(conn, account)
    return None if raw is None else {p: Listed.from_json(v) for p, v in raw.items()}


async def record_listing(
    store: Store,
    account: str,
    listing: Mapping[str, Listed],
    *,
    service_url: str,
    max_bytes: int,
    uidvalidity: Mapping[str, int] | None = None,
    imap: bool = False,
    stored: Mapping[str, Listed] | None = None,
    lease: Lease | None = None,
) -> ListingChange:
    """Store ``listing`` and report what changed since the stored one (see the module
    docstring); ``uidvalidity`` fills ``mailboxNew``'s ``uidValidity``; ``imap`` also drops
    the sync state of deleted folders. ``stored``: the stored listing when the caller has
    just read it (spares a read; the write reads it again under its lock). ``lease``: the
    watcher's lease; the write is refused (:class:`relay.errors.LeaseLost`) once another
    node took the account over."""
    before = dict(stored) if stored is not None else await stored_listing(store, account)
    if before == dict(listing):
        return _NONE
    async with store.write(notify=False) as conn:
        await leases.check(conn, account, lease)
        raw = await folder_lists.get(conn, account)
        stored = None if raw is None else {p: Listed.from_json(v) for p, v in raw.items()}
        change = diff(stored, listing) if stored is not None else _NONE
        ms = now_ms()
        batch = [
            Event(
                "mailboxDeleted",
                account,
                mailbox_deleted(path, stored[path]),
                ms,
                path=path,
                special_use=stored[path].special_use,
            )
            for path in change.removed
            if stored is not None
        ]
        batch += [
            Event(
                "mailboxNew",
                account,
                mailbox_new(path, listing[path], (uidvalidity or {}).get(path)),
                ms,
                path=path,
                special_use=listing[path].special_use,
            )
            for path in change.added
        ]
        if imap:
            await folder_lists.drop_imap_state(conn, account, change.removed)
        await folder_lists.save(
            conn, account, {p: f.to_json() for p, f in listing.items()}, existed=raw is not None
        )
        if batch:
            await events_store.record(
                conn, batch, default_service_url=service_url, max_bytes=max_bytes
            )
    return change
