"""IMAP listener state: per-folder sync state and per-account node leases.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imap_folders",
        sa.Column("account", sa.String(256), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("folder_no", sa.Integer, nullable=False),
        sa.Column("special_use", sa.String(32), nullable=True),
        sa.Column("uidvalidity", sa.BigInteger, nullable=True),
        sa.Column("uidnext", sa.BigInteger, nullable=True),
        sa.Column("highestmodseq", sa.BigInteger, nullable=True),
        sa.Column("uids", sa.Text, nullable=False),
        sa.Column("flags", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("synced_ms", sa.BigInteger, nullable=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account", "path", name="pk_imap_folders"),
        sa.UniqueConstraint("account", "folder_no", name="uq_imap_folders_account_folder_no"),
        sa.ForeignKeyConstraint(
            ["account"],
            ["accounts.id"],
            name="fk_imap_folders_account_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "account_leases",
        sa.Column("account", sa.String(256), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account", name="pk_account_leases"),
        sa.ForeignKeyConstraint(
            ["account"],
            ["accounts.id"],
            name="fk_account_leases_account_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_account_leases_node", "account_leases", ["node"])


def downgrade() -> None:
    op.drop_table("account_leases")
    op.drop_table("imap_folders")
