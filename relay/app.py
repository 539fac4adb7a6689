"""``create_app(settings)``: the aiohttp application and the lifecycle of what it owns.

Each long-lived resource is one ``cleanup_ctx`` generator under a typed ``web.AppKey``
(see ``relay.api.keys``), opened in order on start-up and closed in reverse on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import structlog
from aiohttp import web

from relay.api import admin, guard
from relay.api.events import SEQUENCER
from relay.api.health import metrics_middleware
from relay.api.keys import (
    AUDIT_LOG,
    AUTH_CACHE,
    BUS,
    CIPHER,
    ENRICHER,
    MAILBOXES,
    METRICS,
    NODE,
    OUTBOX,
    RATE_LIMITER,
    SETTINGS,
    STORE,
    SUPERVISOR,
    TOKENS,
    WORKER,
)
from relay.api.limits import PARSER_LIMITS, limits_middleware
from relay.api.middleware import auth_middleware, errors_middleware
from relay.api.routes import setup_routes
from relay.auth.api_tokens import new_token
from relay.auth.crypto import load_cipher
from relay.auth.grant_cache import GrantCache
from relay.auth.identity import MicrosoftIdentity
from relay.auth.ratelimit import RateLimiter
from relay.auth.scopes import GRAPH
from relay.auth.tokens import TokenManager
from relay.config import Settings
from relay.errors import StoreError
from relay.imap.client import ClientOptions
from relay.imap.tls import TlsContexts
from relay.mailbox.access import Mailboxes
from relay.mailbox.graph import GraphMailboxes
from relay.mailbox.notify import Enricher
from relay.mailbox.pool import ImapPool
from relay.metrics import Metrics
from relay.send.worker import OutboxWorker
from relay.sources.graph.client import GraphClients
from relay.sources.graph.watcher import GraphContext
from relay.sources.supervisor import Supervisor
from relay.store import Store, nodes, token_log, tokens
from relay.store.batched import Appends
from relay.store.bus import Bus, listen_dsn
from relay.store.engine import Wake, now_ms
from relay.store.migrate import migrate
from relay.store.single_node import NodeLock
from relay.store.stream import Sequencer
from relay.webhooks.worker import DeliveryWorker

log = structlog.get_logger(__name__)

Announce = Callable[[str], None]

# Seconds between prunings of the audit log.
AUDIT_PRUNE_EVERY = 3600.0


async def prepare_store(settings: Settings, announce: Announce | None = None) -> Store:
    """Open the store, migrate it and make sure an API token exists.

    When no token exists and none is configured, a new one is created and handed to
    ``announce`` (the CLI prints it once; it is never logged).
    """
    store = Store.open(settings.store)
    try:
        await migrate(store)
        async with store.write() as conn:
            if settings.security.api_token:
                await tokens.add(conn, settings.security.api_token, source="config")
            elif await tokens.count(conn) == 0:
                token = new_token()
                await tokens.add(conn, token, source="issued", description="first start")
                if announce is not None:
                    announce(token)
    except BaseException:
        await store.close()
        raise
    return store


async def prune_audit_log(
    store: Store, retention_days: float, *, every: float = AUDIT_PRUNE_EVERY
) -> None:
    """Delete audit log entries older than ``retention_days``, now and every ``every`` seconds
    (every node does it; deleting what another node deleted is harmless)."""
    while True:
        try:
            async with store.write(notify=False) as conn:
                pruned = await token_log.prune(
                    conn, before_ms=now_ms() - int(retention_days * 86_400_000)
                )
            if pruned:
                log.info("pruned the audit log", entries=pruned)
        except StoreError:
            log.warning("audit log pruning failed; will retry")
        await asyncio.sleep(every)


def node_address(settings: Settings) -> str:
    """Where this node's API listens, as other nodes and operators reach it."""
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (a comparison, not a bind)
        host = socket.gethostname()
    return f"http://{host}:{settings.server.port}"


