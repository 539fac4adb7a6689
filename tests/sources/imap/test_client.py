"""The IMAP client against a real Dovecot."""

from __future__ import annotations

import asyncio
import socket
import time
from email.message import EmailMessage

import pytest

from relay.errors import ImapError
from relay.imap import (
    Bye,
    ClientOptions,
    Exists,
    Expunge,
    FetchedMessage,
    ImapAuthError,
    ImapByeError,
    ImapClient,
    ImapConnectionError,
    ImapStateError,
    ImapTimeoutError,
    Qresync,
    Update,
    Vanished,
)
from tests.peers.dovecot import DovecotServer, running_dovecot
from tests.peers.tcpproxy import TcpProxy

from .conftest import Connect
from .support import Account, message, new_account, pool_user

# Dovecot batches change notifications for ~0.5 s; this leaves room for a slow machine.
PUSH_WAIT = 10.0


async def next_of(client: ImapClient, kind: type[Update], wait: float = PUSH_WAIT) -> Update:
    """Return the next update of ``kind``, skipping others (e.g. RECENT, ``* OK``)."""
    async with asyncio.timeout(wait):
        while True:
            update = await client.next_update()
            if isinstance(update, kind):
                return update


async def _drain_until_error(client: ImapClient) -> None:
    while True:
        await client.next_update()


# -- authentication -------------------------------------------------------------------------


async def test_password_login_succeeds(connect: Connect, account: Account) -> None:
    """LOGIN with the right password authenticates (post-login capabilities arrive)."""
    client = await connect()
    await client.login(account.user, account.password)
    assert "IDLE" in client.capabilities
    assert "QRESYNC" in client.capabilities
    result = await client.select("INBOX")
    assert result.exists == 0


async def test_password_login_wrong_password_raises_auth_error(
    connect: Connect, account: Account
) -> None:
    """A wrong password raises ImapAuthError (so callers can set authenticationError)."""
    client = await connect()
    with pytest.raises(ImapAuthError) as info:
        await client.login(account.user, "wrong")
    assert info.value.status == "NO"
    assert info.value.code == "AUTHENTICATIONFAILED"


async def test_authenticate_plain(connect: Connect, account: Account) -> None:
    """AUTHENTICATE PLAIN logs in; a wrong password raises ImapAuthError."""
    bad = await connect()
    with pytest.raises(ImapAuthError):
        await bad.authenticate_plain(account.user, "nope")
    good = await connect()
    await good.authenticate_plain(account.user, account.password)
    assert (await good.select("INBOX")).uidvalidity


async def test_xoauth2_main_user(connect: Connect, account: Account) -> None:
    """XOAUTH2 with the user's own token opens the user's mailbox."""
    client = await connect()
    await client.authenticate_xoauth2(account.user, account.token)
    assert (await client.select("INBOX")).uidvalidity


async def test_xoauth2_shared_mailbox_with_owner_token(
    dovecot: DovecotServer, connect: Connect, account: Account
) -> None:
    """The owner's token with user= a granted shared mailbox opens that shared mailbox."""
    shared = new_account(dovecot)
    dovecot.grant(account.token, account.user, [shared.user])
    await dovecot.append(shared.user, "INBOX", message("for the shared box"))
    client = await connect()
    await client.authenticate_xoauth2(shared.user, account.token)
    selected = await client.select("INBOX")
    assert selected.exists == 1
    fetched = await client.uid_fetch("1:*", ["ENVELOPE"])
    assert fetched.messages[0].envelope.subject == b"for the shared box"


async def test_xoauth2_not_granted_fails_fast(
    dovecot: DovecotServer, connect: Connect, account: Account
) -> None:
    """A token not granted for user= fails with ImapAuthError at once, never hangs."""
    other = new_account(dovecot)
    client = await connect(options=ClientOptions(command_timeout=30))
    started = time.monotonic()
    with pytest.raises(ImapAuthError) as info:
        await client.authenticate_xoauth2(other.user, account.token)
    assert time.monotonic() - started < 5
    assert info.value.details is not None
    assert info.value.details.get("status") == "401"


