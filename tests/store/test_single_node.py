"""SQLite is single-node (``relay.store.single_node``): a running node holds a lock beside the
database; a second process is refused, the lock dies with its process, PostgreSQL has none.

The other processes are real ones (``python -c``): ``flock`` locks belong to open files, so
only another process shows whether the lock holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from relay.errors import ConfigError
from relay.store.single_node import NodeLock
from tests.proc import RelayProcess, free_port, relay_env

# Another process tries the lock of argv[1]: exit 0 when it got it, 3 (and the error's key
# and problem on stdout) when refused.
TRY_LOCK = """
import sys
from relay.errors import ConfigError
from relay.store.single_node import NodeLock
try:
    NodeLock(sys.argv[1]).acquire()
except ConfigError as exc:
    print(exc.key)
    print(exc.problem)
    sys.exit(3)
"""

# Another process takes the lock of argv[1], says so, and holds it until killed.
HOLD_LOCK = """
import sys, time
from relay.store.single_node import NodeLock
NodeLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def other_process(url: str) -> subprocess.CompletedProcess[str]:
    """Try the lock of ``url`` from another process."""
    return subprocess.run(
        [sys.executable, "-c", TRY_LOCK, url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'relay.db'}"


def test_a_second_process_is_refused_naming_the_setting(url: str, tmp_path: Path) -> None:
    """While one process holds the lock, another gets ConfigError on ``store.url`` that
    names the database and says SQLite is single-node; once released it gets the lock."""
    lock = NodeLock(url)
    lock.acquire()
    try:
        refused = other_process(url)
        assert refused.returncode == 3, refused.stderr
        key, problem = refused.stdout.splitlines()
        assert key == "store.url"
        assert "SQLite" in problem
        assert "single-node" in problem
        assert str(tmp_path / "relay.db") in problem
    finally:
        lock.release()
    done = other_process(url)
    assert done.returncode == 0, done.stdout + done.stderr


def test_other_spellings_of_the_same_database_share_the_lock(tmp_path: Path) -> None:
    """The lock belongs to the database file, however the URL names it (driver, relative
    path)."""
    lock = NodeLock(f"sqlite:///{tmp_path / 'relay.db'}")
    lock.acquire()
    try:
        assert other_process(f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}").returncode == 3
        relative = subprocess.run(
            [sys.executable, "-c", TRY_LOCK, "sqlite:///relay.db"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(Path.cwd())},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert relative.returncode == 3, relative.stderr
        assert other_process(f"sqlite:///{tmp_path / 'other.db'}").returncode == 0
    finally:
        lock.release()


def test_holders_in_one_process_share_the_lock_until_the_last_lets_go(url: str) -> None:
    """A second lock in the same process (another app on the same store) is not refused;
    the file stays locked for other processes until both have released it."""
    first, second = NodeLock(url), NodeLock(url)
    first.acquire()
    second.acquire()
    first.acquire()  # again: still one hold
    try:
        first.release()
        assert other_process(url).returncode == 3
        first.release()  # released twice: harmless, the second holder keeps it
        assert other_process(url).returncode == 3
    finally:
        second.release()
    assert other_process(url).returncode == 0
    again = NodeLock(url)
    again.acquire()  # this process can take it afresh
    try:
        assert other_process(url).returncode == 3
    finally:
        again.release()


def test_the_lock_dies_with_its_process(url: str) -> None:
    """A holder killed with SIGKILL leaves no lock behind: the next node starts."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        lock = NodeLock(url)
        with pytest.raises(ConfigError) as refused:
            lock.acquire()
        assert refused.value.key == "store.url"
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(30) == -signal.SIGKILL
        lock.acquire()
        try:
            assert other_process(url).returncode == 3
        finally:
            lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


@pytest.mark.parametrize(
    "store",
    [
        "postgresql://relay@127.0.0.1:5432/relay",
        "postgresql+asyncpg://relay@db/relay",
        "sqlite:///:memory:",
        "sqlite://",
    ],
)
def test_postgresql_and_memory_stores_take_no_lock(store: str, tmp_path: Path) -> None:
    """PostgreSQL stores and in-memory SQLite take no lock: another process is not refused
    and no lock file appears."""
    lock = NodeLock(store)
    assert lock.path is None
    lock.acquire()
    try:
        assert other_process(store).returncode == 0
    finally:
        lock.release()


def test_a_second_relay_on_a_sqlite_store_stops_at_start(tmp_path: Path) -> None:
    """``relay serve`` on a SQLite store another ``relay serve`` runs on exits with status 2
    and one line saying SQLite is single-node; the first keeps running."""
    port = free_port()
    first = RelayProcess(tmp_path, port, relay_env(tmp_path, port))
    first.start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "relay", "serve"],
            cwd=tmp_path,
            env=relay_env(tmp_path, free_port()),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2, second.stderr
        message = second.stderr.decode().strip().splitlines()[-1]
        assert message.startswith("relay: invalid setting store.url: ")
        assert "SQLite" in message
        assert "single-node" in message
        assert first.proc is not None
        assert first.proc.poll() is None
        first.wait_ready()
    finally:
        assert first.stop() == 0
    # Once the first is gone, a node starts on the store again.
    first.start()
    assert first.stop() == 0
