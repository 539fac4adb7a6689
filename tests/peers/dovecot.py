"""A real Dovecot 2.3 IMAP server in a temporary directory, for tests and benchmarks.

Usage from plain code (a benchmark)::

    with dovecot_server(tls=True, tuned=True) as server:
        ...  # dovecot_server(users={"main@example.com": "secret"}) adds users up front
        ...

or from asyncio code::

    async with running_dovecot() as server:
        await server.append("main@example.com", "INBOX", message_bytes)

Everything (config, sockets, state, logs, mail) lives under one directory; the server listens
on free ports of 127.0.0.1 only. It is started as ``dovecot -F -c DIR/dovecot.conf`` and
stopped by its PID.

Authentication:

* password logins (PLAIN, LOGIN) are checked against a passwd-file. Pass ``users`` when
  starting; ``add_user`` also works while the server runs, but Dovecot looks at the file
  at most once a second, so a user added right after a login may be unknown for up to 1 s;
* XOAUTH2 and OAUTHBEARER go to a Lua passdb that receives the bearer token as the password
  and the ``user=`` value as the user name. The Lua asks one function, ``token_allows(token,
  mailbox)``, whether the token may open that mailbox. It reads the grants file on every
  login, so ``grant()`` and ``revoke()`` take effect at once.

The grants file is the contract with whatever issues tokens. One line per token::

    <token> <owner> [<other mailbox> ...]

A token opens its owner's mailbox and every other mailbox named on its line (shared
mailboxes the owner may open).

With ``sandbox_tokens=True`` the Lua asks the Microsoft identity emulator instead, the way
Exchange Online does: it reads the sandbox's grants snapshot (``tokens_path``; start the
sandbox with ``grants_path=server.tokens_path``), which lists every access token that is
valid right now with the mailboxes it opens. A token the sandbox revoked or that expired is
refused, one it just issued is accepted, and only tokens for Exchange
(``https://outlook.office.com``) open mailboxes.

To plug in yet another token issuer, either have it write the grants file (write a
temporary file, then rename it over the old one; ``write_grants`` does that), or replace the
body of ``token_allows`` in ``AUTH_LUA`` with a request to the issuer: Dovecot 2.3's auth
Lua exposes ``dovecot.http.client{...}`` for that (or shell out to ``curl`` from Lua with
``io.popen``). Nothing else in this module depends on how the token is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.proc import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"

AUTH_LUA = r"""
-- XOAUTH2 / OAUTHBEARER check for the test Dovecot. Dovecot hands the bearer token to this
-- passdb as the password and the SASL user= value as req.user (the mailbox to open).
local grants_path = "@GRANTS@"
-- The sandbox's grants snapshot (JSON, relay.sandbox.app.SnapshotWriter); empty: not used.
local snapshot_path = "@SNAPSHOT@"

-- Whether the snapshot lists ``token`` as a live Exchange token that opens ``mailbox``. The
-- snapshot is json.dumps(..., indent=1, sort_keys=True): one object per token, whose only
-- nested values are lists of strings.
local function snapshot_allows(token, mailbox)
  local f = io.open(snapshot_path, "r")
  if f == nil then
    return false
  end
  local text = f:read("*a")
  f:close()
  local at = string.find(text, '"' .. token .. '": {', 1, true)
  if at == nil then
    return false
  end
  local entry = string.match(text, "%b{}", at)
  local exchange = '"resource": "https://outlook.office.com"'
  if entry == nil or not string.find(entry, exchange, 1, true) then
    return false
  end
  local list = string.match(entry, '"mailboxes": (%b[])')
  if list == nil then
    return false
  end
  local wanted = string.lower(mailbox)
  for item in string.gmatch(list, '"([^"]*)"') do
    if string.lower(item) == wanted then
      return true
    end
  end
  return false
end

