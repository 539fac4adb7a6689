"""Headers, text limits, inline images and whole-message parsing for the message API."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from relay.events.structure import Part, leaf_parts
from relay.imap.parse import Record, parse_fetch, parse_untagged
from relay.mailbox.content import (
    attachment_inline,
    embed_images,
    encoded_size,
    headers_of,
    parse_message,
    pick_headers,
    text_of,
)
from relay.mailbox.model import TextType

HEADER = (
    b"Received: from mx1.example.org\r\n"
    b"\tby mx2.example.org; Mon, 17 Oct 2022 09:42:07 +0300\r\n"
    b"Received: from client.example.org\r\n"
    b"Subject: =?UTF-8?Q?J=C3=BCrgen?= says\r\n"
    b" hello\r\n"
    b"From: =?iso-8859-1?q?Fran=E7ois?= <f@example.net>\r\n"
    b"X-Raw-8bit: caf\xc3\xa9 and na\xc3\xafve\r\n"
    b"Message-ID: <x1@example.org>\r\n"
    b"\r\n"
)

INNER = (
    b"From: inner@example.org\r\n"
    b"Subject: an attached message whose subject is long enough to be folded by a\r\n"
    b" generator that refolds headers\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Inner text \xc3\xa9\r\n"
)
MESSAGE = (
    b"From: a@example.org\r\n"
    b"Subject: Test\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/related; boundary="rel"\r\n'
    b"\r\n"
    b"--rel\r\n"
    b'Content-Type: multipart/alternative; boundary="alt"\r\n'
    b"\r\n"
    b"--alt\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Caf=E9 au lait=\r\n"
    b" is hot\r\n"
    b"--alt\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b'<p>Caf\xc3\xa9 <img src="cid:logo@x"></p>\r\n'
    b"--alt--\r\n"
    b"--rel\r\n"
    b"Content-Type: image/png\r\n"
    b"Content-ID: <logo@x>\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"iVBORw0KGgo=\r\n"
    b"--rel--\r\n"
    b"--outer\r\n"
    b'Content-Type: application/pdf; name="=?UTF-8?Q?r=C3=A9sum=C3=A9.pdf?="\r\n'
    b"Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b'Content-Disposition: attachment; filename="notes.txt"\r\n'
    b"\r\n"
    b"notes\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n" + INNER + b"\r\n"
    b"--outer--\r\n"
)


# -- headers ----------------------------------------------------------------------------------


def test_headers_of() -> None:
    """Names lower case, values in order, unfolded, encoded words and 8-bit text decoded."""
    assert headers_of(HEADER) == {
        "received": [
            "from mx1.example.org\tby mx2.example.org; Mon, 17 Oct 2022 09:42:07 +0300",
            "from client.example.org",
        ],
        "subject": ["Jürgen says hello"],
        "from": ["François <f@example.net>"],
        "x-raw-8bit": ["café and naïve"],
        "message-id": ["<x1@example.org>"],
    }


def test_headers_of_a_whole_message_ignores_the_body() -> None:
    """Given a whole message, only its header block is read."""
    assert headers_of(HEADER + b"Not-A-Header: body text\r\n") == headers_of(HEADER)


def test_latin1_header_bytes() -> None:
    """8-bit header bytes that are not UTF-8 are read as Latin-1."""
    assert headers_of(b"Subject: caf\xe9\r\n\r\n") == {"subject": ["café"]}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", {}),
        (b"\xff\xfe\x00 no header at all", {}),
        (b" continuation first\r\nSubject: a\r\n", {"subject": ["a"]}),
        (b": no name\r\nSubject: a\r\n", {"subject": ["a"]}),
        (b"Subject: =?bogus?Q?x?=\r\n", {"subject": ["x"]}),
        (b"Subject: =?UTF-8?B?not base64!?=\r\n", {"subject": ["=?UTF-8?B?not base64!?="]}),
        # A line that is no header ends the block, as the email parser reads it.
        (b"Subject: a\r\njunk line\r\nFrom: b\r\n", {"subject": ["a"]}),
    ],
)
def test_malformed_headers_degrade(raw: bytes, expected: dict[str, list[str]]) -> None:
    """Junk, missing names and bad encodings give what can be read, never an error."""
    assert headers_of(raw) == expected


HEADERS = {"received": ["a", "b"], "subject": ["Hi"], "x-custom": ["1"]}


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        (["Subject", "X-CUSTOM"], {"subject": ["Hi"], "x-custom": ["1"]}),
        (["received"], {"received": ["a", "b"]}),
        (["x-missing"], {}),
        ([], {}),
        ("*", HEADERS),
        ("Subject", {"subject": ["Hi"]}),
        (["*"], HEADERS),
    ],
)
def test_pick_headers(wanted: Any, expected: dict[str, list[str]]) -> None:
    """notifyHeaders picks headers by name in any case, or all of them with *."""
    assert pick_headers(HEADERS, wanted) == expected


# -- text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text_type", "expected"),
    [
        ("*", {"plain": "plain", "html": "<p>html</p>", "hasMore": False}),
        ("plain", {"plain": "plain", "hasMore": False}),
        ("html", {"html": "<p>html</p>", "hasMore": False}),
    ],
)
def test_text_of_requested_types(text_type: TextType, expected: dict[str, Any]) -> None:
    """Only the requested kinds of text are returned."""
    assert text_of("plain", "<p>html</p>", max_bytes=None, text_type=text_type) == expected


def test_text_of_missing_kinds() -> None:
    """A kind the message does not have is left out, not empty."""
    assert text_of(None, "<p>x</p>", max_bytes=100, text_type="*") == {
        "html": "<p>x</p>",
        "hasMore": False,
    }
    assert text_of(None, None, max_bytes=100, text_type="plain") == {"hasMore": False}


@pytest.mark.parametrize(
    ("text", "max_bytes", "cut", "more"),
    [
        ("hello", 5, "hello", False),
        ("hello", 4, "hell", True),
        ("hello", 0, "", True),
        ("aé", 2, "a", True),  # é is 2 bytes: never half of it
        ("aé", 3, "aé", False),
        ("a🤡b", 4, "a", True),
        ("a🤡b", 5, "a🤡", True),
    ],
)
def test_text_of_cuts_on_character_boundaries(
    text: str, max_bytes: int, cut: str, more: bool
) -> None:
    """Text is cut to max_bytes of UTF-8 at a character boundary; hasMore says it was."""
    assert text_of(text, None, max_bytes=max_bytes, text_type="*") == {
        "plain": cut,
        "hasMore": more,
    }


def test_has_more_when_either_is_cut() -> None:
    """hasMore is true when any returned text was cut."""
    assert text_of("short", "a longer html", max_bytes=6, text_type="*") == {
        "plain": "short",
        "html": "a long",
        "hasMore": True,
    }


def test_encoded_size() -> None:
    """encodedSize holds the encoded size of the text parts that exist."""
    plain = Part(section="1", content_type="text/plain", size=120)
    html = Part(section="2", content_type="text/html", size=4000)
    assert encoded_size(plain, html) == {"plain": 120, "html": 4000}
    assert encoded_size(None, html) == {"html": 4000}
    assert encoded_size(None, None) == {}


def test_attachment_inline() -> None:
    """An attachment's content is standard base64 on one line."""
    content = bytes(range(256)) * 4
    inline = attachment_inline(content)
    assert "\n" not in inline
    assert "+" in inline or "/" in inline  # the standard alphabet, not URL-safe
    assert base64.b64decode(inline, validate=True) == content


