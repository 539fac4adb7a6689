"""Settings: TOML file + ``RELAY_*`` environment -> frozen dataclasses.

This is the only module that reads the environment or a config file. Every other module gets
the piece of :class:`Settings` it needs passed down explicitly.

Environment variables override the file. Every key is reachable as
``RELAY_<SECTION>_<KEY>`` (``RELAY_WEBHOOKS_ALLOW_NETWORKS``); the documented short names
(``RELAY_HOST``, ``RELAY_PORT``, ``RELAY_SECRET`` ...) are aliases kept in :data:`ENV_ALIASES`.
"""

from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str = "sqlite:///relay.db"
    # Connections in the pool (PostgreSQL only; SQLite uses one writer).
    pool_size: int = 10


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    # An API token accepted in addition to issued ones (stored hashed at start-up).
    api_token: str = ""
    # Key material that encrypts stored credentials. Empty: a key file is used instead.
    secret: str = ""
    # Where the generated key lives when `secret` is empty (created with mode 0600).
    key_file: str = "relay.key"


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


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    log: LogSettings = field(default_factory=LogSettings)
    microsoft: MicrosoftSettings = field(default_factory=MicrosoftSettings)

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
    scheme = urlsplit(s.store.url).scheme
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(
            "store.url", f"must start with sqlite:/// or postgresql:// (got {s.store.url!r})"
        )
    if s.store.pool_size < 1:
        raise ConfigError("store.pool_size", "must be at least 1")
    if s.security.secret and len(s.security.secret) < 16:
        raise ConfigError("security.secret", "must be at least 16 characters long")
    if s.log.level not in _LOG_LEVELS:
        raise ConfigError("log.level", f"must be one of {', '.join(_LOG_LEVELS)}")
    if s.log.format not in _LOG_FORMATS:
        raise ConfigError("log.format", f"must be one of {', '.join(_LOG_FORMATS)}")
    _check_http_url("microsoft.graph_url", s.microsoft.graph_url)
    _check_http_url("microsoft.authority_host", s.microsoft.authority_host)
    if s.microsoft.ca_bundle and not Path(s.microsoft.ca_bundle).is_file():
        raise ConfigError("microsoft.ca_bundle", f"file not found: {s.microsoft.ca_bundle}")


def _check_http_url(key: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"must be an http(s) URL, got {value!r}")
