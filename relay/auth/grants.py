"""What an API token may do: its grant (pure).

A token carries EmailEngine's fields (``account``, ``scopes``, ``restrictions``) and, beyond
them, ``permissions``: the action groups it may use. Every route under ``/v1`` declares one
:class:`Permission` (a group and an action); :meth:`Grant.allows` decides. The groups and
actions::

    groups   account mailbox message submit outbox webhook settings oauth2 token events
    actions  read (look)  write (change)  send (mail leaves)  destructive (delete, purge)

``permissions`` absent means every group and action (a full token, as EmailEngine's are);
``{"message": ["read"], "submit": ["send"]}`` means exactly those. A token bound to an
``account`` sees that account only (and, with ``shared``, the shared mailboxes that borrow
its credentials); routes without an account in their path are refused to it unless its
``permissions`` name their group.

A token may mint another only within its own grant: :func:`widening` names the first thing
the new one would have that the minting one has not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ACTIONS",
    "GROUPS",
    "SCOPES",
    "Grant",
    "Network",
    "Permission",
    "RateLimit",
    "Restrictions",
    "widening",
]

GROUPS = (
    "account",
    "mailbox",
    "message",
    "submit",
    "outbox",
    "webhook",
    "settings",
    "oauth2",
    "token",
    "events",
)
ACTIONS = ("read", "write", "send", "destructive")
# api: the REST API; smtp: EmailEngine's submission server (not offered: accepted, unused);
# metrics: GET /metrics.
SCOPES = ("api", "smtp", "metrics")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Permission:
    """What a route needs: one action on one group."""

    group: str
    action: str

    def __post_init__(self) -> None:
        if self.group not in GROUPS or self.action not in ACTIONS:
            raise ValueError(f"unknown permission {self.group}:{self.action}")

    def __str__(self) -> str:
        return f"{self.group}:{self.action}"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``max_requests`` per ``window_s`` seconds."""

    max_requests: int
    window_s: float


@dataclass(frozen=True, slots=True)
class Restrictions:
    """Where a token may be used from, and how often. None: no restriction of that kind."""

    addresses: tuple[Network, ...] | None = None
    referrers: tuple[str, ...] | None = None
    rate_limit: RateLimit | None = None

    def to_json(self) -> dict[str, Any] | None:
        """The stored (and shown) form, EmailEngine's names."""
        out: dict[str, Any] = {}
        if self.addresses is not None:
            out["addresses"] = [str(n) for n in self.addresses]
        if self.referrers is not None:
            out["referrers"] = list(self.referrers)
        if self.rate_limit is not None:
            out["rateLimit"] = {
                "maxRequests": self.rate_limit.max_requests,
                "timeWindow": self.rate_limit.window_s,
            }
        return out or None

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Restrictions:
        """Read the stored form (already validated when it was stored)."""
        if not value:
            return cls()
        addresses = value.get("addresses")
        referrers = value.get("referrers")
        limit = value.get("rateLimit")
        return cls(
            addresses=tuple(ipaddress.ip_network(a, strict=False) for a in addresses)
            if addresses is not None
            else None,
            referrers=tuple(referrers) if referrers is not None else None,
            rate_limit=RateLimit(int(limit["maxRequests"]), float(limit["timeWindow"]))
            if limit
            else None,
        )

    def admits_address(self, address: str | None) -> bool:
        """Whether a request from ``address`` may use the token."""
        if self.addresses is None:
            return True
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.addresses)

    def admits_referrer(self, referrer: str | None) -> bool:
        """Whether a request with this ``Referer`` may use the token: each allowed value is
        a prefix (``https://app.example.com/``) or ``*`` for any; none given is refused."""
        if self.referrers is None:
            return True
        if not referrer:
            return False
        return any(r == "*" or referrer.startswith(r) for r in self.referrers)


def _actions(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@dataclass(frozen=True, slots=True)
class Grant:
    """One token's grant (see the module docstring)."""

    token_id: str
    account: str | None = None
    shared: bool = False
    scopes: frozenset[str] = frozenset({"api"})
    # group -> actions; None: everything.
    permissions: Mapping[str, frozenset[str]] | None = None
    restrictions: Restrictions = field(default_factory=Restrictions)
    expires_ms: int | None = None

    @property
    def full(self) -> bool:
        """Whether nothing limits it (a configured or issued administrator token)."""
        return (
            self.account is None
            and self.permissions is None
            and self.restrictions == Restrictions()
            and self.expires_ms is None
            and set(SCOPES) <= self.scopes
        )

    def expired(self, now_ms: int) -> bool:
        """Whether the token's time is over."""
        return self.expires_ms is not None and now_ms >= self.expires_ms

    def allows(self, permission: Permission) -> bool:
        """Whether the token may take ``permission``'s action on its group."""
        if self.permissions is None:
            return True
        return permission.action in self.permissions.get(permission.group, frozenset())

    def names_group(self, group: str) -> bool:
        """Whether ``permissions`` grants anything on ``group`` explicitly."""
        return self.permissions is not None and bool(self.permissions.get(group))

    def sees(self, account: str, delegated_to: str | None) -> bool:
        """Whether an account-bound token may use ``account`` (a shared mailbox whose
        credentials come from ``delegated_to`` counts with ``shared``)."""
        if self.account is None:
            return True
        return account == self.account or (self.shared and delegated_to == self.account)

    def permissions_json(self) -> dict[str, list[str]] | None:
        """``permissions`` as stored and shown."""
        if self.permissions is None:
            return None
        return {g: sorted(a) for g, a in sorted(self.permissions.items()) if a}


def widening(child: Grant, parent: Grant) -> str | None:
    """The first field in which ``child`` would have more than ``parent``; None if none."""
    if parent.account is not None and (
        child.account != parent.account or (child.shared and not parent.shared)
    ):
        return "account"
    if not child.scopes <= parent.scopes:
        return "scopes"
    if parent.permissions is not None:
        if child.permissions is None:
            return "permissions"
        for group, actions in child.permissions.items():
            if not actions <= parent.permissions.get(group, frozenset()):
                return "permissions"
    if parent.expires_ms is not None and (
        child.expires_ms is None or child.expires_ms > parent.expires_ms
    ):
        return "expires"
    p, c = parent.restrictions, child.restrictions
    if p.addresses is not None and (
        c.addresses is None or not all(_within(n, p.addresses) for n in c.addresses)
    ):
        return "restrictions.addresses"
    if p.referrers is not None and (
        c.referrers is None or not set(c.referrers) <= set(p.referrers)
    ):
        return "restrictions.referrers"
    if p.rate_limit is not None and (
        c.rate_limit is None
        or c.rate_limit.max_requests / c.rate_limit.window_s
        > p.rate_limit.max_requests / p.rate_limit.window_s
    ):
        return "restrictions.rateLimit"
    return None


def _within(network: Network, networks: Iterable[Network]) -> bool:
    """Whether ``network`` lies inside one of ``networks`` (of its own IP version)."""
    v4 = isinstance(network, ipaddress.IPv4Network)
    for outer in networks:
        if v4 and isinstance(outer, ipaddress.IPv4Network):
            inside = ipaddress.IPv4Network(network).subnet_of(outer)
        elif not v4 and isinstance(outer, ipaddress.IPv6Network):
            inside = ipaddress.IPv6Network(network).subnet_of(outer)
        else:
            continue
        if inside:
            return True
    return False


def permissions_from(value: Mapping[str, Iterable[str]] | None) -> dict[str, frozenset[str]] | None:
    """Stored or given ``permissions`` as the grant holds them."""
    if value is None:
        return None
    return {group: _actions(actions) for group, actions in value.items()}
