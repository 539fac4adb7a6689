"""Run ``relay`` as a real process (for CLI, crash and fuzz tests) and find free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Ports handed out by free_port, one marker file each, shared by every test process.
_GIVEN = Path(tempfile.gettempdir()) / "relay-test-ports"
_HOLD_S = 900.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and that no test process was given in the
    last 15 minutes. Tests run in parallel processes, each starting servers on ports it
    picked: a port is free from the pick until its server binds it, and another process
    could pick it meanwhile (a relay node's health check once reached a Dovecot)."""
    _GIVEN.mkdir(exist_ok=True)
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        marker = _GIVEN / str(port)
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - marker.stat().st_mtime > _HOLD_S:
                    marker.unlink()  # given long ago: free for the next pick
            continue
        return port
    raise RuntimeError("no free port that no other test process was given")


def relay_env(workdir: Path, port: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(
        {
            "RELAY_HOST": "127.0.0.1",
            "RELAY_PORT": str(port),
            "RELAY_LOG_FORMAT": "json",
            "RELAY_STORE_URL": f"sqlite:///{workdir / 'relay.db'}",
        }
    )
    env.update(extra or {})
    return env


@dataclass
class RelayProcess:
    """A ``relay serve`` child process; ``stop()`` sends SIGTERM and waits."""

    workdir: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"relay-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *args: str, wait: bool = True) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", *args],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"relay did not become ready:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """kill -9: no cleanup, no flush."""
        self.stop(signal.SIGKILL)
