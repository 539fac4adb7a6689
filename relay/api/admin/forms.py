"""From the admin UI's HTML forms to the API's payloads, and the API's errors back to the
fields (pure).

The forms name their inputs after the API's dotted paths (``imap.auth.user``), so that the
``field`` of an API :class:`~relay.errors.InputError` finds the input to show it beside.
Nothing here validates what the API validates: values are passed on as typed (a port that
is not a number reaches the API as text and is refused there, with the API's message).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from relay.errors import InputError

__all__ = [
    "ACCOUNT_KINDS",
    "NOTIFY_FLAGS",
    "NOTIFY_SIZES",
    "account_payload",
    "app_payload",
    "field_errors",
    "parse_headers",
    "route_payload",
    "settings_payload",
    "split_list",
]

Form = Mapping[str, str]
ACCOUNT_KINDS = ("imap", "oauth2", "shared")


def _text(form: Form, name: str) -> str:
    return form.get(name, "").strip()


def _number(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _put(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _server(form: Form, prefix: str) -> dict[str, Any] | None:
    """An imap or smtp block; None when its host is left empty."""
    host = _text(form, f"{prefix}.host")
    if not host:
        return None
    block: dict[str, Any] = {"host": host, "secure": form.get(f"{prefix}.secure") == "on"}
    port = _text(form, f"{prefix}.port")
    if port:
        block["port"] = _number(port)
    user = _text(form, f"{prefix}.auth.user")
    password = form.get(f"{prefix}.auth.pass", "")
    if user or password:
        block["auth"] = {"user": user, "pass": password}
    return block


def account_payload(form: Form, *, consent_return: str) -> dict[str, Any]:
    """The ``POST /v1/account`` body of the add-account form.

    ``kind`` picks the block: ``imap`` (host, port, user and password; SMTP optional),
    ``oauth2`` (an OAuth2 application: the answer is a consent link, and Microsoft's sign-in
    sends the browser back to ``consent_return``), ``shared`` (a shared mailbox that borrows
    the tokens of an existing account).
    """
    kind = _text(form, "kind")
    if kind not in ACCOUNT_KINDS:
        raise InputError(f"kind: must be one of {', '.join(ACCOUNT_KINDS)}", field="kind")
    payload: dict[str, Any] = {"account": _text(form, "account"), "name": _text(form, "name")}
    email = _text(form, "email")
    if kind == "imap":
        for prefix in ("imap", "smtp"):
            block = _server(form, prefix)
            if block is not None:
                payload[prefix] = block
    elif kind == "oauth2":
        payload["oauth2"] = {
            "provider": _text(form, "oauth2.provider"),
            "authorize": True,
            "redirectUrl": consent_return,
        }
        user = _text(form, "oauth2.auth.user")
        if user:
            _put(payload, "oauth2.auth.user", user)
    else:
        shared = _text(form, "oauth2.auth.delegatedUser")
        payload["oauth2"] = {
            "auth": {
                "delegatedAccount": _text(form, "oauth2.auth.delegatedAccount"),
                "delegatedUser": shared,
            }
        }
        email = email or shared
    if email or kind != "oauth2":
        payload["email"] = email
    return payload


def split_list(value: str) -> list[str]:
    """Items separated by commas, spaces or new lines."""
    return [item for item in value.replace(",", " ").split() if item]


def parse_headers(text: str, *, field: str = "headers") -> dict[str, str]:
    """``Name: value`` lines (blank lines skipped) as a header map; an error names
    ``field``."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise InputError(f"{field}: line {number} is not 'Name: value'", field=field)
        headers[name.strip()] = value.strip()
    return headers


def route_payload(form: Form, events: Iterable[str], *, editing: bool) -> dict[str, Any]:
    """The body of ``POST /v1/webhooks`` (or, ``editing``, ``PUT /v1/webhooks/{id}``).

    ``events`` are the checked event names (none: every event). Accounts are a list
    (empty: every account). Header values are never shown again, so when editing an empty
    headers box keeps the stored ones.
    """
    chosen = sorted(set(events))
    payload: dict[str, Any] = {
        "url": _text(form, "url"),
        "description": _text(form, "description"),
        "events": chosen or ["*"],
        "enabled": form.get("enabled") == "on",
    }
    accounts = split_list(form.get("accounts", ""))
    payload["accounts"] = accounts or None
    headers = form.get("headers", "")
    if headers.strip() or not editing:
        payload["headers"] = parse_headers(headers)
    if form.get("clearHeaders") == "on":
        payload["headers"] = {}
    return payload


