"""BODYSTRUCTURE -> leaf parts, part numbers and the message text, from real FETCH bytes."""

from __future__ import annotations

from typing import Any

import pytest

from relay.events.normalize import attachments
from relay.events.structure import (
    Part,
    decode_body,
    find,
    header_blocks,
    header_fields,
    is_text,
    leaf_parts,
    mime_leaves,
    text_parts,
)
from relay.imap.parse import parse_fetch, parse_untagged

TEXT = b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)'
HTML_QP = (
    b'("TEXT" "HTML" ("CHARSET" "ISO-8859-1") NIL NIL "QUOTED-PRINTABLE" 27 1 NIL NIL NIL NIL)'
)
HTML_CID = b'("text" "html" ("charset" "utf-8") "<root>" NIL "7bit" 27 1 NIL NIL NIL NIL)'
PNG_CID = b'("image" "png" NIL "<img1@example.org>" NIL "base64" 8 NIL NIL NIL NIL)'
PDF_2231 = (
    b'("application" "pdf" ("name" "=?UTF-8?Q?r=C3=A9sum=C3=A9.pdf?=") NIL NIL "base64" 546048'
    b' NIL ("attachment" ("filename*" "UTF-8\'\'r%C3%A9sum%C3%A9.pdf")) NIL NIL)'
)
TEXT_FILE = (
    b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 12 1 NIL'
    b' ("attachment" ("filename" "notes.txt")) NIL NIL)'
)
INLINE_HTML = b'("text" "html" NIL NIL NIL "8bit" 40 2 NIL ("inline" NIL) NIL NIL)'
RFC822 = (
    b'("message" "rfc822" NIL NIL NIL "7bit" 700 ("Mon, 17 Oct 2022 09:42:07 +0300" "inner" NIL'
    b" NIL NIL NIL NIL NIL NIL NIL) " + TEXT + b' 20 NIL ("attachment" ("filename" "fwd.eml"))'
    b" NIL NIL)"
)


def multipart(subtype: bytes, *parts: bytes) -> bytes:
    return b"(" + b"".join(parts) + b' "' + subtype + b'" ("boundary" "b") NIL NIL NIL)'


def bodystructure(structure: bytes, item: bytes = b"BODYSTRUCTURE") -> Any:
    """Parse ``* 1 FETCH (UID 7 BODYSTRUCTURE ...)`` the way the IMAP client does."""
    response = parse_untagged([b"1 FETCH (UID 7 " + item + b" " + structure + b")"])
    return parse_fetch(response).attributes[item.decode()]


def sections(structure: bytes) -> list[str]:
    return [part.section for part in leaf_parts(bodystructure(structure))]


def test_single_part_message_is_part_1() -> None:
    """The body of a message that is not multipart is part 1, with its type and charset."""
    assert leaf_parts(bodystructure(TEXT)) == (
        Part(section="1", content_type="text/plain", charset="utf-8", encoding="7bit", size=6),
    )


def test_fields_are_lower_case_and_decoded() -> None:
    """Type, charset and encoding come lower case; names decode RFC 2231 and RFC 2047."""
    html, pdf = leaf_parts(bodystructure(multipart(b"mixed", HTML_QP, PDF_2231)))
    assert (html.content_type, html.charset, html.encoding) == (
        "text/html",
        "iso-8859-1",
        "quoted-printable",
    )
    assert pdf == Part(
        section="2",
        content_type="application/pdf",
        encoding="base64",
        size=546048,
        filename="résumé.pdf",
        disposition="attachment",
    )


@pytest.mark.parametrize(
    ("structure", "expected"),
    [
        (TEXT, ["1"]),
        (multipart(b"alternative", TEXT, HTML_QP), ["1", "2"]),
        (
            multipart(b"mixed", multipart(b"alternative", TEXT, HTML_QP), PDF_2231),
            ["1.1", "1.2", "2"],
        ),
        (
            multipart(
                b"mixed",
                multipart(b"related", multipart(b"alternative", TEXT, HTML_QP), PNG_CID),
                PDF_2231,
            ),
            ["1.1.1", "1.1.2", "1.2", "2"],
        ),
        # An attached message is one part: its own text is not listed.
        (multipart(b"mixed", TEXT, RFC822), ["1", "2"]),
    ],
)
def test_part_numbers_follow_imap(structure: bytes, expected: list[str]) -> None:
    """Children of multiparts are numbered 1..n, joined with dots, leaves only."""
    assert sections(structure) == expected


