"""A token's restrictions and the audit log, applied by the authentication middleware.

:func:`admit` runs after the token and its permission are known and before the handler:
client address (``X-Forwarded-For`` only from ``security.trusted_proxies``), referrer and
rate limit. :func:`audit` runs after the handler for writes, sends and deletes.

Rate limits are counted in this process (:mod:`relay.auth.ratelimit`): each node enforces a
token's limit on its own requests until the cluster work (#16) shares the count.
"""

from __future__ import annotations

import functools
import ipaddress
import time

import structlog
from aiohttp import web

from relay.api.keys import AUDIT_LOG, RATE_LIMITER, SETTINGS
from relay.auth.grants import Grant, Network, Permission
from relay.errors import Forbidden, RateLimited, StoreError
from relay.store import token_log
from relay.store.engine import now_ms

__all__ = [
    "RATELIMIT",
    "add_ratelimit_headers",
    "admit",
    "audit",
    "client_address",
    "served_over_https",
]

log = structlog.get_logger(__name__)

# The RateLimit-* (and, when refused, Retry-After) headers of a rate-limited token's request.
RATELIMIT = web.RequestKey("ratelimit", dict[str, str])


async def admit(request: web.Request, grant: Grant) -> None:
    """Refuse the request (403, or 429 with Retry-After) when the token's restrictions do
    not admit it."""
    restrictions = grant.restrictions
    if restrictions.addresses is not None and not restrictions.admits_address(
        client_address(request)
    ):
        raise Forbidden("Access from this address is not allowed for this token")
    if not restrictions.admits_referrer(request.headers.get("Referer")):
        raise Forbidden("Access from this referrer is not allowed for this token")
    limit = restrictions.rate_limit
    if limit is None:
        return
    # Check and count in one synchronous call: no other request runs in between.
    decision = request.app[RATE_LIMITER].hit(
        grant.token_id, limit.max_requests, limit.window_s, time.monotonic()
    )
    request[RATELIMIT] = decision.headers()
    if not decision.admitted:
        raise RateLimited(
            "Rate limit exceeded for this token, try again later", headers=request[RATELIMIT]
        )


async def audit(request: web.Request, grant: Grant, permission: Permission, status: int) -> None:
    """Record a write, send or delete made with ``grant``'s token.

    Written with the entries of the requests finishing at the same moment (one writer of
    the store's transaction for all of them, :class:`relay.store.batched.Appends`), and
    committed before the request is answered. It wakes no worker; a failure is logged,
    never raised (the request itself has already happened).
    """
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    account = request.match_info.get("account")
    entry = token_log.Entry(
        token_id=grant.token_id,
        created_ms=now_ms(),
        method=request.method,
        route=route,
        account=account,
        status=status,
        address=client_address(request),
    )
    try:
        await request.app[AUDIT_LOG].append(entry)
    except StoreError:
        log.warning(
            "audit log write failed",
            token_id=grant.token_id,
            permission=str(permission),
            method=request.method,
            route=route,
            account=account,
            status=status,
        )


def client_address(request: web.Request) -> str | None:
    """The client's address: the connecting one, or, when that is a trusted proxy, the
    right-most ``X-Forwarded-For`` address that is not itself a trusted proxy."""
    remote = request.remote
    trusted = _networks(request.app[SETTINGS].security.trusted_proxies)
    if not trusted or not _within(remote, trusted):
        return remote
    hops = [
        hop.strip()
        for header in request.headers.getall("X-Forwarded-For", [])
        for hop in header.split(",")
    ]
    for hop in reversed(hops):
        if not hop:
            continue
        if not _within(hop, trusted):
            return hop
    # Every hop is a proxy of ours: the left-most is as close to the client as we know.
    return next((hop for hop in hops if hop), remote)


def served_over_https(request: web.Request) -> bool:
    """Whether the client's request came over https: this connection, or, when the
    connecting peer is one of ``security.trusted_proxies``, the proxy's ``X-Forwarded-Proto``
    (its last value: the one the proxy that connects to us wrote; earlier ones could have
    come from the client)."""
    if request.secure:
        return True
    trusted = _networks(request.app[SETTINGS].security.trusted_proxies)
    if not trusted or not _within(request.remote, trusted):
        return False
    values = [
        value.strip().lower()
        for header in request.headers.getall("X-Forwarded-Proto", [])
        for value in header.split(",")
    ]
    return bool(values) and values[-1] == "https"


async def add_ratelimit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: put a rate-limited token's ``RateLimit-*`` headers on the
    response, admitted or refused."""
    headers = request.get(RATELIMIT)
    if headers:
        response.headers.update(headers)


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _within(address: str | None, networks: tuple[Network, ...]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