async def test_xoauth2_revoked_token_is_refused_without_restart(
    dovecot: DovecotServer, connect: Connect, account: Account
) -> None:
    """Revoking a token in the grants file takes effect for the next login."""
    await (await connect()).authenticate_xoauth2(account.user, account.token)
    dovecot.revoke(account.token)
    with pytest.raises(ImapAuthError):
        await (await connect()).authenticate_xoauth2(account.user, account.token)


async def test_tls_connection(connect: Connect, account: Account) -> None:
    """The client speaks IMAP over TLS with the given SSL context."""
    client = await connect(account, tls=True)
    assert client.get_extra_info("ssl_object") is not None
    assert (await client.select("INBOX")).uidvalidity


async def test_tcp_keepalive_is_enabled(connect: Connect) -> None:
    """The socket has SO_KEEPALIVE and the configured idle time."""
    client = await connect(options=ClientOptions(keepalive_idle=77))
    sock = client.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    if hasattr(socket, "TCP_KEEPIDLE"):
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 77


# -- mailbox state --------------------------------------------------------------------------


async def test_select_condstore_reports_uidvalidity_uidnext_highestmodseq(
    dovecot: DovecotServer, connect: Connect, account: Account
) -> None:
    """SELECT (CONDSTORE) reports UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ."""
    await dovecot.append(account.user, "INBOX", message())
    await dovecot.append(account.user, "INBOX", message())
    client = await connect(account)
    result = await client.select("INBOX", condstore=True)
    assert result.exists == 2
    assert result.uidvalidity
    assert result.uidnext == 3
    assert result.highestmodseq is not None
    assert result.highestmodseq >= 2
    assert not result.read_only
    assert "\\Seen" in result.permanent_flags
    examined = await client.examine("INBOX")
    assert examined.read_only


async def test_list_reports_special_use(connect: Connect, account: Account) -> None:
    """LIST returns mailboxes with their special-use flags."""
    client = await connect(account)
    boxes = {box.name: box for box in await client.list_mailboxes()}
    assert boxes["Sent"].special_use == "\\Sent"
    assert boxes["Trash"].special_use == "\\Trash"
    assert boxes["INBOX"].special_use is None
    only = await client.list_mailboxes(special_use_only=True)
    assert "INBOX" not in {box.name for box in only}
    assert "Sent" in {box.name for box in only}


async def test_status_and_append_and_search(connect: Connect, account: Account) -> None:
    """APPEND returns the new UID; STATUS and UID SEARCH see the message."""
    client = await connect(account)
    appended = await client.append("Sent", message("sent one"), flags=["\\Seen"])
    assert appended.uid == 1
    status = await client.status("Sent", ["MESSAGES", "UIDNEXT", "UNSEEN"])
    assert status == {"MESSAGES": 1, "UIDNEXT": 2, "UNSEEN": 0}
    await client.select("Sent")
    assert (await client.uid_search("SEEN")).uids == (1,)
    assert (await client.uid_search("UNSEEN")).uids == ()


def _message_with_attachment() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Zoë Sender <zoe@example.org>"
    msg["To"] = "main@example.com"
    msg["Subject"] = "Grüße — résumé attached"
    msg["Message-ID"] = "<attach-1@example.org>"
    msg.set_content("See the attachment.\n")
    msg.add_attachment(
        b"%PDF-1.4 fake\n" * 20, maintype="application", subtype="pdf", filename="résumé.pdf"
    )
    return msg.as_bytes().replace(b"\n", b"\r\n")


