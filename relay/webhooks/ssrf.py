"""The SSRF guard: webhooks only reach public addresses unless a network is allowed.

The check runs on every address a connection is actually opened to, after DNS
(:class:`relay.webhooks.poster.Poster` for HTTP routes, :func:`checked_address` for brokers).
A hostname that resolves (or later rebinds) to a private address is refused just like a
literal private IP, and so are IPv6 forms that wrap a private IPv4 address (IPv4-mapped,
NAT64, 6to4, Teredo). A refusal is raised as :class:`SsrfRefused`; :func:`ssrf_reason` finds
it behind the exceptions that wrap it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from relay.errors import DeliveryError

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address

HOW_TO_ALLOW = "allow it with [webhooks] allow_networks"

_V4_SPECIAL: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), reason)
    for net, reason in (
        ("0.0.0.0/32", "unspecified"),
        ("0.0.0.0/8", "this-network 0.0.0.0/8"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "CGNAT"),
        ("169.254.0.0/16", "link-local"),
        ("192.0.0.0/24", "IETF protocol assignments 192.0.0.0/24"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("198.18.0.0/15", "benchmarking"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_V6_SPECIAL: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), reason)
    for net, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fc00::/7", "unique-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
        ("2001:db8::/32", "documentation"),
        ("100::/64", "discard-only"),
    )
)

_NAT64 = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")


class SsrfRefused(DeliveryError, OSError):
    """A webhook target address is not public and not in ``[webhooks] allow_networks``.

    It is also an ``OSError``: like a connect error, it is one address failing, and the
    host's other addresses are tried.
    """

    def __init__(
        self, address: str, reason: str, host: str | None = None, role: str = "webhook"
    ) -> None:
        where = f"{role} host {host}: address" if host and host != address else "address"
        super().__init__(f"{where} {address} is not allowed ({reason}); {HOW_TO_ALLOW}")
        self.address = address
        self.reason = reason
        self.host = host
        self.role = role

    def __reduce__(self) -> tuple[type[SsrfRefused], tuple[str, str, str | None, str]]:
        return (type(self), (self.address, self.reason, self.host, self.role))


def _v4_reason(ip: IPv4Address) -> str | None:
    for net, reason in _V4_SPECIAL:
        if ip in net:
            return reason
    if not ip.is_global:
        return "not globally reachable"
    return None


def _v6_reason(ip: IPv6Address) -> str | None:
    for net, reason in _V6_SPECIAL:
        if ip in net:
            return reason
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally reachable"
    return None


def _embedded_v4(ip: IPv6Address) -> tuple[str, list[IPv4Address]] | None:
    """The IPv4 addresses an IPv6 address stands for, and the name of the wrapping."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", [ip.ipv4_mapped]
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        # 64:ff9b:1::/48 may embed at other prefix lengths too; the /96 form is the one that
        # can name a specific host, the rest stays refused as not globally reachable.
        return "NAT64-wrapped", [IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return "6to4-wrapped", [ip.sixtofour]
    if ip.teredo is not None:
        server, client = ip.teredo
        return "Teredo-wrapped", [client, server]
    return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses webhooks may connect to: public ones, plus ``allow_networks``.

    An allowed network wins over every refusal, also when it contains the IPv4 address an
    IPv6 address wraps (allowing ``127.0.0.0/8`` allows ``::ffff:127.0.0.1``).
    """

    allow_networks: Sequence[str] = ()
    networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.allow_networks, str):
            raise TypeError("allow_networks is a list of networks, not one string")
        names = tuple(self.allow_networks)
        object.__setattr__(self, "allow_networks", names)
        object.__setattr__(
            self, "networks", tuple(ipaddress.ip_network(n, strict=False) for n in names)
        )

    @classmethod
    def from_networks(cls, networks: Iterable[str]) -> AddressPolicy:
        """A policy allowing ``networks`` (strings like ``"127.0.0.0/8"``) besides public ones."""
        return cls(tuple(networks))

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)

    def check(self, ip: str) -> str | None:
        """Why connecting to ``ip`` is refused, or None when it is allowed."""
        try:
            # A scope (fe80::1%eth0) does not change which network the address is in.
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return "not an IP address"
        if self._allowed(addr):
            return None
        if isinstance(addr, IPv4Address):
            return _v4_reason(addr)
        embedded = _embedded_v4(addr)
        if embedded is not None:
            wrapping, inner = embedded
            if any(self._allowed(v4) for v4 in inner):
                return None
            for v4 in inner:
                reason = _v4_reason(v4)
                if reason is not None:
                    return f"{wrapping} {reason}"
        return _v6_reason(addr)


async def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order, each once."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def screen(
    addresses: Iterable[str], policy: AddressPolicy, host: str, role: str = "webhook"
) -> tuple[list[str], SsrfRefused | None]:
    """The addresses ``policy`` allows, in order, and the refusal of the first it does not
    (None when none was refused)."""
    allowed: list[str] = []
    refused: SsrfRefused | None = None
    for address in addresses:
        reason = policy.check(address)
        if reason is None:
            allowed.append(address)
        elif refused is None:
            refused = SsrfRefused(address, reason, host, role=role)
    return allowed, refused


async def checked_address(host: str, port: int, policy: AddressPolicy) -> str:
    """The address to open a broker connection to: the first that ``host`` resolves to and
    ``policy`` allows.

    The connection is then opened to this address, not to the name, so that the name cannot
    resolve to another address in between (DNS rebinding). Raises :class:`SsrfRefused` (for
    the first address refused) when none is allowed, ``OSError`` when the name does not
    resolve.
    """
    allowed, refused = screen(await resolve(host, port), policy, host, role="broker")
    if allowed:
        return allowed[0]
    if refused is None:
        raise OSError(f"broker host {host} has no address")
    raise refused


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def ssrf_refusal(exc: BaseException) -> SsrfRefused | None:
    """The :class:`SsrfRefused` behind an exception (itself, its causes or its group's
    members), or None."""
    for current in _causes(exc):
        if isinstance(current, SsrfRefused):
            return current
    return None


def ssrf_reason(exc: BaseException) -> str | None:
    """The SSRF refusal behind ``exc`` as a message for the user, or None if it is not one.

    E.g. ``"webhook host localhost: address 127.0.0.1 is not allowed (loopback); allow it
    with [webhooks] allow_networks"``.
    """
    refusal = ssrf_refusal(exc)
    return None if refusal is None else str(refusal)
