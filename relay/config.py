"""Settings: TOML file + ``RELAY_*`` environment -> frozen dataclasses.

This is the only module that reads the environment or a config file. Every other module gets
the piece of :class:`Settings` it needs passed down explicitly.

Environment variables override the file. Every key is reachable as
``RELAY_<SECTION>_<KEY>`` (``RELAY_WEBHOOKS_ALLOW_NETWORKS``); the documented short names
(``RELAY_HOST``, ``RELAY_PORT``, ``RELAY_SECRET`` ...) are aliases kept in :data:`ENV_ALIASES`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 3000
    # Public base URL of this service (webhook `serviceUrl`, Graph notification URLs).
    # Empty means http://{host}:{port}.
    service_url: str = ""
    # Seconds to wait for running work (deliveries, sends) to finish on SIGTERM/SIGINT.
    shutdown_timeout: float = 10.0
    # Largest request body, in bytes; larger ones get 413. Routes that carry a message
    # (submit, upload) accept send.max_message_bytes as base64 (4/3 of it) on top.
    max_body_bytes: int = 1048576


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str = "sqlite:///relay.db"
    # Connections in the pool, at most (PostgreSQL only; SQLite uses one writer).
    pool_size: int = 10


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    # An API token accepted in addition to issued ones (stored hashed at start-up).
    api_token: str = ""
    # Key material that encrypts stored credentials. Empty: a key file is used instead.
    secret: str = ""
    # Where the generated key lives when `secret` is empty (created with mode 0600).
    key_file: str = "relay.key"
    # Reverse proxies (CIDRs) whose X-Forwarded-For is believed when a token is restricted
    # to addresses, e.g. ["10.0.0.0/8"]. Empty: X-Forwarded-For is ignored.
    trusted_proxies: tuple[str, ...] = ()
    # Accept the API token as ?access_token= (EmailEngine does); false: the header only.
    query_token: bool = True
    # Days the audit log (writes, sends and deletes made with each token) is kept.
    audit_retention_days: float = 90.0
    # Serve GET /metrics without a token; false: a token with the `metrics` scope is needed.
    metrics_public: bool = False
    # Minutes an admin UI session may stay unused before it must sign in again.
    admin_idle_minutes: float = 30.0


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"
    # "auto" (console on a terminal, JSON otherwise), "json" or "console".
    format: str = "auto"


@dataclass(frozen=True, slots=True)
class MicrosoftSettings:
    graph_url: str = "https://graph.microsoft.com"
    authority_host: str = "https://login.microsoftonline.com"
    # PEM bundle trusted for Microsoft endpoints (the sandbox's CA). Empty: system store.
    ca_bundle: str = ""
    # Seconds before an access token expires at which it is refreshed.
    token_refresh_margin: float = 300.0
    # Seconds a consent link (POST /v1/authentication/form) stays valid.
    consent_link_ttl: float = 86400.0


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    # Networks webhook targets may be in although they are not public (SSRF guard),
    # e.g. ["127.0.0.0/8", "::1/128"]. Empty: only globally routable addresses.
    allow_networks: tuple[str, ...] = ()
    # Run the delivery worker on this node.
    deliver: bool = True
    # Seconds one attempt may take in all (connect, send, status line, headers, first KiB).
    timeout: float = 15.0
    # Deliveries in flight at once on this node, and per route.
    concurrency: int = 256
    route_concurrency: int = 32
    # Deliveries claimed per store round trip.
    batch_size: int = 256
    # Seconds a claimed delivery belongs to this node; after that another node may take it.
    lease: float = 60.0
    # Seconds between queue polls when idle (new local events wake the worker at once).
    poll_interval: float = 0.5
    # A route that has only failed for this many days is disabled.
    disable_after_days: float = 5.0
    # Days delivered (and failed) deliveries stay visible in the log before they are pruned.
    retention_days: float = 7.0
    # Larger events have their largest data fields trimmed (with a marker) to fit.
    max_payload_bytes: int = 262144
    # Upper bound in seconds on a receiver's Retry-After.
    max_retry_after: float = 3600.0


@dataclass(frozen=True, slots=True)
class ImapSettings:
    # Watch mailboxes on this node: IMAP listeners for imap-backend accounts and Graph
    # subscriptions/polling for graph-backend ones (the supervisor runs both).
    watch: bool = True
    # Seconds between IDLE restarts: servers drop an IDLE that runs too long (RFC 2177: 29 min).
    idle_restart: float = 600.0
    # Seconds after which an IDLE connection that saw no push (nor sync) ends IDLE and asks
    # the server once whether the folder changed: servers miss pushes on healthy connections
    # (Exchange Online's IDLE goes quiet). One command per watched folder per interval at
    # most; 0 turns the check off.
    push_check: float = 60.0
    # Seconds a DONE or NOOP may go unanswered before the connection is presumed dead.
    done_timeout: float = 30.0
    # Seconds any other command may take, and connecting (TCP, TLS and greeting) may take.
    command_timeout: float = 60.0
    connect_timeout: float = 30.0
    # Reconnect backoff: reconnect_min seconds, doubling up to reconnect_max, with jitter.
    reconnect_min: float = 1.0
    reconnect_max: float = 300.0
    # Seconds before credentials the server refused are tried again; a reconnect request or
    # an account update tries at once.
    auth_retry: float = 1800.0
    # Seconds between scans of the accounts table (changes made through other nodes).
    scan_interval: float = 5.0
    # Seconds between the rounds of an account's folder poller: LIST (new and deleted
    # folders) and STATUS of every watched folder without its own IDLE connection; a folder
    # whose STATUS changed is synced. Servers without CONDSTORE (Exchange Online) show no
    # flag change in STATUS: each such folder is also fully synced every full_sync_interval.
    poll_interval: float = 30.0
    full_sync_interval: float = 900.0
    # Seconds a node's claim on an account lasts (renewed on every scan); when it runs out,
    # another node takes the account over.
    lease: float = 30.0
    # PEM bundle trusted for IMAP servers instead of the system store. Empty: system store.
    ca_bundle: str = ""


@dataclass(frozen=True, slots=True)
class SendSettings:
    # Run the outbox worker on this node (submitting works on every node).
    deliver: bool = True
    # Messages being sent at once on this node.
    concurrency: int = 16
    # Seconds one attempt (connect, authenticate, transfer) may take.
    timeout: float = 60.0
    # Seconds a claimed message belongs to this node; must outlast an attempt.
    lease: float = 300.0
    # Seconds between outbox polls when idle (local submits wake the worker at once).
    poll_interval: float = 1.0
    # Retry backoff: retry_min seconds, doubling up to retry_max.
    retry_min: float = 30.0
    retry_max: float = 3600.0
    # Attempts when a submit does not say (deliveryAttempts).
    attempts: int = 10
    # Largest message accepted, in bytes of MIME; larger submits get 413.
    max_message_bytes: int = 26214400
    # Seconds an Idempotency-Key is remembered.
    idempotency_ttl: float = 86400.0
    # Graph sendMail: keep a copy in the sending mailbox's Sent Items.
    save_to_sent_items: bool = True


@dataclass(frozen=True, slots=True)
class GraphSettings:
    # Seconds between delta polls of accounts Graph will not notify about (delegated shared
    # mailboxes); jittered by 10%.
    poll_interval: float = 30.0
    # Seconds a subscription is created or renewed for (Graph allows at most 604,200).
    subscription_lifetime: float = 259200.0
    # Seconds before expiry at which a subscription is renewed.
    subscription_renew_before: float = 86400.0
    # Backoff after a failure: retry_min seconds, doubling up to retry_max, with jitter.
    retry_min: float = 1.0
    retry_max: float = 300.0
    # Seconds Graph may be unavailable (503/504, timeouts, connection resets) before the
    # account is reported as connectError (once per outage); retries go on meanwhile.
    outage_grace: float = 300.0
    # Seconds one Graph request may take before it counts as timed out.
    request_timeout: float = 30.0
    # While notifications for an account arrive faster than its catch-ups finish, seconds
    # at least between two catch-ups (the notifications meanwhile are handled together).
    catch_up_interval: float = 0.1


@dataclass(frozen=True, slots=True)
class MailboxSettings:
    # IMAP connections per account for API reads and webhook content, apart from the IDLE
    # listeners (a read never waits behind or disturbs IDLE).
    pool_size: int = 2
    # Seconds an unused pooled connection stays open.
    pool_idle: float = 60.0
    # Seconds one webhook content fetch (text, headers, attachments) may take; after that the
    # event is stored with what was read and ``data.textError``.
    notify_timeout: float = 10.0
    # Bytes read per FETCH when streaming a source or an attachment.
    chunk_bytes: int = 1048576


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    # This node's id in the cluster (cluster_nodes, GET /v1/cluster, leases). Empty: host
    # name, process id and a random suffix, new at every start. Give each node its own.
    node_id: str = ""
    # The address other nodes and operators reach this node's API at. Empty: the listening
    # host and port.
    address: str = ""


@dataclass(frozen=True, slots=True)
class StreamSettings:
    # Seconds without an event after which GET /v1/events/stream sends a heartbeat comment.
    heartbeat: float = 15.0
    # Seconds between looks for stored events without a stream position and for positions
    # other nodes gave (the fallback: local writes and the bus wake the stream at once).
    poll_interval: float = 1.0
    # Events read from the store per round of a stream (and the most one holds in memory);
    # a stream that keeps up takes up to ten times as many (at most about 128 KiB) at once from
    # the node's window of recent events, which every stream shares.
    page_size: int = 100
    # Seconds after which the relay ends a stream (the client resumes with Last-Event-ID);
    # 0: no limit.
    max_duration: float = 0.0


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    log: LogSettings = field(default_factory=LogSettings)
    microsoft: MicrosoftSettings = field(default_factory=MicrosoftSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    imap: ImapSettings = field(default_factory=ImapSettings)
    graph: GraphSettings = field(default_factory=GraphSettings)
    send: SendSettings = field(default_factory=SendSettings)
    mailbox: MailboxSettings = field(default_factory=MailboxSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)

    @property
    def service_url(self) -> str:
        """The public base URL without a trailing slash."""
        if self.server.service_url:
            return self.server.service_url.rstrip("/")
        return f"http://{self.server.host}:{self.server.port}"


ENV_ALIASES: Mapping[str, tuple[str, str]] = {
    "RELAY_HOST": ("server", "host"),
    "RELAY_PORT": ("server", "port"),
    "RELAY_SERVICE_URL": ("server", "service_url"),
    "RELAY_API_TOKEN": ("security", "api_token"),
    "RELAY_SECRET": ("security", "secret"),
    "RELAY_GRAPH_URL": ("microsoft", "graph_url"),
    "RELAY_AUTHORITY_HOST": ("microsoft", "authority_host"),
    "RELAY_CA_BUNDLE": ("microsoft", "ca_bundle"),
}

_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("auto", "json", "console")


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (TOML, optional) and ``environ``; raise :class:`ConfigError` naming the key."""
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with path.open("rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("--config", f"file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"not valid TOML: {exc}") from None
        for section, values in doc.items():
            if section not in _sections():
                raise ConfigError(section, "unknown section")
            if not isinstance(values, dict):
                raise ConfigError(section, "must be a table")
            raw[section] = dict(values)
    for name, value in (environ or {}).items():
        target = _env_target(name)
        if target is not None:
            raw.setdefault(target[0], {})[target[1]] = value
    settings = _build(raw)
    _check(settings)
    return settings


