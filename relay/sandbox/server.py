"""Run the sandbox: ``start_sandbox`` for tests and tools, ``main`` for ``relay sandbox``."""

from __future__ import annotations

import asyncio
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from relay.sandbox.app import create_sandbox_app
from relay.sandbox.graph.notifier import Notifier, NotifierSettings
from relay.sandbox.keys import NOTIFIER
from relay.sandbox.seed import SeedInfo, seed_demo_tenant
from relay.sandbox.state import SandboxState
from relay.sandbox.tls import server_tls

GRANTS_FILE = "grants.json"


@dataclass
class RunningSandbox:
    """A sandbox serving https; ``close()`` stops it."""

    url: str
    ca_path: Path
    grants_path: Path
    state: SandboxState
    seed: SeedInfo | None
    _runner: web.AppRunner = field(repr=False)

    @property
    def notifier(self) -> Notifier:
        """The Graph change-notification dispatcher (``settle()`` waits for deliveries)."""
        return self._runner.app[NOTIFIER]

    async def close(self) -> None:
        """Stop serving and release the port."""
        # Requests an outage holds are answered first, so stopping does not wait for them.
        self.state.faults.clear()
        await self._runner.cleanup()

    def summary(self) -> str:
        """How to point the relay at this sandbox (and the demo tenant, if seeded)."""
        lines = [
            f"relay sandbox listening on {self.url}",
            f"  CA certificate:   {self.ca_path}",
            f"  grants snapshot:  {self.grants_path}",
            f"  tenant id:        {self.state.tenant_id}",
            f"  Microsoft Graph:  {self.url}/v1.0",
            f"  admin API:        {self.url}/sandbox/ (loopback only)",
            "",
            "Point the relay at it:",
            f"  RELAY_AUTHORITY_HOST={self.url}",
            f"  RELAY_GRAPH_URL={self.url}",
            f"  RELAY_CA_BUNDLE={self.ca_path}",
        ]
        if self.state.allow_http_notifications:
            lines.append("  (http notification URLs on loopback addresses are accepted)")
        if self.seed is not None:
            seed = self.seed
            lines += [
                "",
                "Demo tenant:",
                f"  user            {seed.main_user}  password {seed.main_password}",
                f"  shared mailbox  {seed.shared_mailbox}  ({seed.main_user} has Full Access "
                "and Send As)",
                "  OAuth2 app (provider outlook, or outlookService for app-only):",
                f"    clientId      {seed.client_id}",
                f"    clientSecret  {seed.client_secret}",
                f"    redirectUrl   {seed.redirect_uri}",
                f"    authority     {seed.tenant_id}",
            ]
        return "\n".join(lines)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


async def start_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    data_dir: str | Path = ".",
    *,
    seed: bool = False,
    grants_path: str | Path | None = None,
    state: SandboxState | None = None,
    allow_http_notifications: bool = False,
    notifier_settings: NotifierSettings | None = None,
) -> RunningSandbox:
    """Serve the sandbox over https on ``host:port`` (0 picks a free port).

    ``data_dir`` holds the CA (``ca.pem``, reused across starts) and, unless ``grants_path``
    names another file, the grants snapshot ``grants.json``. ``seed`` creates the demo
    tenant; ``state`` lets a caller bring its own (for example with a custom clock).
    ``allow_http_notifications`` lets Graph subscriptions use ``http://`` notification URLs
    on loopback addresses (Microsoft requires https; the admin API can switch this too);
    ``notifier_settings`` tunes timeouts, batching and TLS of notification delivery.
    """
    directory = Path(data_dir)
    hosts = sorted({"127.0.0.1", "localhost", "::1", host})
    ca_path, ssl_context = await asyncio.to_thread(server_tls, directory, hosts)
    state = state if state is not None else await asyncio.to_thread(SandboxState)
    seed_info = seed_demo_tenant(state) if seed else None
    state.allow_http_notifications = state.allow_http_notifications or allow_http_notifications
    snapshot = Path(grants_path) if grants_path is not None else directory / GRANTS_FILE
    app = create_sandbox_app(state, snapshot_path=snapshot, notifier_settings=notifier_settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = _listen(host, port)
    bound_port = sock.getsockname()[1]
    try:
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    display_host = f"[{host}]" if ":" in host else host
    return RunningSandbox(
        url=f"https://{display_host}:{bound_port}",
        ca_path=ca_path,
        grants_path=snapshot,
        state=state,
        seed=seed_info,
        _runner=runner,
    )


async def run_sandbox(
    host: str,
    port: int,
    data_dir: str | Path,
    seed: bool,
    *,
    allow_http_notifications: bool = False,
) -> None:
    """Serve until SIGINT or SIGTERM, printing how to use the sandbox once it is up."""
    sandbox = await start_sandbox(
        host, port, data_dir, seed=seed, allow_http_notifications=allow_http_notifications
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        print(sandbox.summary(), flush=True)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await sandbox.close()


def main(
    host: str, port: int, data_dir: str, seed: bool, *, allow_http_notifications: bool = False
) -> None:
    """Entry point of ``relay sandbox``: run until SIGINT or SIGTERM.

    ``allow_http_notifications`` accepts ``http://`` notification URLs on loopback
    addresses, for a relay that serves plain http locally.
    """
    asyncio.run(
        run_sandbox(host, port, data_dir, seed, allow_http_notifications=allow_http_notifications)
    )
