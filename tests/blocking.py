"""What blockbuster lets run on the event loop while a relay runs in a test."""

from __future__ import annotations

from blockbuster import BlockBuster


def allow_known(bb: BlockBuster) -> None:
    """asyncpg looks for ~/.pgpass on each new connection, structlog's dev renderer reads
    source files to show a traceback, and the tests' free_port keeps a marker file per port
    it gives: all harmless here. The store's compiled statements run on the event loop by
    design (bounded, in a begun SQLite transaction: relay.store.compiled)."""
    for function in bb.functions.values():
        function.can_block_in(
            "asyncpg/connect_utils.py", "_parse_connect_dsn_and_args"
        ).can_block_in("rich/traceback.py", ("_render_stack", "from_exception")).can_block_in(
            "tests/proc.py", "free_port"
        ).can_block_in("relay/store/compiled.py", "_on_sqlite")