def _sections() -> dict[str, type[Any]]:
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings)}


def _env_target(name: str) -> tuple[str, str] | None:
    if name in ENV_ALIASES:
        return ENV_ALIASES[name]
    if not name.startswith("RELAY_"):
        return None
    rest = name[len("RELAY_") :].lower()
    for section, cls in _sections().items():
        prefix = section + "_"
        if rest.startswith(prefix):
            key = rest[len(prefix) :]
            if key in {f.name for f in dataclasses.fields(cls)}:
                return section, key
    return None


def _build(raw: dict[str, dict[str, Any]]) -> Settings:
    built: dict[str, Any] = {}
    for section, cls in _sections().items():
        values = raw.get(section, {})
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(f"{section}.{key}", "unknown setting")
        kwargs = {
            key: _convert(f"{section}.{key}", hints[key], value) for key, value in values.items()
        }
        built[section] = cls(**kwargs)
    return Settings(**built)


def _convert(key: str, kind: Any, value: Any) -> Any:
    """Coerce a TOML value or an environment string to the annotated type."""
    origin = typing.get_origin(kind)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected an integer, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a number, got {value!r}") from None
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if origin is tuple:
        (item,) = {a for a in typing.get_args(kind) if a is not Ellipsis}
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return tuple(_convert(key, item, v) for v in value)
    if origin in (types.UnionType, typing.Union):
        raise ConfigError(key, "unsupported setting type")  # pragma: no cover - programming error
    raise ConfigError(key, f"unsupported setting type {kind!r}")  # pragma: no cover


