"""Signed consent links (pure)."""

from __future__ import annotations

import pytest

from relay.auth.links import BadLink, sign, verify

KEY = b"k" * 32
PAYLOAD = {"type": "app", "account": {"account": "a", "name": "Ä"}, "delegated": False}


def test_round_trip() -> None:
    """A link verifies with its key before it expires and yields its payload."""
    data, sig = sign(KEY, PAYLOAD, expires_at=1000)
    assert verify(KEY, data, sig, now=999) == PAYLOAD


@pytest.mark.parametrize(
    ("data", "sig", "now", "message"),
    [
        ("{data}", "{sig}", 1000, "expired"),
        ("{data}", "{sig}x", 0, "not valid"),
        ("{data}x", "{sig}", 0, "not valid"),
        ("{data}", "", 0, "not valid"),
        ("", "{sig}", 0, "not valid"),
        ("{data}", "é", 0, "not valid"),
        ("ü", "{sig}", 0, "not valid"),
    ],
)
def test_refused(data: str, sig: str, now: float, message: str) -> None:
    """Altered, truncated, non-ASCII or expired links are refused with a clear message."""
    good_data, good_sig = sign(KEY, PAYLOAD, expires_at=1000)
    with pytest.raises(BadLink, match=message):
        verify(
            KEY,
            data.format(data=good_data),
            sig.format(sig=good_sig),
            now=now,
        )


def test_other_key_is_refused() -> None:
    """A link made with another installation's key is not valid here."""
    data, sig = sign(b"o" * 32, PAYLOAD, expires_at=1000)
    with pytest.raises(BadLink, match="not valid"):
        verify(KEY, data, sig, now=0)
