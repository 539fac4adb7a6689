"""Tables and status names, in one place.

Times are stored as integer epoch milliseconds (``*_ms``): portable across both engines,
cheap to compare in the delivery queue, and free of time-zone surprises in SQLite.
Secrets live only in ``LargeBinary`` columns written by :class:`relay.auth.crypto.Cipher`.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (autoincrementing);
# BIGINT stays BIGINT on PostgreSQL.
Seq = BigInteger().with_variant(Integer(), "sqlite")

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("source", String(16), nullable=False),  # "issued" | "config"
    Column("created_ms", BigInteger, nullable=False),
)

oauth2_apps = Table(
    "oauth2_apps",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("provider", String(32), nullable=False),  # "outlook" | "outlookService"
    Column("client_id", Text, nullable=False),
    Column("client_secret", LargeBinary, nullable=True),
    Column("authority", Text, nullable=False),
    Column("redirect_url", Text, nullable=True),
    Column("base_scopes", String(16), nullable=False),  # "imap" | "api"
    Column("extra_scopes", JSON, nullable=False),
    Column("skip_scopes", JSON, nullable=False),
    Column("enabled", Integer, nullable=False, default=1),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(256), primary_key=True),
    Column("name", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("backend", String(16), nullable=False),  # "imap" | "graph"
    Column("state", String(32), nullable=False),
    Column("oauth2_app", String(64), ForeignKey("oauth2_apps.id"), nullable=True),
    Column("delegated_account", String(256), ForeignKey("accounts.id"), nullable=True),
    Column("delegated_user", Text, nullable=True),
    # Everything from the API payload that is not a secret (imap/smtp hosts, path, ...).
    Column("config", JSON, nullable=False),
    # Encrypted JSON: passwords, access and refresh tokens.
    Column("secrets", LargeBinary, nullable=True),
    Column("last_error", JSON, nullable=True),
    Column("reconnect_requested_ms", BigInteger, nullable=True),
    Column("sync_requested_ms", BigInteger, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index(None, "delegated_account"),
    Index(None, "state"),
)

events = Table(
    "events",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("account", String(256), nullable=True),
    Column("event", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    # The serialized envelope: these exact bytes are what webhooks sign and send.
    Column("payload", Text, nullable=False),
    Index(None, "account", "seq"),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)


class AccountState:
    """Values of ``accounts.state``."""

    INIT = "init"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    AUTHENTICATION_ERROR = "authenticationError"
    CONNECT_ERROR = "connectError"
    DISCONNECTED = "disconnected"

    ALL = (INIT, CONNECTING, CONNECTED, AUTHENTICATION_ERROR, CONNECT_ERROR, DISCONNECTED)
