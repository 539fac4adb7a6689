"""The sandbox's aiohttp application: identity, Graph mail, admin API, grants snapshot."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from relay.sandbox import identity
from relay.sandbox.admin import Handler, create_admin_app
from relay.sandbox.graph import routes as graph_routes
from relay.sandbox.graph.notifier import Notifier, NotifierSettings
from relay.sandbox.keys import NOTIFIER, STATE
from relay.sandbox.state import SandboxState


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    # Readable by a mail server's auth process running as another user; the tokens in it
    # are the sandbox's own and worthless elsewhere.
    tmp.chmod(0o644)
    os.replace(tmp, path)


class SnapshotWriter:
    """Keeps a JSON file of every active access token and what it grants.

    The file is ``{token: {owner, mailboxes, sendAs, resource, scopes, roles, clientId,
    tenantId, expiresAt}}`` (``owner`` is null for app-only tokens), rewritten whole and
    atomically before the response that changed it is sent, so a mail server (a Dovecot Lua
    passdb, an SMTP test server) can check XOAUTH2 tokens without calling the sandbox.
    Expired and revoked tokens are left out; it is rewritten when the clock is advanced.
    """

    def __init__(self, state: SandboxState, path: Path) -> None:
        self.state = state
        self.path = path
        self._written = -1
        self._lock = asyncio.Lock()

    async def write_if_changed(self) -> None:
        """Write the snapshot if the state changed since the last write."""
        async with self._lock:
            version = self.state.version
            if version == self._written:
                return
            text = json.dumps(self.state.snapshot(), indent=1, sort_keys=True)
            await asyncio.to_thread(_write_atomically, self.path, text)
            self._written = version


SNAPSHOT = web.AppKey("sandbox_snapshot", SnapshotWriter)

# Messages of tens of megabytes arrive base64-encoded (admin deliveries, MIME uploads);
# aiohttp's default of 1 MiB would refuse them.
MAX_REQUEST_BYTES = 256 * 1024 * 1024


@web.middleware
async def _snapshot_after(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    await request.app[SNAPSHOT].write_if_changed()
    return response


def create_sandbox_app(
    state: SandboxState,
    *,
    snapshot_path: Path | None = None,
    notifier_settings: NotifierSettings | None = None,
) -> web.Application:
    """The sandbox application over ``state``; writes the grants snapshot when given a path.

    ``notifier_settings`` tunes how Graph change notifications are delivered.
    """
    middlewares = [_snapshot_after] if snapshot_path is not None else []
    app = web.Application(middlewares=middlewares, client_max_size=MAX_REQUEST_BYTES)
    app[STATE] = state
    notifier = Notifier(state, notifier_settings)
    app[NOTIFIER] = notifier

    async def run_notifier(_: web.Application) -> AsyncIterator[None]:
        await notifier.start()
        yield
        await notifier.close()

    app.cleanup_ctx.append(run_notifier)
    if snapshot_path is not None:
        writer = SnapshotWriter(state, snapshot_path)
        app[SNAPSHOT] = writer

        async def initial_snapshot(_: web.Application) -> AsyncIterator[None]:
            await writer.write_if_changed()
            yield

        app.cleanup_ctx.append(initial_snapshot)
    app.add_subapp("/sandbox/", create_admin_app(state))
    graph_routes.add_routes(app)
    identity.add_routes(app)
    return app
