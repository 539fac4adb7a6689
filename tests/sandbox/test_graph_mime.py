"""MIME parsing and writing, and body conversions, without a server."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from relay.sandbox.graph.bodies import html_to_text, text_to_html
from relay.sandbox.graph.mail import (
    Address,
    Attachment,
    MailStore,
    MessageInput,
)
from relay.sandbox.graph.mime import MimeError, build, headers, parse_mime, source


def _store() -> MailStore:
    store = MailStore(lambda: 1_700_000_000.0)
    store.create_mailbox("main@example.com", "owner")
    return store


def test_extra_text_parts_and_forwarded_messages_are_attachments() -> None:
    """A second text part becomes ATT00001.txt; a message/rfc822 part is one attachment."""
    inner = EmailMessage()
    inner["Subject"] = "Original"
    inner.set_content("forwarded text")
    outer = EmailMessage()
    outer["From"] = "a@example.net"
    outer["Subject"] = "Fwd"
    outer.set_content("first")
    second = EmailMessage()
    second.set_content("second text part")
    outer.make_mixed()
    outer.attach(second)
    outer.add_attachment(inner)

    parsed = parse_mime(outer.as_bytes())

    assert (parsed.body, parsed.body_type) == ("first\n", "text")
    assert [(a.name, a.content_type, a.is_inline) for a in parsed.attachments] == [
        ("ATT00001.txt", "text/plain", False),
        ("ATT00002.eml", "message/rfc822", False),
    ]
    assert b"forwarded text" in parsed.attachments[1].data


@pytest.mark.parametrize(
    ("header", "importance"),
    [
        ("Importance: High", "high"),
        ("Importance: low", "low"),
        ("X-Priority: 1 (Highest)", "high"),
        ("X-Priority: 5", "low"),
        ("X-Priority: 3", "normal"),
    ],
)
def test_importance_comes_from_importance_or_priority(header: str, importance: str) -> None:
    """Importance and X-Priority set the importance; anything else is normal."""
    raw = f"From: a@example.net\r\n{header}\r\n\r\nbody\r\n".encode()

    assert parse_mime(raw).importance == importance


def test_a_header_block_without_body_parts_is_a_message() -> None:
    """A source with headers only parses; one without any header line is refused."""
    parsed = parse_mime(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nDate: nonsense\r\n\r\n")

    assert (parsed.subject, parsed.sent, parsed.body) == ("Grüße", None, "")
    assert parsed.headers == [("Subject", "=?utf-8?q?Gr=C3=BC=C3=9Fe?="), ("Date", "nonsense")]
    with pytest.raises(MimeError):
        parse_mime(b"just some words\r\n")
    with pytest.raises(MimeError):
        parse_mime(b"  \r\n")


def test_a_source_is_written_from_fields() -> None:
    """A message without a source gets one: headers, body, inline and other attachments."""
    store = _store()
    message = store.add_message(
        "main@example.com",
        "inbox",
        MessageInput(
            subject="Line one\nline two",
            body="<p>Hi <img src='cid:logo'></p>",
            body_type="html",
            from_=Address("Rita Example", "rita@example.net"),
            to=[Address("main@example.com", "main@example.com")],
            importance="high",
            attachments=[
                Attachment("", "logo.png", "image/png", b"PNG", is_inline=True, content_id="logo"),
                Attachment("", "a.bin", "not a type", b"\x00\x01"),
            ],
        ),
    )

    parsed = message_from_bytes(source(message), policy=policy.default)

    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == "Line one line two"
    assert parsed["From"] == "Rita Example <rita@example.net>"
    assert parsed["Importance"] == "high"
    assert parsed.get_content_type() == "multipart/mixed"
    parts = {p.get_filename(): p for p in parsed.walk() if p.get_filename()}
    assert parts["logo.png"]["Content-ID"] == "<logo>"
    assert parts["a.bin"].get_content_type() == "application/octet-stream"
    assert ("Subject", "Line one line two") in headers(message)
    assert message.has_attachments is True
    assert b"\r\n" in build(message).as_bytes()


def test_a_draft_from_fields_has_no_headers_yet() -> None:
    """internetMessageHeaders of a draft made from fields is empty."""
    draft = _store().add_message(
        "main@example.com", "drafts", MessageInput(subject="x", is_draft=True)
    )

    assert headers(draft) == []


def test_only_inline_attachments_do_not_count_for_has_attachments() -> None:
    """hasAttachments ignores inline attachments, as Graph documents."""
    inline = Attachment("", "logo.png", "image/png", b"PNG", is_inline=True, content_id="logo")

    message = _store().add_message("main@example.com", "inbox", MessageInput(attachments=[inline]))

    assert message.has_attachments is False
    assert message.attachments[0].id.startswith("AAMk")


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("<p>Dear&nbsp;team,</p><p>see <b>this</b>.</p>", "Dear team,\r\n\r\nsee this."),
        ("<html><head><style>p {color: red}</style></head><body>Hi</body></html>", "Hi"),
        ("line<br>next", "line\r\nnext"),
        ("<div>a</div>\n\n\n\n<div>b</div>", "a\r\n\r\nb"),
    ],
)
def test_html_to_text(content: str, text: str) -> None:
    """HTML bodies become text: no tags or styles, entities decoded, blocks on lines."""
    assert html_to_text(content) == text


def test_text_to_html_escapes_and_keeps_lines() -> None:
    """Text bodies become escaped HTML with <br> line breaks."""
    wrapped = text_to_html("1 < 2\r\nnext")

    assert "<div>1 &lt; 2<br>\r\nnext</div>" in wrapped
    assert wrapped.startswith("<html>")
