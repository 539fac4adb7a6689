"""A local emulator of Microsoft 365 for offline development and tests.

It serves the Microsoft identity platform (v2) and a Microsoft Graph v1.0 mail subset
(:mod:`relay.sandbox.graph`: nested folders, messages with default and immutable ids,
drafts and sending, delta query, sendMail, change subscriptions with real
notifications). Start it with
:func:`relay.sandbox.server.start_sandbox` (or ``relay sandbox``); point msal,
azure-identity and msgraph-sdk at its https URL with its CA certificate. The tenant and its
mailboxes live in memory (:mod:`relay.sandbox.state`) and are managed through the
loopback-only admin API (:mod:`relay.sandbox.admin`, :mod:`relay.sandbox.graph.admin`).
"""

from relay.sandbox.server import RunningSandbox, main, start_sandbox
from relay.sandbox.state import SandboxState

__all__ = ["RunningSandbox", "SandboxState", "main", "start_sandbox"]
