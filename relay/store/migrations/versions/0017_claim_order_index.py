"""The claim's order in its index.

A claim takes the due deliveries of a lane oldest first (``next_attempt_ms, seq``). The index
on ``(status, lane, next_attempt_ms)`` left ``seq`` to a sort: PostgreSQL then read every
pending row of the lane and sorted them for each claim whenever its statistics were older than
a burst (31 ms per claim at 40,000 pending instead of 0.2 ms). With ``seq`` in the index the
rows come in claim order and the claim stops after its limit.

Revision ID: 0017
Revises: 0016
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_status_lane_next_attempt_ms_seq",
        "deliveries",
        ["status", "lane", "next_attempt_ms", "seq"],
    )
    op.drop_index("ix_deliveries_status_lane_next_attempt_ms", "deliveries")


def downgrade() -> None:
    op.create_index(
        "ix_deliveries_status_lane_next_attempt_ms",
        "deliveries",
        ["status", "lane", "next_attempt_ms"],
    )
    op.drop_index("ix_deliveries_status_lane_next_attempt_ms_seq", "deliveries")
