"""Server behaviours Dovecot cannot be made to show on demand, played by a scripted peer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from relay.imap import (
    ClientOptions,
    Exists,
    ImapByeError,
    ImapClient,
    ImapCommandError,
    ImapConnectionError,
    ImapProtocolError,
    Update,
)

from .conftest import Script

Scripted = Callable[[Script], Awaitable[int]]

GREETING = b"* OK [CAPABILITY IMAP4rev1 IDLE] scripted ready\r\n"


async def read_command(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Read one command line; return (tag, rest)."""
    line = await reader.readline()
    tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
    return tag, rest


async def connect(port: int, **kwargs: object) -> ImapClient:
    """Connect to the scripted peer with short timeouts."""
    options = ClientOptions(connect_timeout=5, command_timeout=5, done_timeout=2)
    return await ImapClient.connect("127.0.0.1", port, options=options, **kwargs)  # type: ignore[arg-type]


async def test_idle_answered_with_bye_raises_promptly(scripted: Scripted) -> None:
    """A server answering IDLE with BYE makes idle_start raise ImapByeError at once."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        await read_command(reader)  # IDLE
        writer.write(b"* BYE too many connections\r\n")
        await writer.drain()
        await reader.read()

    client = await connect(await scripted(script))
    started = time.monotonic()
    with pytest.raises(ImapByeError, match="too many connections"):
        await client.idle_start()
    assert time.monotonic() - started < 2
    assert client.closed


async def test_idle_answered_with_no_raises_promptly(scripted: Scripted) -> None:
    """A server answering IDLE with a tagged NO makes idle_start raise ImapCommandError."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        tag, _ = await read_command(reader)
        writer.write(tag + b" NO [LIMIT] IDLE not allowed now\r\n")
        tag, rest = await read_command(reader)
        assert rest == b"NOOP"
        writer.write(tag + b" OK NOOP done\r\n")
        await reader.read()

    client = await connect(await scripted(script))
    with pytest.raises(ImapCommandError) as info:
        await client.idle_start()
    assert info.value.code == "LIMIT"
    assert not client.idling
    await client.noop()  # the connection is still usable
    client.close()


