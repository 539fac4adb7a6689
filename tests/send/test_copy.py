"""EmailEngine's ``copy`` (account and submit) and ``sentMailPath``: a sent copy uploaded over
IMAP (Dovecot) after an SMTP send (aiosmtpd), or not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.config import Settings
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.dovecot import DovecotServer, dovecot_server
from tests.peers.smtp import SmtpPeer
from tests.sources.imap.relay_support import wait_events
from tests.sources.imap.support import Account, new_account, user_pool

from .conftest import send_settings, submit

TO = {"to": [{"address": "rita@example.net"}], "subject": "Copied?", "text": "Hello"}


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    """The mailboxes the sent copies go to."""
    with dovecot_server(users=user_pool()) as server:
        yield server


@pytest.fixture
async def user(dovecot: DovecotServer) -> Account:
    """A Dovecot user with an ``Archive`` folder next to its Sent folder."""
    account = new_account(dovecot)
    await dovecot.doveadm("mailbox", "create", "-u", account.user, "Archive")
    return account


@pytest.fixture
async def smtp(user: Account) -> AsyncIterator[SmtpPeer]:
    """An SMTP server that takes the user's password and saves no copy of its own."""
    peer = await SmtpPeer(passwords={user.user: user.password}).start()
    yield peer
    await peer.stop()


async def _relay(
    make_client: MakeClient,
    settings: Settings,
    dovecot: DovecotServer,
    smtp: SmtpPeer,
    user: Account,
    **extra: Any,
) -> TestClient:
    """An account that sends through ``smtp`` and keeps its mail (unwatched) in Dovecot."""
    client = await make_client(send_settings(settings))
    auth = {"user": user.user, "pass": user.password}
    account = {
        "account": "acct",
        "name": "Me",
        "email": user.user,
        "imap": {"host": "127.0.0.1", "port": dovecot.port, "secure": False, "auth": auth},
        "smtp": {"host": "127.0.0.1", "port": smtp.port, "secure": False, "auth": auth},
        **extra,
    }
    await call(client, "POST", "/v1/account", account)
    return client


async def copies(dovecot: DovecotServer, user: str, folder: str, message_id: str) -> int:
    """How many messages with ``message_id`` are in ``user``'s ``folder``."""
    out = await dovecot.doveadm(
        "search", "-u", user, "mailbox", folder, "header", "Message-ID", message_id
    )
    return len([line for line in out.splitlines() if line.strip()])


@pytest.mark.parametrize(
    ("account_copy", "submit_extra", "in_sent", "in_archive"),
    [
        (None, {}, 0, 0),
        (None, {"copy": True}, 1, 0),
        (True, {}, 1, 0),
        (True, {"copy": False}, 0, 0),
        (False, {"copy": True}, 1, 0),
        (None, {"sentMailPath": "Archive"}, 0, 1),
        (False, {"sentMailPath": "Archive"}, 0, 1),
        (None, {"copy": True, "sentMailPath": "Archive"}, 0, 1),
    ],
)
async def test_copy_and_sent_mail_path_decide_the_upload(
    make_client: MakeClient,
    settings: Settings,
    dovecot: DovecotServer,
    smtp: SmtpPeer,
    user: Account,
    account_copy: bool | None,
    submit_extra: dict[str, Any],
    in_sent: int,
    in_archive: int,
) -> None:
    """The submit's copy wins over the account's; a sentMailPath asks for the copy and names
    its folder; without either, nothing is uploaded (the server keeps what it keeps)."""
    extra = {} if account_copy is None else {"copy": account_copy}
    client = await _relay(make_client, settings, dovecot, smtp, user, **extra)
    queued = await submit(client, {**TO, **submit_extra})
    (sent,) = await wait_events(client, "acct", "messageSent")
    await smtp.wait_for(1)
    mid = queued["messageId"]
    assert await copies(dovecot, user.user, "Sent", mid) == in_sent
    assert await copies(dovecot, user.user, "Archive", mid) == in_archive
    if in_sent or in_archive:
        report = sent["data"]["sentCopy"]
        assert report["appended"] is True
        assert report["path"] == ("Archive" if in_archive else "Sent")
    else:
        assert "sentCopy" not in sent["data"]


async def test_a_copy_already_there_is_not_uploaded_again(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer, user: Account
) -> None:
    """With copy: true and a server that saved a copy itself (as Exchange does), none is added."""

    async def save(got: Any) -> None:
        await dovecot.append(user.user, "Sent", got.data)

    peer = await SmtpPeer(passwords={user.user: user.password}, on_sent=save).start()
    try:
        client = await _relay(make_client, settings, dovecot, peer, user, copy=True)
        queued = await submit(client, TO)
        (sent,) = await wait_events(client, "acct", "messageSent")
    finally:
        await peer.stop()
    assert await copies(dovecot, user.user, "Sent", queued["messageId"]) == 1
    assert sent["data"]["sentCopy"]["appended"] is False


async def test_a_missing_sent_mail_path_is_reported_not_retried(
    make_client: MakeClient,
    settings: Settings,
    dovecot: DovecotServer,
    smtp: SmtpPeer,
    user: Account,
) -> None:
    """The message went out: a sentMailPath that does not exist is reported in messageSent."""
    client = await _relay(make_client, settings, dovecot, smtp, user)
    await submit(client, {**TO, "sentMailPath": "No Such Folder"})
    (sent,) = await wait_events(client, "acct", "messageSent")
    assert "error" in sent["data"]["sentCopy"]
    assert len(smtp.received) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"copy": "sometimes"}, "copy"),
        ({"sentMailPath": "x" * 1025}, "sentMailPath"),
        ({"copy": False, "sentMailPath": "Archive"}, "sentMailPath"),
        # EmailEngine's submit route refuses it too: only its own delivery test sets it.
        ({"feedbackKey": "key"}, "feedbackKey"),
    ],
)
async def test_bad_copy_input_is_refused(
    make_client: MakeClient,
    settings: Settings,
    dovecot: DovecotServer,
    smtp: SmtpPeer,
    user: Account,
    body: dict[str, Any],
    field: str,
) -> None:
    """Malformed copy and sentMailPath values, and feedbackKey, are a 400 naming the field."""
    client = await _relay(make_client, settings, dovecot, smtp, user)
    err = await submit(client, {**TO, **body}, status=400)
    assert err["field"] == field, err
    assert (await call(client, "GET", "/v1/outbox"))["total"] == 0