-- The only place that decides whether a token opens a mailbox. Swap its body to ask another
-- issuer (e.g. an HTTP introspection endpoint) without touching the rest.
local function token_allows(token, mailbox)
  if snapshot_path ~= "" then
    return snapshot_allows(token, mailbox)
  end
  local f = io.open(grants_path, "r")
  if f == nil then
    return false
  end
  local wanted = string.lower(mailbox)
  local allowed = false
  for line in f:lines() do
    local fields = {}
    for word in string.gmatch(line, "%S+") do
      fields[#fields + 1] = word
    end
    if fields[1] == token then
      for i = 2, #fields do
        if string.lower(fields[i]) == wanted then
          allowed = true
        end
      end
    end
  end
  f:close()
  return allowed
end

function auth_password_verify(req, pass)
  if token_allows(pass, req.user) then
    return dovecot.auth.PASSDB_RESULT_OK, {}
  end
  return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "token does not grant " .. req.user
end

function auth_passdb_lookup(req)
  return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, "lookup not supported"
end
"""

TUNING = """
default_client_limit = 10000
default_process_limit = 1000
service imap {
  client_limit = 50
  service_count = 0
  process_limit = 200
}
"""

TUNED_LOGIN = """
  service_count = 0
  client_limit = 2000
  process_min_avail = 2
"""


def render_config(
    root: Path, *, port: int, tls_port: int | None = None, tuned: bool = False
) -> str:
    """Return the ``dovecot.conf`` text for a server rooted at ``root``."""
    tls = tls_port is not None
    ssl_lines = (
        f"ssl = yes\nssl_cert = <{root}/tls/cert.pem\nssl_key = <{root}/tls/key.pem\n"
        if tls
        else "ssl = no\n"
    )
    return f"""# generated by tests/peers/dovecot.py
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = relay-test-{port}
log_path = {root}/log/dovecot.log
{ssl_lines}disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
# Tests fail logins on purpose; real servers (Microsoft) answer a bad token at once too.
auth_failure_delay = 0
mail_location = maildir:{root}/mail/%d/%n/Maildir
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 65534
first_valid_gid = 65534
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = create
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = create
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = create
  }}
}}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {root}/users
}}
passdb {{
  driver = lua
  mechanisms = xoauth2 oauthbearer
  args = file={root}/auth.lua blocking=yes
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/mail/%d/%n allow_all_users=yes
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port or 0}
  }}
{TUNED_LOGIN if tuned else ""}}}
protocol imap {{
  mail_max_userip_connections = 10000
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{TUNING if tuned else ""}"""


@dataclass
class DovecotServer:
    """One Dovecot instance. Create with :func:`start_dovecot` or the context managers."""

    root: Path
    tls: bool = False
    tuned: bool = False
    # XOAUTH2 tokens are checked against the sandbox's grants snapshot (tokens_path).
    sandbox_tokens: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    tls_port: int | None = None
    pid: int | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _users: dict[str, str] = field(default_factory=dict, repr=False)
    _grants: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict, repr=False)
    _ca: object | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        """Path of the generated ``dovecot.conf``."""
        return self.root / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        """Dovecot's log file (auth failures, kicks, errors)."""
        return self.root / "log" / "dovecot.log"

    @property
    def grants_path(self) -> Path:
        """The token grants file read by the Lua passdb."""
        return self.root / "grants"

    @property
    def tokens_path(self) -> Path:
        """Where the Lua passdb reads the sandbox's grants snapshot (``sandbox_tokens``)."""
        return self.root / "tokens.json"

    # -- set-up -----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Write config, Lua, users, grants and (with ``tls``) a certificate; pick ports."""
        for sub in ("run", "state", "log", "mail", "tls"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # Login processes run as dovenull and mail processes as nobody: they must be able to
        # walk into the directory.
        self.root.chmod(0o755)
        os.chown(self.root / "mail", 65534, 65534)
        if not self.port:
            self.port = free_port()
        if self.tls and not self.tls_port:
            self.tls_port = free_port()
        if self.tls and self._ca is None:
            self._make_certificate()
        snapshot = str(self.tokens_path) if self.sandbox_tokens else ""
        (self.root / "auth.lua").write_text(
            AUTH_LUA.replace("@GRANTS@", str(self.grants_path)).replace("@SNAPSHOT@", snapshot)
        )
        self._write_users()
        self.write_grants()
        self.config_path.write_text(
            render_config(
                self.root,
                port=self.port,
                tls_port=self.tls_port if self.tls else None,
                tuned=self.tuned,
            )
        )

    def _make_certificate(self) -> None:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(self.root / "tls" / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(self.root / "tls" / "cert.pem"))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(self.root / "tls" / "cert.pem"), append=True)
        self._ca = ca

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context for clients that trusts this server's certificate."""
        if self._ca is None:
            raise RuntimeError("server was created without tls=True")
        ctx = ssl.create_default_context()
        self._ca.configure_trust(ctx)  # type: ignore[attr-defined]
        return ctx

    def add_user(self, user: str, password: str) -> None:
        """Add (or change) a password user; takes effect without a restart."""
        self._users[user] = password
        if self.config_path.exists():
            self._write_users()

    def _write_users(self) -> None:
        lines = "".join(f"{user}:{{PLAIN}}{pw}::::::\n" for user, pw in self._users.items())
        _atomic_write(self.root / "users", lines)

