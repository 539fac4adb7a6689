"""Seen messages (``messageNew``'s ``seemsLikeNew``) and the outbox by Message-ID.

``seen_messages`` holds, per account, a 64-bit hash of the key (``emailId``, else the
Message-ID) of every message a ``messageNew`` was stored for; the transaction that stores
the event inserts it and a key already there makes ``seemsLikeNew`` false. The outbox gets
an index on ``(account, message_id)``: a ``messageBounce`` looks up the queue id of the
message it is about (``sentQueueId``).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seen_messages",
        sa.Column("account", sa.String(256), nullable=False),
        sa.Column("key_hash", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account", "key_hash", name="pk_seen_messages"),
        sa.ForeignKeyConstraint(
            ["account"],
            ["accounts.id"],
            name="fk_seen_messages_account_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_outbox_account_message_id", "outbox", ["account", "message_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_account_message_id", table_name="outbox")
    op.drop_table("seen_messages")
