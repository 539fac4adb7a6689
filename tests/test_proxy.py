"""An account's ``proxy``: its IMAP and SMTP connections go through a real SOCKS5 server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from relay import proxy
from relay.config import Settings
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.dovecot import DovecotServer, dovecot_server
from tests.peers.smtp import SmtpPeer
from tests.peers.socks import Socks5Server, socks5_server
from tests.send.conftest import ME, PASSWORD, send_settings, submit
from tests.sources.imap.relay_support import (
    password_account,
    relay_settings,
    wait_events,
    wait_state,
)
from tests.sources.imap.support import message, new_account, user_pool


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    """A Dovecot for this module's accounts."""
    with dovecot_server(users=user_pool()) as server:
        yield server


@pytest.fixture
async def socks() -> AsyncIterator[Socks5Server]:
    """A SOCKS5 proxy that wants a user name and password."""
    async with socks5_server(user="proxy-user", password="proxy-pass") as server:
        yield server


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpPeer]:
    """An SMTP server that accepts ``me@example.com`` with a password."""
    peer = await SmtpPeer(passwords={ME: PASSWORD}).start()
    yield peer
    await peer.stop()


async def test_imap_listener_and_reads_go_through_the_proxy(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer, socks: Socks5Server
) -> None:
    """The listener and the API's reads connect through the proxy; GET shows the proxy URL
    without its password."""
    user = new_account(dovecot)
    client = await make_client(relay_settings(settings))
    payload = password_account("px", user, dovecot.port, proxy=socks.url)
    await call(client, "POST", "/v1/account", payload)
    await wait_state(client, "px", "connected")
    await dovecot.append(user.user, "INBOX", message("through the proxy"))
    (new,) = await wait_events(client, "px", "messageNew")
    assert new["data"]["subject"] == "through the proxy"
    listing = await call(client, "GET", "/v1/account/px/messages?path=INBOX")
    assert [m["subject"] for m in listing["messages"]] == ["through the proxy"]
    assert socks.accepted >= 2
    assert set(socks.targets) == {("127.0.0.1", dovecot.port)}
    view = await call(client, "GET", "/v1/account/px")
    assert view["proxy"] == f"socks5://proxy-user:***@127.0.0.1:{socks.port}"
    assert view["secrets"]["proxy"] is True
    assert "proxy-pass" not in str(view)


async def test_a_proxy_refusing_the_login_is_a_connect_error(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer, socks: Socks5Server
) -> None:
    """Wrong proxy credentials: nothing reaches the server, the account is in connectError."""
    user = new_account(dovecot)
    client = await make_client(relay_settings(settings))
    wrong = f"socks5://proxy-user:wrong@127.0.0.1:{socks.port}"
    await call(
        client, "POST", "/v1/account", password_account("px", user, dovecot.port, proxy=wrong)
    )
    await wait_state(client, "px", "connectError")
    (error,) = (await wait_events(client, "px", "connectError"))[:1]
    assert "wrong" not in str(error)
    assert socks.accepted >= 1
    assert socks.targets == []


async def test_smtp_goes_through_the_proxy(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer, socks: Socks5Server
) -> None:
    """A submit is sent over an SMTP connection opened through the proxy."""
    client = await make_client(send_settings(settings))
    account = {
        "account": "acct",
        "name": "Me",
        "email": ME,
        "smtp": {
            "host": "127.0.0.1",
            "port": smtp.port,
            "secure": False,
            "auth": {"user": ME, "pass": PASSWORD},
        },
        "proxy": socks.url,
    }
    await call(client, "POST", "/v1/account", account)
    await submit(client, {"to": [{"address": "rita@example.net"}], "subject": "Hi", "text": "x"})
    (got,) = await smtp.wait_for(1)
    assert got.login == ME
    await wait_events(client, "acct", "messageSent")
    assert socks.targets == [("127.0.0.1", smtp.port)]


@pytest.mark.parametrize(
    "url",
    ["socks5://127.0.0.1:1080", "socks4://proxy.example.com:1080", "http://u:p@[::1]:3128"],
)
def test_proxy_urls_accepted(url: str) -> None:
    """SOCKS4, SOCKS5 and HTTP CONNECT URLs with a host and a port are accepted."""
    assert proxy.check(url) == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://127.0.0.1:1080", "socks4://, socks5:// or http://"),
        ("socks5://127.0.0.1", "port"),
        ("socks5://:1080", "host"),
        ("socks5://127.0.0.1:99999", "invalid port"),
        ("socks5://127.0.0.1:1080/path", "nothing after the port"),
    ],
)
def test_proxy_urls_refused(url: str, problem: str) -> None:
    """Another scheme, a missing host or port, or a path is refused, saying which."""
    with pytest.raises(ValueError, match=problem):
        proxy.check(url)


def test_redacted_drops_only_the_password() -> None:
    """The shown URL keeps scheme, user, host and port."""
    assert proxy.redacted("socks5://u:secret@h.example:1080") == "socks5://u:***@h.example:1080"
    assert proxy.redacted("http://[::1]:3128") == "http://[::1]:3128"
