"""What differs between the two engines in statement building, in one place."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["insert", "insert_for"]


def insert(conn: AsyncConnection, table: Table) -> Any:
    """An INSERT into ``table`` that takes ``on_conflict_do_nothing`` /
    ``on_conflict_do_update``: PostgreSQL's and SQLite's have the same shape but are
    different classes (typed ``Any`` for that reason)."""
    return insert_for(conn.dialect.name, table)


def insert_for(dialect: str, table: Table) -> Any:
    """:func:`insert` for the dialect named ``dialect`` (a compiled statement's builder)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
