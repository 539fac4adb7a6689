"""API tokens: random, shown once, stored only as a SHA-256 hash.

A plain hash (no salt, no stretching) is enough because the tokens are 256-bit random values,
not passwords: there is nothing to guess. It also makes the lookup one indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> str:
    """A fresh API token (64 hex characters, like EmailEngine's)."""
    return secrets.token_hex(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_id() -> str:
    return secrets.token_hex(8)
