"""Fixtures for the fault tests: a PostgreSQL of the test's own, Dovecot, a receiver."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.peers import postgres
from tests.peers.postgres import PrivatePostgres
from tests.peers.receiver import Receiver
from tests.sources.imap.conftest import dovecot  # noqa: F401 (a fixture used here too)
from tests.webhooks.conftest import SERVICE_SECRET


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of this test's own (the shared one must keep running for the others)."""
    if not postgres.available():
        pytest.skip("needs PostgreSQL server binaries and root")
    # Not tmp_path: pytest's base temp dir is 0700 and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="relay-pg-"))
    root.chmod(0o755)
    server = PrivatePostgres(root / "pg")
    server.init()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver that verifies signatures; set ``secret`` from the route."""
    async with Receiver(secret="whsec_" + "A" * 44, service_secret=SERVICE_SECRET) as rx:
        yield rx
