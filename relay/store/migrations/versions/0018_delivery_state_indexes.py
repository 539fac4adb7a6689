"""Partial indexes on the delivery queue: each holds only the rows of the states it finds.

The indexes on ``(status, lane, next_attempt_ms, seq)`` and ``(status, lease_until_ms)`` held
every delivery ever made until pruning: each claim and each outcome moved a row's entries in
both (a delete and an insert each), and the indexes grew with the history, not the backlog.
Partial indexes hold only the due (``pending``), the leased (``inflight``), the unfinished
(for ordered routes' heads) and the failed deliveries: a claim moves a row from the due
index to the leased one, a delivery leaves both, and a delivered row is in none of them
(recording outcomes: 4.3 -> 2.9 us a row on SQLite, claiming 4.6 -> 3.3).

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_WHERE = {
    "ix_deliveries_due": (["lane", "next_attempt_ms", "seq"], "status = 'pending'"),
    "ix_deliveries_unfinished": (["route_id", "seq"], "status IN ('pending', 'inflight')"),
    "ix_deliveries_leased": (["lease_until_ms"], "status = 'inflight'"),
    "ix_deliveries_failed": (["route_id"], "status = 'failed'"),
}


def upgrade() -> None:
    for name, (columns, where) in _WHERE.items():
        op.create_index(
            name,
            "deliveries",
            columns,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )
    op.drop_index("ix_deliveries_status_lane_next_attempt_ms_seq", "deliveries")
    op.drop_index("ix_deliveries_status_lease_until_ms", "deliveries")


def downgrade() -> None:
    op.create_index(
        "ix_deliveries_status_lane_next_attempt_ms_seq",
        "deliveries",
        ["status", "lane", "next_attempt_ms", "seq"],
    )
    op.create_index(
        "ix_deliveries_status_lease_until_ms", "deliveries", ["status", "lease_until_ms"]
    )
    for name in _WHERE:
        op.drop_index(name, "deliveries")
