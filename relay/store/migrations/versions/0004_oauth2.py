"""OAuth2: sign-in flows in progress and access tokens per account and resource.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth2_flows",
        sa.Column("state", sa.String(128), nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("flow", sa.LargeBinary, nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("state", name="pk_oauth2_flows"),
    )
    op.create_index("ix_oauth2_flows_expires_ms", "oauth2_flows", ["expires_ms"])
    op.create_table(
        "oauth2_tokens",
        sa.Column("account", sa.String(256), nullable=False),
        sa.Column("resource", sa.String(256), nullable=False),
        sa.Column("access_token", sa.LargeBinary, nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.Column("account_updated_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account", "resource", name="pk_oauth2_tokens"),
        sa.ForeignKeyConstraint(
            ["account"],
            ["accounts.id"],
            name="fk_oauth2_tokens_account_accounts",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("oauth2_tokens")
    op.drop_index("ix_oauth2_flows_expires_ms", table_name="oauth2_flows")
    op.drop_table("oauth2_flows")
