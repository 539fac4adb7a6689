"""IMAP FETCH -> event data: envelope, encoded words, flags and attachments, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from relay.events.normalize import (
    attachment_id,
    imap_fetch_to_event,
    iso_datetime,
    mailbox_reset,
    message_deleted,
    message_id,
    message_updated,
    parse_message_id,
    visible_flags,
)
from relay.events.structure import decode_words
from relay.imap.parse import parse_fetch, parse_untagged

FOLDER = 3
VALIDITY = 1795486845

ENVELOPE = (
    b'ENVELOPE ("Mon, 17 Oct 2022 09:42:07 +0300" "=?UTF-8?Q?See_on_proovikiri_=F0=9F=A4=A1?="'
    b' (("=?UTF-8?Q?J=C3=BCrgen?=" NIL "j" "example.org"))'
    b' (("Secretary" NIL "s" "example.org"))'
    b' (("Replies" NIL "r" "example.org"))'
    b' ((NIL NIL "a" "example.com")("B" NIL "b" "example.com"))'
    b' (("=?iso-8859-1?q?Fran=E7ois?=" NIL "f" "example.net"))'
    b' NIL "<parent@example.org>" "<x1@example.org>")'
)
TEXT = b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)'
HTML = b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 27 1 NIL NIL NIL NIL)'
PNG_CID = b'("image" "png" NIL "<img1>" NIL "base64" 8 NIL NIL NIL NIL)'
PDF_2231 = (
    b'("application" "pdf" ("name" "=?UTF-8?Q?r=C3=A9sum=C3=A9.pdf?=") NIL NIL "base64" 546048'
    b' NIL ("attachment" ("filename*" "UTF-8\'\'r%C3%A9sum%C3%A9.pdf")) NIL NIL)'
)
PDF_CONTINUED = (
    b'("application" "pdf" NIL NIL NIL "base64" 10 NIL'
    b' ("attachment" ("filename*0*" "UTF-8\'\'long%20na" "filename*1" "me.pdf")) NIL NIL)'
)
INLINE_GIF = b'("image" "gif" ("name" "smile.gif") NIL NIL "base64" 40 NIL ("inline" NIL) NIL NIL)'
TEXT_FILE = (
    b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 12 1 NIL'
    b' ("attachment" ("filename" "notes.txt")) NIL NIL)'
)
CALENDAR = b'("text" "calendar" ("method" "REQUEST") NIL NIL "7bit" 300 10 NIL NIL NIL NIL)'
RFC822 = (
    b'("message" "rfc822" NIL NIL NIL "7bit" 700 ("Mon, 17 Oct 2022 09:42:07 +0300" "inner" NIL'
    b" NIL NIL NIL NIL NIL NIL NIL) " + TEXT + b' 20 NIL ("attachment" NIL) NIL NIL)'
)


def fetch(items: bytes, uid: int = 7) -> dict[str, Any]:
    """Parse ``* 1 FETCH (UID n ...)`` the way the IMAP client does."""
    response = parse_untagged([b"1 FETCH (UID %d " % uid + items + b")"])
    return parse_fetch(response).attributes


def multipart(subtype: bytes, *parts: bytes) -> bytes:
    return b"(" + b"".join(parts) + b' "' + subtype + b'" ("boundary" "b") NIL NIL NIL)'


def event(items: bytes, uid: int = 7) -> dict[str, Any]:
    return imap_fetch_to_event(fetch(items, uid), folder_no=FOLDER, uidvalidity=VALIDITY)


def test_full_message_fields() -> None:
    """A complete FETCH becomes EmailEngine's messageNew data, encoded words decoded."""
    items = (
        b'FLAGS (\\Seen \\Recent $Label) INTERNALDATE "17-Oct-2022 06:42:20 +0000" '
        b"RFC822.SIZE 549725 " + ENVELOPE + b" BODYSTRUCTURE " + TEXT
    )
    data = event(items, uid=1838)
    assert data == {
        "id": message_id(FOLDER, VALIDITY, 1838),
        "uid": 1838,
        "messageId": "<x1@example.org>",
        "subject": "See on proovikiri 🤡",
        "from": {"name": "Jürgen", "address": "j@example.org"},
        "sender": {"name": "Secretary", "address": "s@example.org"},
        "to": [{"name": "", "address": "a@example.com"}, {"name": "B", "address": "b@example.com"}],
        "cc": [{"name": "François", "address": "f@example.net"}],
        "replyTo": [{"name": "Replies", "address": "r@example.org"}],
        "inReplyTo": "<parent@example.org>",
        "date": "2022-10-17T06:42:07.000Z",
        "flags": ["\\Seen", "$Label"],
        "unseen": False,
        "size": 549725,
        "attachments": [],
        "text": {"id": message_id(FOLDER, VALIDITY, 1838), "encodedSize": {"plain": 6}},
    }


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        # No Date header: INTERNALDATE is the date.
        (
            b'FLAGS () INTERNALDATE "17-Oct-2022 06:42:20 +0200" RFC822.SIZE 24 '
            b'ENVELOPE (NIL "plain" NIL NIL NIL NIL NIL NIL NIL NIL)',
            {"subject": "plain", "date": "2022-10-17T04:42:20.000Z", "unseen": True, "size": 24},
        ),
        # Group syntax ("undisclosed-recipients:;") yields no address.
        (
            b'FLAGS () ENVELOPE (NIL NIL NIL NIL NIL ((NIL NIL "undisclosed-recipients" NIL)'
            b"(NIL NIL NIL NIL)) NIL NIL NIL NIL)",
            {"unseen": True},
        ),
        # Raw Latin-1 bytes in a header that are not UTF-8.
        (
            b'FLAGS () ENVELOPE (NIL "caf\xe9" NIL NIL NIL NIL NIL NIL NIL NIL)',
            {"subject": "café"},
        ),
        # Raw UTF-8 (RFC 6532).
        (
            b'FLAGS () ENVELOPE (NIL "\xc3\xa9t\xc3\xa9" NIL NIL NIL NIL NIL NIL NIL NIL)',
            {"subject": "été"},
        ),
        # OBJECTID servers: EMAILID and THREADID.
        (
            b"FLAGS (\\Flagged) EMAILID (M6d99ac3275bb4e) THREADID (T64b478a75b7ea9)",
            {"emailId": "M6d99ac3275bb4e", "threadId": "T64b478a75b7ea9", "flags": ["\\Flagged"]},
        ),
        # THREADID NIL: no thread.
        (b"FLAGS () EMAILID (M1) THREADID NIL", {"emailId": "M1"}),
    ],
)
def test_partial_fetches(items: bytes, expected: dict[str, Any]) -> None:
    """Missing envelope parts are left out; what is present is decoded."""
    data = event(items)
    for key, value in expected.items():
        assert data[key] == value
    absent = {"from", "to", "cc", "replyTo", "sender"} - set(expected)
    assert not absent & set(data)
    if "threadId" not in expected:
        assert "threadId" not in data


