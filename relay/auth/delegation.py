"""Delegated (shared-mailbox) accounts: which account's credentials a mailbox uses.

A shared mailbox account names the account whose tokens it borrows in
``oauth2.auth.delegatedAccount``; that account may itself delegate, up to
:data:`MAX_HOPS` hops. The functions here are pure: the store walks the chain, these decide.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_HOPS = 20


def delegation_problem(account: str, target: str, chain: Sequence[str]) -> str | None:
    """Why ``account`` may not delegate to ``target``, or None when it may.

    ``chain`` is ``target`` followed by the accounts it delegates to, as far as the store could
    follow them (it stops after a repeat or after ``MAX_HOPS + 1`` entries).
    """
    if target == account:
        return "an account cannot delegate to itself"
    if account in chain:
        loop = " -> ".join([account, *chain[: chain.index(account) + 1]])
        return f"delegation would loop ({loop})"
    if len(set(chain)) != len(chain):
        return "the delegated account's own delegation loops"
    if len(chain) > MAX_HOPS:
        return f"delegation chain is longer than {MAX_HOPS} hops"
    return None
