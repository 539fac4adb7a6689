"""Typed application keys for everything handlers share."""

from __future__ import annotations

from aiohttp import web

from relay.api.endpoint import Endpoint
from relay.auth.crypto import Cipher
from relay.auth.grant_cache import GrantCache
from relay.auth.grants import Grant
from relay.auth.ratelimit import RateLimiter
from relay.auth.tokens import TokenManager
from relay.config import Settings
from relay.mailbox.access import Mailboxes
from relay.mailbox.notify import Enricher
from relay.metrics import Metrics
from relay.send.worker import OutboxWorker
from relay.sources.supervisor import Supervisor
from relay.store import Store, token_log
from relay.store.batched import Appends
from relay.store.bus import Bus
from relay.webhooks.worker import DeliveryWorker

SETTINGS = web.AppKey("settings", Settings)
# This node's id (leases, claimed queue rows, GET /v1/cluster).
NODE = web.AppKey("node", str)
# Wake-ups to and from the other nodes (relay.store.bus).
BUS = web.AppKey("bus", Bus)
STORE = web.AppKey("store", Store)
CIPHER = web.AppKey("cipher", Cipher)
# Grants of tokens recently read from the store, by token hash. Whoever deletes or changes a
# token drops it here (GrantCache.forget).
AUTH_CACHE = web.AppKey("auth_cache", GrantCache)
# The grant of the token that authenticated the request (relay.api.middleware.request_grant).
GRANT = web.RequestKey("grant", Grant)
# The route table by (method, route template): what the authentication middleware checks.
ROUTES = web.AppKey("routes", dict[tuple[str, str], Endpoint])
METRICS = web.AppKey("metrics", Metrics)
WORKER = web.AppKey("worker", DeliveryWorker)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
# Access tokens of OAuth2 accounts (refresh, delegation, consent flows).
TOKENS = web.AppKey("tokens", TokenManager)
# Sends queued mail (only on nodes with send.deliver).
OUTBOX = web.AppKey("outbox", OutboxWorker)
# Reads and changes mailboxes (messages API, webhook content).
MAILBOXES = web.AppKey("mailboxes", Mailboxes)
# Adds message content to messageNew events (only on nodes that watch mailboxes).
ENRICHER = web.AppKey("enricher", Enricher)
# Per-token rate limits counted on this node (relay.api.guard).
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
# The audit log's entries, written in batches (relay.api.guard.audit).
AUDIT_LOG = web.AppKey("audit_log", Appends[token_log.Entry])
