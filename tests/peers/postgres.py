"""A PostgreSQL server of the test's own, for tests that stop, crash and restart their database.

The shared server on 5432 serves every other test and must keep running; this one lives in a
temporary directory on a free port, owned by the ``postgres`` user (the server refuses to run
as root). ``crash()`` is ``pg_ctl -m immediate stop`` (no checkpoint, like a killed server);
``start()`` again recovers from the WAL with the data kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.proc import free_port


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return found[-1].parent


def available() -> bool:
    """True when this machine can run a private server (binaries, a postgres user, root)."""
    try:
        _bin_dir()
    except FileNotFoundError:
        return False
    return shutil.which("runuser") is not None and os.geteuid() == 0


@dataclass
class PrivatePostgres:
    """One server in ``root`` (``root`` must not exist yet or be empty)."""

    root: Path
    port: int = field(default_factory=free_port)
    database: str = "relay"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def _data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, timeout: float = 120.0) -> None:
        cmd = ["runuser", "-u", "postgres", "--", str(_bin_dir() / args[0]), *args[1:]]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace")
            raise RuntimeError(f"{' '.join(args[:2])} failed: {error}")

    def init(self) -> None:
        """initdb, start, and create the test database."""
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        host = ("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres")
        self._run("createdb", *host, self.database)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=60"
        )
        self._run(
            "pg_ctl", "-D", str(self._data), "-o", options, "-l", str(self.root / "log"),
            "-w", "start",
        )  # fmt: skip

    def crash(self) -> None:
        """Stop at once, as a crash would: no checkpoint, connections cut."""
        self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        """Stop if running (the end of a test)."""
        if (self._data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self._data), "-m", "fast", "-w", "stop")
