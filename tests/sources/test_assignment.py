"""Rendezvous hashing (``relay.sources.assignment``): every node computes the same owner for
an account from the same node list, and a change of nodes moves as few accounts as it can."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from relay.sources.assignment import assign, owner, weight

ACCOUNTS = [f"acct-{i}" for i in range(10_000)]


def nodes(n: int) -> list[str]:
    return [f"node-{i}" for i in range(1, n + 1)]


@pytest.mark.parametrize(
    "order",
    [
        ["a", "b", "c", "d"],
        ["d", "c", "b", "a"],
        ["c", "a", "d", "b"],
        ["b", "d", "a", "c", "a"],  # a node listed twice counts once
    ],
)
def test_the_answer_does_not_depend_on_the_order_of_the_nodes(order: list[str]) -> None:
    """``owner`` and ``assign`` give every account the same node whatever the node order."""
    reference = {account: owner(account, ["a", "b", "c", "d"]) for account in ACCOUNTS[:2000]}
    assert {account: owner(account, order) for account in ACCOUNTS[:2000]} == reference
    assert assign(ACCOUNTS[:2000], order) == reference
    assert assign(ACCOUNTS[:2000], iter(order)) == reference


def test_every_account_goes_to_one_of_the_nodes() -> None:
    """Each account is assigned exactly once, to a node of the list, and every node gets some."""
    live = nodes(3)
    assigned = assign(ACCOUNTS[:3000], live)
    assert set(assigned) == set(ACCOUNTS[:3000])
    assert set(assigned.values()) == set(live)
    for account, node in assigned.items():
        assert node == owner(account, live)


def test_no_nodes_no_owner() -> None:
    """Without nodes nothing is assigned: ``assign`` is empty and ``owner`` is None."""
    assert assign(ACCOUNTS[:10], []) == {}
    assert owner("acct-1", []) is None
    assert assign([], nodes(2)) == {}


def test_one_node_takes_everything() -> None:
    """A single node owns every account."""
    assert set(assign(ACCOUNTS[:500], ["solo"]).values()) == {"solo"}


def test_a_joining_node_takes_about_its_share_and_nothing_else_moves() -> None:
    """4 -> 5 nodes: the accounts that move all go to the new node (none between the old
    ones), and they are about a fifth of all."""
    before = assign(ACCOUNTS, nodes(4))
    after = assign(ACCOUNTS, nodes(5))
    moved = [account for account in ACCOUNTS if before[account] != after[account]]
    assert {after[account] for account in moved} == {"node-5"}
    assert [a for a, node in after.items() if node == "node-5"] == moved
    assert 0.17 <= len(moved) / len(ACCOUNTS) <= 0.23


def test_a_leaving_node_gives_up_only_its_own_accounts() -> None:
    """5 -> 4 nodes: exactly the leaving node's accounts move, spread over all the others."""
    before = assign(ACCOUNTS, nodes(5))
    after = assign(ACCOUNTS, [n for n in nodes(5) if n != "node-3"])
    moved = {account for account in ACCOUNTS if before[account] != after[account]}
    assert moved == {account for account, node in before.items() if node == "node-3"}
    assert {after[account] for account in moved} == {"node-1", "node-2", "node-4", "node-5"}


def test_accounts_are_balanced_over_the_nodes() -> None:
    """20,000 accounts on 10 nodes: no node gets more than 10% above the mean."""
    accounts = [f"acct-{i}" for i in range(20_000)]
    shares = Counter(assign(accounts, nodes(10)).values())
    assert len(shares) == 10
    mean = len(accounts) / 10
    assert max(shares.values()) / mean <= 1.1
    assert min(shares.values()) / mean >= 0.9


def test_known_values_do_not_change() -> None:
    """Owners and weights are fixed values (nodes of different versions must agree)."""
    assert owner("acct-1", ["a", "b", "c"]) == "c"
    assert weight("a", "acct-1") == 8534118204682314293
    assert 0 <= weight("node-1", "x") < 2**64


def test_long_node_ids_differing_late_get_their_own_weights() -> None:
    """The whole node id counts, not a prefix: ids equal in their first 64 bytes (a key's
    limit) still weigh differently."""
    prefix = "ü" * 40  # 80 bytes
    assert weight(prefix + "-1", "acct-1") != weight(prefix + "-2", "acct-1")


def test_weights_are_the_same_in_another_process() -> None:
    """Weights do not come from Python's per-process randomized ``hash()``: a process with
    another hash seed computes the same ones."""
    pairs = [(f"node-{i}", f"acct-{i * 7}") for i in range(20)]
    script = (
        "import json, sys\n"
        "from relay.sources.assignment import weight\n"
        "pairs = json.loads(sys.argv[1])\n"
        "print(json.dumps([weight(n, a) for n, a in pairs]))\n"
    )
    for seed in ("1", "12345"):
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(pairs)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            check=True,
            timeout=60,
        )
        assert json.loads(done.stdout) == [weight(n, a) for n, a in pairs]
