"""Token grants: what a token may do, and minting only within one's own grant (pure)."""

from __future__ import annotations

import ipaddress

import pytest

from relay.auth.grants import Grant, Permission, RateLimit, Restrictions, widening

FULL = Grant("full", scopes=frozenset({"api", "smtp", "metrics"}))
BOUND = Grant(
    "bound",
    account="sales",
    scopes=frozenset({"api"}),
    permissions={"message": frozenset({"read"}), "submit": frozenset({"send"})},
    restrictions=Restrictions(
        addresses=(ipaddress.ip_network("10.0.0.0/8"),),
        referrers=("https://app.example.com/",),
        rate_limit=RateLimit(100, 60.0),
    ),
    expires_ms=2_000_000,
)


def test_permissions_decide_by_group_and_action() -> None:
    """No permissions means every group and action; a map means exactly what it names."""
    assert FULL.allows(Permission("token", "destructive"))
    assert FULL.full
    assert BOUND.allows(Permission("message", "read"))
    assert not BOUND.allows(Permission("message", "destructive"))
    assert not BOUND.allows(Permission("webhook", "read"))
    assert BOUND.names_group("submit")
    assert not BOUND.names_group("webhook")
    assert not BOUND.full


def test_unknown_permission_is_refused() -> None:
    """A route cannot declare a group or action that does not exist."""
    with pytest.raises(ValueError, match="unknown permission"):
        Permission("mail", "read")


def test_account_binding_and_shared_mailboxes() -> None:
    """A bound token sees its account; shared mailboxes delegated from it only with
    ``shared``."""
    assert BOUND.sees("sales", None)
    assert not BOUND.sees("ceo", None)
    assert not BOUND.sees("support", "sales")
    shared = Grant("s", account="sales", shared=True)
    assert shared.sees("support", "sales")
    assert not shared.sees("support", "ceo")
    assert FULL.sees("anything", None)


def test_expiry() -> None:
    """A token expires at ``expires_ms``."""
    assert not BOUND.expired(1_999_999)
    assert BOUND.expired(2_000_000)
    assert not FULL.expired(10**15)


@pytest.mark.parametrize(
    ("address", "admitted"),
    [("10.1.2.3", True), ("192.168.1.1", False), (None, False), ("not-an-ip", False)],
)
def test_address_restriction(address: str | None, admitted: bool) -> None:
    """Only addresses inside the listed networks are admitted."""
    assert BOUND.restrictions.admits_address(address) is admitted
    assert Restrictions().admits_address(address)


@pytest.mark.parametrize(
    ("referrer", "admitted"),
    [
        ("https://app.example.com/inbox", True),
        ("https://evil.example.com/", False),
        (None, False),
        ("", False),
    ],
)
def test_referrer_restriction(referrer: str | None, admitted: bool) -> None:
    """A referrer must start with one of the listed prefixes."""
    assert BOUND.restrictions.admits_referrer(referrer) is admitted


def test_restrictions_round_trip() -> None:
    """The stored form (EmailEngine's names) reads back the same."""
    stored = BOUND.restrictions.to_json()
    assert stored == {
        "addresses": ["10.0.0.0/8"],
        "referrers": ["https://app.example.com/"],
        "rateLimit": {"maxRequests": 100, "timeWindow": 60.0},
    }
    assert Restrictions.from_json(stored) == BOUND.restrictions
    assert Restrictions.from_json(None) == Restrictions()
    assert Restrictions().to_json() is None


def _child(**changes: object) -> Grant:
    values = {
        "token_id": "child",
        "account": BOUND.account,
        "shared": BOUND.shared,
        "scopes": BOUND.scopes,
        "permissions": BOUND.permissions,
        "restrictions": BOUND.restrictions,
        "expires_ms": BOUND.expires_ms,
    }
    values.update(changes)
    return Grant(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("child", "field"),
    [
        (_child(), None),
        (_child(permissions={"message": frozenset({"read"})}), None),
        (_child(expires_ms=1_000_000), None),
        (
            _child(
                restrictions=Restrictions(
                    addresses=(ipaddress.ip_network("10.1.0.0/16"),),
                    referrers=("https://app.example.com/",),
                    rate_limit=RateLimit(10, 60.0),
                )
            ),
            None,
        ),
        (_child(account="ceo"), "account"),
        (_child(account=None), "account"),
        (_child(shared=True), "account"),
        (_child(scopes=frozenset({"api", "metrics"})), "scopes"),
        (_child(permissions=None), "permissions"),
        (_child(permissions={"message": frozenset({"read", "destructive"})}), "permissions"),
        (_child(permissions={"webhook": frozenset({"read"})}), "permissions"),
        (_child(expires_ms=None), "expires"),
        (_child(expires_ms=3_000_000), "expires"),
        (
            _child(restrictions=Restrictions(addresses=(ipaddress.ip_network("0.0.0.0/0"),))),
            "restrictions.addresses",
        ),
        (
            _child(
                restrictions=Restrictions(
                    addresses=(ipaddress.ip_network("10.0.0.0/8"),),
                    referrers=("*",),
                    rate_limit=RateLimit(100, 60.0),
                )
            ),
            "restrictions.referrers",
        ),
        (
            _child(
                restrictions=Restrictions(
                    addresses=(ipaddress.ip_network("10.0.0.0/8"),),
                    referrers=("https://app.example.com/",),
                    rate_limit=RateLimit(1000, 60.0),
                )
            ),
            "restrictions.rateLimit",
        ),
    ],
)
def test_minting_never_widens(child: Grant, field: str | None) -> None:
    """A token mints only within its own grant; the answer names what would widen."""
    assert widening(child, BOUND) == field


def test_a_full_token_may_mint_anything() -> None:
    """Nothing limits what a full token mints."""
    assert widening(BOUND, FULL) is None
    assert widening(FULL, FULL) is None
