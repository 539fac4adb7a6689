"""The peers of the sending tests (an SMTP server, the sandbox) for the contract tests."""

from tests.auth.conftest import _no_ca_bundle_override, http, sandbox, signer
from tests.send.conftest import smtp

__all__ = ["_no_ca_bundle_override", "http", "sandbox", "signer", "smtp"]