def test_related_parts_carry_content_id_without_brackets() -> None:
    """A multipart/related child knows it is related; its Content-ID has no <>."""
    html, png = leaf_parts(bodystructure(multipart(b"related", HTML_QP, PNG_CID)))
    assert png.related
    assert png.content_id == "img1@example.org"
    assert html.related
    assert html.content_id is None


def test_attached_message_extension_data() -> None:
    """message/rfc822 reads its disposition after envelope, body and lines."""
    attached = leaf_parts(bodystructure(multipart(b"mixed", TEXT, RFC822)))[1]
    assert attached.content_type == "message/rfc822"
    assert attached.disposition == "attachment"
    assert attached.filename == "fwd.eml"
    assert attached.size == 700


def test_body_without_extension_data() -> None:
    """A non-extensible BODY (no disposition, NIL encoding) still gives its parts."""
    structure = b'(("text" "plain" NIL NIL NIL NIL 6 1)("image" "gif" NIL NIL NIL "base64" 9)'
    structure += b' "mixed")'
    text, gif = leaf_parts(bodystructure(structure, b"BODY"))
    assert text == Part(section="1", content_type="text/plain", size=6)
    assert (gif.section, gif.content_type, gif.encoding, gif.disposition) == (
        "2",
        "image/gif",
        "base64",
        None,
    )


@pytest.mark.parametrize("value", [None, (), b"junk"])
def test_no_bodystructure_no_parts(value: Any) -> None:
    """Something that is not a BODYSTRUCTURE gives no parts."""
    assert leaf_parts(value) == ()


@pytest.mark.parametrize(
    ("structure", "plain", "html"),
    [
        (TEXT, "1", None),
        (multipart(b"alternative", TEXT, HTML_QP), "1", "2"),
        (multipart(b"mixed", multipart(b"related", HTML_QP, PNG_CID), PDF_2231), None, "1.1"),
        # A text file attached before the text is not the text.
        (multipart(b"mixed", TEXT_FILE, TEXT), "2", None),
        (multipart(b"mixed", TEXT, TEXT_FILE, INLINE_HTML), "1", "3"),
        # The first of several: later text parts are left alone.
        (multipart(b"mixed", TEXT, PNG_CID, TEXT), "1", None),
        # The attached message's text is not this message's text.
        (multipart(b"mixed", RFC822), None, None),
        (multipart(b"mixed", PDF_2231, RFC822), None, None),
        # A Content-ID inside multipart/related makes an HTML part a resource, not text.
        (multipart(b"related", HTML_CID, PNG_CID), None, None),
        (PDF_2231, None, None),
    ],
)
def test_text_parts(structure: bytes, plain: str | None, html: str | None) -> None:
    """The message text is the first text/plain and text/html that is not an attachment."""
    found = text_parts(leaf_parts(bodystructure(structure)))
    assert tuple(part.section if part else None for part in found) == (plain, html)


@pytest.mark.parametrize(
    "structure",
    [
        TEXT,
        PDF_2231,
        multipart(b"mixed", multipart(b"related", HTML_QP, PNG_CID), PDF_2231),
        multipart(b"mixed", TEXT, TEXT_FILE, INLINE_HTML, RFC822),
        multipart(b"related", HTML_CID, PNG_CID),
    ],
)
def test_every_leaf_is_text_or_a_listed_attachment(structure: bytes) -> None:
    """The text rule matches the webhook's attachment list: each leaf is exactly one."""
    parsed = bodystructure(structure)
    listed = [item["id"] for item in attachments(parsed, lambda part: part)]
    assert [part.section for part in leaf_parts(parsed) if not is_text(part)] == listed


