"""Outbox: the submit's ``copy`` and ``sentMailPath`` (EmailEngine's).

``copy`` overrides the account's ``copy`` for one message (upload a sent copy or not);
``sent_mail_path`` is the folder the copy goes to instead of the Sent folder. Both stay NULL
when the submit did not give them.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("copy", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("sent_mail_path", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("sent_mail_path")
        batch.drop_column("copy")
