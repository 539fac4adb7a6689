"""The sandbox fixtures of the OAuth2 tests, for the mailbox tests of Graph and shared IMAP."""

from tests.auth.conftest import _no_ca_bundle_override, http, sandbox, signer

__all__ = ["_no_ca_bundle_override", "http", "sandbox", "signer"]
