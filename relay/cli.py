"""``relay serve | migrate | token issue|list|revoke | admin-password | sandbox``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from relay import __version__
from relay.config import Settings, load_settings
from relay.errors import ConfigError, InputError, RelayError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="mailrelay: Microsoft 365 mailboxes to signed webhooks"
    )
    parser.add_argument("--version", action="version", version=f"mailrelay {__version__}")
    sub = parser.add_subparsers(dest="command")
    for name, text in (
        ("serve", "run the service (the default)"),
        ("migrate", "apply database migrations"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--config", type=Path, help="TOML settings file (see config.example.toml)")
    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="subcommand", required=True)
    issue = token_sub.add_parser(
        "issue",
        help="create an API token and print it",
        description="Create an API token and print it. Without options it may do everything; "
        "the options limit it as POST /v1/tokens does.",
    )
    issue.add_argument("--config", type=Path)
    issue.add_argument("--description", default="issued with relay token issue")
    issue.add_argument("--account", help="bind the token to this account")
    issue.add_argument(
        "--shared",
        action="store_true",
        help="also the shared mailboxes delegated from --account",
    )
    issue.add_argument(
        "--scope",
        action="append",
        choices=("api", "smtp", "metrics"),
        help="repeatable; default: every scope",
    )
    issue.add_argument(
        "--permission",
        action="append",
        metavar="GROUP:ACTION",
        help="repeatable, e.g. message:read; default: every group and action",
    )
    issue.add_argument("--address", action="append", help="allowed client IP or CIDR; repeatable")
    issue.add_argument("--referrer", action="append", help="allowed Referer prefix; repeatable")
    issue.add_argument("--rate-limit", metavar="N/SECONDS", help="at most N requests per SECONDS")
    issue.add_argument("--expires", metavar="ISO", help="date and time the token stops working")
    listing = token_sub.add_parser("list", help="list API tokens (never the tokens themselves)")
    listing.add_argument("--config", type=Path)
    listing.add_argument("--account", help="only the tokens bound to this account")
    revoke = token_sub.add_parser("revoke", help="delete an API token by its id")
    revoke.add_argument("--config", type=Path)
    revoke.add_argument("id")
    password = sub.add_parser(
        "admin-password",
        help="set the password of the admin UI (/admin)",
        description="Set the admin UI's password, read from the terminal (asked twice) or "
        "from standard input (one line). It is stored hashed (scrypt); signed-in password "
        "sessions end.",
    )
    password.add_argument("--config", type=Path, help="TOML settings file")
    password.add_argument(
        "--clear", action="store_true", help="remove the password (sign in with an API token)"
    )
    sandbox = sub.add_parser("sandbox", help="run the local Microsoft 365 emulator")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=4443)
    sandbox.add_argument("--data-dir", default="relay-sandbox", help="CA certificate and state")
    sandbox.add_argument("--seed", action="store_true", help="create a ready demo tenant")
    sandbox.add_argument(
        "--allow-http-notifications",
        action="store_true",
        help="accept http:// Graph notification URLs on loopback (Microsoft requires https)",
    )
    return parser


def _settings(path: Path | None) -> Settings:
    return load_settings(path, os.environ)


def _announce(token: str) -> None:
    # Straight to the terminal, never through the logger: logs are shipped and kept.
    print(f"API token (shown once, store it now): {token}", file=sys.stderr, flush=True)


def _raise_open_files_limit() -> None:
    """Every watched folder holds a connection: lift the soft descriptor limit to the hard one."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        # On refusal the soft limit stays, and bounds how many folders one node can watch.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _freeze_heap(_app: object) -> None:
    """Leave what start-up made (modules, schema, models: most of the heap) out of the
    garbage collector's full passes: they run over every tracked object, and the delivery
    path allocates enough to run them often. Measured on the queue sink path: 15 % more
    deliveries a second."""
    gc.freeze()


def _serve(settings: Settings) -> None:
    from aiohttp import web

    from relay.app import create_app
    from relay.log import configure

    configure(settings.log)
    _raise_open_files_limit()
    loop: asyncio.AbstractEventLoop | None = None
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
    app = create_app(settings, announce=_announce)
    app.on_startup.append(_freeze_heap)
    web.run_app(
        app,
        host=settings.server.host,
        port=settings.server.port,
        shutdown_timeout=settings.server.shutdown_timeout,
        print=lambda _msg: print(
            f"mailrelay {__version__} listening on http://{settings.server.host}:{settings.server.port}",
            file=sys.stderr,
            flush=True,
        ),
        access_log=None,
        loop=loop,
    )


