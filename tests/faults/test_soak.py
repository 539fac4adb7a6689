"""A minute of the soak run (``bench/soak.py`` runs it for 30): 50 mailboxes, mail flowing,
kicks, Dovecot restarts and PostgreSQL crashes; every message is reported exactly once.

Only the counts are asserted: neither memory nor timing, which depend on what else the
machine runs. The logs and one line per message stay in the test's ``tmp_path``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.faults.soak import KINDS, SoakOptions, run_soak
from tests.peers import postgres


def progress(text: str) -> None:
    print(f"soak: {text}", file=sys.stderr, flush=True)


@pytest.mark.slow
@pytest.mark.timeout(480)
async def test_one_minute_soak_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """A minute of 5 messages/s to 50 mailboxes through a few kicks, Dovecot restarts and
    PostgreSQL crashes: every message in a mailbox at the end is reported, under one
    ``webhook-id``, for its own account, and nothing is reported that was not sent."""
    if not postgres.available():
        pytest.skip("needs PostgreSQL server binaries and root")
    options = SoakOptions(
        minutes=1,
        mailboxes=50,
        rate=5,
        seed=7,
        fault_gap=(4.0, 8.0),
        kick_users=5,
        dovecot_down=(2.0, 4.0),
        postgres_down=(5.0, 12.0),
        drain=120.0,
        setup=180.0,
        logs=tmp_path / "logs",
    )
    result = await run_soak(options, progress)
    shown = json.dumps(result)
    progress(shown)
    assert set(result["faults"]) == set(KINDS), shown
    assert result["sent"] >= 50, shown
    assert result["lost"] == 0, shown
    assert result["duplicated"] == 0, shown
    assert result["wrong_account"] == 0, shown
    assert result["unknown"] == 0, shown
