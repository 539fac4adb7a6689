"""Scale out: node membership and lease epochs.

``cluster_nodes`` lists the nodes sharing the store (heartbeats, so that the live ones can
split the accounts between them). ``account_leases.epoch`` grows with every new owner of an
account; a released lease keeps its row (expired), so the epoch never goes back.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("account_leases") as batch:
        batch.add_column(sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"))
    op.create_table(
        "cluster_nodes",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("address", sa.Text, nullable=False, server_default=""),
        sa.Column("started_ms", sa.BigInteger, nullable=False),
        sa.Column("heartbeat_ms", sa.BigInteger, nullable=False),
        sa.Column("leaving", sa.Boolean, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_cluster_nodes"),
    )


def downgrade() -> None:
    op.drop_table("cluster_nodes")
    with op.batch_alter_table("account_leases") as batch:
        batch.drop_column("epoch")