def _check(settings: Settings) -> None:
    """Reject values that parse but cannot work; each message names its key."""
    s = settings
    if not 0 < s.server.port < 65536:
        raise ConfigError("server.port", f"must be 1-65535, got {s.server.port}")
    if s.server.service_url:
        _check_http_url("server.service_url", s.server.service_url)
    if s.server.shutdown_timeout < 0:
        raise ConfigError("server.shutdown_timeout", "must not be negative")
    if s.server.max_body_bytes < 4096:
        raise ConfigError("server.max_body_bytes", "must be at least 4096")
    scheme = urlsplit(s.store.url).scheme
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(
            "store.url", f"must start with sqlite:/// or postgresql:// (got {s.store.url!r})"
        )
    if s.store.pool_size < 1:
        raise ConfigError("store.pool_size", "must be at least 1")
    if s.security.secret and len(s.security.secret) < 16:
        raise ConfigError("security.secret", "must be at least 16 characters long")
    for network in s.security.trusted_proxies:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(
                "security.trusted_proxies", f"{network!r} is not an IP network like 10.0.0.0/8"
            ) from None
    if s.security.audit_retention_days <= 0:
        raise ConfigError("security.audit_retention_days", "must be greater than 0")
    if s.log.level not in _LOG_LEVELS:
        raise ConfigError("log.level", f"must be one of {', '.join(_LOG_LEVELS)}")
    if s.log.format not in _LOG_FORMATS:
        raise ConfigError("log.format", f"must be one of {', '.join(_LOG_FORMATS)}")
    _check_http_url("microsoft.graph_url", s.microsoft.graph_url)
    _check_http_url("microsoft.authority_host", s.microsoft.authority_host)
    if s.microsoft.ca_bundle and not Path(s.microsoft.ca_bundle).is_file():
        raise ConfigError("microsoft.ca_bundle", f"file not found: {s.microsoft.ca_bundle}")
    if s.microsoft.token_refresh_margin < 0:
        raise ConfigError("microsoft.token_refresh_margin", "must not be negative")
    if s.microsoft.consent_link_ttl <= 0:
        raise ConfigError("microsoft.consent_link_ttl", "must be greater than 0")
    _check_webhooks(s.webhooks)
    _check_imap(s.imap)
    _check_graph(s.graph)
    _check_send(s.send)
    _check_stream(s.stream)
    _check_mailbox(s.mailbox)
    if len(s.cluster.node_id) > 64:
        raise ConfigError("cluster.node_id", "must be at most 64 characters")
    if s.cluster.address:
        _check_http_url("cluster.address", s.cluster.address)