async def test_uid_fetch_parses_envelope_bodystructure_flags_date_size(
    connect: Connect, account: Account
) -> None:
    """UID FETCH of ENVELOPE/BODYSTRUCTURE/FLAGS/INTERNALDATE/RFC822.SIZE is parsed."""
    raw = _message_with_attachment()
    client = await connect(account)
    await client.append("INBOX", raw, flags=["\\Flagged"])
    await client.select("INBOX")
    result = await client.uid_fetch(
        "1:*", ["UID", "FLAGS", "ENVELOPE", "BODYSTRUCTURE", "INTERNALDATE", "RFC822.SIZE"]
    )
    (msg,) = result.messages
    assert msg.uid == 1
    assert "\\Flagged" in (msg.flags or ())
    assert msg.size == len(raw)
    assert msg.internaldate is not None
    envelope = msg.envelope
    assert envelope.message_id == b"<attach-1@example.org>"
    assert (envelope.from_[0].mailbox, envelope.from_[0].host) == (b"zoe", b"example.org")
    # The subject stays RFC 2047-encoded; decoding it is the normaliser's job.
    assert b"=?utf-8?" in envelope.subject.lower()
    body = msg.bodystructure
    assert body.is_multipart
    parts, subtype = body[0], body[1]
    assert subtype == b"mixed"
    assert [p[0].lower() for p in parts] == [b"text", b"application"]
    assert parts[1][1].lower() == b"pdf"


async def test_literals_in_responses_are_spliced(connect: Connect, account: Account) -> None:
    """A body fetched as a literal (with CRLFs, parens and a fake {5} marker) comes back intact."""
    tricky = message("literal", body='line one\r\n) ( {5}\r\n"quoted"\r\n* 3 EXISTS\r\n')
    utf8_subject = "From: x@example.org\r\nSubject: Grüße 8-bit\r\n\r\nhi\r\n".encode()
    client = await connect(account)
    await client.append("INBOX", tricky)
    await client.append("INBOX", utf8_subject)
    await client.select("INBOX")
    result = await client.uid_fetch("1:2", ["BODY.PEEK[]", "ENVELOPE"])
    by_uid = result.by_uid()
    assert by_uid[1].attributes["BODY[]"] == tricky
    # A raw 8-bit subject is sent as a literal inside the ENVELOPE structure.
    assert by_uid[2].envelope.subject.decode() == "Grüße 8-bit"
    # FETCH responses belong to the UID FETCH, not to the update stream.
    assert not any(isinstance(u, FetchedMessage) for u in client.drain_updates())


# -- IDLE -----------------------------------------------------------------------------------


async def test_append_from_second_connection_arrives_as_exists_while_idling(
    connect: Connect, account: Account
) -> None:
    """A message appended by another connection shows up as EXISTS on the IDLE connection."""
    listener = await connect(account)
    await listener.select("INBOX")
    writer = await connect(account)
    async with listener.idle():
        await writer.append("INBOX", message("pushed"))
        update = await next_of(listener, Exists)
    assert update == Exists(1)


async def test_flag_change_arrives_as_fetch_while_idling(
    dovecot: DovecotServer, connect: Connect, account: Account
) -> None:
    """A flag change by another connection arrives as FETCH (FLAGS, MODSEQ) while idling."""
    await dovecot.append(account.user, "INBOX", message())
    listener = await connect(account)
    await listener.enable("CONDSTORE")
    await listener.select("INBOX", condstore=True)
    writer = await connect(account)
    await writer.select("INBOX")
    await listener.idle_start()
    await writer.uid_store(1, "+FLAGS.SILENT", ["\\Seen", "$Important"])
    update = await next_of(listener, FetchedMessage)
    await listener.idle_done()
    assert isinstance(update, FetchedMessage)
    assert update.seq == 1
    assert {"\\Seen", "$Important"} <= set(update.flags or ())
    assert update.modseq is not None


