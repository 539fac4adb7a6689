"""API tokens with grants (account, scopes, permissions, restrictions, expiry) and their log.

``api_tokens`` gains what a token may do (see ``relay.auth.grants``): the account it is bound
to (deleted with it), ``shared`` (also the shared mailboxes that borrow that account's
credentials), ``scopes``, ``permissions`` and ``restrictions`` (JSON, NULL: none), an expiry,
EmailEngine's ``metadata``, and the token that minted it. ``token_log`` is the audit log:
one row per write, send or delete made with a token.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(
            sa.Column(
                "account",
                sa.String(256),
                sa.ForeignKey("accounts.id", ondelete="CASCADE", name="fk_api_tokens_account"),
                nullable=True,
            )
        )
        batch.add_column(sa.Column("shared", sa.Boolean, nullable=False, server_default="0"))
        batch.add_column(sa.Column("scopes", sa.JSON, nullable=True))
        batch.add_column(sa.Column("permissions", sa.JSON, nullable=True))
        batch.add_column(sa.Column("restrictions", sa.JSON, nullable=True))
        batch.add_column(sa.Column("expires_ms", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("metadata", sa.JSON, nullable=True))
        batch.add_column(sa.Column("parent_id", sa.String(32), nullable=True))
        batch.create_index("ix_api_tokens_account", ["account"])
    op.create_table(
        "token_log",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("account", sa.String(256), nullable=True),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
    )
    op.create_index("ix_token_log_token_seq", "token_log", ["token_id", "seq"])
    op.create_index("ix_token_log_created", "token_log", ["created_ms"])


def downgrade() -> None:
    op.drop_index("ix_token_log_created", "token_log")
    op.drop_index("ix_token_log_token_seq", "token_log")
    op.drop_table("token_log")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_index("ix_api_tokens_account")
        for column in (
            "parent_id",
            "metadata",
            "expires_ms",
            "restrictions",
            "permissions",
            "scopes",
            "shared",
            "account",
        ):
            batch.drop_column(column)
