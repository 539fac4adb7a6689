"""Delegation rules (pure)."""

from __future__ import annotations

import pytest

from relay.auth.delegation import MAX_HOPS, delegation_problem


@pytest.mark.parametrize(
    ("account", "target", "chain", "problem"),
    [
        ("shared", "main", ["main"], None),
        ("s2", "s1", ["s1", "main"], None),
        ("main", "main", ["main"], "itself"),
        ("main", "shared", ["shared", "main"], "loop (main -> shared -> main)"),
        ("x", "a", ["a", "b", "a"], "own delegation loops"),
        ("x", "s0", [f"s{n}" for n in range(MAX_HOPS)], None),
        ("x", "s0", [f"s{n}" for n in range(MAX_HOPS + 1)], "longer than 20 hops"),
    ],
)
def test_delegation_problem(
    account: str, target: str, chain: list[str], problem: str | None
) -> None:
    """Self-delegation, loops and over-long chains are refused; everything else passes."""
    result = delegation_problem(account, target, chain)
    if problem is None:
        assert result is None
    else:
        assert result is not None
        assert problem in result