async def test_expunge_arrives_while_idling(
    dovecot: DovecotServer, connect: Connect, account: Account
) -> None:
    """An expunge by another connection arrives as EXPUNGE with the sequence number."""
    for _ in range(3):
        await dovecot.append(account.user, "INBOX", message())
    listener = await connect(account)
    await listener.select("INBOX")
    writer = await connect(account)
    await writer.select("INBOX")
    async with listener.idle():
        await writer.uid_store(2, "+FLAGS.SILENT", ["\\Deleted"])
        expunged = await writer.uid_expunge(2)
        update = await next_of(listener, Expunge)
    assert expunged.seqs == (2,)
    assert update == Expunge(2)


async def test_expunge_arrives_as_vanished_with_qresync(
    dovecot: DovecotServer, connect: Connect, account: Account
) -> None:
    """With QRESYNC enabled, an expunge arrives as VANISHED with the UID."""
    for _ in range(3):
        await dovecot.append(account.user, "INBOX", message())
    listener = await connect(account)
    assert "QRESYNC" in await listener.enable("QRESYNC")
    assert "CONDSTORE" in listener.enabled
    await listener.select("INBOX", condstore=True)
    writer = await connect(account)
    await writer.select("INBOX")
    async with listener.idle():
        await writer.uid_store([1, 3], "+FLAGS.SILENT", ["\\Deleted"])
        await writer.expunge()
        update = await next_of(listener, Vanished)
    assert isinstance(update, Vanished)
    assert not update.earlier
    seen = set(update.uids)
    while seen != {1, 3}:
        more = await next_of(listener, Vanished)
        assert isinstance(more, Vanished)
        seen |= set(more.uids)
    assert seen == {1, 3}


async def test_qresync_select_and_changedsince_report_vanished_and_changed(
    dovecot: DovecotServer, connect: Connect, account: Account
) -> None:
    """SELECT (QRESYNC ...) and UID FETCH CHANGEDSINCE VANISHED report what changed since."""
    for _ in range(4):
        await dovecot.append(account.user, "INBOX", message())
    client = await connect(account)
    await client.enable("QRESYNC")
    first = await client.select("INBOX")
    assert first.uidvalidity is not None
    assert first.highestmodseq is not None
    other = await connect(account)
    await other.select("INBOX")
    await other.uid_store(2, "+FLAGS.SILENT", ["\\Flagged"])
    await other.uid_store(3, "+FLAGS.SILENT", ["\\Deleted"])
    await other.uid_expunge(3)
    await client.logout()

    again = await connect(account)
    await again.enable("QRESYNC")
    resync = await again.select(
        "INBOX", qresync=Qresync(first.uidvalidity, first.highestmodseq, "1:4")
    )
    assert set(resync.vanished) == {3}
    assert [(m.uid, "\\Flagged" in (m.flags or ())) for m in resync.changed] == [(2, True)]
    fetched = await again.uid_fetch(
        "1:*", ["FLAGS"], changedsince=first.highestmodseq, vanished=True
    )
    assert set(fetched.vanished) == {3}
    assert [m.uid for m in fetched.messages] == [2]


async def test_untagged_response_between_commands_is_delivered(
    dovecot: DovecotServer, connect: Connect, account: Account
) -> None:
    """Untagged responses no command asked for reach the consumer, also with no command pending."""
    received: list[Update] = []
    client = await connect(account, on_update=received.append)
    await client.select("INBOX")
    await dovecot.append(account.user, "INBOX", message())
    await asyncio.sleep(0.1)
    await client.noop()  # NOOP owns nothing: the EXISTS it triggers is an update
    assert Exists(1) in received
    # No command pending at all: the BYE of a kick still arrives.
    await dovecot.kick(account.user)
    async with asyncio.timeout(PUSH_WAIT):
        error = await client.wait_closed()
    assert isinstance(error, ImapByeError)
    assert any(isinstance(u, Bye) for u in received)


async def test_kick_delivers_bye_and_closes_client(
    dovecot: DovecotServer, connect: Connect, account: Account
) -> None:
    """doveadm kick during IDLE delivers BYE, then the client is closed with ImapByeError."""
    client = await connect(account)
    await client.select("INBOX")
    await client.idle_start()
    await dovecot.kick(account.user)
    update = await next_of(client, Bye)
    assert isinstance(update, Bye)
    with pytest.raises(ImapByeError):
        await asyncio.wait_for(_drain_until_error(client), PUSH_WAIT)
    assert client.closed
    assert not client.idling
    with pytest.raises(ImapByeError):
        await client.noop()


