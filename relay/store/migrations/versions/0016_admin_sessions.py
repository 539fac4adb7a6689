"""The admin UI's sessions.

``admin_sessions`` holds one row per signed-in browser: the SHA-256 of its session key, who
signed in (an API token's id and hash, or the admin password), its CSRF token and when it
was last seen (idle expiry).

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("seen_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("key_hash", name="pk_admin_sessions"),
    )
    op.create_index("ix_admin_sessions_seen_ms", "admin_sessions", ["seen_ms"])


def downgrade() -> None:
    op.drop_index("ix_admin_sessions_seen_ms", "admin_sessions")
    op.drop_table("admin_sessions")
