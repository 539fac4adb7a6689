"""Typed application keys for everything handlers share."""

from __future__ import annotations

from aiohttp import web

from relay.auth.crypto import Cipher
from relay.auth.tokens import TokenManager
from relay.config import Settings
from relay.mailbox.access import Mailboxes
from relay.mailbox.notify import Enricher
from relay.metrics import Metrics
from relay.send.worker import OutboxWorker
from relay.sources.supervisor import Supervisor
from relay.store import Store
from relay.webhooks.worker import DeliveryWorker

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
CIPHER = web.AppKey("cipher", Cipher)
# Hashes of tokens already checked against the store (tokens cannot be revoked through the API).
AUTH_CACHE = web.AppKey("auth_cache", set[str])
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
