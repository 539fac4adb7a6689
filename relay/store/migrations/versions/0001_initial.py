"""Initial schema: API tokens, OAuth2 apps, accounts, events, settings.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_table(
        "oauth2_apps",
        sa.Column("id", sa.String(64)),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("client_secret", sa.LargeBinary, nullable=True),
        sa.Column("authority", sa.Text, nullable=False),
        sa.Column("redirect_url", sa.Text, nullable=True),
        sa.Column("base_scopes", sa.String(16), nullable=False),
        sa.Column("extra_scopes", sa.JSON, nullable=False),
        sa.Column("skip_scopes", sa.JSON, nullable=False),
        sa.Column("enabled", sa.Integer, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_oauth2_apps"),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(256)),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("oauth2_app", sa.String(64), nullable=True),
        sa.Column("delegated_account", sa.String(256), nullable=True),
        sa.Column("delegated_user", sa.Text, nullable=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("secrets", sa.LargeBinary, nullable=True),
        sa.Column("last_error", sa.JSON, nullable=True),
        sa.Column("reconnect_requested_ms", sa.BigInteger, nullable=True),
        sa.Column("sync_requested_ms", sa.BigInteger, nullable=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.ForeignKeyConstraint(
            ["oauth2_app"], ["oauth2_apps.id"], name="fk_accounts_oauth2_app_oauth2_apps"
        ),
        sa.ForeignKeyConstraint(
            ["delegated_account"], ["accounts.id"], name="fk_accounts_delegated_account_accounts"
        ),
    )
    op.create_index("ix_accounts_delegated_account", "accounts", ["delegated_account"])
    op.create_index("ix_accounts_state", "accounts", ["state"])
    op.create_table(
        "events",
        sa.Column("seq", _seq, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account", sa.String(256), nullable=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
        sa.UniqueConstraint("id", name="uq_events_id"),
    )
    op.create_index("ix_events_account_seq", "events", ["account", "seq"])
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64)),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_settings"),
    )


def downgrade() -> None:
    for table in ("settings", "events", "accounts", "oauth2_apps", "api_tokens"):
        op.drop_table(table)
