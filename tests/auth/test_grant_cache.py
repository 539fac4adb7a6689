"""The cache of grants read from the store: short-lived, dropped by token, bounded (pure)."""

from __future__ import annotations

from relay.auth.grant_cache import GrantCache
from relay.auth.grants import Grant


def test_a_grant_is_kept_for_its_ttl_only() -> None:
    cache = GrantCache(ttl_s=1.0)
    grant = Grant("t1")
    cache.put("d1", grant, now=10.0)
    assert cache.get("d1", now=10.9) is grant
    assert cache.get("d1", now=11.0) is None
    assert len(cache) == 0


def test_forget_drops_every_digest_of_a_token() -> None:
    cache = GrantCache()
    cache.put("d1", Grant("t1"), now=0.0)
    cache.put("d2", Grant("t2"), now=0.0)
    cache.forget("t1")
    assert cache.get("d1", now=0.1) is None
    assert cache.get("d2", now=0.1) is not None


def test_drop_removes_one_digest() -> None:
    cache = GrantCache()
    cache.put("d1", Grant("t1"), now=0.0)
    cache.drop("d1")
    cache.drop("unknown")
    assert cache.get("d1", now=0.0) is None


def test_the_cache_stays_bounded() -> None:
    cache = GrantCache(ttl_s=100.0, max_entries=10)
    for i in range(25):
        cache.put(f"d{i}", Grant(f"t{i}"), now=float(i))
    assert len(cache) <= 10
    # The newest entries survive a prune.
    assert cache.get("d24", now=25.0) is not None


def test_stale_entries_go_first() -> None:
    cache = GrantCache(ttl_s=1.0, max_entries=4)
    for i in range(4):
        cache.put(f"old{i}", Grant(f"o{i}"), now=0.0)
    cache.put("new", Grant("n"), now=5.0)
    assert len(cache) == 1
    assert cache.get("new", now=5.5) is not None
