"""``relay`` as a process: first start, settings errors, graceful shutdown, token issue."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from relay.auth.api_tokens import hash_token
from relay.auth.grants import Grant
from relay.cli import main
from relay.config import StoreSettings
from relay.store import Store, tokens
from relay.store import accounts as accounts_store
from tests.proc import RelayProcess, free_port, relay_env


def _get(url: str, token: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_first_start_prints_a_token_once(tmp_path: Path) -> None:
    """With no token anywhere the first start prints one that works; the second prints none."""
    port = free_port()
    relay = RelayProcess(tmp_path, port, relay_env(tmp_path, port))
    relay.start()
    assert relay.stop() == 0
    lines = [ln for ln in relay.output().splitlines() if "API token" in ln]
    assert len(lines) == 1
    token = lines[0].rsplit(" ", 1)[1]
    assert (tmp_path / "relay.key").stat().st_mode & 0o777 == 0o600
    relay.start()
    assert _get(f"{relay.url}/v1/accounts", token) == 200
    assert _get(f"{relay.url}/v1/accounts", "nope") == 401
    relay.stop()
    assert len([ln for ln in relay.output().splitlines() if "API token" in ln]) == 1
    for line in relay.output().splitlines():
        if line.startswith("{"):
            assert token not in line


def test_bad_setting_stops_with_one_line(tmp_path: Path) -> None:
    """A malformed setting stops start-up with one line naming the key."""
    env = relay_env(tmp_path, free_port(), {"RELAY_PORT": "seventy"})
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip().splitlines() == [
        "relay: invalid setting server.port: expected an integer, got 'seventy'"
    ]


def test_bad_config_file_key(tmp_path: Path) -> None:
    """An unknown key in the TOML file is named."""
    config = tmp_path / "relay.toml"
    config.write_text("[server]\nprot = 1\n")
    env = relay_env(tmp_path, free_port())
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "server.prot: unknown setting" in done.stderr.decode()


def test_sigterm_and_sigint_shut_down_cleanly(tmp_path: Path) -> None:
    """SIGTERM and SIGINT both end the process with exit status 0."""
    port = free_port()
    relay = RelayProcess(tmp_path, port, relay_env(tmp_path, port, {"RELAY_API_TOKEN": "t" * 40}))
    relay.start()
    assert relay.stop(signal.SIGTERM) == 0
    relay.start()
    assert relay.stop(signal.SIGINT) == 0


def test_token_issue_and_migrate(tmp_path: Path) -> None:
    """`relay migrate` reports the revision; `relay token issue` prints a working token."""
    port = free_port()
    env = relay_env(tmp_path, port, {"RELAY_API_TOKEN": "s" * 40})
    migrated = subprocess.run(
        [sys.executable, "-m", "relay", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert b"schema at revision" in migrated.stdout
    issued = subprocess.run(
        [sys.executable, "-m", "relay", "token", "issue", "--description", "ci"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    token = issued.stdout.decode().strip()
    assert len(token) == 64
    relay = RelayProcess(tmp_path, port, env)
    relay.start()
    try:
        assert _get(f"{relay.url}/v1/accounts", token) == 200
        with urllib.request.urlopen(f"{relay.url}/health", timeout=5) as resp:  # noqa: S310
            assert json.load(resp)["status"] == "ok"
    finally:
        relay.stop()


def test_token_issue_with_options_list_and_revoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`relay token issue` validates its options as POST /v1/tokens does and stores the
    grant; `relay token list` shows it (never the token); `relay token revoke` deletes it."""
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    for key in [k for k in os.environ if k.startswith("RELAY_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RELAY_STORE_URL", url)
    monkeypatch.setenv("RELAY_API_TOKEN", "s" * 40)
    monkeypatch.setenv("RELAY_SECRET", "cli-test-secret-value")
    monkeypatch.chdir(tmp_path)

    for argv, problem in (
        (["--account", "acme"], "Account 'acme' not found"),
        (["--permission", "foo:read"], "permissions.foo"),
        (["--address", "10.0.0.0/33"], "restrictions.addresses.0"),
        (["--rate-limit", "0/60"], "restrictions.rateLimit.maxRequests"),
        (["--expires", "2001-01-01T00:00:00Z"], "expires"),
        (["--shared"], "shared"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(["token", "issue", *argv])
        assert exited.value.code == 1
        assert capsys.readouterr().err.startswith(f"relay: {problem}")

    async def add_account() -> None:
        store = Store.open(StoreSettings(url=url))
        try:
            async with store.write() as conn:
                await accounts_store.insert(
                    conn,
                    {
                        "id": "acme",
                        "name": "Acme",
                        "email": "acme@example.com",
                        "backend": "imap",
                        "state": "init",
                        "config": {},
                    },
                )
        finally:
            await store.close()

    asyncio.run(add_account())
    main(
        [
            "token",
            "issue",
            "--description",
            "helpdesk",
            "--account",
            "acme",
            "--shared",
            "--scope",
            "api",
            "--permission",
            "message:read",
            "--permission",
            "submit:send",
            "--address",
            "10.0.0.0/8",
            "--referrer",
            "https://app.example.com/",
            "--rate-limit",
            "100/60",
            "--expires",
            "2099-01-01T00:00:00Z",
        ]
    )
    token = capsys.readouterr().out.strip()
    assert len(token) == 64

    main(["token", "list", "--account", "acme"])
    (line,) = capsys.readouterr().out.splitlines()
    listed = json.loads(line)
    assert token not in line
    assert {k: v for k, v in listed.items() if k not in ("id", "created")} == {
        "account": "acme",
        "shared": True,
        "description": "helpdesk",
        "scopes": ["api"],
        "permissions": {"message": ["read"], "submit": ["send"]},
        "restrictions": {
            "addresses": ["10.0.0.0/8"],
            "referrers": ["https://app.example.com/"],
            "rateLimit": {"maxRequests": 100, "timeWindow": 60},
        },
        "expires": "2099-01-01T00:00:00.000Z",
        "source": "issued",
    }

    async def grant_of_token() -> Grant | None:
        store = Store.open(StoreSettings(url=url))
        try:
            async with store.read() as conn:
                return await tokens.find(conn, hash_token(token))
        finally:
            await store.close()

    grant = asyncio.run(grant_of_token())
    assert grant is not None
    assert (grant.account, grant.shared, grant.scopes) == ("acme", True, frozenset({"api"}))

    main(["token", "revoke", listed["id"]])
    assert capsys.readouterr().out.strip() == f"deleted {listed['id']}"
    assert asyncio.run(grant_of_token()) is None
    with pytest.raises(SystemExit) as exited:
        main(["token", "revoke", listed["id"]])
    assert exited.value.code == 1


def _admin_sign_in(base: str, password: str) -> tuple[int, str]:
    """Sign in to the admin UI with ``password`` as a browser does (the form, its cookie);
    the status of the answer and the page it ends on."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{base}/admin/login", timeout=10) as resp:
        form = resp.read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    body = urllib.parse.urlencode({"csrf": csrf.group(1), "password": password}).encode()
    try:
        with opener.open(f"{base}/admin/login", data=body, timeout=10) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


@pytest.mark.slow
def test_admin_password_signs_in_to_the_admin_ui(tmp_path: Path) -> None:
    """`relay admin-password` reads a password from standard input and stores it: the
    running relay's admin UI signs in with it (and not with another); `--clear` removes it."""
    port = free_port()
    env = relay_env(tmp_path, port, {"RELAY_API_TOKEN": "s" * 40})
    password = "correct horse battery staple"
    subprocess.run(
        [sys.executable, "-m", "relay", "admin-password"],
        cwd=tmp_path,
        env=env,
        input=f"{password}\n".encode(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    relay = RelayProcess(tmp_path, port, env)
    relay.start()
    try:
        status, page = _admin_sign_in(relay.url, password)
        assert status == 200
        assert "<h1>Dashboard" in page
        status, page = _admin_sign_in(relay.url, "wrong horse")
        assert status == 401
        assert "Wrong password" in page
    finally:
        relay.stop()
    subprocess.run(
        [sys.executable, "-m", "relay", "admin-password", "--clear"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    relay.start()
    try:
        assert _admin_sign_in(relay.url, password)[0] == 401
    finally:
        relay.stop()