def _att(part: str, **fields: Any) -> dict[str, Any]:
    return {"id": attachment_id(FOLDER, VALIDITY, 7, part), **fields}


@pytest.mark.parametrize(
    ("structure", "expected"),
    [
        (TEXT, []),
        (multipart(b"alternative", TEXT, HTML), []),
        (
            multipart(b"mixed", multipart(b"related", HTML, PNG_CID), PDF_2231),
            [
                _att(
                    "1.2",
                    contentType="image/png",
                    encodedSize=8,
                    embedded=True,
                    inline=True,
                    contentId="<img1>",
                ),
                _att(
                    "2",
                    contentType="application/pdf",
                    encodedSize=546048,
                    filename="résumé.pdf",
                    embedded=False,
                    inline=False,
                ),
            ],
        ),
        (
            multipart(b"mixed", TEXT, INLINE_GIF, TEXT_FILE),
            [
                _att(
                    "2",
                    contentType="image/gif",
                    encodedSize=40,
                    filename="smile.gif",
                    embedded=False,
                    inline=True,
                ),
                _att(
                    "3",
                    contentType="text/plain",
                    encodedSize=12,
                    filename="notes.txt",
                    embedded=False,
                    inline=False,
                ),
            ],
        ),
        (
            multipart(b"mixed", TEXT, PDF_CONTINUED),
            [
                _att(
                    "2",
                    contentType="application/pdf",
                    encodedSize=10,
                    filename="long name.pdf",
                    embedded=False,
                    inline=False,
                )
            ],
        ),
        # An attached message is one attachment; its own parts are not listed.
        (
            multipart(b"mixed", TEXT, RFC822),
            [
                _att(
                    "2",
                    contentType="message/rfc822",
                    encodedSize=700,
                    embedded=False,
                    inline=False,
                )
            ],
        ),
        # A calendar invitation part without a file name is still an attachment.
        (
            multipart(b"alternative", TEXT, CALENDAR),
            [
                _att(
                    "2",
                    contentType="text/calendar",
                    encodedSize=300,
                    embedded=False,
                    inline=False,
                )
            ],
        ),
        # A message that is only a PDF: the body itself is part 1.
        (
            PDF_2231,
            [
                _att(
                    "1",
                    contentType="application/pdf",
                    encodedSize=546048,
                    filename="résumé.pdf",
                    embedded=False,
                    inline=False,
                )
            ],
        ),
    ],
)
def test_attachments_from_bodystructure(structure: bytes, expected: list[dict[str, Any]]) -> None:
    """Attachments come from BODYSTRUCTURE with part-based ids and decoded names."""
    assert event(b"FLAGS () BODYSTRUCTURE " + structure)["attachments"] == expected


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (None, None),
        (b"plain", "plain"),
        ("=?UTF-8?B?8J+koSBoaQ==?=", "🤡 hi"),
        (
            "Re: =?UTF-8?Q?J=C3=BCrgen?= and =?UTF-8?Q?more?= =?UTF-8?Q?_x?=",
            "Re: Jürgen and more x",
        ),
        ("=?iso-8859-1?q?Fran=E7ois?=", "François"),
        ("=?x-unknown?Q?abc?=", "abc"),
        ("=?utf-8?q?bad=ZZ?=", "bad=ZZ"),
        ("=?utf-8?b?//4=?=", "\ufffd\ufffd"),
        ("50% off =? not encoded", "50% off =? not encoded"),
    ],
)
def test_decode_words(raw: bytes | str | None, decoded: str | None) -> None:
    """RFC 2047 encoded words decode; unknown charsets and bad bytes degrade, never fail."""
    assert decode_words(raw) == decoded


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ((), (b"\\Seen",), {"added": ["\\Seen"], "deleted": [], "value": ["\\Seen"]}),
        (
            ("\\Seen", "\\Flagged"),
            ("\\Seen",),
            {"added": [], "deleted": ["\\Flagged"], "value": ["\\Seen"]},
        ),
        (("\\Seen",), ("\\Seen", "\\Recent"), None),
        (("\\Seen",), ("\\Seen",), None),
        (("a",), ("b",), {"added": ["b"], "deleted": ["a"], "value": ["b"]}),
    ],
)
def test_message_updated(
    before: tuple[bytes | str, ...], after: tuple[bytes | str, ...], expected: dict[str, Any] | None
) -> None:
    """Flag changes carry added, deleted (EmailEngine's names; removed repeats deleted) and the
    new value; \\Recent alone is no change."""
    data = message_updated(FOLDER, VALIDITY, 9, before, after)
    if expected is None:
        assert data is None
    else:
        assert data == {
            "id": message_id(FOLDER, VALIDITY, 9),
            "uid": 9,
            "changes": {"flags": {**expected, "removed": expected["deleted"]}},
        }


