"""Encryption of stored credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.auth.crypto import Cipher, derive_key, load_cipher
from relay.config import SecuritySettings
from relay.errors import ConfigError, StoreError


def test_round_trip_bound_to_context() -> None:
    """A blob decrypts only with the same key and the same context."""
    cipher = Cipher(derive_key("a-long-enough-secret"))
    blob = cipher.encrypt(b"hunter2", context="accounts/a")
    assert b"hunter2" not in blob
    assert cipher.decrypt(blob, context="accounts/a") == b"hunter2"
    with pytest.raises(StoreError):
        cipher.decrypt(blob, context="accounts/b")
    with pytest.raises(StoreError):
        Cipher(derive_key("another-long-secret")).decrypt(blob, context="accounts/a")


def test_key_file_created_private_and_reused(tmp_path: Path) -> None:
    """Without a secret a 0600 key file is made once and then reused."""
    settings = SecuritySettings(key_file="relay.key")
    first = load_cipher(settings, base_dir=tmp_path)
    path = tmp_path / "relay.key"
    assert path.stat().st_mode & 0o777 == 0o600
    blob = first.encrypt_json({"a": 1}, context="c")
    assert load_cipher(settings, base_dir=tmp_path).decrypt_json(blob, context="c") == {"a": 1}


def test_broken_key_file(tmp_path: Path) -> None:
    """A key file that is not a 32-byte base64 key stops start-up naming the setting."""
    (tmp_path / "relay.key").write_text("not base64!")
    with pytest.raises(ConfigError) as caught:
        load_cipher(SecuritySettings(key_file="relay.key"), base_dir=tmp_path)
    assert caught.value.key == "security.key_file"


def test_subkeys_differ_by_purpose_and_key() -> None:
    """Subkeys are stable per key and purpose, and differ across either."""
    cipher = Cipher(derive_key("a-long-enough-secret"))
    same = Cipher(derive_key("a-long-enough-secret"))
    other = Cipher(derive_key("another-long-secret"))
    assert cipher.subkey("links") == same.subkey("links")
    assert len(cipher.subkey("links")) == 32
    assert cipher.subkey("links") != cipher.subkey("other")
    assert cipher.subkey("links") != other.subkey("links")
