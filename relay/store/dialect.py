"""What differs between the two engines in statement building, in one place."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["insert"]


def insert(conn: AsyncConnection, table: Table) -> Any:
    """An INSERT into ``table`` that takes ``on_conflict_do_nothing`` /
    ``on_conflict_do_update``: PostgreSQL's and SQLite's have the same shape but are
    different classes (typed ``Any`` for that reason)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