def test_ids_are_stable_and_decodable() -> None:
    """Message ids are 16 url-safe characters; attachment ids extend them and decode back."""
    mid = message_id(1, 2**32 - 1, 42)
    assert len(mid) == 16
    assert mid == message_id(1, 2**32 - 1, 42)
    assert mid != message_id(2, 2**32 - 1, 42)
    assert mid != message_id(1, 7, 42)
    assert parse_message_id(mid) == (1, 2**32 - 1, 42, None)
    aid = attachment_id(1, 2**32 - 1, 42, "1.2")
    assert aid.startswith(mid)
    assert parse_message_id(aid) == (1, 2**32 - 1, 42, "1.2")
    assert set(aid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    with pytest.raises(ValueError, match="not a message id"):
        parse_message_id("short")


def test_small_helpers() -> None:
    """messageDeleted, mailboxReset, flag filtering and date formatting."""
    assert message_deleted(FOLDER, VALIDITY, 5) == {"id": message_id(FOLDER, VALIDITY, 5), "uid": 5}
    assert mailbox_reset("Archive/2026", "\\Archive", 1, 2, 10) == {
        "path": "Archive/2026",
        "name": "2026",
        "specialUse": "\\Archive",
        "uidValidity": "2",
        "prevUidValidity": "1",
        "previousUidValidity": "1",
        "uidNext": 10,
    }
    assert mailbox_reset("INBOX", None, 1, 2, None)["specialUse"] is False
    assert visible_flags([b"\\Recent", "\\Seen", "\\Seen"]) == ["\\Seen"]
    assert iso_datetime(datetime(2022, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)) == (
        "2022-01-02T03:04:05.678Z"
    )
