"""The admin password: hashed with scrypt, never stored or compared in the clear (pure).

The stored form is ``scrypt$N$r$p$<salt>$<hash>`` (base64): the parameters travel with the
hash, so that they can be raised later without invalidating stored ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["MIN_LENGTH", "hash_password", "verify_password"]

MIN_LENGTH = 12
# scrypt's cost: about 50 ms and 16 MiB per hash on a small machine.
_N, _R, _P = 2**14, 8, 1
_MAXMEM = 64 * 1024 * 1024


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str) -> str:
    """The stored form of ``password`` (a fresh salt each time)."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"the admin password must have at least {MIN_LENGTH} characters")
    salt = secrets.token_bytes(16)
    digest = _derive(password, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (a malformed one: no)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _derive(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
