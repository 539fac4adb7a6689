"""Where a queue sink route publishes (pure: no I/O).

A route of ``type`` ``amqp``, ``nats`` or ``redis`` names its broker with a URL and, per
kind, where on that broker its messages go:

========  ==========================================  ==========================================
type      url                                         target
========  ==========================================  ==========================================
amqp      ``amqp://user:pass@host:5672/vhost``        ``exchange``; routing key
                                                      ``[routingKeyPrefix.]<event>``
nats      ``nats://[user:pass@]host:4222``            subject ``<subject>.<event>``; ``stream``
                                                      (optional) the JetStream stream expected
redis     ``redis://[user:pass@]host:6379/0``         ``stream`` (the key); ``maxLen``
                                                      (optional, approximate trimming)
========  ==========================================  ==========================================

The URL may carry the broker's password: it is stored encrypted, and only
:func:`redacted` forms of it are shown or logged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import SplitResult, unquote, urlsplit

HTTP: Final = "http"
AMQP: Final = "amqp"
NATS: Final = "nats"
REDIS: Final = "redis"
SINK_KINDS: Final = (AMQP, NATS, REDIS)
ROUTE_TYPES: Final = (HTTP, *SINK_KINDS)

DEFAULT_PORTS: Final = {AMQP: 5672, NATS: 4222, REDIS: 6379}

# Which of a route's sink fields each kind takes; ``required`` must be given.
OPTIONS: Final[dict[str, tuple[str, ...]]] = {
    HTTP: (),
    AMQP: ("exchange", "routingKeyPrefix"),
    NATS: ("subject", "stream"),
    REDIS: ("stream", "maxLen"),
}
REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    HTTP: (),
    AMQP: ("exchange",),
    NATS: ("subject",),
    REDIS: ("stream",),
}
ALL_OPTIONS: Final = ("exchange", "routingKeyPrefix", "subject", "stream", "maxLen")
_ATTRIBUTES: Final = {
    "exchange": "exchange",
    "routingKeyPrefix": "routing_key_prefix",
    "subject": "subject",
    "stream": "stream",
    "maxLen": "max_len",
}

# A NATS subject token: no whitespace, no wildcards, no dots (those separate tokens).
_NATS_TOKEN = re.compile(r"[^\s.*>]+")
# AMQP short strings are at most 255 bytes; names of exchanges use a restricted alphabet.
_AMQP_EXCHANGE = re.compile(r"[A-Za-z0-9_.:\-]{1,255}")
_AMQP_PREFIX = re.compile(r"[^\s#*]{1,200}")
# JetStream stream names: no whitespace, dots, wildcards or path separators.
_NATS_STREAM = re.compile(r"[^\s.*>/\\]{1,255}")


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """A parsed broker URL. ``path`` is the AMQP virtual host (``/`` by default) or the
    Redis database number as text; empty for NATS."""

    kind: str
    host: str
    port: int
    username: str | None
    password: str | None
    path: str


@dataclass(frozen=True, slots=True)
class SinkOptions:
    """A sink route's target fields, as stored (the API's names)."""

    exchange: str | None = None
    routing_key_prefix: str | None = None
    subject: str | None = None
    stream: str | None = None
    max_len: int | None = None

    def get(self, name: str) -> str | int | None:
        """The field the API calls ``name``."""
        value: str | int | None = getattr(self, _ATTRIBUTES[name])
        return value

    def to_json(self) -> dict[str, str | int]:
        """The fields that are set, by their API names."""
        return {k: v for k in ALL_OPTIONS if (v := self.get(k)) is not None}

    @classmethod
    def from_json(cls, stored: Mapping[str, Any] | None) -> SinkOptions:
        """From API names (a request body or the stored column); others are ignored."""
        if not stored:
            return cls()
        return cls(**{_ATTRIBUTES[k]: v for k, v in stored.items() if k in _ATTRIBUTES})


def _split(kind: str, url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme.lower() != kind:
        raise ValueError(f"must be a {kind}:// URL for a route of type {kind!r}")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or a fragment")
    if not parts.hostname:
        raise ValueError("must name the broker's host")
    try:
        parts.port  # noqa: B018 - reading it validates it
    except ValueError:
        raise ValueError("has an invalid port") from None
    return parts


def parse_broker_url(kind: str, url: str) -> BrokerUrl:
    """``url`` parsed for a sink of ``kind``; ValueError saying what is wrong."""
    if kind not in SINK_KINDS:
        raise ValueError(f"unknown sink type {kind!r}")
    parts = _split(kind, url)
    path = unquote(parts.path)
    if kind == AMQP:
        # amqp://host/ and amqp://host name the default virtual host "/"; amqp://host/%2F too.
        vhost = path[1:] if path.startswith("/") else path
        path = vhost or "/"
    elif kind == REDIS:
        db = path.strip("/") or "0"
        if not db.isdigit() or int(db) > 15:
            raise ValueError("the path must be a database number from 0 to 15 (redis://host/0)")
        path = db
    elif path not in ("", "/"):
        raise ValueError("must be nats://[user:password@]host:port, nothing after the port")
    else:
        path = ""
    return BrokerUrl(
        kind=kind,
        host=str(parts.hostname),
        port=parts.port or DEFAULT_PORTS[kind],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        path=path,
    )


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***`` (what the API shows and logs carry)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{parts.username or ''}:***@{host}{port}"
    return parts._replace(netloc=netloc).geturl()


def check_options(kind: str, options: SinkOptions) -> None:
    """ValueError naming the field (``field: problem``) when ``options`` do not fit ``kind``."""
    taken = OPTIONS[kind]
    for name in ALL_OPTIONS:
        value = options.get(name)
        if value is not None and name not in taken:
            fit = [t for t, names in OPTIONS.items() if name in names]
            raise ValueError(f"{name}: only routes of type {' or '.join(fit)} take it")
    for name in REQUIRED[kind]:
        if options.get(name) in (None, ""):
            raise ValueError(f"{name}: required for a route of type {kind}")
    if kind == AMQP:
        if not _AMQP_EXCHANGE.fullmatch(options.exchange or ""):
            raise ValueError(
                "exchange: 1 to 255 letters, digits, '-', '_', '.' or ':' (an AMQP exchange name)"
            )
        prefix = options.routing_key_prefix
        if prefix is not None and not _AMQP_PREFIX.fullmatch(prefix):
            raise ValueError("routingKeyPrefix: up to 200 characters, no whitespace, '*' or '#'")
    elif kind == NATS:
        tokens = (options.subject or "").split(".")
        if len(options.subject or "") > 200 or not all(_NATS_TOKEN.fullmatch(t) for t in tokens):
            raise ValueError(
                "subject: dot-separated tokens without whitespace or wildcards, e.g. mail.events"
            )
        if options.stream is not None and not _NATS_STREAM.fullmatch(options.stream):
            raise ValueError("stream: a JetStream stream name (no whitespace, '.', '*', '>', '/')")
    elif kind == REDIS:
        stream = options.stream or ""
        if len(stream.encode()) > 512 or any(c in stream for c in "\r\n\0"):
            raise ValueError("stream: a key of at most 512 bytes without line breaks")
        if options.max_len is not None and options.max_len < 1:
            raise ValueError("maxLen: at least 1")


def routing_key(prefix: str | None, event: str) -> str:
    """The AMQP routing key of an event: ``prefix.event``, or the event name alone."""
    return f"{prefix}.{event}" if prefix else event


def nats_subject(subject: str, event: str) -> str:
    """The NATS subject an event is published on: ``subject.event``."""
    return f"{subject}.{event}"


def address_key(kind: str, url: str) -> str:
    """What identifies one broker connection: the kind and the whole URL (credentials
    included, so that two sets of credentials never share a connection)."""
    return f"{kind} {url}"