# -- embedded images --------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n"
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<img src="cid:logo@x">', f'<img src="{PNG_URL}">'),
        ("<IMG SRC='CID:LOGO@X' alt=x>", f'<IMG SRC="{PNG_URL}" alt=x>'),
        ("<img src=cid:logo@x>", f'<img src="{PNG_URL}">'),
        ('<img src="cid:&lt;logo@x&gt;">', f'<img src="{PNG_URL}">'),
        ('<img src="cid:%3Clogo@x%3E">', f'<img src="{PNG_URL}">'),
        ('<img src = "cid:logo@x" >', f'<img src = "{PNG_URL}" >'),
        ('<img src="cid:other@x">', '<img src="cid:other@x">'),
        ('<img data-src="cid:logo@x">', '<img data-src="cid:logo@x">'),
        ("<p>cid:logo@x</p>", "<p>cid:logo@x</p>"),
    ],
)
def test_embed_images(html: str, expected: str) -> None:
    """cid: image references become data: URLs of the given parts; others stay."""
    assert embed_images(html, {"<logo@x>": ("image/png", PNG)}) == expected


def test_embed_images_ids_without_brackets() -> None:
    """Content-IDs may be given without <>, and a reference may carry them."""
    html = '<img src="cid:<logo@x>">'
    assert embed_images(html, {"logo@x": ("image/png", PNG)}) == f'<img src="{PNG_URL}">'


def test_embed_images_cannot_inject_through_the_content_type() -> None:
    """A content type that is not a bare type/subtype cannot break out of the attribute."""
    html = embed_images('<img src="cid:a">', {"a": ('image/png" onerror="alert(1)', PNG)})
    assert "onerror" not in html
    assert html.startswith('<img src="data:application/octet-stream;base64,')
    with_params = embed_images('<img src="cid:a">', {"a": ("IMAGE/GIF; name=x.gif", PNG)})
    assert with_params.startswith('<img src="data:image/gif;base64,')


# -- whole messages ---------------------------------------------------------------------------