def _check_mailbox(m: MailboxSettings) -> None:
    if m.pool_size < 1:
        raise ConfigError("mailbox.pool_size", "must be at least 1")
    for key, value in (("pool_idle", m.pool_idle), ("notify_timeout", m.notify_timeout)):
        if value <= 0:
            raise ConfigError(f"mailbox.{key}", "must be greater than 0")
    if m.chunk_bytes < 4096:
        raise ConfigError("mailbox.chunk_bytes", "must be at least 4096")


def _check_webhooks(w: WebhookSettings) -> None:
    for network in w.allow_networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(
                "webhooks.allow_networks", f"{network!r} is not an IP network like 127.0.0.0/8"
            ) from None
    positive = {
        "timeout": w.timeout,
        "concurrency": w.concurrency,
        "route_concurrency": w.route_concurrency,
        "batch_size": w.batch_size,
        "lease": w.lease,
        "poll_interval": w.poll_interval,
        "disable_after_days": w.disable_after_days,
        "retention_days": w.retention_days,
        "max_payload_bytes": w.max_payload_bytes,
        "max_retry_after": w.max_retry_after,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"webhooks.{key}", "must be greater than 0")
    if w.lease <= w.timeout:
        raise ConfigError("webhooks.lease", "must be longer than webhooks.timeout")
    if w.max_payload_bytes < 4096:
        raise ConfigError("webhooks.max_payload_bytes", "must be at least 4096")


