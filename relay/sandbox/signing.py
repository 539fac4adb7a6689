"""RS256 JSON Web Tokens for the sandbox, with the key published as a JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    """Base64url without padding, as JOSE and Microsoft's ``client_info`` use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Mapping[str, Any]) -> str:
    """Compact JSON, base64url-encoded."""
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def _uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class Signer:
    """Signs tokens with one RSA key; ``kid`` is the key's SHA-256 thumbprint."""

    def __init__(self, key: rsa.RSAPrivateKey | None = None) -> None:
        self._key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self._key.public_key().public_numbers()
        self._public = {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
        # RFC 7638 thumbprint: members in lexicographic order, no whitespace.
        canonical = json.dumps(
            {"e": self._public["e"], "kty": "RSA", "n": self._public["n"]},
            separators=(",", ":"),
        )
        self.kid = b64url(hashlib.sha256(canonical.encode()).digest())

    def encode(self, claims: Mapping[str, Any]) -> str:
        """A signed compact JWT carrying ``claims``."""
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"

    def jwks(self) -> dict[str, Any]:
        """The public key set served at ``/{tenant}/discovery/v2.0/keys``."""
        return {"keys": [{**self._public, "use": "sig", "alg": "RS256", "kid": self.kid}]}