def test_parse_message_text_and_headers() -> None:
    """The text is the first plain and HTML part, decoded by its encoding and charset."""
    parsed = parse_message(MESSAGE)
    assert parsed.headers["subject"] == ["Test"]
    assert parsed.plain == "Café au lait is hot"
    assert parsed.html == '<p>Café <img src="cid:logo@x"></p>'
    assert parsed.plain_part is not None
    assert parsed.html_part is not None
    assert (parsed.plain_part.section, parsed.html_part.section) == ("1.1.1", "1.1.2")
    assert encoded_size(parsed.plain_part, parsed.html_part) == {"plain": 24, "html": 35}


def test_parse_message_numbers_parts_as_imap() -> None:
    """Parts get the numbers an IMAP server gives them, and the same fields."""
    parsed = parse_message(MESSAGE)
    assert [part.section for part in parsed.parts] == ["1.1.1", "1.1.2", "1.2", "2", "3", "4"]
    # Dovecot 2.3's BODYSTRUCTURE of MESSAGE, its records as the client frames them.
    subject = b"an attached message whose subject is long enough to be folded by a generator"
    subject += b" that refolds headers"
    records: list[Record] = [
        (
            b'1 FETCH (UID 1 BODYSTRUCTURE (((("text" "plain" ("charset" "iso-8859-1") NIL NIL'
            b' "quoted-printable" 24 1 NIL NIL NIL NIL)("text" "html" ("charset" "utf-8") NIL'
            b' NIL "8bit" 35 0 NIL NIL NIL NIL) "alternative" ("boundary" "alt") NIL NIL NIL)'
            b'("image" "png" NIL "<logo@x>" NIL "base64" 12 NIL NIL NIL NIL) "related"'
            b' ("boundary" "rel") NIL NIL NIL)("application" "pdf" ("name"'
            b' "=?UTF-8?Q?r=C3=A9sum=C3=A9.pdf?=") NIL NIL "base64" 12 NIL ("attachment"'
            b' ("filename*" "UTF-8\'\'r%C3%A9sum%C3%A9.pdf")) NIL NIL)("text" "plain"'
            b' ("charset" "utf-8") NIL NIL "7bit" 5 0 NIL ("attachment" ("filename"'
            b' "notes.txt")) NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 193 (NIL {97}',
            subject,
        ),
        b' ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) ((NIL NIL'
        b' "inner" "example.org")) NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "utf-8")'
        b' NIL NIL "7bit" 15 1 NIL NIL NIL NIL) 6 NIL NIL NIL NIL) "mixed" ("boundary"'
        b' "outer") NIL NIL NIL))',
    ]
    from_imap = leaf_parts(parse_fetch(parse_untagged(records)).attributes["BODYSTRUCTURE"])
    assert parsed.parts == from_imap


def test_parse_message_attachments() -> None:
    """Every leaf that is not the text is an attachment, its content decoded on demand."""
    parsed = parse_message(MESSAGE)
    found = {item.section: (item.part.content_type, item.content()) for item in parsed.attachments}
    assert found == {
        "1.2": ("image/png", PNG),
        "2": ("application/pdf", b"%PDF-1.4\n"),
        "3": ("text/plain", b"notes"),
        # An attached message is the message as it was sent, not refolded.
        "4": ("message/rfc822", INNER),
    }
    section, part, content = parsed.attachments[1]
    assert (section, part.filename, part.disposition) == ("2", "résumé.pdf", "attachment")
    assert content() == b"%PDF-1.4\n"
    assert parsed.attachments[0].part.content_id == "logo@x"
    assert parsed.attachments[0].part.related


def test_parse_single_part_message() -> None:
    """A message that is not multipart is its own part 1."""
    parsed = parse_message(
        b"Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nSsO8cmdlbg==\r\n"
    )
    assert parsed.plain == "Jürgen"
    assert parsed.html is None
    assert [part.section for part in parsed.parts] == ["1"]
    assert parsed.attachments == ()


def test_parse_message_without_content_type() -> None:
    """No Content-Type: text/plain, raw 8-bit read as UTF-8 or Latin-1."""
    assert parse_message(b"Subject: x\r\n\r\ncaf\xe9\r\n").plain == "café\r\n"


def test_parse_message_that_is_only_an_attachment() -> None:
    """A message whose body is a file has no text and one attachment, part 1."""
    parsed = parse_message(
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
    )
    assert (parsed.plain, parsed.html) == (None, None)
    assert [(item.section, item.content()) for item in parsed.attachments] == [("1", b"%PDF-")]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff garbage without headers",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary given\r\n",
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n'
        b"\r\nnever closed",
        b"Content-Type: text/plain; charset=x-nonsense\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\n!!!not base64",
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
        b"\r\n\r\n=ZZ=\xff\r\n",
    ],
)
def test_parse_message_never_raises(raw: bytes) -> None:
    """Malformed messages parse to whatever can be read; every attachment still decodes."""
    parsed = parse_message(raw)
    for item in parsed.attachments:
        assert isinstance(item.content(), bytes)
    assert parsed.parts
