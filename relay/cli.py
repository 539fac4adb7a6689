"""``relay serve | migrate | token issue | sandbox``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from relay import __version__
from relay.config import Settings, load_settings
from relay.errors import ConfigError, RelayError


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
    token_sub = token.add_subparsers(dest="token_command", required=True)
    issue = token_sub.add_parser("issue", help="create an API token and print it")
    issue.add_argument("--config", type=Path)
    issue.add_argument("--description", default="", help="what the token is for")
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


async def _issue(settings: Settings, description: str) -> None:
    from relay.app import prepare_store
    from relay.auth.api_tokens import new_token
    from relay.store import tokens

    store = await prepare_store(settings)
    try:
        token = new_token()
        async with store.write() as conn:
            await tokens.add(conn, token, source="issued", description=description)
        print(token)
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
        elif command == "token":
            asyncio.run(_issue(settings, args.description))
    except ConfigError as exc:
        print(f"relay: invalid setting {exc.key}: {exc.problem}", file=sys.stderr)
        raise SystemExit(2) from None
    except RelayError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
