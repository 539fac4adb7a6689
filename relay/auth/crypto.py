"""Encryption of stored credentials (AES-256-GCM).

The key comes from ``security.secret`` (scrypt-stretched, so a passphrase is acceptable) or,
when that is empty, from a random key file created with mode 0600. Ciphertexts carry a
version byte so the scheme can change without breaking stored rows.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from relay.config import SecuritySettings
from relay.errors import ConfigError, StoreError

_VERSION = b"\x01"
_NONCE_BYTES = 12
# A fixed salt: the secret is the installation's own key material, not a user password
# shared across installations, and every node of one installation must derive the same key.
_SALT = b"mailrelay/credentials/v1"

log = structlog.get_logger(__name__)


class Cipher:
    """Encrypts and decrypts small blobs (credentials, secrets) with one AES-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("key must be 32 bytes")
        self._aead = AESGCM(key)
        self._key = key

    def subkey(self, purpose: str) -> bytes:
        """A 32-byte key for another use (e.g. signing links), derived with HKDF-SHA256.

        Every node of an installation derives the same subkey; knowing it reveals nothing
        about the encryption key or about the subkeys of other purposes.
        """
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
        return hkdf.derive(self._key)

    def encrypt(self, plaintext: bytes, *, context: str) -> bytes:
        """Encrypt ``plaintext`` bound to ``context`` (e.g. the row it belongs to)."""
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def decrypt(self, blob: bytes, *, context: str) -> bytes:
        """Reverse :meth:`encrypt`; a wrong key or context raises :class:`StoreError`."""
        if blob[:1] != _VERSION or len(blob) < 1 + _NONCE_BYTES + 16:
            raise StoreError("stored secret has an unknown format")
        nonce, body = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, context.encode())
        except InvalidTag:
            raise StoreError(
                "stored secret cannot be decrypted: security.secret (RELAY_SECRET) or the key file"
                " differs from the one it was written with"
            ) from None

    def encrypt_json(self, value: Any, *, context: str) -> bytes:
        return self.encrypt(json.dumps(value, separators=(",", ":")).encode(), context=context)

    def decrypt_json(self, blob: bytes, *, context: str) -> Any:
        return json.loads(self.decrypt(blob, context=context))


def derive_key(secret: str) -> bytes:
    """Stretch a configured secret into a 32-byte key (scrypt, ~50 ms once at start-up)."""
    return Scrypt(salt=_SALT, length=32, n=2**14, r=8, p=1).derive(secret.encode())


def load_cipher(settings: SecuritySettings, *, base_dir: Path) -> Cipher:
    """Build the :class:`Cipher` from the secret or from (a new) key file."""
    if settings.secret:
        return Cipher(derive_key(settings.secret))
    path = Path(settings.key_file)
    if not path.is_absolute():
        path = base_dir / path
    try:
        raw = path.read_text().strip()
    except FileNotFoundError:
        raw = base64.b64encode(secrets.token_bytes(32)).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(raw + "\n")
        log.warning(
            "generated an encryption key file; set RELAY_SECRET to manage the key yourself",
            key_file=str(path),
        )
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        raise ConfigError("security.key_file", f"{path} does not hold a base64 key") from None
    if len(key) != 32:
        raise ConfigError("security.key_file", f"{path} must hold 32 bytes of base64")
    return Cipher(key)
