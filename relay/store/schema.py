"""Tables and status names, in one place.

Times are stored as integer epoch milliseconds (``*_ms``): portable across both engines,
cheap to compare in the delivery queue, and free of time-zone surprises in SQLite.
Secrets live only in ``LargeBinary`` columns written by :class:`relay.auth.crypto.Cipher`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.sql.expression import ColumnElement

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
    Column("source", String(16), nullable=False),  # "issued" | "config" | "api"
    Column("created_ms", BigInteger, nullable=False),
    # The grant (relay.auth.grants; revision 0012). NULL JSON: no limit of that kind.
    Column(
        "account",
        String(256),
        ForeignKey("accounts.id", ondelete="CASCADE", name="fk_api_tokens_account"),
        nullable=True,
        index=True,
    ),
    Column("shared", Boolean, nullable=False, server_default="0"),
    Column("scopes", JSON, nullable=True),
    Column("permissions", JSON, nullable=True),
    Column("restrictions", JSON, nullable=True),
    Column("expires_ms", BigInteger, nullable=True),
    Column("metadata", JSON, nullable=True),
    # The token that minted this one (None: issued on the server or configured).
    Column("parent_id", String(32), nullable=True),
)

# The audit log: one row per write, send or delete made with a token (never a secret or a
# message body).
token_log = Table(
    "token_log",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("token_id", String(32), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),
    Column("route", Text, nullable=False),
    Column("account", String(256), nullable=True),
    Column("status", Integer, nullable=False),
    Column("address", String(64), nullable=True),
    Index("ix_token_log_token_seq", "token_id", "seq"),
    Index("ix_token_log_created", "created_ms"),
)

# Signed-in sessions of the admin UI (revision 0016). The browser holds the session key;
# only its SHA-256 is stored. A session of an API token keeps that token's hash, so that
# revoking the token ends the session; one of the admin password has none.
admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    # The API token's id, or "admin-password".
    Column("subject", String(32), nullable=False),
    Column("token_hash", String(64), nullable=True),
    # The CSRF token every form of the session carries.
    Column("csrf", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("seen_ms", BigInteger, nullable=False),
    Index(None, "seen_ms"),
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
    # The envelope's path (revision 0014): the event stream's ``path`` filter.
    Column("path", Text, nullable=True),
    # The event's place in the event stream (revision 0014), given after its transaction
    # committed, in commit order (relay.store.stream); NULL until then.
    Column("pos", BigInteger, nullable=True),
    Index(None, "account", "seq"),
    Index(None, "pos", unique=True),
    Index(None, "account", "pos"),
)

# One row (id 1): the event stream's last position given, and the highest position pruning
# deleted (a cursor below it has lost events: 410). Revision 0014.
event_stream = Table(
    "event_stream",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_pos", BigInteger, nullable=False),
    Column("pruned_pos", BigInteger, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)


webhook_routes = Table(
    "webhook_routes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("events", JSON, nullable=False),  # ["*"] or event names
    Column("accounts", JSON, nullable=True),  # null: every account
    Column("headers", JSON, nullable=False),
    Column("enabled", Integer, nullable=False),
    Column("disabled_reason", Text, nullable=True),
    Column("ordering", String(8), nullable=False),  # "none" | "fifo"
    Column("retry_schedule", JSON, nullable=True),  # seconds before each attempt; null: default
    # Encrypted whsec_ secrets; the previous one keeps signing until previous_until_ms.
    Column("secret", LargeBinary, nullable=False),
    Column("previous_secret", LargeBinary, nullable=True),
    Column("previous_until_ms", BigInteger, nullable=True),
    Column("failing_since_ms", BigInteger, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    # Revision 0015, queue sinks: "http" | "amqp" | "nats" | "redis". For a sink, ``url`` is
    # the broker URL without its password and ``url_secret`` the whole URL, encrypted;
    # ``sink`` its target (exchange, routingKeyPrefix, subject, stream, maxLen).
    Column("kind", String(8), nullable=False, server_default="http"),
    Column("sink", JSON, nullable=True),
    Column("url_secret", LargeBinary, nullable=True),
)


def _partial_index(name: str, *columns: str, where: str) -> Index:
    """An index on ``columns`` of the deliveries whose ``status`` meets ``where`` (``=
    'pending'``, ``IN (...)``): the same condition on both engines."""
    condition = f"status {where}"
    return Index(name, *columns, sqlite_where=text(condition), postgresql_where=text(condition))


deliveries = Table(
    "deliveries",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column(
        "route_id", String(64), ForeignKey("webhook_routes.id", ondelete="CASCADE"), nullable=False
    ),
    Column("event_id", String(64), ForeignKey("events.id"), nullable=False),
    Column("status", String(16), nullable=False),
    # 0 for a first attempt, 1 for a retry: claimed separately so retries never starve new events.
    Column("lane", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("lease_until_ms", BigInteger, nullable=True),
    Column("claimed_by", String(64), nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("delivered_ms", BigInteger, nullable=True),
    Index(None, "route_id", "seq"),
    # Partial indexes (migration 0018): each holds only the rows of the states it finds, so
    # a delivery that finished leaves them and they grow with the backlog, not the history.
    # Queries name the state as a literal (status_is), so that every plan can use them.
    _partial_index("ix_deliveries_due", "lane", "next_attempt_ms", "seq", where="= 'pending'"),
    _partial_index(
        "ix_deliveries_unfinished", "route_id", "seq", where="IN ('pending', 'inflight')"
    ),
    _partial_index("ix_deliveries_leased", "lease_until_ms", where="= 'inflight'"),
    _partial_index("ix_deliveries_failed", "route_id", where="= 'failed'"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("delivery_seq", Seq, ForeignKey("deliveries.seq", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_ms", BigInteger, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("response_body", Text, nullable=True),
    Index(None, "delivery_seq"),
)


class DeliveryStatus:
    """Values of ``deliveries.status``."""

    PENDING = "pending"
    INFLIGHT = "inflight"
    DELIVERED = "delivered"
    FAILED = "failed"

    ALL = (PENDING, INFLIGHT, DELIVERED, FAILED)


def status_is(*statuses: str) -> ColumnElement[bool]:
    """``deliveries.status`` is one of ``statuses``, written into the SQL as literals: a
    planner uses a partial index only for a query whose WHERE implies the index's, and a
    state bound as a parameter does so only where the planner looks at the value bound
    (SQLite prepares the statement again for it; PostgreSQL's generic plan, which a prepared
    statement gets after a few runs, does not)."""
    unknown = set(statuses) - set(DeliveryStatus.ALL)
    if unknown or not statuses:
        raise ValueError(f"not delivery states: {sorted(unknown)}")
    literals: list[ColumnElement[Any]] = [literal_column(f"'{status}'") for status in statuses]
    if len(literals) == 1:
        return deliveries.c.status == literals[0]
    return deliveries.c.status.in_(literals)


class AccountState:
    """Values of ``accounts.state``."""

    INIT = "init"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    AUTHENTICATION_ERROR = "authenticationError"
    CONNECT_ERROR = "connectError"
    DISCONNECTED = "disconnected"

    ALL = (INIT, CONNECTING, CONNECTED, AUTHENTICATION_ERROR, CONNECT_ERROR, DISCONNECTED)


# -- IMAP listener state (revision 0003) ----------------------------------------------------

imap_folders = Table(
    "imap_folders",
    metadata,
    Column("account", String(256), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("path", Text, nullable=False),
    # Small per-account number, part of every message id of the folder (events.normalize).
    Column("folder_no", Integer, nullable=False),
    Column("special_use", String(32), nullable=True),
    # Null until the first sync recorded the baseline.
    Column("uidvalidity", BigInteger, nullable=True),
    # Every UID below this has been reported (or was there at the baseline).
    Column("uidnext", BigInteger, nullable=True),
    Column("highestmodseq", BigInteger, nullable=True),
    # Sequence sets ("1:40,42"): the UIDs known to exist, and per flag the UIDs that have it.
    Column("uids", Text, nullable=False),
    Column("flags", JSON, nullable=False),
    # Bumped on every save; a save expecting another version lost a race and is rolled back.
    Column("version", Integer, nullable=False),
    Column("synced_ms", BigInteger, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("account", "path"),
    UniqueConstraint("account", "folder_no"),
)

# The folders an account had at its last listing (path -> special use), IMAP and Graph alike:
# a listing that differs reports mailboxNew / mailboxDeleted in the transaction that stores it.
folder_lists = Table(
    "folder_lists",
    metadata,
    Column(
        "account",
        String(256),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("folders", JSON, nullable=False),
    Column("listed_ms", BigInteger, nullable=False),
)

# Which node watches an account: only the holder of an unexpired lease runs its listeners.
account_leases = Table(
    "account_leases",
    metadata,
    Column(
        "account",
        String(256),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("node", String(128), nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    # Grows by one with every new owner (revision 0013): writes a source makes for the
    # account are conditional on the epoch its node took the lease with (fencing).
    Column("epoch", BigInteger, nullable=False, server_default="0"),
    Index(None, "node"),
)

# The nodes of a cluster (revision 0013): each registers at start and beats every scan; one
# whose heartbeat is older than imap.lease is dead. ``leaving``: it is shutting down.
cluster_nodes = Table(
    "cluster_nodes",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("address", Text, nullable=False, server_default=""),
    Column("started_ms", BigInteger, nullable=False),
    Column("heartbeat_ms", BigInteger, nullable=False),
    Column("leaving", Boolean, nullable=False, server_default="0"),
)


# -- OAuth2 consent and tokens (revision 0004) -----------------------------------------------

# Sign-ins in progress: created when a consent link is opened, consumed by the redirect back.
oauth2_flows = Table(
    "oauth2_flows",
    metadata,
    # msal's random `state`: what the redirect back names the flow by.
    Column("state", String(128), primary_key=True),
    Column("app", String(64), nullable=False),
    # Encrypted msal flow (PKCE verifier, nonce, redirect URI, scopes).
    Column("flow", LargeBinary, nullable=False),
    # What the signed link asked for (account payload, redirectUrl, delegated); no secrets.
    Column("request", JSON, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Index(None, "expires_ms"),
)

# Access tokens per account and resource (Exchange, Graph): one token request per resource.
# The refresh token lives with the account's other secrets.
oauth2_tokens = Table(
    "oauth2_tokens",
    metadata,
    Column("account", String(256), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("resource", String(256), nullable=False),
    Column("access_token", LargeBinary, nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    # The account's updated_ms when the token was minted: new consent or new tokens through
    # the API change it, and make the cached tokens stale.
    Column("account_updated_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("account", "resource"),
)


# -- Outgoing mail (revision 0005) -----------------------------------------------------------

# Submitted messages until they are sent or given up on. The raw MIME is encrypted: it is
# mail content at rest, as sensitive as the credentials stored beside it.
outbox = Table(
    "outbox",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("queue_id", String(32), nullable=False, unique=True),
    # No foreign key: a queued message outlives its account only to fail with a clear reason.
    Column("account", String(256), nullable=False),
    Column("message_id", Text, nullable=False),
    Column("subject", Text, nullable=False),
    # {"from": address, "to": [addresses]}: the SMTP envelope.
    Column("envelope", JSON, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("size", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("send_at_ms", BigInteger, nullable=False),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("lease_until_ms", BigInteger, nullable=True),
    Column("claimed_by", String(128), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("response", Text, nullable=True),
    # {"message": id, "action": "reply" | "reply-all" | "forward"}: flagged once sent.
    Column("reference", JSON, nullable=True),
    # The submit's ``copy`` and ``sentMailPath``: the upload of a sent copy (revision 0011).
    Column("copy", Boolean, nullable=True),
    Column("sent_mail_path", Text, nullable=True),
    # Idempotency-Key of the submit request and the hash of its body.
    Column("idempotency_key", String(256), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("sent_ms", BigInteger, nullable=True),
    UniqueConstraint("account", "idempotency_key"),
    Index(None, "status", "next_attempt_ms"),
    Index(None, "status", "lease_until_ms"),
    Index(None, "account", "seq"),
    # A bounce names the original's Message-ID: messageBounce's sentQueueId (revision 0010).
    Index(None, "account", "message_id"),
)


class OutboxStatus:
    """Values of ``outbox.status``."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"

    ALL = (QUEUED, SENDING, SENT, FAILED)


# -- Messages an account has seen (revision 0010) ----------------------------------------------

# Every message key (emailId, else Message-ID) an account reported a messageNew for: a key
# already here makes seemsLikeNew false. An exact set (EmailEngine keeps an approximate one);
# the key is stored as a signed 64-bit hash (relay.store.events.key_hash).
seen_messages = Table(
    "seen_messages",
    metadata,
    Column("account", String(256), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("key_hash", BigInteger, nullable=False),
    PrimaryKeyConstraint("account", "key_hash"),
)
