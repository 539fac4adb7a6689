"""An account's ``proxy``: IMAP and SMTP connections through SOCKS4, SOCKS5 or HTTP CONNECT.

:func:`check` validates a proxy URL (``socks5://[user:pass@]host:port``); :func:`connect`
opens a TCP connection to a server through the proxy and hands back the connected socket,
which asyncio (``loop.create_connection(sock=...)``) and aiosmtplib (``sock=``) then use as
if they had opened it themselves, TLS included. A proxy that fails raises ``OSError`` like
a server that cannot be reached, so callers need no second error path.
"""

from __future__ import annotations

import socket
from urllib.parse import SplitResult, urlsplit

from python_socks import ProxyError, ProxyTimeoutError
from python_socks.async_.asyncio import Proxy

__all__ = ["SCHEMES", "ProxyFailed", "check", "connect", "redacted"]

SCHEMES = ("socks4", "socks5", "http")


class ProxyFailed(ConnectionError):
    """The proxy refused, failed or could not be reached."""


def _parts(url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError("must be a socks4://, socks5:// or http:// URL")
    if not parts.hostname:
        raise ValueError("must name the proxy's host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if not port:
        raise ValueError("must name the proxy's port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be scheme://[user:password@]host:port, nothing after the port")
    return parts


def check(url: str) -> str:
    """``url`` if it is a proxy URL this relay can use; ValueError saying what is wrong."""
    _parts(url)
    return url


def redacted(url: str) -> str:
    """``url`` without its password (what the API shows and logs may carry)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}:***@{host}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


async def connect(url: str, host: str, port: int, *, seconds: float) -> socket.socket:
    """A socket connected to ``host:port`` through the proxy at ``url``.

    The proxy resolves ``host`` (SOCKS4 cannot: the name is looked up here first).
    """
    proxy = Proxy.from_url(url, rdns=_parts(url).scheme.lower() != "socks4")
    try:
        return await proxy.connect(host, port, timeout=seconds)
    except ProxyTimeoutError as exc:
        raise ProxyFailed(f"proxy {redacted(url)} timed out after {seconds:g} s") from exc
    except (ProxyError, OSError) as exc:
        raise ProxyFailed(f"proxy {redacted(url)}: {exc}") from exc
