"""SASL XOAUTH2 (Google / Microsoft) as pure functions.

Format: ``base64("user=" + user + "\\x01auth=Bearer " + token + "\\x01\\x01")``. When the
token is refused the server sends a ``+`` challenge holding base64 JSON (e.g.
``{"status":"401","schemes":"bearer","scope":"..."}``); the client must answer it with an
empty line, after which the server sends the final ``NO``.
"""

from __future__ import annotations

import base64
import binascii
import json

__all__ = ["decode_error_challenge", "xoauth2_initial_response", "xoauth2_string"]


def xoauth2_string(user: str, token: str) -> bytes:
    """Return the raw (not yet base64-encoded) XOAUTH2 initial client response."""
    for name, value in (("user", user), ("token", token)):
        if "\x01" in value or "\r" in value or "\n" in value:
            raise ValueError(f"XOAUTH2 {name} must not contain control characters")
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def xoauth2_initial_response(user: str, token: str) -> bytes:
    """Return the base64-encoded XOAUTH2 initial response, ready to send."""
    return base64.b64encode(xoauth2_string(user, token))


def decode_error_challenge(challenge: bytes) -> dict[str, object] | None:
    """Decode a server's XOAUTH2 error challenge; None if it is empty or not base64 JSON."""
    challenge = challenge.strip()
    if not challenge:
        return None
    try:
        decoded = json.loads(base64.b64decode(challenge, validate=True))
    except (binascii.Error, ValueError):
        return None
    return decoded if isinstance(decoded, dict) else None