async def test_command_during_idle_is_refused(connect: Connect, account: Account) -> None:
    """A command while IDLE runs raises ImapStateError instead of corrupting the stream."""
    client = await connect(account)
    await client.select("INBOX")
    async with client.idle():
        with pytest.raises(ImapStateError):
            await client.noop()
    await client.noop()


async def test_blackholed_connection_done_timeout(
    proxy: TcpProxy, connect: Connect, account: Account
) -> None:
    """A silently dead path is detected: DONE is not answered -> ImapTimeoutError, closed."""
    client = await connect(
        account, port=proxy.port, options=ClientOptions(done_timeout=0.5, command_timeout=5)
    )
    await client.select("INBOX")
    await client.idle_start()
    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(ImapTimeoutError):
        await client.idle_done()
    assert time.monotonic() - started < 5
    assert client.closed
    with pytest.raises(ImapTimeoutError):
        await client.next_update()


async def test_blackholed_connection_noop_timeout(
    proxy: TcpProxy, connect: Connect, account: Account
) -> None:
    """A NOOP on a silently dead path times out with ImapTimeoutError and closes the client."""
    client = await connect(account, port=proxy.port, options=ClientOptions(command_timeout=0.5))
    await client.noop()
    proxy.blackhole()
    with pytest.raises(ImapTimeoutError):
        await client.noop()
    assert isinstance(client.error, ImapTimeoutError)


async def test_connect_timeout_when_no_greeting(proxy: TcpProxy) -> None:
    """A server that accepts TCP but never greets fails connect() within connect_timeout."""
    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(ImapConnectionError):
        await ImapClient.connect(proxy.host, proxy.port, options=ClientOptions(connect_timeout=0.5))
    assert time.monotonic() - started < 5


async def test_eof_wakes_waiters(proxy: TcpProxy, connect: Connect, account: Account) -> None:
    """A connection closed without BYE wakes the update consumer with ImapConnectionError."""
    client = await connect(account, port=proxy.port)
    await client.select("INBOX")
    await client.idle_start()
    consumer = asyncio.create_task(client.next_update())
    await asyncio.sleep(0.05)
    await proxy.drop_connections()
    with pytest.raises(ImapConnectionError) as info:
        async with asyncio.timeout(PUSH_WAIT):
            await consumer
    assert not isinstance(info.value, ImapByeError)


async def test_restart_keeps_mail_and_client_reconnects(connect: Connect) -> None:
    """Restarting Dovecot sends BYE to clients; after restart the mail is still there."""
    user, password = pool_user(1)
    async with running_dovecot(users={user: password}) as server:
        account = Account(user, password, "unused")
        await server.append(account.user, "INBOX", message("kept"))
        client = await ImapClient.connect(server.host, server.port)
        try:
            await client.login(account.user, account.password)
            await client.select("INBOX")
            await client.idle_start()
            port = server.port
            await server.restart()
            assert server.port == port
            async with asyncio.timeout(PUSH_WAIT):
                error = await client.wait_closed()
            assert isinstance(error, ImapConnectionError)
        finally:
            client.close()
        again = await ImapClient.connect(server.host, server.port)
        try:
            await again.login(account.user, account.password)
            assert (await again.select("INBOX")).exists == 1
        finally:
            await again.logout()


async def test_logout_closes_cleanly(connect: Connect, account: Account) -> None:
    """LOGOUT consumes the server's BYE (no Bye update) and closes the client."""
    client = await connect(account)
    await client.logout()
    assert client.closed
    assert not any(isinstance(u, Bye) for u in client.drain_updates())
    with pytest.raises(ImapError):
        await client.noop()