    def grant(self, token: str, owner: str, mailboxes: Iterable[str] = ()) -> None:
        """Let ``token`` open ``owner``'s mailbox and ``mailboxes``; takes effect at once."""
        self._grants[token] = (owner, tuple(mailboxes))
        self.write_grants()

    def revoke(self, token: str) -> None:
        """Make ``token`` invalid for every mailbox; takes effect at once."""
        self._grants.pop(token, None)
        self.write_grants()

    def write_grants(self) -> None:
        """Write the grants file atomically (the Lua passdb reads it on every login)."""
        lines = "".join(
            " ".join((token, owner, *others)) + "\n"
            for token, (owner, others) in self._grants.items()
        )
        _atomic_write(self.grants_path, lines)

    # -- process ----------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Start Dovecot (blocking) and wait until the IMAP port greets."""
        if self._process is not None:
            raise RuntimeError("already running")
        self.prepare()
        stderr = (self.root / "log" / "stderr.log").open("ab")
        try:
            self._process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            stderr.close()
        self.pid = self._process.pid
        deadline = time.monotonic() + timeout
        ports = [self.port] + ([self.tls_port] if self.tls and self.tls_port else [])
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                self.pid = None
                raise RuntimeError(f"dovecot exited with {code}:\n{self.log_tail()}")
            if all(_port_answers(self.host, p) for p in ports):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not answer in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Dovecot by its PID (SIGTERM, then SIGKILL) and wait until it is gone."""
        process, self._process = self._process, None
        self.pid = None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        # Login/imap children share the master's process group; make sure none linger.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    @property
    def running(self) -> bool:
        """Whether the master process is alive."""
        return self._process is not None and self._process.poll() is None

    async def restart(self) -> None:
        """Stop and start again on the same ports, keeping users, grants and mail."""
        await asyncio.to_thread(self.stop)
        await asyncio.to_thread(self.start)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Dovecot's log, for error messages."""
        text = ""
        for name in ("dovecot.log", "stderr.log"):
            path = self.root / "log" / name
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    # -- administration ---------------------------------------------------------------------

    async def doveadm(self, *args: str, stdin: bytes | None = None) -> str:
        """Run ``doveadm -c CONFIG args...`` and return its output; raise on failure."""
        proc = await asyncio.create_subprocess_exec(
            DOVEADM,
            "-c",
            str(self.config_path),
            *args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin)
        if proc.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)} failed: {err.decode(errors='replace')}")
        return out.decode(errors="replace")

    async def kick(self, user: str) -> None:
        """Disconnect every IMAP session of ``user`` (the client sees a BYE)."""
        await self.doveadm("kick", user)

    async def append(self, user: str, folder: str, message: bytes) -> None:
        """Deliver ``message`` into ``user``'s ``folder`` (``doveadm save``)."""
        await self.doveadm("save", "-u", user, "-m", folder, stdin=message)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _new_server(
    root: Path,
    tls: bool,
    tuned: bool,
    users: Mapping[str, str] | None,
    sandbox_tokens: bool = False,
) -> DovecotServer:
    server = DovecotServer(root=root, tls=tls, tuned=tuned, sandbox_tokens=sandbox_tokens)
    for user, password in (users or {}).items():
        server.add_user(user, password)
    return server


def start_dovecot(
    root: Path | None = None,
    *,
    tls: bool = False,
    tuned: bool = False,
    users: Mapping[str, str] | None = None,
) -> DovecotServer:
    """Start a Dovecot (blocking) in ``root`` (a new temp dir if None) and return it.

    ``root`` and its parents must be enterable by other users (not pytest's ``tmp_path``).
    """
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="relay-dovecot-"))
    server = _new_server(root, tls, tuned, users)
    server.start()
    return server


@contextlib.contextmanager
def dovecot_server(
    *,
    tls: bool = False,
    tuned: bool = False,
    users: Mapping[str, str] | None = None,
    sandbox_tokens: bool = False,
) -> Iterator[DovecotServer]:
    """Run a Dovecot in a temp dir for the duration of the ``with`` block."""
    root = Path(tempfile.mkdtemp(prefix="relay-dovecot-"))
    server = _new_server(root, tls, tuned, users, sandbox_tokens)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_dovecot(
    *, tls: bool = False, tuned: bool = False, users: Mapping[str, str] | None = None
) -> AsyncIterator[DovecotServer]:
    """Async form of :func:`dovecot_server` (start and stop run in a worker thread)."""
    root = Path(tempfile.mkdtemp(prefix="relay-dovecot-"))
    server = _new_server(root, tls, tuned, users)
    try:
        await asyncio.to_thread(server.start)
        yield server
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(root, ignore_errors=True)