def _check_imap(m: ImapSettings) -> None:
    positive = {
        "idle_restart": m.idle_restart,
        "done_timeout": m.done_timeout,
        "command_timeout": m.command_timeout,
        "connect_timeout": m.connect_timeout,
        "reconnect_min": m.reconnect_min,
        "reconnect_max": m.reconnect_max,
        "auth_retry": m.auth_retry,
        "scan_interval": m.scan_interval,
        "poll_interval": m.poll_interval,
        "full_sync_interval": m.full_sync_interval,
        "lease": m.lease,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"imap.{key}", "must be greater than 0")
    if m.push_check < 0:
        raise ConfigError("imap.push_check", "must not be negative (0 turns the check off)")
    if m.reconnect_max < m.reconnect_min:
        raise ConfigError("imap.reconnect_max", "must not be less than imap.reconnect_min")
    if m.lease < 2 * m.scan_interval:
        raise ConfigError("imap.lease", "must be at least twice imap.scan_interval")
    if m.ca_bundle and not Path(m.ca_bundle).is_file():
        raise ConfigError("imap.ca_bundle", f"file not found: {m.ca_bundle}")


def _check_send(m: SendSettings) -> None:
    positive = {
        "concurrency": m.concurrency,
        "timeout": m.timeout,
        "lease": m.lease,
        "poll_interval": m.poll_interval,
        "retry_min": m.retry_min,
        "retry_max": m.retry_max,
        "attempts": m.attempts,
        "max_message_bytes": m.max_message_bytes,
        "idempotency_ttl": m.idempotency_ttl,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"send.{key}", "must be greater than 0")
    if m.lease <= m.timeout:
        raise ConfigError("send.lease", "must be longer than send.timeout")
    if m.retry_max < m.retry_min:
        raise ConfigError("send.retry_max", "must not be less than send.retry_min")


def _check_stream(m: StreamSettings) -> None:
    for key in ("heartbeat", "poll_interval", "page_size"):
        if getattr(m, key) <= 0:
            raise ConfigError(f"stream.{key}", "must be greater than 0")
    if m.page_size > 1000:
        raise ConfigError("stream.page_size", "must be at most 1000")
    if m.max_duration < 0:
        raise ConfigError("stream.max_duration", "must not be negative (0: no limit)")


def _check_graph(g: GraphSettings) -> None:
    for key in ("poll_interval", "subscription_lifetime", "retry_min", "retry_max"):
        if getattr(g, key) <= 0:
            raise ConfigError(f"graph.{key}", "must be greater than 0")
    if g.subscription_lifetime > 10070 * 60:
        raise ConfigError("graph.subscription_lifetime", "must be at most 604200 (10,070 min)")
    if not 0 <= g.subscription_renew_before < g.subscription_lifetime:
        raise ConfigError(
            "graph.subscription_renew_before", "must be less than graph.subscription_lifetime"
        )
    if g.retry_max < g.retry_min:
        raise ConfigError("graph.retry_max", "must not be less than graph.retry_min")
    if g.outage_grace < 0:
        raise ConfigError("graph.outage_grace", "must not be negative")
    if g.request_timeout <= 0:
        raise ConfigError("graph.request_timeout", "must be greater than 0")
    if not 0 <= g.catch_up_interval <= 60:
        raise ConfigError("graph.catch_up_interval", "must be between 0 and 60")


def _check_http_url(key: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"must be an http(s) URL, got {value!r}")
