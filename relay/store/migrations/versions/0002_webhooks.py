"""Webhook routes, the delivery queue and its attempt log.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_routes",
        sa.Column("id", sa.String(64)),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("accounts", sa.JSON, nullable=True),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("enabled", sa.Integer, nullable=False),
        sa.Column("disabled_reason", sa.Text, nullable=True),
        sa.Column("ordering", sa.String(8), nullable=False),
        sa.Column("retry_schedule", sa.JSON, nullable=True),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("previous_secret", sa.LargeBinary, nullable=True),
        sa.Column("previous_until_ms", sa.BigInteger, nullable=True),
        sa.Column("failing_since_ms", sa.BigInteger, nullable=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_routes"),
    )
    op.create_table(
        "deliveries",
        sa.Column("seq", _seq, autoincrement=True),
        sa.Column("route_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("lane", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
        sa.Column("lease_until_ms", sa.BigInteger, nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.Column("delivered_ms", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_deliveries"),
        sa.ForeignKeyConstraint(
            ["route_id"],
            ["webhook_routes.id"],
            name="fk_deliveries_route_id_webhook_routes",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name="fk_deliveries_event_id_events"),
    )
    op.create_index(
        "ix_deliveries_status_lane_next_attempt_ms",
        "deliveries",
        ["status", "lane", "next_attempt_ms"],
    )
    op.create_index("ix_deliveries_route_id_seq", "deliveries", ["route_id", "seq"])
    op.create_index(
        "ix_deliveries_status_lease_until_ms", "deliveries", ["status", "lease_until_ms"]
    )
    op.create_table(
        "delivery_attempts",
        sa.Column("seq", _seq, autoincrement=True),
        sa.Column("delivery_seq", _seq, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_ms", sa.BigInteger, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("response_body", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_delivery_attempts"),
        sa.ForeignKeyConstraint(
            ["delivery_seq"],
            ["deliveries.seq"],
            name="fk_delivery_attempts_delivery_seq_deliveries",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_delivery_attempts_delivery_seq", "delivery_attempts", ["delivery_seq"])


def downgrade() -> None:
    for table in ("delivery_attempts", "deliveries", "webhook_routes"):
        op.drop_table(table)
