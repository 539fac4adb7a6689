"""Settings: TOML, environment overrides, and one clear message per bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import Settings, load_settings
from relay.errors import ConfigError


def test_defaults_without_anything() -> None:
    """No file and no environment: port 3000, SQLite in the working directory."""
    settings = load_settings(None, {})
    assert settings == Settings()
    assert settings.server.port == 3000
    assert settings.store.url == "sqlite:///relay.db"
    assert settings.service_url == "http://127.0.0.1:3000"


def test_file_then_environment(tmp_path: Path) -> None:
    """Environment variables override the TOML file, by alias or by RELAY_SECTION_KEY."""
    path = tmp_path / "relay.toml"
    path.write_text('[server]\nport = 4000\nhost = "127.0.0.2"\n[log]\nlevel = "debug"\n')
    settings = load_settings(
        path,
        {
            "RELAY_PORT": "5000",
            "RELAY_SERVICE_URL": "https://relay.example.com/",
            "RELAY_LOG_FORMAT": "json",
            "RELAY_STORE_URL": "postgresql://u@db/relay",
            "RELAY_SECRET": "a-long-enough-secret",
            "UNRELATED": "x",
        },
    )
    assert settings.server.port == 5000
    assert settings.server.host == "127.0.0.2"
    assert settings.log.level == "debug"
    assert settings.log.format == "json"
    assert settings.store.url == "postgresql://u@db/relay"
    assert settings.security.secret == "a-long-enough-secret"
    assert settings.service_url == "https://relay.example.com"


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ("", {"RELAY_PORT": "0"}, "server.port"),
        ("", {"RELAY_PORT": "x"}, "server.port"),
        ("[server]\nport = true\n", {}, "server.port"),
        ("[server]\nhost = 5\n", {}, "server.host"),
        ("[server]\nprot = 5\n", {}, "server.prot"),
        ("[nope]\nx = 1\n", {}, "nope"),
        ("", {"RELAY_STORE_URL": "mysql://x"}, "store.url"),
        ("", {"RELAY_SECRET": "short"}, "security.secret"),
        ("", {"RELAY_LOG_LEVEL": "loud"}, "log.level"),
        ("", {"RELAY_SERVICE_URL": "ftp://x"}, "server.service_url"),
        ("", {"RELAY_GRAPH_URL": "nope"}, "microsoft.graph_url"),
        ("", {"RELAY_CA_BUNDLE": "/does/not/exist.pem"}, "microsoft.ca_bundle"),
        ("", {"RELAY_IMAP_PUSH_CHECK": "-1"}, "imap.push_check"),
        ("", {"RELAY_SECURITY_TRUSTED_PROXIES": "10.0.0.0/8,proxy"}, "security.trusted_proxies"),
        ("", {"RELAY_SECURITY_AUDIT_RETENTION_DAYS": "0"}, "security.audit_retention_days"),
    ],
)
def test_bad_setting_names_key(tmp_path: Path, toml: str, env: dict[str, str], key: str) -> None:
    """Every malformed value is reported with its key."""
    path = tmp_path / "relay.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env)
    assert caught.value.key == key


def test_missing_and_broken_file(tmp_path: Path) -> None:
    """A missing or unparsable file is named as --config."""
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "none.toml", {})
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, {})


def test_example_config_is_valid() -> None:
    """config.example.toml documents real keys with their defaults."""
    example = Path(__file__).parent.parent / "config.example.toml"
    assert load_settings(example, {}) == Settings()
