"""Scopes and resources as the Microsoft identity platform understands them (pure).

A scope is ``{resource}/{permission}`` (``https://outlook.office.com/IMAP.AccessAsUser.All``),
a bare permission name, which Microsoft reads as a Microsoft Graph permission
(``Mail.Read``), ``{resource}/.default``, or one of the OpenID Connect scopes (``openid``,
``profile``, ``email``, ``offline_access``) that belong to no resource. Permission names are
case-insensitive; the sandbox knows the permissions a mail service uses and rejects others,
so a typo fails here as it would against Microsoft.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from relay.sandbox.errors import IdentityError

GRAPH = "https://graph.microsoft.com"
OUTLOOK = "https://outlook.office.com"
DEFAULT = ".default"
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")

# Exchange Online answers to both host names and to its application id; one resource.
_RESOURCE_ALIASES = {
    "https://graph.microsoft.com": GRAPH,
    "00000003-0000-0000-c000-000000000000": GRAPH,
    "https://outlook.office.com": OUTLOOK,
    "https://outlook.office365.com": OUTLOOK,
    "00000002-0000-0ff1-ce00-000000000000": OUTLOOK,
}

DELEGATED_PERMISSIONS: Mapping[str, tuple[str, ...]] = {
    GRAPH: (
        "User.Read",
        "User.ReadBasic.All",
        "User.Read.All",
        "Mail.Read",
        "Mail.ReadBasic",
        "Mail.ReadWrite",
        "Mail.Read.Shared",
        "Mail.ReadBasic.Shared",
        "Mail.ReadWrite.Shared",
        "Mail.Send",
        "Mail.Send.Shared",
        "MailboxSettings.Read",
        "MailboxSettings.ReadWrite",
        "IMAP.AccessAsUser.All",
        "SMTP.Send",
        "POP.AccessAsUser.All",
    ),
    OUTLOOK: (
        "IMAP.AccessAsUser.All",
        "SMTP.Send",
        "POP.AccessAsUser.All",
        "EWS.AccessAsUser.All",
    ),
}

APPLICATION_PERMISSIONS: Mapping[str, tuple[str, ...]] = {
    GRAPH: (
        "Mail.Read",
        "Mail.ReadBasic",
        "Mail.ReadBasic.All",
        "Mail.ReadWrite",
        "Mail.Send",
        "MailboxSettings.Read",
        "MailboxSettings.ReadWrite",
        "User.Read.All",
    ),
    OUTLOOK: (
        "IMAP.AccessAsApp",
        "POP.AccessAsApp",
        "SMTP.SendAsApp",
        "full_access_as_app",
    ),
}


@dataclass(frozen=True)
class ScopeSet:
    """A parsed ``scope`` parameter: OpenID Connect scopes and permissions per resource.

    Permission names are in Microsoft's spelling; ``.default`` may appear as a name.
    """

    oidc: frozenset[str]
    resources: Mapping[str, frozenset[str]]

    def single_resource(self, raw: str) -> tuple[str, frozenset[str]]:
        """The one resource a token request is for; Microsoft Graph when none is named.

        More than one resource in one token request is AADSTS28000.
        """
        if len(self.resources) > 1:
            raise IdentityError(
                "invalid_request",
                28000,
                "Provided value for the input parameter scope is not valid because it "
                f"contains more than one resource. Scope {raw} is not valid.",
            )
        for resource, names in self.resources.items():
            return resource, names
        return GRAPH, frozenset()

    def consentable(self) -> frozenset[str]:
        """Every scope the user is asked to consent to, in full form (``.default`` dropped)."""
        full = {
            full_scope(resource, name)
            for resource, names in self.resources.items()
            for name in names
            if name != DEFAULT
        }
        return frozenset(full | self.oidc)


def canonical_resource(raw: str) -> str | None:
    """The canonical resource for an identifier URI or application id, or None if unknown."""
    return _RESOURCE_ALIASES.get(raw.rstrip("/").lower())


def full_scope(resource: str, name: str) -> str:
    """``{resource}/{name}``."""
    return f"{resource}/{name}"


def _lookup(name: str, known: Iterable[str]) -> str | None:
    folded = name.casefold()
    for candidate in known:
        if candidate.casefold() == folded:
            return candidate
    return None


def unknown_resource(identifier: str) -> IdentityError:
    """AADSTS500011: the scope names a resource the tenant does not have."""
    return IdentityError(
        "invalid_resource",
        500011,
        f"The resource principal named {identifier} was not found in the tenant.",
    )


def _unknown_scope(scope: str) -> IdentityError:
    return IdentityError(
        "invalid_scope",
        70011,
        "The provided value for the input parameter 'scope' is not valid. "
        f"The scope '{scope}' does not exist.",
    )


def parse_scopes(raw: str) -> ScopeSet:
    """Parse a space-separated ``scope`` parameter; unknown resources and names are errors."""
    oidc: set[str] = set()
    resources: dict[str, set[str]] = {}
    for scope in raw.split():
        oidc_name = _lookup(scope, OIDC_SCOPES)
        if oidc_name is not None:
            oidc.add(oidc_name)
            continue
        prefix, slash, name = scope.rpartition("/")
        if slash:
            resource = canonical_resource(prefix)
            if resource is None:
                raise unknown_resource(prefix)
        else:
            resource, name = GRAPH, scope
        if name == DEFAULT:
            permission: str | None = DEFAULT
        else:
            permission = _lookup(name, DELEGATED_PERMISSIONS[resource])
        if permission is None:
            raise _unknown_scope(scope)
        resources.setdefault(resource, set()).add(permission)
    return ScopeSet(
        oidc=frozenset(oidc),
        resources={resource: frozenset(names) for resource, names in resources.items()},
    )


def parse_application_permission(raw: str) -> tuple[str, str]:
    """``(resource, role)`` for an application permission such as ``Mail.ReadWrite``.

    A bare name means a Microsoft Graph role, as in the scope syntax. Raises ValueError.
    """
    prefix, slash, name = raw.rpartition("/")
    resource = canonical_resource(prefix) if slash else GRAPH
    if resource is None:
        raise ValueError(f"unknown resource {prefix!r}")
    role = _lookup(name, APPLICATION_PERMISSIONS[resource])
    if role is None:
        known = ", ".join(APPLICATION_PERMISSIONS[resource])
        raise ValueError(f"{name!r} is not an application permission of {resource} ({known})")
    return resource, role


def response_scope(resource: str, names: Iterable[str], oidc: Iterable[str]) -> str:
    """The ``scope`` field of a token response.

    Microsoft lists Microsoft Graph permissions by bare name, together with the OpenID
    Connect scopes that were asked for (never ``offline_access``); for any other resource it
    lists full scope URIs and no OpenID Connect scopes.
    """
    ordered = sorted(names, key=str.casefold)
    if resource == GRAPH:
        return " ".join([*sorted(set(oidc) - {"offline_access"}), *ordered])
    return " ".join(full_scope(resource, name) for name in ordered)
