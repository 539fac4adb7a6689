"""Graph backend: one subscription per watched folder; folder paths; a row per message.

The relay now asks Graph for immutable message ids (``Prefer: IdType="ImmutableId"``), so
that a message keeps its id when it moves between folders. The stored folder state was keyed
by the old ids and is dropped: each Graph account takes a new delta baseline on start
(without reporting the messages already there as new). What the relay knows of each message
moves from one JSON document per folder (rewritten whole on every catch-up) to
``graph_messages``, one row per message. Existing subscriptions are kept in
the new table, so that the watchers delete them when they subscribe again.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "graph_subscriptions",
        sa.Column("subscription_id", sa.String(128), nullable=False),
        sa.Column("account", sa.String(256), nullable=False),
        sa.Column("folder", sa.String(256), nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.Column("client_state", sa.LargeBinary, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", name="pk_graph_subscriptions"),
        sa.ForeignKeyConstraint(
            ["account"],
            ["accounts.id"],
            name="fk_graph_subscriptions_account_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_graph_subscriptions_account", "graph_subscriptions", ["account"])
    op.execute(
        "INSERT INTO graph_subscriptions"
        " (subscription_id, account, folder, resource, expires_ms, client_state, updated_ms)"
        " SELECT subscription_id, account, 'inbox', resource, expires_ms, client_state,"
        " updated_ms FROM graph_accounts WHERE subscription_id IS NOT NULL"
        " AND resource IS NOT NULL AND expires_ms IS NOT NULL AND client_state IS NOT NULL"
    )
    with op.batch_alter_table("graph_accounts") as batch:
        batch.drop_constraint("uq_graph_accounts_subscription_id", type_="unique")
        batch.drop_column("subscription_id")
        batch.drop_column("resource")
        batch.drop_column("expires_ms")
        batch.drop_column("client_state")
    op.execute("DELETE FROM graph_folders")
    with op.batch_alter_table("graph_folders") as batch:
        batch.drop_column("messages")
        batch.add_column(sa.Column("path", sa.Text, nullable=True))
        batch.add_column(sa.Column("special_use", sa.String(32), nullable=True))
    op.create_table(
        "graph_messages",
        sa.Column("account", sa.String(256), nullable=False),
        sa.Column("graph_id", sa.String(512), nullable=False),
        sa.Column("folder", sa.String(256), nullable=False),
        sa.Column("uid", sa.BigInteger, nullable=False),
        sa.Column("flags", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("account", "graph_id", name="pk_graph_messages"),
        sa.ForeignKeyConstraint(
            ["account"],
            ["accounts.id"],
            name="fk_graph_messages_account_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_graph_messages_account_folder", "graph_messages", ["account", "folder"])


def downgrade() -> None:
    op.drop_index("ix_graph_messages_account_folder", table_name="graph_messages")
    op.drop_table("graph_messages")
    op.execute("DELETE FROM graph_folders")
    with op.batch_alter_table("graph_folders") as batch:
        batch.drop_column("special_use")
        batch.drop_column("path")
        batch.add_column(sa.Column("messages", sa.JSON, nullable=False))
    with op.batch_alter_table("graph_accounts") as batch:
        batch.add_column(sa.Column("subscription_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("resource", sa.Text, nullable=True))
        batch.add_column(sa.Column("expires_ms", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("client_state", sa.LargeBinary, nullable=True))
        batch.create_unique_constraint("uq_graph_accounts_subscription_id", ["subscription_id"])
    op.drop_index("ix_graph_subscriptions_account", table_name="graph_subscriptions")
    op.drop_table("graph_subscriptions")