def app_payload(form: Form, *, editing: bool) -> dict[str, Any]:
    """The body of ``POST /v1/oauth2`` (or, ``editing``, ``PUT /v1/oauth2/{app}``).

    The client secret is write-only: an empty box sends nothing (creating: no secret;
    editing: the stored one is kept), ``clearClientSecret`` removes the stored one. The
    provider is chosen when the application is made and cannot change.
    """
    payload: dict[str, Any] = {
        "name": _text(form, "name"),
        "description": _text(form, "description"),
        "enabled": form.get("enabled") == "on",
        "clientId": _text(form, "clientId"),
        "authority": _text(form, "authority") or "common",
        "baseScopes": _text(form, "baseScopes") or "imap",
        "extraScopes": split_list(form.get("extraScopes", "")),
        "skipScopes": split_list(form.get("skipScopes", "")),
    }
    if not editing:
        payload["provider"] = _text(form, "provider")
    redirect = _text(form, "redirectUrl")
    if redirect or editing:
        payload["redirectUrl"] = redirect or None
    secret = form.get("clientSecret", "")
    if secret:
        payload["clientSecret"] = secret
    elif editing and form.get("clearClientSecret") == "on":
        payload["clientSecret"] = None
    return payload


# The notify* settings of POST /v1/settings: checkboxes, and sizes (empty: unset).
NOTIFY_FLAGS = ("notifyText", "notifyWebSafeHtml", "notifyAttachments")
NOTIFY_SIZES = ("notifyTextSize", "notifyAttachmentSize")


def settings_payload(
    form: Form, events: Iterable[str], current: Mapping[str, Any]
) -> dict[str, Any]:
    """The body of ``POST /v1/settings``: the keys whose value in the form differs from
    ``current`` (``GET /v1/settings``), so that saving the form unchanged changes nothing.

    Write-only values are sent only when typed: the service secret, and custom headers (an
    empty box keeps the stored ones; ``clearCustomHeaders`` removes them).
    """
    wanted: dict[str, Any] = {
        "webhooks": _text(form, "webhooks") or None,
        "webhookEvents": sorted(set(events)) or ["*"],
        "webhooksEnabled": form.get("webhooksEnabled") == "on",
        "serviceUrl": _text(form, "serviceUrl") or None,
        "notifyHeaders": split_list(form.get("notifyHeaders", "")) or None,
    }
    for key in NOTIFY_FLAGS:
        wanted[key] = form.get(key) == "on"
    for key in NOTIFY_SIZES:
        size = _text(form, key)
        wanted[key] = _number(size) if size else None
    payload: dict[str, Any] = {}
    for key, value in wanted.items():
        now = current.get(key)
        if key in NOTIFY_FLAGS and now is None and value is False:
            continue  # unset reads as off: leave it unset
        if key == "webhooksEnabled" and not current.get("webhooks") and not wanted["webhooks"]:
            continue  # no global webhook to enable or disable
        if value != now:
            payload[key] = value
    secret = form.get("serviceSecret", "")
    if secret:
        payload["serviceSecret"] = secret
    headers = form.get("webhooksCustomHeaders", "")
    if headers.strip():
        parsed = parse_headers(headers, field="webhooksCustomHeaders")
        payload["webhooksCustomHeaders"] = [{"key": k, "value": v} for k, v in parsed.items()]
    elif form.get("clearCustomHeaders") == "on":
        payload["webhooksCustomHeaders"] = []
    return payload


def field_errors(error: InputError, fields: Iterable[str]) -> dict[str, str]:
    """Where the form shows ``error``: the input it names (the longest input name that is
    the error's field or a part of it, or that lies under it); ``""`` for the form as a
    whole when none matches."""
    field = error.field or ""
    best = ""
    for name in fields:
        if field in (name, "") or field.startswith(name + "."):
            if len(name) > len(best):
                best = name
        elif name.startswith(field + ".") and not best:
            best = name
    return {best: error.message}
