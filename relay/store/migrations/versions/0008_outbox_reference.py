"""Outbox: the message a submit replies to or forwards (``reference``).

After such a message is sent, the original gets ``\\Answered`` (a reply) or ``$Forwarded``
(a forward), as EmailEngine does; the row keeps ``{message, action}`` until then.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("reference", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("reference")
