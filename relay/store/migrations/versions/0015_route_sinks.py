"""Queue sinks: webhook routes that publish to RabbitMQ, NATS JetStream or Redis Streams.

``webhook_routes.kind`` is the route's type (``http`` for every existing route);
``sink`` holds a sink's target (exchange, routing key prefix, subject, stream, maxLen);
``url_secret`` the broker URL with its credentials, encrypted (``url`` shows it without
the password).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_routes") as batch:
        batch.add_column(sa.Column("kind", sa.String(8), nullable=False, server_default="http"))
        batch.add_column(sa.Column("sink", sa.JSON, nullable=True))
        batch.add_column(sa.Column("url_secret", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_routes") as batch:
        batch.drop_column("url_secret")
        batch.drop_column("sink")
        batch.drop_column("kind")
