"""The event stream: commit-ordered positions on events, and what pruning removed.

``events.pos`` is given after an event's transaction committed, in commit order
(relay.store.stream), so a reader that resumes after a position never misses an event that
committed late; existing events get theirs on the first start. ``events.path`` is the
envelope's path (the stream's filter), filled in from the stored payloads. ``event_stream``
holds the last position given and the highest one pruning deleted.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("path", sa.Text, nullable=True))
        batch.add_column(sa.Column("pos", sa.BigInteger, nullable=True))
        batch.create_index("ix_events_pos", ["pos"], unique=True)
        batch.create_index("ix_events_account_pos", ["account", "pos"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE events SET path = payload::json->>'path'")
    else:
        op.execute("UPDATE events SET path = json_extract(payload, '$.path')")
    table = op.create_table(
        "event_stream",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("last_pos", sa.BigInteger, nullable=False),
        sa.Column("pruned_pos", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_stream"),
    )
    op.bulk_insert(table, [{"id": 1, "last_pos": 0, "pruned_pos": 0}])


def downgrade() -> None:
    op.drop_table("event_stream")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_account_pos")
        batch.drop_index("ix_events_pos")
        batch.drop_column("pos")
        batch.drop_column("path")
