"""Scope sets of OAuth2 applications and their split by resource (pure)."""

from __future__ import annotations

import pytest

from relay.auth.scopes import (
    EXCHANGE,
    GRAPH,
    app_only_scope,
    by_resource,
    consent_scopes,
    msal_scopes,
    normalize,
    resource_of,
    token_resource,
)

IMAP = f"{EXCHANGE}/IMAP.AccessAsUser.All"
SMTP = f"{EXCHANGE}/SMTP.Send"


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("Mail.Read", f"{GRAPH}/Mail.Read"),
        ("  Mail.Read ", f"{GRAPH}/Mail.Read"),
        ("https://outlook.office365.com/IMAP.AccessAsUser.All", IMAP),
        ("https://OUTLOOK.office.com/SMTP.Send", SMTP),
        ("00000003-0000-0000-c000-000000000000/User.Read", f"{GRAPH}/User.Read"),
        ("offline_access", "offline_access"),
        ("OpenID", "openid"),
        ("api://custom-app/Thing.Read", "api://custom-app/Thing.Read"),
    ],
)
def test_normalize(scope: str, expected: str) -> None:
    """Bare names are Graph permissions, resource aliases collapse, OIDC scopes stay bare."""
    assert normalize(scope) == expected


@pytest.mark.parametrize(
    ("base", "extra", "skip", "expected"),
    [
        ("imap", [], [], (IMAP, SMTP, "offline_access")),
        (
            "api",
            [],
            [],
            (
                f"{GRAPH}/Mail.ReadWrite",
                f"{GRAPH}/Mail.Send",
                f"{GRAPH}/User.Read",
                "offline_access",
            ),
        ),
        (
            "imap",
            ["User.ReadBasic.All", "Mail.ReadWrite.Shared"],
            [],
            (
                IMAP,
                SMTP,
                "offline_access",
                f"{GRAPH}/User.ReadBasic.All",
                f"{GRAPH}/Mail.ReadWrite.Shared",
            ),
        ),
        # A bare skip entry removes that permission whatever its resource.
        ("imap", [], ["SMTP.Send"], (IMAP, "offline_access")),
        # A full skip entry removes exactly that scope (alias spelling included).
        ("imap", [], ["https://outlook.office365.com/smtp.send"], (IMAP, "offline_access")),
        (
            "imap",
            ["Mail.Send"],
            [f"{EXCHANGE}/Mail.Send"],
            (IMAP, SMTP, "offline_access", f"{GRAPH}/Mail.Send"),
        ),
        # Duplicates (in any spelling) appear once.
        (
            "imap",
            ["https://outlook.office365.com/IMAP.AccessAsUser.All", "offline_access"],
            [],
            (IMAP, SMTP, "offline_access"),
        ),
        (
            "api",
            ["mail.send"],
            [],
            (
                f"{GRAPH}/Mail.ReadWrite",
                f"{GRAPH}/Mail.Send",
                f"{GRAPH}/User.Read",
                "offline_access",
            ),
        ),
    ],
)
def test_consent_scopes(
    base: str, extra: list[str], skip: list[str], expected: tuple[str, ...]
) -> None:
    """Base set plus extraScopes minus skipScopes, normalized and de-duplicated in order."""
    assert consent_scopes(base, extra, skip) == expected


def test_unknown_base_is_refused() -> None:
    """Only imap and api are base scope sets."""
    with pytest.raises(ValueError, match="baseScopes"):
        consent_scopes("pop")


def test_by_resource_splits_exchange_from_graph() -> None:
    """One group per resource; OpenID Connect scopes belong to none."""
    scopes = consent_scopes("imap", ["Mail.ReadWrite.Shared"])
    assert by_resource(scopes) == {
        EXCHANGE: (IMAP, SMTP),
        GRAPH: (f"{GRAPH}/Mail.ReadWrite.Shared",),
    }
    assert resource_of("offline_access") is None
    assert resource_of("Mail.Read") == GRAPH


@pytest.mark.parametrize(
    ("base", "extra", "skip", "expected"),
    [
        ("imap", [], [], EXCHANGE),
        ("api", [], [], GRAPH),
        ("imap", ["Mail.Read"], [], EXCHANGE),
        # Nothing of Exchange left: the code is redeemed for Graph.
        ("imap", ["Mail.Read"], ["IMAP.AccessAsUser.All", "SMTP.Send"], GRAPH),
    ],
)
def test_token_resource(base: str, extra: list[str], skip: list[str], expected: str) -> None:
    """The code is redeemed for the base set's resource, else the first one asked for."""
    assert token_resource(base, consent_scopes(base, extra, skip)) == expected


def test_token_resource_without_any_permission() -> None:
    """An application that asks for no permission at all cannot get a token."""
    with pytest.raises(ValueError, match="no permission"):
        token_resource("imap", consent_scopes("imap", [], ["IMAP.AccessAsUser.All", "SMTP.Send"]))


def test_msal_scopes_leave_out_reserved() -> None:
    """msal refuses openid, profile and offline_access in a scope list; email passes."""
    assert msal_scopes([IMAP, "offline_access", "openid", "profile", "email"]) == [IMAP, "email"]


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (GRAPH, f"{GRAPH}/.default"),
        ("https://outlook.office365.com", f"{EXCHANGE}/.default"),
        ("https://outlook.office.com/", f"{EXCHANGE}/.default"),
    ],
)
def test_app_only_scope(resource: str, expected: str) -> None:
    """Client credentials ask for {resource}/.default."""
    assert app_only_scope(resource) == expected
