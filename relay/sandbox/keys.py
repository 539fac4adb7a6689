"""Typed keys under which the sandbox application keeps its resources."""

from __future__ import annotations

from aiohttp import web

from relay.sandbox.graph.notifier import Notifier
from relay.sandbox.state import SandboxState

STATE = web.AppKey("sandbox_state", SandboxState)
NOTIFIER = web.AppKey("sandbox_notifier", Notifier)
