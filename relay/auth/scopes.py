"""Which permissions an OAuth2 application asks for, and how they split by resource (pure).

An application's ``baseScopes`` picks a starting set (``imap``: Exchange Online IMAP and SMTP;
``api``: Microsoft Graph mail), ``extraScopes`` adds to it and ``skipScopes`` removes from it.
Consent asks for every resulting scope at once; tokens are then requested **per resource**
(Exchange or Graph), because Microsoft refuses scopes of two resources in one token request
(AADSTS28000) while one refresh token mints tokens for every consented resource.

Scope spelling follows Microsoft: ``{resource}/{permission}``, a bare permission name (read
as a Graph permission), or an OpenID Connect scope (``openid``, ``profile``, ``email``,
``offline_access``) that belongs to no resource. msal adds ``openid``, ``profile`` and
``offline_access`` to every request itself and refuses them in a scope list, so
:func:`msal_scopes` leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

EXCHANGE = "https://outlook.office.com"
GRAPH = "https://graph.microsoft.com"

BaseScopes = Literal["imap", "api"]

OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
# msal puts these in every request on its own and raises ValueError when a caller lists them.
MSAL_RESERVED = frozenset({"openid", "profile", "offline_access"})

BASE_SCOPES: Mapping[str, tuple[str, ...]] = {
    "imap": (
        f"{EXCHANGE}/IMAP.AccessAsUser.All",
        f"{EXCHANGE}/SMTP.Send",
        "offline_access",
    ),
    "api": (
        f"{GRAPH}/Mail.ReadWrite",
        f"{GRAPH}/Mail.Send",
        f"{GRAPH}/User.Read",
        "offline_access",
    ),
}

# The resource an application's accounts mostly use (IMAP/SMTP or Graph).
PRIMARY_RESOURCE: Mapping[str, str] = {"imap": EXCHANGE, "api": GRAPH}

# Exchange Online answers to both host names and to its application id; so does Graph.
_RESOURCE_ALIASES: Mapping[str, str] = {
    "https://outlook.office.com": EXCHANGE,
    "https://outlook.office365.com": EXCHANGE,
    "00000002-0000-0ff1-ce00-000000000000": EXCHANGE,
    "https://graph.microsoft.com": GRAPH,
    "00000003-0000-0000-c000-000000000000": GRAPH,
}


def canonical_resource(identifier: str) -> str:
    """The canonical name of a resource (host or application id); unknown ones unchanged."""
    trimmed = identifier.rstrip("/")
    return _RESOURCE_ALIASES.get(trimmed.lower(), trimmed)


def normalize(scope: str) -> str:
    """One scope in its full, canonical spelling.

    >>> normalize("Mail.Read")
    'https://graph.microsoft.com/Mail.Read'
    >>> normalize("https://outlook.office365.com/IMAP.AccessAsUser.All")
    'https://outlook.office.com/IMAP.AccessAsUser.All'
    """
    value = scope.strip()
    if value.lower() in OIDC_SCOPES:
        return value.lower()
    if "/" not in value:
        return f"{GRAPH}/{value}"
    prefix, _, name = value.rpartition("/")
    return f"{canonical_resource(prefix)}/{name}"


def resource_of(scope: str) -> str | None:
    """The resource a scope belongs to; None for the OpenID Connect scopes."""
    full = normalize(scope)
    if full in OIDC_SCOPES:
        return None
    return full.rpartition("/")[0]


def _permission(scope: str) -> str:
    return normalize(scope).rpartition("/")[2]


def _skipped(scope: str, skip: Sequence[str]) -> bool:
    """A bare skip entry names a permission of any resource; a full one names one scope."""
    full = normalize(scope).casefold()
    for entry in skip:
        bare = entry.strip()
        if "/" not in bare:
            if bare.casefold() == _permission(scope).casefold():
                return True
        elif normalize(bare).casefold() == full:
            return True
    return False


def consent_scopes(
    base: str, extra: Iterable[str] = (), skip: Sequence[str] = ()
) -> tuple[str, ...]:
    """Every scope the consent asks for: the base set plus ``extra``, minus ``skip``.

    Scopes are normalized and de-duplicated (case-insensitively), in order of appearance.
    """
    if base not in BASE_SCOPES:
        raise ValueError(f"unknown baseScopes {base!r}")
    out: list[str] = []
    seen: set[str] = set()
    for scope in (*BASE_SCOPES[base], *extra):
        full = normalize(scope)
        if full.casefold() in seen or _skipped(full, skip):
            continue
        seen.add(full.casefold())
        out.append(full)
    return tuple(out)


def by_resource(scopes: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Scopes grouped by resource (OpenID Connect scopes left out), in order of appearance."""
    groups: dict[str, list[str]] = {}
    for scope in scopes:
        resource = resource_of(scope)
        if resource is not None:
            groups.setdefault(resource, []).append(normalize(scope))
    return {resource: tuple(items) for resource, items in groups.items()}


def token_resource(base: str, scopes: Iterable[str]) -> str:
    """The resource to redeem a code for: the base set's resource when the app asks any of it,
    else the first resource it asks for."""
    groups = by_resource(scopes)
    primary = PRIMARY_RESOURCE.get(base)
    if primary in groups:
        return primary
    if not groups:
        raise ValueError("the application asks for no permission of any resource")
    return next(iter(groups))


def msal_scopes(scopes: Iterable[str]) -> list[str]:
    """``scopes`` without the ones msal adds itself (and refuses to be given)."""
    return [s for s in (normalize(x) for x in scopes) if s not in MSAL_RESERVED]


def app_only_scope(resource: str) -> str:
    """The client credentials scope of a resource (``{resource}/.default``)."""
    return f"{canonical_resource(resource)}/.default"
