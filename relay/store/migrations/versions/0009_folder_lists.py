"""Folder lists: the folders an account had at its last listing, to report new and deleted ones.

One row per account: ``folders`` maps each folder's path to its special use (IMAP LIST, or
the Graph folder tree with paths as Exchange's IMAP server names them). A listing that differs
writes the new list and the ``mailboxNew`` / ``mailboxDeleted`` events in one transaction.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "folder_lists",
        sa.Column(
            "account",
            sa.String(256),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("folders", sa.JSON, nullable=False),
        sa.Column("listed_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("folder_lists")
