"""A local emulator of the Microsoft identity platform (v2) for offline development and tests.

Start it with :func:`relay.sandbox.server.start_sandbox` (or ``relay sandbox``); point msal
or azure-identity at its https URL with its CA certificate. The tenant lives in memory
(:mod:`relay.sandbox.state`) and is managed through the loopback-only admin API
(:mod:`relay.sandbox.admin`).
"""

from relay.sandbox.server import RunningSandbox, main, start_sandbox
from relay.sandbox.state import SandboxState

__all__ = ["RunningSandbox", "SandboxState", "main", "start_sandbox"]
