"""The grants of tokens already read from the store, kept for a short while.

A request's token is looked up by its hash; reading the grant from the store on every
request would put a store read in front of every handler. A grant is kept for ``ttl_s``
(one second by default), so a token deleted or expired through another process (``relay
token revoke``, another node) is refused at most that long after; the node that deletes a
token drops it at once (:meth:`GrantCache.forget`).
"""

from __future__ import annotations

from relay.auth.grants import Grant

__all__ = ["GrantCache"]


class GrantCache:
    """Grants by token hash, each good for ``ttl_s`` seconds after it was read."""

    def __init__(self, ttl_s: float = 1.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Grant, float]] = {}

    def get(self, digest: str, now: float) -> Grant | None:
        """The grant read for ``digest`` less than ``ttl_s`` before ``now`` (monotonic)."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        grant, read_at = entry
        if now - read_at >= self.ttl_s:
            del self._entries[digest]
            return None
        return grant

    def put(self, digest: str, grant: Grant, now: float) -> None:
        if len(self._entries) >= self.max_entries:
            self._prune(now)
        self._entries[digest] = (grant, now)

    def _prune(self, now: float) -> None:
        """Drop every stale entry, and the oldest ones when the rest still fill the cache."""
        fresh = {d: e for d, e in self._entries.items() if now - e[1] < self.ttl_s}
        if len(fresh) >= self.max_entries:
            keep = sorted(fresh.items(), key=lambda item: item[1][1])[-(self.max_entries // 2) :]
            fresh = dict(keep)
        self._entries = fresh

    def drop(self, digest: str) -> None:
        self._entries.pop(digest, None)

    def forget(self, token_id: str) -> None:
        """Drop a deleted or changed token."""
        for digest in [d for d, (g, _) in self._entries.items() if g.token_id == token_id]:
            del self._entries[digest]

    def __len__(self) -> int:
        return len(self._entries)
