"""Signed consent links (pure): ``?data=<base64url JSON>&sig=<base64url HMAC-SHA256>``.

A link carries what the consent should produce (the account payload, the OAuth2 application,
where to send the browser afterwards) and when it stops working. Anyone may read it; nobody
without the key can change it or make a new one. The key is derived from the relay's
encryption key (:meth:`relay.auth.crypto.Cipher.subkey`), so every node of an installation
accepts the links of the others.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from relay.errors import InputError

LINK_KEY_PURPOSE = "consent-links/v1"
_VERSION = 1


class BadLink(InputError):
    """A consent link that was altered, made up, or has expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, data: str) -> str:
    return _b64(hmac.new(key, data.encode(), hashlib.sha256).digest())


def sign(key: bytes, payload: dict[str, Any], *, expires_at: int) -> tuple[str, str]:
    """``(data, sig)`` for ``payload``, valid until ``expires_at`` (epoch seconds)."""
    body = {"v": _VERSION, "exp": int(expires_at), **payload}
    data = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return data, _mac(key, data)


def verify(key: bytes, data: str, sig: str, *, now: float) -> dict[str, Any]:
    """The payload of a genuine, unexpired link; :class:`BadLink` otherwise."""
    if not data or not sig or not hmac.compare_digest(_mac(key, data).encode(), sig.encode()):
        raise BadLink("This sign-in link is not valid: it was changed or not made by this relay")
    try:
        body = json.loads(_unb64(data))
    except (binascii.Error, ValueError):
        raise BadLink("This sign-in link is not valid") from None
    if not isinstance(body, dict) or body.get("v") != _VERSION:
        raise BadLink("This sign-in link is not valid")
    expires = body.pop("exp", None)
    body.pop("v", None)
    if not isinstance(expires, int) or expires <= now:
        raise BadLink("This sign-in link has expired; ask for a new one")
    return body
