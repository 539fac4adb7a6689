"""Pure parts of sending: backoff, MIME, the Graph message of a MIME message, session reuse."""

from __future__ import annotations

import base64
from email import message_from_bytes
from email.policy import default

import pytest

from relay.send.graph import graph_message
from relay.send.mime import MimeError, build
from relay.send.model import Address, Reference, Submit
from relay.send.outcome import retry_delay
from relay.send.reference import apply_reference
from relay.send.smtp_pool import Limits, reusable

SENDER = Address(name="Support", address="shared@example.com")


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 30.0), (2, 60.0), (3, 120.0), (7, 1920.0), (8, 3600.0), (30, 3600.0)],
)
def test_retry_delay_doubles_up_to_the_cap(attempt: int, expected: float) -> None:
    """The wait after attempt n is retry_min * 2^(n-1), never more than retry_max."""
    assert retry_delay(attempt, minimum=30.0, maximum=3600.0) == expected


def _submit(**fields: object) -> Submit:
    return Submit.model_validate({"to": [{"address": "rita@example.net"}], **fields})


def test_inline_images_go_with_the_html_and_files_are_attachments() -> None:
    """A cid attachment is related to the HTML part; others are attachments; Bcc is hidden."""
    png = base64.b64encode(b"\x89PNG").decode()
    doc = base64.b64encode(b"%PDF").decode()
    msg = build(
        _submit(
            bcc=[{"address": "hidden@example.org"}],
            subject="Grüße",
            text="plain",
            html='<img src="cid:logo">',
            attachments=[
                {"filename": "logo.png", "content": png, "contentType": "image/png", "cid": "logo"},
                {"filename": "a.pdf", "content": doc, "contentType": "application/pdf"},
            ],
            messageId="<fixed@example.com>",
            inReplyTo="<earlier@example.com>",
            references=["<first@example.com>", "<earlier@example.com>"],
        ),
        SENDER,
    )
    parsed = message_from_bytes(msg.as_bytes(), policy=default)
    assert parsed["Subject"] == "Grüße"
    assert parsed["Message-ID"] == "<fixed@example.com>"
    assert parsed["References"] == "<first@example.com> <earlier@example.com>"
    assert "Bcc" not in parsed
    related = next(p for p in parsed.walk() if p.get_content_type() == "multipart/related")
    assert [p.get_content_type() for p in related.iter_parts()] == ["text/html", "image/png"]
    assert [p.get_filename() for p in parsed.iter_attachments()] == ["a.pdf"]


def test_reserved_headers_cannot_be_set_as_headers() -> None:
    """headers{} may not override what the payload sets (From, Subject, Message-ID, ...)."""
    with pytest.raises(MimeError) as caught:
        build(_submit(headers={"From": "x@example.com"}), SENDER)
    assert caught.value.field == "headers.From"


def test_graph_message_keeps_recipients_bcc_and_attachments() -> None:
    """The Graph message has the MIME's bodies and recipients, Bcc from the envelope."""
    att = base64.b64encode(b"data").decode()
    msg = build(
        _submit(
            cc=[{"name": "Carl", "address": "carl@example.net"}],
            html="<p>Hi</p>",
            headers={"X-Ticket": "77"},
            attachments=[{"filename": "d.bin", "content": att}],
        ),
        SENDER,
    )
    envelope = {
        "from": SENDER.address,
        "to": ["rita@example.net", "carl@example.net", "hidden@example.org"],
    }
    graph = graph_message(msg.as_bytes(), envelope)
    assert graph["from"] == {"emailAddress": {"address": SENDER.address, "name": "Support"}}
    assert graph["toRecipients"] == [{"emailAddress": {"address": "rita@example.net"}}]
    assert graph["ccRecipients"] == [
        {"emailAddress": {"address": "carl@example.net", "name": "Carl"}}
    ]
    assert graph["bccRecipients"] == [{"emailAddress": {"address": "hidden@example.org"}}]
    assert graph["body"] == {"contentType": "html", "content": "<p>Hi</p>\r\n"}
    assert graph["internetMessageHeaders"] == [{"name": "X-Ticket", "value": "77"}]
    (attachment,) = graph["attachments"]
    assert (attachment["name"], base64.b64decode(attachment["contentBytes"])) == ("d.bin", b"data")


@pytest.mark.parametrize(
    ("connected", "messages", "age", "idle", "expected"),
    [
        (True, 0, 0.0, 0.0, True),
        (True, 99, 599.0, 29.0, True),
        (False, 0, 0.0, 0.0, False),
        (True, 100, 0.0, 0.0, False),
        (True, 1, 600.0, 0.0, False),
        (True, 1, 10.0, 30.0, False),
    ],
)
def test_a_kept_smtp_session_is_reused_within_its_limits(
    connected: bool, messages: int, age: float, idle: float, expected: bool
) -> None:
    """A session is reused while connected, under the message count, age and idle limits."""
    limits = Limits(idle=30.0, age=600.0, messages=100)
    got = reusable(connected=connected, messages=messages, age=age, idle=idle, limits=limits)
    assert got is expected


@pytest.mark.parametrize(
    ("action", "subject", "expected"),
    [
        ("reply", "Printer", "Re: Printer"),
        ("reply", "RE: Printer", "RE: Printer"),
        ("reply-all", "re:Printer", "re:Printer"),
        ("forward", "Printer", "Fwd: Printer"),
        ("forward", "Fw: Printer", "Fw: Printer"),
        ("forward", "Re: Printer", "Fwd: Re: Printer"),
    ],
)
def test_reference_subject_is_prefixed_once(action: str, subject: str, expected: str) -> None:
    """A reply gets "Re: " and a forward "Fwd: ", never twice; a given subject wins."""
    original = {"subject": subject, "from": {"name": "", "address": "rita@example.net"}}
    reference = Reference(message="x", action=action)  # type: ignore[arg-type]
    done = apply_reference(Submit(text="hi"), original, reference, ["me@example.com"])
    assert done.subject == expected
    given = apply_reference(Submit(subject="Mine", text="hi"), original, reference, [])
    assert given.subject == "Mine"
