"""Pure helpers of the IMAP client: no I/O."""

from __future__ import annotations

import base64

import pytest

from relay.imap.errors import ImapProtocolError
from relay.imap.parse import (
    Exists,
    Expunge,
    Literal,
    OtherResponse,
    UidSet,
    Untagged,
    Vanished,
    parse_sequence_set,
    parse_untagged,
    quote,
    sequence_set,
    split_status,
    to_update,
)
from relay.imap.xoauth2 import (
    decode_error_challenge,
    xoauth2_initial_response,
    xoauth2_string,
)


def test_xoauth2_string_format() -> None:
    """The XOAUTH2 initial response is user=..^Aauth=Bearer ..^A^A, base64-encoded."""
    raw = xoauth2_string("shared@contoso.com", "tok.en")
    assert raw == b"user=shared@contoso.com\x01auth=Bearer tok.en\x01\x01"
    assert base64.b64decode(xoauth2_initial_response("shared@contoso.com", "tok.en")) == raw


@pytest.mark.parametrize(("user", "token"), [("a\x01b", "t"), ("a", "t\r\nX")])
def test_xoauth2_rejects_control_characters(user: str, token: str) -> None:
    """Separators or line breaks in user or token are refused (they would forge fields)."""
    with pytest.raises(ValueError, match="control"):
        xoauth2_string(user, token)


@pytest.mark.parametrize(
    ("challenge", "expected"),
    [
        (
            base64.b64encode(b'{"status":"401","schemes":"bearer"}'),
            {"status": "401", "schemes": "bearer"},
        ),
        (b"", None),
        (b"not base64!", None),
        (base64.b64encode(b"[1, 2]"), None),
    ],
)
def test_decode_error_challenge(challenge: bytes, expected: dict[str, str] | None) -> None:
    """The XOAUTH2 error challenge decodes to its JSON object, or None."""
    assert decode_error_challenge(challenge) == expected


@pytest.mark.parametrize(
    ("uids", "expected"),
    [
        ([1, 2, 3, 7], b"1:3,7"),
        ([9, 1, 2, 2], b"1:2,9"),
        ([5], b"5"),
        (42, b"42"),
        ("1:*", b"1:*"),
        (range(10, 13), b"10:12"),
    ],
)
def test_sequence_set(uids: object, expected: bytes) -> None:
    """UIDs become a compact sequence set."""
    assert sequence_set(uids) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["1 2", "1:3\r\nA LOGOUT", ""])
def test_sequence_set_rejects_injection(bad: str) -> None:
    """A string sequence set can carry nothing but a sequence set."""
    with pytest.raises(ValueError, match="sequence set"):
        sequence_set(bad)


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        (b"1:3,7", ((1, 3), (7, 7))),
        (b"9:8", ((8, 9),)),
        (b" 4 ", ((4, 4),)),
    ],
)
def test_parse_sequence_set(text: bytes, ranges: tuple[tuple[int, int], ...]) -> None:
    """A server's sequence set becomes ranges."""
    assert parse_sequence_set(text).ranges == ranges


def test_uid_set_behaves_like_a_set() -> None:
    """UidSet iterates, counts and tests membership without expanding its ranges."""
    uids = UidSet(((1, 3), (10, 1_000_000)))
    assert len(uids) == 3 + 999_991
    assert 500_000 in uids
    assert 5 not in uids
    assert list(UidSet(((1, 3),))) == [1, 2, 3]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"[UIDVALIDITY 3857529045] UIDs valid", ("UIDVALIDITY", b"3857529045", "UIDs valid")),
        (b"[READ-WRITE] Select completed.", ("READ-WRITE", b"", "Select completed.")),
        (b"Logged in", (None, b"", "Logged in")),
        (
            b"[PERMANENTFLAGS (\\Seen \\*)] Flags permitted.",
            ("PERMANENTFLAGS", b"(\\Seen \\*)", "Flags permitted."),
        ),
    ],
)
def test_split_status(text: bytes, expected: tuple[str | None, bytes, str]) -> None:
    """Status text splits into response code, code data and human text."""
    assert split_status(text) == expected


@pytest.mark.parametrize(
    ("records", "kind", "number"),
    [
        ([b"3 EXISTS"], "EXISTS", 3),
        ([b"OK [UIDNEXT 4] Predicted next UID"], "OK", None),
        ([(b"1 FETCH (BODY[] {2}", b"hi"), b")"], "FETCH", 1),
        ([b"vanished (EARLIER) 1:2"], "VANISHED", None),
    ],
)
def test_parse_untagged(
    records: list[bytes | tuple[bytes, bytes]], kind: str, number: int | None
) -> None:
    """The kind word and message number are split off an untagged response."""
    response = parse_untagged(records)
    assert (response.kind, response.number) == (kind, number)


@pytest.mark.parametrize(
    ("records", "update"),
    [
        ([b"7 EXISTS"], Exists(7)),
        ([b"2 EXPUNGE"], Expunge(2)),
        ([b"VANISHED 3:4"], Vanished(UidSet(((3, 4),)), earlier=False)),
        ([b"VANISHED (EARLIER) 5"], Vanished(UidSet(((5, 5),)), earlier=True)),
    ],
)
def test_to_update(records: list[bytes], update: object) -> None:
    """Unsolicited responses become typed updates."""
    assert to_update(parse_untagged(records)) == update


def test_to_update_keeps_unknown_responses() -> None:
    """A response without a dedicated type is still delivered, with its code and text."""
    update = to_update(parse_untagged([b"OK [ALERT] Maintenance at noon"]))
    assert isinstance(update, OtherResponse)
    assert (update.kind, update.code, update.text) == ("OK", "ALERT", "Maintenance at noon")


def test_malformed_untagged_raises_protocol_error() -> None:
    """A response without a kind word is a protocol error, not a crash."""
    with pytest.raises(ImapProtocolError):
        parse_untagged([b"(weird"])
    with pytest.raises(ImapProtocolError):
        to_update(Untagged("FETCH", 1, (b"(FLAGS",)))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("INBOX", b'"INBOX"'),
        ('pa"ss\\word', b'"pa\\"ss\\\\word"'),
        ("pässword", Literal("pässword".encode())),
        ("a\r\nb", Literal(b"a\r\nb")),
    ],
)
def test_quote(value: str, expected: bytes) -> None:
    """Strings are quoted and escaped; non-ASCII or line breaks go as literals."""
    quoted = quote(value)
    assert quoted == expected
    assert isinstance(quoted, Literal) == isinstance(expected, Literal)
