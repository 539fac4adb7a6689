"""A pooled PostgreSQL connection is pinged before use only when it sat idle a while.

SQLAlchemy's ``pool_pre_ping`` pings every connection at every checkout: one more round trip
for every transaction (a test delivery's request made five, about a sixth of its round
trips). A connection that finished a transaction moments ago is alive unless the server went
away in between, so here the ping is skipped for a connection checked in less than
``IDLE_S`` ago, as HikariCP (the JDBC pool) skips its alive check for a connection used
within its ``aliveBypassWindowMs`` (500 ms). A connection that died within that window fails
its transaction's first statement instead; SQLAlchemy then takes the error for a
disconnection and replaces every pooled connection older than it, so the next transactions
get fresh ones. Nothing is lost either way: a failed write was not acknowledged.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["IDLE_S", "ping_when_idle"]

# Seconds a connection may have been idle and still be used without a ping.
IDLE_S = 0.5
_CHECKED_IN = "relay_checked_in"


def ping_when_idle(engine: AsyncEngine) -> None:
    """Ping a connection of ``engine``'s pool at checkout when it was idle for :data:`IDLE_S`
    seconds or more (the engine is created without ``pool_pre_ping``)."""
    sync = engine.sync_engine
    dialect = sync.dialect

    @event.listens_for(sync, "connect")
    def _opened(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(sync, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(sync, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_CHECKED_IN)
        if since is not None and time.monotonic() - since < IDLE_S:
            return
        # Runs in SQLAlchemy's greenlet (the checkout of an async engine), where the
        # driver's ping can wait for the server.
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                # The pool drops this connection and checks out another (or a new one).
                raise DisconnectionError("pooled connection is gone") from exc
            raise
        if not alive:
            raise DisconnectionError("pooled connection did not answer a ping")
