"""Starting the sandbox: https with its own CA, the seed, and the ``relay sandbox`` entry point."""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from pathlib import Path

import aiohttp

from relay.sandbox.server import start_sandbox
from relay.sandbox.signing import Signer
from relay.sandbox.state import SandboxState
from tests.proc import free_port


async def _discovery_status(url: str, ca_path: Path) -> int:
    context = await asyncio.to_thread(ssl.create_default_context, cafile=str(ca_path))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(f"{url}/common/v2.0/.well-known/openid-configuration") as response,
    ):
        return response.status


async def test_seeded_sandbox_says_how_to_point_the_relay_at_it(
    tmp_path: Path, signer: Signer
) -> None:
    """The summary names the authority host, the CA bundle and the demo app's credentials."""
    sandbox = await start_sandbox(
        "127.0.0.1", 0, tmp_path, seed=True, state=SandboxState(signer=signer)
    )
    try:
        summary = sandbox.summary()
        status = await _discovery_status(sandbox.url, sandbox.ca_path)
    finally:
        await sandbox.close()

    assert sandbox.seed is not None
    assert status == 200
    assert f"RELAY_AUTHORITY_HOST={sandbox.url}" in summary
    assert f"RELAY_CA_BUNDLE={sandbox.ca_path}" in summary
    assert sandbox.seed.client_id in summary
    assert sandbox.seed.client_secret in summary
    assert "http://127.0.0.1:3000/oauth" in summary
    assert sandbox.ca_path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert list(sandbox.state.grants) == [("main@example.com", "shared@example.com")]
    assert sandbox.state.send_as_of("main@example.com") == [
        "main@example.com",
        "shared@example.com",
    ]


async def test_unseeded_sandbox_starts_empty(tmp_path: Path, signer: Signer) -> None:
    """Without the seed there are no users or apps and the summary has no demo tenant."""
    sandbox = await start_sandbox("127.0.0.1", 0, tmp_path, state=SandboxState(signer=signer))
    await sandbox.close()

    assert sandbox.state.users == {}
    assert sandbox.state.apps == {}
    assert "Demo tenant" not in sandbox.summary()
    assert sandbox.grants_path.read_text() == "{}"


async def test_ca_is_kept_across_restarts(tmp_path: Path, signer: Signer) -> None:
    """A restarted sandbox reuses its CA, so clients configured with ca.pem keep trusting it."""
    first = await start_sandbox("127.0.0.1", 0, tmp_path, state=SandboxState(signer=signer))
    await first.close()
    ca_before = first.ca_path.read_bytes()

    second = await start_sandbox("127.0.0.1", 0, tmp_path, state=SandboxState(signer=signer))
    try:
        status = await _discovery_status(second.url, first.ca_path)
    finally:
        await second.close()

    assert second.ca_path.read_bytes() == ca_before
    assert status == 200
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o077 == 0


async def test_main_serves_until_sigterm(tmp_path: Path) -> None:
    """``main`` prints the summary, serves https, and exits cleanly on SIGTERM."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from relay.sandbox.server import main; "
        "main('127.0.0.1', int(sys.argv[1]), sys.argv[2], True)",
        str(port),
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("  RELAY_CA_BUNDLE=") for line in lines):
            line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
            assert line, "main exited before printing its summary"
            lines.append(line.decode())
        status = await _discovery_status(f"https://127.0.0.1:{port}", tmp_path / "ca.pem")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)

    assert status == 200
    assert f"  RELAY_AUTHORITY_HOST=https://127.0.0.1:{port}\n" in lines
    assert process.returncode == 0, stderr.decode()
