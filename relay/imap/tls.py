"""The TLS contexts IMAP connections share."""

from __future__ import annotations

import ssl

__all__ = ["TlsContexts"]


class TlsContexts:
    """The process's SSL contexts: one verifying, one not (``tls.rejectUnauthorized: false``).

    A context holds its own copy of the trust store (hundreds of KiB), so connections share
    these two instead of making one each. Build at start-up: loading the trust store reads
    files.
    """

    def __init__(self, ca_bundle: str = "") -> None:
        self.verified = ssl.create_default_context(cafile=ca_bundle or None)
        unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        self.unverified = unverified

    def get(self, verify: bool) -> ssl.SSLContext:
        """The shared context for a server that is (or is not) verified."""
        return self.verified if verify else self.unverified
