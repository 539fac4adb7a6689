"""What several benchmarks share: a throwaway PostgreSQL database."""

from __future__ import annotations

import asyncpg


async def pg_database(admin_url: str, name: str, *, drop: bool = False) -> None:
    """Create database ``name`` through ``admin_url`` (``postgresql://...``), or drop it."""
    conn = await asyncpg.connect(admin_url.replace("postgresql://", "postgres://", 1))
    try:
        if drop:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