def create_app(
    settings: Settings, *, base_dir: Path | None = None, announce: Announce | None = None
) -> web.Application:
    """Build the application; nothing is opened until it starts."""
    app = web.Application(
        middlewares=[metrics_middleware, errors_middleware, limits_middleware, auth_middleware],
        # Bodies read by aiohttp itself (the /oauth form); JSON bodies are read with the
        # limit of their route (relay.api.limits).
        client_max_size=settings.server.max_body_bytes,
        handler_args=PARSER_LIMITS,
    )
    app[SETTINGS] = settings
    app[NODE] = settings.cluster.node_id or nodes.new_id()
    app[METRICS] = Metrics.create()
    app[AUTH_CACHE] = GrantCache()
    app[CIPHER] = load_cipher(settings.security, base_dir=base_dir or Path.cwd())
    app[RATE_LIMITER] = RateLimiter()
    app.on_response_prepare.append(guard.add_ratelimit_headers)
    setup_routes(app)
    admin.setup(app)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        lock = NodeLock(settings.store.url)
        lock.acquire()
        try:
            app[STORE] = await prepare_store(settings, announce)
            app[METRICS].watch_store(app[STORE].outage)
            app[AUDIT_LOG] = Appends(app[STORE], token_log.append)
            log.info("store ready", engine=app[STORE].dialect)
            yield
            await app[AUDIT_LOG].close()
            await app[STORE].close()
        finally:
            lock.release()

    async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
        bus = Bus(listen_dsn(settings.store.url), app[NODE])
        await bus.start()
        app[BUS] = bus
        yield
        await bus.stop()

    async def stream_ctx(app: web.Application) -> AsyncIterator[None]:
        bus = app[BUS]
        sequencer = Sequencer(
            app[STORE],
            poll_interval=settings.stream.poll_interval,
            announce=lambda: bus.send("events"),
        )
        app[STORE].on_commit(Wake.EVENTS, sequencer.stored)
        bus.subscribe("events", lambda _value: sequencer.wake())
        bus.on_reconnect(sequencer.wake)
        await sequencer.start()
        app[SEQUENCER] = sequencer
        yield
        app[STORE].off_commit(Wake.EVENTS, sequencer.stored)
        await sequencer.stop()

    async def worker_ctx(app: web.Application) -> AsyncIterator[None]:
        if not settings.webhooks.deliver:
            yield
            return
        worker = DeliveryWorker(
            app[STORE], app[CIPHER], settings.webhooks, app[METRICS], node=app[NODE]
        )
        await worker.start()
        app[WORKER] = worker
        yield
        await worker.stop(settings.server.shutdown_timeout)

    async def tokens_ctx(app: web.Application) -> AsyncIterator[None]:
        app[TOKENS] = TokenManager(
            app[STORE],
            app[CIPHER],
            MicrosoftIdentity(settings.microsoft),
            service_url=settings.service_url,
            refresh_margin=settings.microsoft.token_refresh_margin,
            max_payload_bytes=settings.webhooks.max_payload_bytes,
        )
        yield
        await app[TOKENS].close()

    async def mailboxes_ctx(app: web.Application) -> AsyncIterator[None]:
        tokens = app[TOKENS]
        pool = ImapPool(
            app[STORE],
            app[CIPHER],
            tokens.token_for,
            TlsContexts(settings.imap.ca_bundle),
            ClientOptions(
                connect_timeout=settings.imap.connect_timeout,
                command_timeout=settings.imap.command_timeout,
            ),
            size=settings.mailbox.pool_size,
            idle=settings.mailbox.pool_idle,
            reject=tokens.reject,
        )
        bundle = settings.microsoft.ca_bundle

        def context() -> ssl.SSLContext:
            return ssl.create_default_context(cafile=bundle or None)

        async def graph_token(account: str) -> tuple[str, str]:
            return await tokens.access_token(account, GRAPH)

        graph = GraphMailboxes(
            app[STORE],
            settings.microsoft.graph_url,
            graph_token,
            reject=tokens.reject,
            verify=await asyncio.to_thread(context),
            chunk_bytes=settings.mailbox.chunk_bytes,
        )
        app[MAILBOXES] = Mailboxes(
            app[STORE], pool, chunk_bytes=settings.mailbox.chunk_bytes, graph=graph.open
        )
        yield
        await app[MAILBOXES].close()
        await graph.close()

    async def supervisor_ctx(app: web.Application) -> AsyncIterator[None]:
        if not settings.imap.watch:
            yield
            return
        tokens = app[TOKENS]

        async def graph_token(account: str) -> tuple[str, str]:
            return await tokens.access_token(account, GRAPH)

        clients = GraphClients(
            settings.microsoft, graph_token, tokens.reject, timeout=settings.graph.request_timeout
        )
        await clients.start()
        enrich = Enricher(app[STORE], app[MAILBOXES], timeout=settings.mailbox.notify_timeout)
        app[ENRICHER] = enrich
        graph = GraphContext(
            app[STORE],
            app[CIPHER],
            settings.graph,
            clients,
            service_url=settings.service_url,
            max_payload_bytes=settings.webhooks.max_payload_bytes,
            enrich=enrich,
        )
        supervisor = Supervisor(
            app[STORE],
            app[CIPHER],
            settings.imap,
            service_url=settings.service_url,
            max_payload_bytes=settings.webhooks.max_payload_bytes,
            token_for=app[TOKENS].token_for,
            reject=app[TOKENS].reject,
            node=app[NODE],
            address=settings.cluster.address or node_address(settings),
            graph=graph,
            enrich=enrich,
            announce=app[BUS].send,
            metrics=app[METRICS],
        )
        bus = app[BUS]
        bus.subscribe("account", supervisor.notify)
        bus.subscribe("graph", supervisor.wake_graph)
        bus.subscribe("cluster", lambda _value: supervisor.notify(None))
        bus.on_reconnect(lambda: supervisor.notify(None))
        await supervisor.start()
        app[SUPERVISOR] = supervisor
        yield
        await supervisor.stop(settings.server.shutdown_timeout)
        await clients.close()

    async def outbox_ctx(app: web.Application) -> AsyncIterator[None]:
        if not settings.send.deliver:
            yield
            return
        outbox = OutboxWorker(
            app[STORE],
            app[CIPHER],
            settings.send,
            app[TOKENS],
            settings.microsoft,
            service_url=settings.service_url,
            max_payload_bytes=settings.webhooks.max_payload_bytes,
            mailboxes=app[MAILBOXES],
            node=app[NODE],
        )
        await outbox.start()
        app[OUTBOX] = outbox
        yield
        await outbox.stop(settings.server.shutdown_timeout)

    async def audit_retention_ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(
            prune_audit_log(app[STORE], settings.security.audit_retention_days)
        )
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(bus_ctx)
    app.cleanup_ctx.append(stream_ctx)
    app.cleanup_ctx.append(audit_retention_ctx)
    app.cleanup_ctx.append(worker_ctx)
    app.cleanup_ctx.append(tokens_ctx)
    app.cleanup_ctx.append(mailboxes_ctx)
    app.cleanup_ctx.append(supervisor_ctx)
    app.cleanup_ctx.append(outbox_ctx)
    return app
