"""Transfer decoding, whole and fed in chunks of any size, and bytes -> text by charset."""

from __future__ import annotations

import base64
import binascii
import quopri
import random

import pytest

from relay.mailbox import decode
from relay.mailbox.decode import decode_body, decoder, to_text

SEEDS = range(40)


def chunked(encoding: str, data: bytes, rng: random.Random, largest: int) -> bytes:
    """Feed ``data`` in random chunk sizes of 1..``largest`` bytes; the joined output."""
    step = decoder(encoding)
    out: list[bytes] = []
    at = 0
    while at < len(data):
        size = rng.randint(1, largest)
        out.append(step.feed(data[at : at + size]))
        at += size
    out.append(step.flush())
    return b"".join(out)


def payload(rng: random.Random, *, without: bytes = b"") -> bytes:
    size = rng.choice([0, 1, 2, 3, rng.randint(4, 200), rng.randint(200, 5000)])
    return bytes(b for b in rng.randbytes(size * 2) if b not in without)[:size]


def crlf_text(rng: random.Random) -> bytes:
    """Lines of random bytes (spaces, ``=`` and 8-bit included) ending in CRLF."""
    return b"".join(
        payload(rng, without=b"\r\n") + b"\r\n" for _ in range(rng.randint(0, 40))
    ) + payload(rng, without=b"\r\n")


@pytest.mark.parametrize("seed", SEEDS)
def test_base64_in_any_chunks(seed: int) -> None:
    """base64 fed in random chunks (1 byte included) decodes to exactly the original."""
    rng = random.Random(seed)
    original = payload(rng)
    encoded = base64.encodebytes(original)
    if seed % 2:
        encoded = encoded.replace(b"\n", b"\r\n")
    assert chunked("base64", encoded, rng, 1) == original
    assert chunked("base64", encoded, rng, 97) == original


@pytest.mark.parametrize("seed", SEEDS)
def test_quoted_printable_in_any_chunks(seed: int) -> None:
    """Quoted-printable fed in random chunks decodes to exactly the original (LF lines)."""
    rng = random.Random(seed)
    original = payload(rng, without=b"\r")
    encoded = quopri.encodestring(original)
    assert chunked("quoted-printable", encoded, rng, 1) == original
    assert chunked("quoted-printable", encoded, rng, 97) == original


@pytest.mark.parametrize("seed", SEEDS)
def test_quoted_printable_crlf_in_any_chunks(seed: int) -> None:
    """CRLF text with =\\r\\n soft breaks decodes to the original in any chunks."""
    rng = random.Random(seed)
    original = crlf_text(rng)
    encoded = binascii.b2a_qp(original, istext=True)
    assert chunked("quoted-printable", encoded, rng, 1) == original
    assert chunked("quoted-printable", encoded, rng, 97) == original


@pytest.mark.parametrize("seed", range(10))
def test_quoted_printable_long_line_is_decoded_before_its_end(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line longer than the pending limit is decoded early, still exactly."""
    monkeypatch.setattr(decode, "QP_MAX_PENDING", 16)
    rng = random.Random(seed)
    original = bytes(b for b in rng.randbytes(400) if b not in b"\r\n")
    # Hard-broken lines are not quoted-printable's: join them into one long line.
    encoded = quopri.encodestring(original).replace(b"=\n", b"")
    assert b"\n" not in encoded
    assert chunked("quoted-printable", encoded, rng, 7) == binascii.a2b_qp(encoded) == original
    assert decoder("quoted-printable").feed(encoded) != b""


def test_quoted_printable_waits_for_the_end_of_a_line() -> None:
    """Only complete lines come out; a split =XX escape waits for its digits."""
    step = decoder("quoted-printable")
    assert step.feed(b"Caf=") == b""
    assert step.feed(b"E9 au lait=\r\nsoft\r\nnext") == b"Caf\xe9 au laitsoft\r\n"
    assert step.flush() == b"next"


def test_base64_keeps_the_unfinished_quantum() -> None:
    """base64 decodes whole quanta only; the rest waits for the next chunk."""
    step = decoder("BASE64")
    assert step.feed(b"SGVsbG8") == b"Hel"
    assert step.feed(b"g\r\n d29y\tbGQ") == b"lo wor"
    assert step.flush() == b"ld"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"SGVsbG8", b"Hello"),  # padding missing
        (b"SGVsbA", b"Hell"),
        (b"SGVsbG8=\r\n", b"Hello"),
        (b"SGV\x00s*bG8=", b"Hello"),  # junk between characters
        (b"QQ==QkM=", b"ABC"),  # a run ended by padding, then another
        (b"SGVsbG8gd", b"Hello "),  # a lone last character carries no byte
        (b"", b""),
    ],
)
def test_base64_tolerates_sloppy_input(raw: bytes, expected: bytes) -> None:
    """Missing padding, junk and concatenated runs decode without error."""
    assert decode_body(raw, "base64") == expected


@pytest.mark.parametrize("encoding", ["7bit", "8bit", "binary", "x-unknown", ""])
def test_other_encodings_are_identity(encoding: str) -> None:
    """Encodings without a transformation give the bytes back unchanged, chunk by chunk."""
    step = decoder(encoding)
    assert step.feed(b"=E9 SGVsbG8\r\n") == b"=E9 SGVsbG8\r\n"
    assert step.flush() == b""


def test_decode_body_quoted_printable() -> None:
    """decode_body decodes a whole quoted-printable body, soft breaks removed."""
    assert decode_body(b"J=C3=BCrgen =\r\nwrote=3D\r\n", "Quoted-Printable") == (
        "Jürgen wrote=\r\n".encode()
    )


@pytest.mark.parametrize(
    ("data", "charset", "text"),
    [
        ("Jürgen".encode(), None, "Jürgen"),
        ("Jürgen".encode("latin-1"), None, "Jürgen"),  # not UTF-8: Latin-1
        ("Jürgen".encode("latin-1"), "ISO-8859-1", "Jürgen"),
        ("Jürgen".encode(), '"utf-8"', "Jürgen"),
        ("Jürgen".encode(), "x-unknown-charset", "Jürgen"),
        (b"J\xfcrgen", "x-unknown-charset", "J\ufffdrgen"),
        ("Jürgen".encode(), "base64", "Jürgen"),  # a bytes codec is not a charset
        ("Jürgen".encode(), "undefined", "Jürgen"),
        (b"J\xfcrgen", "utf-8", "J\ufffdrgen"),
        ("丂".encode("gbk"), "gb2312", "丂"),  # declared GB2312, written as GBK
        ("한".encode("cp949"), "ks_c_5601-1987", "한"),
    ],
)
def test_to_text(data: bytes, charset: str | None, text: str) -> None:
    """Bytes become text by their charset; unknown charsets read as UTF-8, never fail."""
    assert to_text(data, charset) == text
