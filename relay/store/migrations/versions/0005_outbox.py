"""Outgoing mail: the durable outbox of submitted messages.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("queue_id", sa.String(32), nullable=False),
        sa.Column("account", sa.String(256), nullable=False),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("envelope", sa.JSON, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("send_at_ms", sa.BigInteger, nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
        sa.Column("lease_until_ms", sa.BigInteger, nullable=True),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("response", sa.Text, nullable=True),
        sa.Column("idempotency_key", sa.String(256), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.Column("sent_ms", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_outbox"),
        sa.UniqueConstraint("queue_id", name="uq_outbox_queue_id"),
        sa.UniqueConstraint("account", "idempotency_key", name="uq_outbox_account_idempotency_key"),
    )
    op.create_index("ix_outbox_status_next_attempt_ms", "outbox", ["status", "next_attempt_ms"])
    op.create_index("ix_outbox_status_lease_until_ms", "outbox", ["status", "lease_until_ms"])
    op.create_index("ix_outbox_account_seq", "outbox", ["account", "seq"])


def downgrade() -> None:
    op.drop_index("ix_outbox_account_seq", table_name="outbox")
    op.drop_index("ix_outbox_status_lease_until_ms", table_name="outbox")
    op.drop_index("ix_outbox_status_next_attempt_ms", table_name="outbox")
    op.drop_table("outbox")