async def test_literals_split_across_packets_and_nonsync_markers(scripted: Scripted) -> None:
    """Responses arriving one byte at a time, with {n} and {n+} literals, are framed correctly."""
    body = b"a)b\r\n{3}\r\n* 9 EXISTS\r\n"
    response = (
        b"* 1 FETCH (UID 7 BODY[] {%d}\r\n%s FLAGS (\\Seen) BODY[HEADER] {%d+}\r\n%s)\r\n"
        % (len(body), body, len(b"X: y\r\n\r\n"), b"X: y\r\n\r\n")
    )

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        tag, _ = await read_command(reader)
        for i in range(len(response)):
            writer.write(response[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(tag + b" OK done\r\n")
        await reader.read()

    client = await connect(await scripted(script))
    result = await client.uid_fetch(7, ["BODY[]", "FLAGS", "BODY[HEADER]"])
    (msg,) = result.messages
    assert msg.uid == 7
    assert msg.attributes["BODY[]"] == body
    assert msg.attributes["BODY[HEADER]"] == b"X: y\r\n\r\n"
    assert msg.flags == ("\\Seen",)
    assert client.drain_updates() == []  # the fake "* 9 EXISTS" inside the literal is data
    client.close()


async def test_untagged_without_pending_command_goes_to_callback(scripted: Scripted) -> None:
    """An EXISTS pushed while no command is pending reaches the on_update callback."""
    got: asyncio.Queue[Update] = asyncio.Queue()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        await asyncio.sleep(0.05)
        writer.write(b"* 4 EXISTS\r\n* 1 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (12))\r\n")
        await reader.read()

    client = await connect(await scripted(script), on_update=got.put_nowait)
    first = await asyncio.wait_for(got.get(), 5)
    second = await asyncio.wait_for(got.get(), 5)
    assert first == Exists(4)
    assert (second.uid, second.flags, second.modseq) == (3, ("\\Seen",), 12)  # type: ignore[union-attr]
    client.close()


async def test_synchronizing_literal_waits_for_continuation(scripted: Scripted) -> None:
    """Without LITERAL+, APPEND sends {n}, waits for '+', then sends the message."""
    seen: list[bytes] = []
    msg = b"Subject: x\r\n\r\nhi\r\n"

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        line = await reader.readline()
        seen.append(line)
        tag = line.split(b" ")[0]
        # Nothing more may arrive before the continuation.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.2)
        writer.write(b"+ go ahead\r\n")
        data = await reader.readexactly(len(msg) + 2)
        seen.append(data)
        writer.write(tag + b" OK [APPENDUID 5 9] done\r\n")
        await reader.read()

    client = await connect(await scripted(script))
    result = await client.append("INBOX", msg)
    assert result.uid == 9
    assert seen[0].endswith(b' APPEND "INBOX" {%d}\r\n' % len(msg))
    assert seen[1] == msg + b"\r\n"
    client.close()


async def test_greeting_bye_fails_connect(scripted: Scripted) -> None:
    """A server that greets with BYE makes connect() raise ImapByeError."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* BYE server full\r\n")
        await writer.drain()

    with pytest.raises(ImapByeError):
        await connect(await scripted(script))


async def test_unparseable_result_raises_protocol_error(scripted: Scripted) -> None:
    """An unparseable FETCH result raises ImapProtocolError; the framing survives."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        tag, _ = await read_command(reader)
        writer.write(b"* 1 FETCH (UID\r\n" + tag + b" OK done\r\n")
        tag, _ = await read_command(reader)
        writer.write(tag + b" OK NOOP done\r\n")
        await reader.read()

    client = await connect(await scripted(script))
    with pytest.raises(ImapProtocolError):
        await client.uid_fetch(1, ["UID"])
    await client.noop()
    client.close()


async def test_unparseable_update_closes_and_wakes_consumer(scripted: Scripted) -> None:
    """An unsolicited response that cannot be parsed ends the connection; the consumer wakes."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        await asyncio.sleep(0.05)
        writer.write(b"* 2 FETCH (FLAGS\r\n")
        await reader.read()

    client = await connect(await scripted(script))
    with pytest.raises(ImapProtocolError):
        await asyncio.wait_for(client.next_update(), 5)
    assert client.closed


async def test_response_size_limit(scripted: Scripted) -> None:
    """A literal larger than max_response_bytes ends the connection instead of buffering it."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        await read_command(reader)
        writer.write(b"* 1 FETCH (BODY[] {999999999}\r\n")
        await reader.read()

    options = ClientOptions(command_timeout=5, max_response_bytes=1024)
    client = await ImapClient.connect("127.0.0.1", await scripted(script), options=options)
    with pytest.raises(ImapProtocolError, match="longer than"):
        await client.uid_fetch(1, ["BODY[]"])


async def test_unanswered_idle_start_times_out(scripted: Scripted) -> None:
    """A server that never acknowledges IDLE makes idle_start fail within command_timeout."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        await reader.read()

    options = ClientOptions(command_timeout=0.3)
    client = await ImapClient.connect("127.0.0.1", await scripted(script), options=options)
    with pytest.raises(ImapConnectionError):
        await client.idle_start()
    assert client.closed


async def test_idle_done_fetch_writes_fetch_behind_done(scripted: Scripted) -> None:
    """idle_done_fetch sends UID FETCH right behind DONE, before IDLE's OK; an EXISTS that
    comes before the OK is an update, the FETCH answer is the result."""
    got: list[Update] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        idle_tag, _ = await read_command(reader)
        writer.write(b"+ idling\r\n")
        assert await reader.readline() == b"DONE\r\n"
        # Nothing is answered yet: the FETCH must already be on its way.
        fetch_tag, rest = await asyncio.wait_for(read_command(reader), 2)
        assert rest == b"UID FETCH 5:* (UID FLAGS)"
        writer.write(
            b"* 6 EXISTS\r\n"
            + idle_tag
            + b" OK Idle completed.\r\n* 5 FETCH (UID 5 FLAGS ())\r\n"
            + b"* 6 FETCH (UID 6 FLAGS (\\Seen))\r\n"
            + fetch_tag
            + b" OK Fetch completed.\r\n"
        )
        tag, rest = await read_command(reader)
        assert rest == b"NOOP"
        writer.write(tag + b" OK NOOP done\r\n")
        await reader.read()

    client = await connect(await scripted(script), on_update=got.append)
    await client.idle_start()
    result = await client.idle_done_fetch("5:*", ["UID", "FLAGS"])
    assert [(m.uid, m.flags) for m in result.messages] == [(5, ()), (6, ("\\Seen",))]
    assert got == [Exists(6)]
    assert not client.idling
    await client.noop()  # the tags stayed in step
    client.close()


async def test_idle_done_fetch_reads_the_fetch_when_idle_ends_with_no(scripted: Scripted) -> None:
    """IDLE answered NO at DONE: idle_done_fetch raises it once the pipelined FETCH has been
    answered too, and the connection stays usable."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        idle_tag, _ = await read_command(reader)
        writer.write(b"+ idling\r\n")
        await reader.readline()  # DONE
        fetch_tag, _ = await read_command(reader)
        writer.write(idle_tag + b" NO [SERVERBUG] idle broke\r\n")
        await asyncio.sleep(0.05)
        writer.write(b"* 1 FETCH (UID 1 FLAGS ())\r\n" + fetch_tag + b" OK done\r\n")
        tag, _ = await read_command(reader)
        writer.write(tag + b" OK NOOP done\r\n")
        await reader.read()

    client = await connect(await scripted(script))
    await client.idle_start()
    with pytest.raises(ImapCommandError) as info:
        await client.idle_done_fetch(1, ["UID", "FLAGS"])
    assert info.value.code == "SERVERBUG"
    await client.noop()
    assert client.drain_updates() == []  # the FETCH answer was the command's, not an update
    client.close()
