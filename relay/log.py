"""structlog set-up: JSON in production, console on a terminal, secrets redacted.

Every log line passes :func:`redact`, which masks values whose key names a secret and any
``Bearer``/``whsec_`` token that slipped into a string.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from relay.config import LogSettings

REDACTED = "[redacted]"

_SECRET_KEYS = frozenset(
    {
        "password",
        "pass",
        "accesstoken",
        "access_token",
        "refreshtoken",
        "refresh_token",
        "clientsecret",
        "client_secret",
        "authorization",
        "secret",
        "servicesecret",
        "token",
        "api_token",
        "id_token",
        "code_verifier",
        "clientstate",
    }
)
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/=]+"),
    re.compile(r"whsec_[A-Za-z0-9+/=]+"),
    re.compile(r"(?i)(auth=Bearer\s+)[^\x01\s]+"),
)


def _is_secret_key(key: str) -> bool:
    return key.lower().replace("-", "_") in _SECRET_KEYS or key.lower() in _SECRET_KEYS


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for pattern in _SECRET_PATTERNS:
            value = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, value)
        return value
    if isinstance(value, Mapping):
        return {k: (REDACTED if _is_secret_key(str(k)) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets by key name and by shape."""
    for key in list(event_dict):
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def protocol_log(protocol: str, account: str) -> Any:
    """The protocol log of an account whose ``logs`` setting is on (EmailEngine's per-account
    log): debug lines with ``account`` and ``protocol`` bound, written whatever the configured
    level, through the same processors (and redaction) as every other line."""
    logger = structlog.wrap_logger(
        None, wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
    )
    return logger.bind(account=account, protocol=protocol)


class MalformedRequests(logging.Filter):
    """aiohttp logs a request its parser refused (a 100 KiB header, a broken chunk) at error
    level with a traceback whose message quotes the offending bytes, which may be part of an
    ``Authorization`` header. A client's malformed request is not the relay's error: it is
    logged at info, by its kind and status only."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "malformed HTTP request refused: %s (%s)"
            record.args = (type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.INFO
            record.levelname = "INFO"
        return True


def configure(settings: LogSettings, *, stream: Any = None) -> None:
    """Configure structlog (and stdlib logging, which libraries use) once at start-up."""
    out = stream or sys.stderr
    level = getattr(logging, settings.level.upper())
    use_console = settings.format == "console" or (
        settings.format == "auto" and hasattr(out, "isatty") and out.isatty()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # Library logs (aiohttp access log, alembic) go through the same redaction and renderer.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                redact,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    for old in [f for f in server_log.filters if isinstance(f, MalformedRequests)]:
        server_log.removeFilter(old)
    server_log.addFilter(MalformedRequests())
    logging.getLogger("alembic").setLevel(logging.WARNING)
