"""The SSRF guard: the address table, and refusals through the webhook client and a real
receiver."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

from relay.errors import DeliveryError
from relay.webhooks.poster import AttemptError, Poster
from relay.webhooks.ssrf import (
    AddressPolicy,
    SsrfRefused,
    ssrf_reason,
    ssrf_refusal,
)
from tests.peers.receiver import Receiver
from tests.proc import free_port

SECRET = "whsec_" + "QUJD" * 11


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("100.64.0.1", "CGNAT"),
        ("169.254.169.254", "link-local"),
        ("192.0.0.8", "IETF protocol assignments 192.0.0.0/24"),
        ("192.0.2.10", "documentation"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 (an address to check, not to bind)
        ("0.1.2.3", "this-network 0.0.0.0/8"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("fc00::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%lo", "link-local"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "IPv4-mapped private"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("64:ff9b::a00:1", "NAT64-wrapped private"),
        ("64:ff9b:1::7f00:1", "NAT64-wrapped loopback"),
        ("2002:7f00:1::", "6to4-wrapped loopback"),
        ("2002:a9fe:a9fe::1", "6to4-wrapped link-local"),
        ("2001::f5ff:fffe", "Teredo-wrapped private"),  # client 10.0.0.1, obfuscated
        ("::7f00:1", "reserved"),  # deprecated IPv4-compatible form
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700::1111", None),
        ("2002:808:808::1", None),  # 6to4 around a public address
        ("example.com", "not an IP address"),
    ],
)
def test_check_refuses_every_non_global_address(ip: str, reason: str | None) -> None:
    """By default only globally reachable addresses pass, wrapped IPv4 forms included."""
    assert AddressPolicy().check(ip) == reason


@pytest.mark.parametrize(
    ("allow", "ip", "reason"),
    [
        (["127.0.0.0/8"], "127.0.0.1", None),
        (["127.0.0.0/8"], "::ffff:127.0.0.1", None),
        (["127.0.0.0/8"], "64:ff9b::7f00:1", None),
        (["127.0.0.0/8"], "2002:7f00:1::", None),
        (["127.0.0.0/8"], "::1", "loopback"),
        (["127.0.0.0/8"], "10.0.0.1", "private"),
        (["10.1.0.0/16"], "10.1.2.3", None),
        (["10.1.0.0/16"], "10.2.0.1", "private"),
        (["10.1.0.0/16"], "::ffff:10.1.0.9", None),
        (["::1/128"], "::1", None),
        (["::1/128"], "127.0.0.1", "loopback"),
        (["fc00::/7"], "fd12::1", None),
        (["169.254.169.254/32"], "169.254.169.254", None),
        (["127.0.0.1"], "127.0.0.1", None),  # a bare address is a /32
        (["127.0.0.1/8"], "127.9.9.9", None),  # host bits set: read as the network
    ],
)
def test_allowed_network_wins(allow: list[str], ip: str, reason: str | None) -> None:
    """An allowed network lifts the refusal, also for the IPv4 address inside an IPv6 one."""
    assert AddressPolicy(allow_networks=allow).check(ip) == reason


def test_policy_rejects_bad_networks() -> None:
    """A typo in allow_networks fails loudly instead of allowing nothing (or everything)."""
    with pytest.raises(ValueError, match="does not appear to be"):
        AddressPolicy(allow_networks=["127.0.0.0/33"])
    with pytest.raises(TypeError):
        AddressPolicy(allow_networks="127.0.0.0/8")
    assert AddressPolicy.from_networks(iter(["10.0.0.0/8"])).allow_networks == ("10.0.0.0/8",)


def test_refusal_message_says_what_to_do() -> None:
    """The refusal names host, address and reason, tells how to allow it, and is a DeliveryError."""
    refused = SsrfRefused("127.0.0.1", "loopback", host="localhost")
    assert isinstance(refused, DeliveryError)
    assert str(refused) == (
        "webhook host localhost: address 127.0.0.1 is not allowed (loopback); "
        "allow it with [webhooks] allow_networks"
    )
    assert ssrf_reason(refused) == str(refused)
    assert ssrf_reason(ValueError("nope")) is None


Post = Callable[..., Awaitable[int]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A verifying webhook receiver on 127.0.0.1."""
    async with Receiver(secret=SECRET) as rx:
        yield rx


