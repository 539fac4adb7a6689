"""Persistence: one schema on SQLite (embedded default) or PostgreSQL (several nodes)."""

from relay.store.engine import Store

__all__ = ["Store"]
