"""Which node watches which account: rendezvous (highest random weight) hashing. Pure.

Every node computes the same answer from the same list of live nodes, without talking to the
others: an account goes to the node with the highest weight ``hash(node, account)``. When a
node joins it wins about 1/N of every other node's accounts, and only those move; when one
leaves, only its accounts move, spread over the rest. Weights come from BLAKE2b (stable across
processes and versions, unlike ``hash()``), 64 bits, so ties never happen in practice; a tie
goes to the smaller node id so that every node still agrees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import lru_cache

__all__ = ["assign", "owner", "weight"]


@lru_cache(maxsize=1024)
def _key(node: str) -> bytes:
    # BLAKE2b keys are at most 64 bytes: a digest of the whole id, so no two ids share one.
    return hashlib.blake2b(node.encode(), digest_size=32, person=b"mailrelay-node").digest()


def weight(node: str, account: str) -> int:
    """The weight of ``node`` for ``account`` (the highest wins)."""
    digest = hashlib.blake2b(
        account.encode(), key=_key(node), digest_size=8, person=b"mailrelay"
    ).digest()
    return int.from_bytes(digest, "big")


def owner(account: str, nodes: Sequence[str]) -> str | None:
    """The node of ``nodes`` that gets ``account``; None when there is none."""
    best: str | None = None
    best_weight = -1
    for node in nodes:
        w = weight(node, account)
        if w > best_weight or (w == best_weight and best is not None and node < best):
            best, best_weight = node, w
    return best


def assign(accounts: Iterable[str], nodes: Iterable[str]) -> dict[str, str]:
    """Every account of ``accounts`` with its node (empty when there are no nodes)."""
    ordered = sorted(set(nodes))
    if not ordered:
        return {}
    return {account: owner(account, ordered) or ordered[0] for account in accounts}