def test_find() -> None:
    """A part is found by its number; an unknown number finds nothing."""
    parts = leaf_parts(bodystructure(multipart(b"mixed", TEXT, multipart(b"related", PNG_CID))))
    found = find(parts, "2.1")
    assert found is not None
    assert found.content_type == "image/png"
    assert find(parts, "2") is None
    assert find(parts, "3") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", {}),
        (None, {}),
        (b"\r\n", {}),
        (
            b"Auto-Submitted: auto-replied\r\nX-Autoreply: yes\r\n\r\n",
            {"auto-submitted": ["auto-replied"], "x-autoreply": ["yes"]},
        ),
        # Folded, encoded words, repeated fields in order.
        (
            b"Subject: =?UTF-8?Q?J=C3=BCrgen?=\r\n says hi\r\nReceived: a\r\nReceived: b\r\n",
            {"subject": ["J\u00fcrgen says hi"], "received": ["a", "b"]},
        ),
        # Raw 8-bit: UTF-8, else Latin-1.
        (
            b"Subject: caf\xc3\xa9\r\nX-Note: caf\xe9\r\n",
            {"subject": ["caf\u00e9"], "x-note": ["caf\u00e9"]},
        ),
        # A whole message: the body is not read.
        (b"Precedence: bulk\r\n\r\nNot-A-Field: body\r\n", {"precedence": ["bulk"]}),
        ("X-Str: text", {"x-str": ["text"]}),
    ],
)
def test_header_fields(raw: bytes | str | None, expected: dict[str, list[str]]) -> None:
    """A header block becomes lower-case names with unfolded, decoded values."""
    assert header_fields(raw) == expected


def test_header_blocks() -> None:
    """A delivery status body splits into its groups at empty lines, whatever the line ends."""
    raw = (
        b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
        b"Final-Recipient: rfc822; a@example.net\r\nAction: failed\r\n \r\n"
        b"Final-Recipient: rfc822; b@example.net\nAction: delayed\n\n\n"
    )
    assert header_blocks(raw) == [
        {"reporting-mta": ["dns; mx.example.com"]},
        {"final-recipient": ["rfc822; a@example.net"], "action": ["failed"]},
        {"final-recipient": ["rfc822; b@example.net"], "action": ["delayed"]},
    ]
    assert header_blocks(b"") == []


@pytest.mark.parametrize(
    ("raw", "encoding", "expected"),
    [
        (b"QWN0aW9uOiBmYWlsZWQ=\r\n", "base64", b"Action: failed"),
        # Cut short by a partial FETCH: decoded as far as whole groups go.
        (b"QWN0aW9uOiBmYWlsZW", "base64", b"Action: fail"),
        (b"caf=C3=A9=\r\nteria", "quoted-printable", b"caf\xc3\xa9teria"),
        (b"as is=41", "7bit", b"as is=41"),
    ],
)
def test_decode_body(raw: bytes, encoding: str, expected: bytes) -> None:
    """Transfer encodings are undone; other encodings leave the bytes as they are."""
    assert decode_body(raw, encoding) == expected


def test_mime_leaves_do_not_enter_attached_messages() -> None:
    """A MIME source's leaves in order: an attached message is one leaf holding its source;
    text is transfer-decoded."""
    raw = (
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
        b'--o\r\nContent-Type: multipart/alternative; boundary="i"\r\n\r\n'
        b"--i\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"aGVsbG8=\r\n--i--\r\n"
        b"--o\r\nContent-Type: message/rfc822\r\n\r\n"
        b'Message-ID: <in@x>\r\nContent-Type: multipart/mixed; boundary="n"\r\n\r\n'
        b"--n\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n--n--\r\n"
        b"--o--\r\n"
    )
    leaves = mime_leaves(raw)
    assert [content_type for content_type, _ in leaves] == ["text/plain", "message/rfc822"]
    assert leaves[0][1] == b"hello"
    assert header_fields(leaves[1][1])["message-id"] == ["<in@x>"]