@pytest.fixture
async def post() -> AsyncIterator[Post]:
    """POST through the guarded webhook client: ``await post(url, allow=[...], dns={...})``,
    where ``dns`` maps names to the addresses they resolve to (a rebinding or split-horizon
    DNS)."""
    posters: list[Poster] = []

    async def send(
        url: str, *, allow: Sequence[str] = (), dns: dict[str, list[str]] | None = None
    ) -> int:
        async def resolve(host: str, port: int) -> list[str]:
            assert dns is not None
            return dns[host]

        poster = Poster(
            AddressPolicy(allow_networks=allow),
            timeout=10,
            resolve=resolve if dns is not None else None,
        )
        posters.append(poster)
        answer = await poster.post(url, b"{}", {"Content-Type": "application/json"})
        return answer.status

    yield send
    for poster in posters:
        await poster.close()


def mapped_loopback_works() -> bool:
    """Whether this machine can connect to ::ffff:127.0.0.1 (needs IPv6 with dual-stack)."""
    if not socket.has_ipv6:
        return False
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.settimeout(2)
                probe.connect(("::ffff:127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:{port}/hook", "127.0.0.1"),
        ("http://[::ffff:127.0.0.1]:{port}/hook", "::ffff:7f00:1"),
        ("http://localhost:{port}/hook", "127.0.0.1"),
    ],
)
async def test_loopback_refused_by_default(
    receiver: Receiver, post: Post, url: str, address: str
) -> None:
    """Literal, IPv4-mapped and resolved loopback targets never get a connection."""
    with pytest.raises(SsrfRefused) as caught:
        await post(url.format(port=receiver.port))
    refusal = ssrf_refusal(caught.value)
    assert refusal is not None
    assert refusal.reason.endswith("loopback")
    assert refusal.address in (address, "127.0.0.1", "::1")
    reason = ssrf_reason(caught.value)
    assert reason is not None
    assert "allow_networks" in reason
    assert receiver.received == 0


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/hook", "http://localhost:{port}/hook"])
async def test_loopback_allowed_when_configured(receiver: Receiver, post: Post, url: str) -> None:
    """With 127.0.0.0/8 allowed, the same targets are delivered to."""
    assert await post(url.format(port=receiver.port), allow=["127.0.0.0/8"]) == 204
    assert receiver.received == 1


async def test_mapped_loopback_allowed_through_its_ipv4_network(
    receiver: Receiver, post: Post
) -> None:
    """::ffff:127.0.0.1 is allowed by allowing 127.0.0.0/8 (the unwrapped form)."""
    if not mapped_loopback_works():
        pytest.skip("this machine cannot connect to ::ffff:127.0.0.1 (no dual-stack IPv6)")
    url = f"http://[::ffff:127.0.0.1]:{receiver.port}/hook"
    assert await post(url, allow=["127.0.0.0/8"]) == 204


async def test_hostname_resolving_to_private_address_refused(
    receiver: Receiver, post: Post
) -> None:
    """A public-looking name that resolves (or rebinds) to a private address is refused."""
    url = f"http://hooks.example.com:{receiver.port}/hook"
    with pytest.raises(SsrfRefused) as caught:
        await post(url, dns={"hooks.example.com": ["10.0.0.7"]})
    assert ssrf_reason(caught.value) == (
        "webhook host hooks.example.com: address 10.0.0.7 is not allowed (private); "
        "allow it with [webhooks] allow_networks"
    )


async def test_refused_address_skipped_for_an_allowed_one(receiver: Receiver, post: Post) -> None:
    """Each resolved address is checked: a refused one is skipped, an allowed one is used."""
    url = f"http://mixed.example.com:{receiver.port}/hook"
    dns = {"mixed.example.com": ["127.0.0.2", "127.0.0.1"]}
    assert await post(url, allow=["127.0.0.1/32"], dns=dns) == 204
    assert receiver.received == 1


@pytest.mark.parametrize("addresses", [["::1", "127.0.0.1"], ["10.0.0.1", "192.168.0.1", "::1"]])
async def test_refusal_found_when_every_address_is_refused(
    receiver: Receiver, post: Post, addresses: list[str]
) -> None:
    """With several refused addresses the caller can still tell it was the SSRF guard."""
    url = f"http://multi.example.com:{receiver.port}/hook"
    with pytest.raises(SsrfRefused) as caught:
        await post(url, dns={"multi.example.com": addresses})
    refusal = ssrf_refusal(caught.value)
    assert refusal is not None
    assert refusal.address in addresses
    assert refusal.host == "multi.example.com"
    assert receiver.received == 0


async def test_other_connect_errors_are_not_refusals(post: Post) -> None:
    """A closed port on an allowed address fails as a plain connect error."""
    with pytest.raises(AttemptError, match=r"cannot connect to 127\.0\.0\.1") as caught:
        await post(f"http://127.0.0.1:{free_port()}/hook", allow=["127.0.0.0/8"])
    assert ssrf_reason(caught.value) is None