async def _migrate(settings: Settings) -> None:
    from relay.store import Store
    from relay.store.migrate import current_revision, migrate

    store = Store.open(settings.store)
    try:
        await migrate(store)
        print(f"schema at revision {await current_revision(store)}")
    finally:
        await store.close()


def _issue_request(args: argparse.Namespace) -> dict[str, object]:
    """``relay token issue``'s options as the body of ``POST /v1/tokens``."""
    body: dict[str, object] = {
        "description": args.description,
        "shared": args.shared,
        "scopes": args.scope or ["*"],
    }
    if args.account is not None:
        body["account"] = args.account
    if args.permission is not None:
        permissions: dict[str, list[str]] = {}
        for item in args.permission:
            group, _, action = item.partition(":")
            permissions.setdefault(group, []).append(action)
        body["permissions"] = permissions
    restrictions: dict[str, object] = {}
    if args.address is not None:
        restrictions["addresses"] = args.address
    if args.referrer is not None:
        restrictions["referrers"] = args.referrer
    if args.rate_limit is not None:
        count, _, window = args.rate_limit.partition("/")
        restrictions["rateLimit"] = {"maxRequests": count, "timeWindow": window or None}
    if restrictions:
        body["restrictions"] = restrictions
    if args.expires is not None:
        body["expires"] = args.expires
    return body


async def _issue(settings: Settings, args: argparse.Namespace) -> None:
    from relay.api.endpoint import validate
    from relay.api.tokens import TokenCreate, mint
    from relay.app import prepare_store

    body = validate(TokenCreate, _issue_request(args))
    store = await prepare_store(settings)
    try:
        async with store.write() as conn:
            token, _ = await mint(conn, body, parent=None, source="issued")
        print(token)
    finally:
        await store.close()


async def _list(settings: Settings, account: str | None) -> None:
    from relay.api.tokens import token_out
    from relay.app import prepare_store
    from relay.store import tokens

    store = await prepare_store(settings)
    try:
        async with store.read() as conn:
            _, rows = await tokens.page(conn, 0, 1_000_000, account=account)
        for row in rows:
            print(token_out(row).model_dump_json(exclude_none=True))
    finally:
        await store.close()


async def _revoke(settings: Settings, token_id: str) -> None:
    from relay.app import prepare_store
    from relay.errors import NotFound
    from relay.store import tokens

    store = await prepare_store(settings)
    try:
        async with store.write() as conn:
            if not await tokens.delete(conn, token_id):
                raise NotFound(f"token {token_id!r} not found")
        # A running relay reads a token's grant again at most a second after it cached it.
        print(f"deleted {token_id}")
    finally:
        await store.close()


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass("Admin password: ")
    if getpass.getpass("Again: ") != first:
        raise InputError("the two passwords differ")
    return first


async def _admin_password(settings: Settings, clear: bool) -> None:
    from relay.api.admin.password import clear_password, set_password
    from relay.app import prepare_store
    from relay.auth.passwords import hash_password

    stored: str | None = None
    if not clear:
        try:
            stored = await asyncio.to_thread(hash_password, _read_password())
        except ValueError as exc:
            raise InputError(str(exc)) from None
    store = await prepare_store(settings)
    try:
        async with store.write() as conn:
            if stored is None:
                await clear_password(conn)
            else:
                await set_password(conn, stored)
        print("admin password cleared" if stored is None else "admin password set")
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    if command == "sandbox":
        from relay.sandbox.server import main as sandbox_main

        try:
            sandbox_main(
                args.host,
                args.port,
                args.data_dir,
                args.seed,
                allow_http_notifications=args.allow_http_notifications,
            )
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        return
    try:
        settings = _settings(getattr(args, "config", None))
        if command == "serve":
            _serve(settings)
        elif command == "migrate":
            asyncio.run(_migrate(settings))
        elif command == "admin-password":
            asyncio.run(_admin_password(settings, args.clear))
        elif command == "token" and args.subcommand == "issue":
            asyncio.run(_issue(settings, args))
        elif command == "token" and args.subcommand == "list":
            asyncio.run(_list(settings, args.account))
        elif command == "token":
            asyncio.run(_revoke(settings, args.id))
    except ConfigError as exc:
        print(f"relay: invalid setting {exc.key}: {exc.problem}", file=sys.stderr)
        raise SystemExit(2) from None
    except RelayError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
