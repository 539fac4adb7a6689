"""Account payloads (EmailEngine's ``/v1/account`` shape) and the split of secrets from the rest.

A stored account is two parts: the public configuration (a JSON column) and its secrets
(passwords, tokens; an encrypted blob). :func:`split_secrets` and :func:`join_secrets` are the
only places that know which fields are secret.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl

from relay import proxy
from relay.api.models import Body, Identifier, Text

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9\-.:\[\]]{0,253})$")

# Dotted paths of every secret an account payload may carry.
SECRET_FIELDS = (
    "imap.auth.pass",
    "imap.auth.accessToken",
    "smtp.auth.pass",
    "oauth2.accessToken",
    "oauth2.refreshToken",
    # A proxy URL may carry a password: kept encrypted, shown without it.
    "proxy",
)


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("must be an email address")
    return value


def _host(value: str) -> str:
    if not _HOST.match(value):
        raise ValueError("must be a host name or IP address")
    return value


Email = Annotated[str, AfterValidator(_email)]
Host = Annotated[str, AfterValidator(_host)]
Port = Annotated[int, Field(ge=1, le=65535)]
Secret = Annotated[str, Field(min_length=1, max_length=16384)]


class _AliasBody(Body):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)


class TlsOptions(Body):
    rejectUnauthorized: bool = True
    minVersion: str | None = Field(default=None, pattern=r"^TLSv1(\.[0-3])?$")


class ServerAuth(_AliasBody):
    user: Annotated[Text, Field(min_length=1)]
    password: Secret | None = Field(default=None, alias="pass")
    accessToken: Secret | None = None


class ImapSettings(Body):
    host: Host = "outlook.office365.com"
    port: Port = 993
    secure: bool = True
    auth: ServerAuth | None = None
    tls: TlsOptions | None = None
    disabled: bool = False


class SmtpSettings(Body):
    host: Host = "smtp.office365.com"
    port: Port = 587
    # False means STARTTLS on a plain connection (port 587); True means TLS from the start (465).
    secure: bool = False
    auth: ServerAuth | None = None
    tls: TlsOptions | None = None


class OAuth2Auth(Body):
    user: Email | None = None
    delegatedUser: Email | None = None
    delegatedAccount: Identifier | None = None


class OAuth2Settings(Body):
    provider: Annotated[Identifier, Field(max_length=64)] | None = None
    auth: OAuth2Auth | None = None
    accessToken: Secret | None = None
    refreshToken: Secret | None = None
    expires: datetime | None = None
    # Not stored: ask for a consent link instead of creating the account now.
    authorize: bool | None = None
    redirectUrl: HttpUrl | None = None


# Read once at import: looking a zone up reads files, which a request must not do.
_TIME_ZONES = frozenset(available_timezones())


def _time_zone(value: str) -> str:
    if value not in _TIME_ZONES:
        raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Tallinn")
    return value


Subconnections = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=1024)]], Field(max_length=100)
]
Locale = Annotated[
    str, Field(min_length=2, max_length=100, pattern=r"^[A-Za-z]{2,8}([-_][A-Za-z0-9]{1,8})*$")
]
TimeZone = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_time_zone)]
ProxyUrl = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(proxy.check)]


class AccountFields(Body):
    """Everything but the id: shared by create and (after merging) update."""

    name: Annotated[Text, Field(min_length=1)]
    email: Email
    imap: ImapSettings | None = None
    smtp: SmtpSettings | None = None
    oauth2: OAuth2Settings | None = None
    path: (
        Annotated[str, Field(min_length=1, max_length=1024)]
        | list[Annotated[str, Field(min_length=1, max_length=1024)]]
        | None
    ) = None
    notifyFrom: datetime | None = None
    webhooks: HttpUrl | None = None
    # Sent Items copies after an SMTP send (relay.send.sentcopy); Graph: saveToSentItems.
    sentCopy: Literal["provider", "shared", "none"] | None = None
    # EmailEngine's folders with IDLE connections of their own: watched like ``path``.
    subconnections: Subconnections | None = None
    # Kept and shown, as EmailEngine keeps them; the relay formats nothing by them.
    locale: Locale | None = None
    tz: TimeZone | None = None
    # EmailEngine's ``copy``: upload each sent message to the Sent folder (relay.send.sentcopy);
    # named copy_ because BaseModel has a copy method.
    copy_: bool | None = Field(default=None, alias="copy")
    # Protocol log: the account's IMAP, SMTP and Graph traffic at debug level (relay.log).
    logs: bool | None = None
    # IMAP and SMTP connections go through this proxy (relay.proxy); not for Graph accounts.
    proxy: ProxyUrl | None = None
    # Kept and shown: EmailEngine's start of its message index, which the relay does not keep.
    syncFrom: datetime | None = None


class AccountCreate(AccountFields):
    account: Identifier


class AccountUpdate(Body):
    """A partial update: given keys replace stored ones (nested blocks merge; null removes)."""

    name: Annotated[Text | None, Field(min_length=1)] = None
    email: Email | None = None
    imap: dict[str, Any] | None = None
    smtp: dict[str, Any] | None = None
    oauth2: dict[str, Any] | None = None
    path: str | list[str] | None = None
    notifyFrom: datetime | None = None
    webhooks: HttpUrl | None = None
    sentCopy: Literal["provider", "shared", "none"] | None = None
    subconnections: Subconnections | None = None
    locale: Locale | None = None
    tz: TimeZone | None = None
    copy_: bool | None = Field(default=None, alias="copy")
    logs: bool | None = None
    proxy: ProxyUrl | None = None
    syncFrom: datetime | None = None


def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _pop(tree: dict[str, Any], dotted: str) -> Any:
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for part in parents:
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return None
        node = node[part]
    return node.pop(leaf, None)


def _put(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def payload_dict(model: BaseModel) -> dict[str, Any]:
    """A validated payload as plain JSON-able data with the wire names (``pass``)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def split_secrets(payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Remove every secret from a copy of ``payload``; return (public part, secrets by path)."""
    public = _deep_copy(payload)
    secrets: dict[str, str] = {}
    for dotted in SECRET_FIELDS:
        value = _pop(public, dotted)
        if value is not None:
            secrets[dotted] = value
    return public, secrets


def join_secrets(public: dict[str, Any], secrets: dict[str, str]) -> dict[str, Any]:
    """The inverse of :func:`split_secrets`."""
    payload = _deep_copy(public)
    for dotted, value in secrets.items():
        _put(payload, dotted, value)
    return payload


def merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``change`` into a copy of ``base``; a None value removes the key."""
    out = _deep_copy(base)
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = _deep_copy(value) if isinstance(value, dict) else value
    return out


def secret_flags(secrets: dict[str, str]) -> dict[str, bool]:
    """Which secrets are set, by dotted path (what GET shows instead of the values)."""
    return {dotted: dotted in secrets for dotted in SECRET_FIELDS}


def get_path(tree: dict[str, Any], dotted: str) -> Any:
    return _get(tree, dotted)


def _deep_copy(value: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _deep_copy(v) if isinstance(v, dict) else (list(v) if isinstance(v, list) else v)
        for k, v in value.items()
    }
