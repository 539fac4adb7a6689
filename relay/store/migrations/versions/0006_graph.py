"""Microsoft Graph backend: subscriptions, delta state, received notifications.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "graph_accounts",
        sa.Column("account", sa.String(256), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("subscription_id", sa.String(128), nullable=True),
        sa.Column("resource", sa.Text, nullable=True),
        sa.Column("expires_ms", sa.BigInteger, nullable=True),
        sa.Column("client_state", sa.LargeBinary, nullable=True),
        sa.Column("last_error", sa.JSON, nullable=True),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account", name="pk_graph_accounts"),
        sa.UniqueConstraint("subscription_id", name="uq_graph_accounts_subscription_id"),
        sa.ForeignKeyConstraint(
            ["account"],
            ["accounts.id"],
            name="fk_graph_accounts_account_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "graph_folders",
        sa.Column("account", sa.String(256), nullable=False),
        sa.Column("folder", sa.String(256), nullable=False),
        sa.Column("delta_link", sa.Text, nullable=True),
        sa.Column("messages", sa.JSON, nullable=False),
        sa.Column("uid_next", sa.BigInteger, nullable=False),
        sa.Column("synced_ms", sa.BigInteger, nullable=True),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account", "folder", name="pk_graph_folders"),
        sa.ForeignKeyConstraint(
            ["account"],
            ["accounts.id"],
            name="fk_graph_folders_account_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "graph_notifications",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account", sa.String(256), nullable=False),
        sa.Column("subscription_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("lifecycle", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_graph_notifications"),
    )
    op.create_index("ix_graph_notifications_account_seq", "graph_notifications", ["account", "seq"])


def downgrade() -> None:
    op.drop_index("ix_graph_notifications_account_seq", table_name="graph_notifications")
    op.drop_table("graph_notifications")
    op.drop_table("graph_folders")
    op.drop_table("graph_accounts")
