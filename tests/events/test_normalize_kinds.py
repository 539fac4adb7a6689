"""messageNew's EmailEngine fields: flag booleans, text, messageSpecialUse, isAutoReply, and
bounces and complaints with relatedMessageId (pure, table-driven)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from relay.events.normalize import (
    AUTO_REPLY_HEADERS,
    Report,
    flag_fields,
    imap_fetch_to_event,
    imap_report,
    is_auto_reply,
    message_id,
    message_special_use,
    mime_report,
    report_fields,
    report_items,
    text_info,
)
from tests.events.test_normalize import FOLDER, HTML, RFC822, TEXT, VALIDITY, fetch, multipart
from tests.events.test_structure import bodystructure

STATUS = b'("message" "delivery-status" NIL NIL NIL "7bit" 120 NIL NIL NIL NIL)'
STATUS_B64 = b'("message" "delivery-status" NIL NIL NIL "base64" 160 NIL NIL NIL NIL)'
FEEDBACK = b'("message" "feedback-report" NIL NIL NIL "7bit" 90 NIL NIL NIL NIL)'
HEADERS_PART = (
    b'("text" "rfc822-headers" ("charset" "us-ascii") NIL NIL "7bit" 40 2 NIL NIL NIL NIL)'
)
PDF = b'("application" "pdf" NIL NIL NIL "base64" 10 NIL ("attachment" NIL) NIL NIL)'
DSN_STRUCTURE = multipart(b"report", TEXT, STATUS, RFC822)
ARF_STRUCTURE = multipart(b"report", TEXT, FEEDBACK, RFC822)

MAILER_DAEMON = (
    b'ENVELOPE ("Tue, 1 Dec 2026 10:00:00 +0000" "Undelivered Mail Returned to Sender"'
    b' (("Mail Delivery System" NIL "MAILER-DAEMON" "example.com")) NIL NIL'
    b' ((NIL NIL "ann" "example.com")) NIL NIL NIL "<dsn-1@example.com>")'
)
OUT_OF_OFFICE = (
    b'ENVELOPE ("Tue, 1 Dec 2026 10:00:00 +0000" "Out of Office: back on Monday"'
    b' ((NIL NIL "bob" "example.org")) NIL NIL ((NIL NIL "ann" "example.com")) NIL NIL'
    b' "<ticket-1@example.com>" "<ooo-1@example.org>")'
)
HOTMAIL = (
    b'ENVELOPE (NIL "complaint about message from 1.2.3.4" ((NIL NIL "staff" "hotmail.com"))'
    b" NIL NIL NIL NIL NIL NIL NIL)"
)
HEADER_ITEM = "BODY[HEADER.FIELDS (" + " ".join(AUTO_REPLY_HEADERS).upper() + ")]"
DSN_FIELDS = (
    b"Reporting-MTA: dns; mx.example.com\r\nArrival-Date: Tue, 1 Dec 2026 09:59:58 +0000\r\n"
    b"\r\nFinal-Recipient: rfc822; nobody@example.net\r\nAction: failed\r\n"
    b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
)
ORIGINAL = b"Message-ID: <ticket-1@example.com>\r\nSubject: Your ticket\r\n\r\n"


def _event(items: bytes, extra: dict[str, Any], special_use: str | None = None) -> dict[str, Any]:
    attributes = {**fetch(items, 41), **extra}
    return imap_fetch_to_event(
        attributes, folder_no=FOLDER, uidvalidity=VALIDITY, special_use=special_use
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], {}),
        (["\\Seen", "$Label"], {}),
        (["\\Flagged"], {"flagged": True}),
        (["\\flagged", "\\ANSWERED"], {"flagged": True, "answered": True}),
        (["\\Draft", "\\Seen"], {"draft": True}),
    ],
)
def test_flag_fields_only_when_true(flags: list[str], expected: dict[str, bool]) -> None:
    """flagged, answered and draft are sent only when the flag is set (any case)."""
    assert flag_fields(flags) == expected


@pytest.mark.parametrize(
    ("special_use", "expected"),
    [
        ("\\Inbox", "\\Inbox"),
        ("\\Sent", "\\Sent"),
        ("\\sent", "\\Sent"),
        ("\\Junk", "\\Junk"),
        ("\\Trash", "\\Trash"),
        ("\\Drafts", "\\Drafts"),
        ("\\Archive", None),
        ("\\All", None),
        ("\\Flagged", None),
        (None, None),
    ],
)
def test_message_special_use(special_use: str | None, expected: str | None) -> None:
    """Only Junk, Sent, Trash, Inbox and Drafts folders give a messageSpecialUse."""
    assert message_special_use(special_use) == expected


@pytest.mark.parametrize(
    ("structure", "sizes"),
    [
        (TEXT, {"plain": 6}),
        (multipart(b"alternative", TEXT, HTML), {"plain": 6, "html": 27}),
        (multipart(b"mixed", HTML, PDF), {"html": 27}),
        (PDF, {}),
    ],
)
def test_text_info(structure: bytes, sizes: dict[str, int]) -> None:
    """text carries the message id and the encoded sizes of its text parts."""
    assert text_info("m1", bodystructure(structure)) == {"id": "m1", "encodedSize": sizes}


def test_text_info_without_bodystructure() -> None:
    """Without a BODYSTRUCTURE the text has an id and no sizes."""
    assert text_info("m1", None) == {"id": "m1", "encodedSize": {}}


@pytest.mark.parametrize(
    ("headers", "subject", "in_reply_to", "expected"),
    [
        ({"auto-submitted": ["auto-replied"]}, "Hi", None, True),
        ({"auto-submitted": ["Auto-Replied; owner-email=bob@example.org"]}, "Hi", None, True),
        ({"auto-submitted": ["auto-generated"]}, "Hi", None, False),
        ({"auto-submitted": ["no"]}, "Hi", None, False),
        ({"precedence": ["auto_reply"]}, "Hi", None, True),
        ({"precedence": ["auto-reply"]}, "Hi", None, True),
        ({"precedence": ["bulk"]}, "Hi", None, False),
        ({"x-autoreply": ["yes"]}, "Hi", None, True),
        ({"x-autorespond": [""]}, "Hi", None, True),
        ({"x-autoresponder": ["1"]}, "Hi", None, True),
        ({}, "Out of Office: back on Monday", "<t@example.com>", True),
        ({}, "AUTO: away", "<t@example.com>", True),
        ({}, "OOF: away", "<t@example.com>", True),
        ({}, "ooo: away", "<t@example.com>", True),
        ({}, "Out of Office: back on Monday", None, False),
        ({}, "Automatic reply: away", "<t@example.com>", False),
        ({}, "Re: Out of Office", "<t@example.com>", False),
        ({}, None, "<t@example.com>", False),
    ],
)
def test_is_auto_reply(
    headers: dict[str, list[str]], subject: str | None, in_reply_to: str | None, expected: bool
) -> None:
    """EmailEngine's signs of an automatic reply: header fields, or a subject prefix on a reply."""
    assert is_auto_reply(headers, subject=subject, in_reply_to=in_reply_to) is expected


FAILED = (
    {"reporting-mta": ["dns; mx.example.com"]},
    {"final-recipient": ["rfc822; nobody@example.net"], "action": ["failed"]},
)


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (Report(), {}),
        (
            Report(status=FAILED, original={"message-id": ["<t1@example.com>"]}),
            {"isBounce": True, "relatedMessageId": "<t1@example.com>"},
        ),
        # The delivery status's own X-Original-Message-ID comes first.
        (
            Report(
                status=(
                    {"reporting-mta": ["dns; a"], "x-original-message-id": ["<x@example.com>"]},
                    FAILED[1],
                ),
                original={"message-id": ["<t1@example.com>"]},
            ),
            {"isBounce": True, "relatedMessageId": "<x@example.com>"},
        ),
        # Original-Recipient when there is no Final-Recipient.
        (
            Report(
                status=({"original-recipient": ["rfc822;a@example.net"], "action": ["Failed"]},),
                original={"message-id": ["<t1@example.com>"]},
            ),
            {"isBounce": True, "relatedMessageId": "<t1@example.com>"},
        ),
        # Delayed or delivered: a delivery report, not a bounce.
        (
            Report(
                status=({"final-recipient": ["rfc822; a@example.net"], "action": ["delayed"]},),
                original={"message-id": ["<t1@example.com>"]},
            ),
            {},
        ),
        # Any recipient that failed makes it a bounce (each gets its messageBounce).
        (
            Report(
                status=(
                    {"final-recipient": ["rfc822; a@example.net"], "action": ["delivered"]},
                    {"final-recipient": ["rfc822; b@example.net"], "action": ["failed"]},
                ),
                original={"message-id": ["<t1@example.com>"]},
            ),
            {"isBounce": True, "relatedMessageId": "<t1@example.com>"},
        ),
        # Without the original's Message-ID nothing ties it to a message.
        (Report(status=FAILED), {}),
        (Report(status=({"action": ["failed"]},), original={"message-id": ["<t@x>"]}), {}),
        (
            Report(
                feedback={"feedback-type": ["abuse"], "original-rcpt-to": ["ann@example.net"]},
                original={"message-id": ["<news-7@example.com>"]},
            ),
            {"isComplaint": True, "relatedMessageId": "<news-7@example.com>"},
        ),
        (
            Report(feedback={"original-rcpt-to": ["ann@example.net"]}),
            {"isComplaint": True},
        ),
        # A feedback report that names no recipient is not reported as a complaint.
        (
            Report(
                feedback={"feedback-type": ["abuse"]},
                original={"message-id": ["<news-7@example.com>"]},
            ),
            {},
        ),
        # Hotmail's complaint mail: the recipient is in the attached message's header.
        (
            Report(
                original={
                    "x-hmxmroriginalrecipient": ["ann@hotmail.com"],
                    "message-id": ["<news-8@example.com>"],
                }
            ),
            {"isComplaint": True, "relatedMessageId": "<news-8@example.com>"},
        ),
    ],
)
def test_report_fields(report: Report, expected: dict[str, Any]) -> None:
    """A failed delivery status is a bounce, a feedback report naming its recipient a
    complaint; relatedMessageId is the Message-ID of the message the report is about."""
    assert report_fields(report) == expected


@pytest.mark.parametrize(
    ("items", "inbox", "expected"),
    [
        (
            MAILER_DAEMON + b" BODYSTRUCTURE " + DSN_STRUCTURE,
            True,
            ["BODY.PEEK[2]<0.65536>", "BODY.PEEK[3.HEADER]<0.65536>"],
        ),
        (MAILER_DAEMON + b" BODYSTRUCTURE " + DSN_STRUCTURE, False, []),
        (
            b"BODYSTRUCTURE " + multipart(b"report", TEXT, STATUS, HEADERS_PART),
            True,
            ["BODY.PEEK[2]<0.65536>", "BODY.PEEK[3]<0.65536>"],
        ),
        (
            b"BODYSTRUCTURE " + multipart(b"mixed", multipart(b"report", TEXT, STATUS), PDF),
            True,
            ["BODY.PEEK[1.2]<0.65536>"],
        ),
        (
            b"BODYSTRUCTURE " + ARF_STRUCTURE,
            True,
            ["BODY.PEEK[2]<0.65536>", "BODY.PEEK[3.HEADER]<0.65536>"],
        ),
        (
            HOTMAIL + b" BODYSTRUCTURE " + multipart(b"mixed", TEXT, RFC822),
            True,
            ["BODY.PEEK[2.HEADER]<0.65536>"],
        ),
        (HOTMAIL + b" BODYSTRUCTURE " + TEXT, True, []),
        (MAILER_DAEMON + b" BODYSTRUCTURE " + multipart(b"mixed", TEXT, RFC822), True, []),
        (b"BODYSTRUCTURE " + multipart(b"alternative", TEXT, HTML), True, []),
        (b"FLAGS ()", True, []),
    ],
)
def test_report_items(items: bytes, inbox: bool, expected: list[str]) -> None:
    """Report parts are read only for INBOX messages that have them (delivery status,
    feedback report) or are Hotmail's complaint mail; the reported message's header from an
    attached message, else from a header part."""
    assert report_items(fetch(items), inbox=inbox) == expected


def test_imap_bounce_has_isbounce_and_related_message_id() -> None:
    """A DSN in INBOX with its parts read: isBounce, relatedMessageId, messageSpecialUse, text."""
    data = _event(
        b"FLAGS () " + MAILER_DAEMON + b" BODYSTRUCTURE " + DSN_STRUCTURE,
        {
            HEADER_ITEM: b"Auto-Submitted: auto-generated\r\n\r\n",
            "BODY[2]<0>": DSN_FIELDS,
            "BODY[3.HEADER]<0>": ORIGINAL,
        },
        special_use="\\Inbox",
    )
    assert data["isBounce"] is True
    assert data["relatedMessageId"] == "<ticket-1@example.com>"
    assert data["messageSpecialUse"] == "\\Inbox"
    assert data["text"] == {"id": message_id(FOLDER, VALIDITY, 41), "encodedSize": {"plain": 6}}
    assert "isAutoReply" not in data
    assert "isComplaint" not in data


def test_imap_report_part_in_base64_is_decoded() -> None:
    """A delivery status sent base64-encoded is decoded before it is read."""
    attributes = {
        **fetch(b"BODYSTRUCTURE " + multipart(b"report", TEXT, STATUS_B64, HEADERS_PART)),
        "BODY[2]<0>": base64.encodebytes(DSN_FIELDS),
        "BODY[3]<0>": ORIGINAL,
    }
    report = imap_report(attributes)
    assert report is not None
    assert report.status[1]["action"] == ["failed"]
    assert report_fields(report) == {"isBounce": True, "relatedMessageId": "<ticket-1@example.com>"}


def test_imap_report_absent_without_the_parts() -> None:
    """A report whose parts were not read gives no report fields."""
    data = _event(b"FLAGS () " + MAILER_DAEMON + b" BODYSTRUCTURE " + DSN_STRUCTURE, {})
    assert imap_report(fetch(b"BODYSTRUCTURE " + DSN_STRUCTURE)) is None
    assert not {"isBounce", "isComplaint", "relatedMessageId"} & set(data)


def test_imap_auto_reply_needs_the_header_fields() -> None:
    """isAutoReply is decided when the header fields were fetched (the listener always
    fetches them; a list FETCH does not, and then has no isAutoReply, as EmailEngine)."""
    items = b"FLAGS (\\Flagged \\Answered) " + OUT_OF_OFFICE + b" BODYSTRUCTURE " + TEXT
    listed = _event(items, {})
    assert "isAutoReply" not in listed
    fetched = _event(items, {HEADER_ITEM: b"\r\n"}, special_use="\\Archive")
    assert fetched["isAutoReply"] is True
    assert fetched["flagged"] is fetched["answered"] is True
    assert "draft" not in fetched
    assert "messageSpecialUse" not in fetched
    marked = _event(b"FLAGS () BODYSTRUCTURE " + TEXT, {HEADER_ITEM: b"X-Autoreply: yes\r\n\r\n"})
    assert marked["isAutoReply"] is True
    whole = _event(
        b"FLAGS () BODYSTRUCTURE " + TEXT, {"BODY[HEADER]": b"Precedence: auto_reply\r\n\r\n"}
    )
    assert whole["isAutoReply"] is True


def test_imap_complaint() -> None:
    """An ARF report in INBOX: isComplaint and the complained-about message's Message-ID."""
    data = _event(
        b"FLAGS () BODYSTRUCTURE " + ARF_STRUCTURE,
        {
            "BODY[2]<0>": b"Feedback-Type: abuse\r\nUser-Agent: x/1\r\nVersion: 1\r\n"
            b"Original-Rcpt-To: ann@example.net\r\n",
            "BODY[3.HEADER]<0>": b"Message-ID: <news-7@example.com>\r\n\r\n",
        },
        special_use="\\Inbox",
    )
    assert data["isComplaint"] is True
    assert data["relatedMessageId"] == "<news-7@example.com>"
    assert "isBounce" not in data


DSN_MIME = (
    b"From: Mail Delivery System <MAILER-DAEMON@example.com>\r\nTo: ann@example.com\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n"
    b"--b\r\nContent-Type: message/delivery-status\r\n\r\n" + DSN_FIELDS + b"\r\n"
    b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + ORIGINAL + b"Hello\r\n--b--\r\n"
)
ARF_MIME = (
    b"From: feedback@isp.example\r\nSubject: FW: newsletter\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
    b"--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
    b"Original-Rcpt-To: <ann@example.net>\r\n\r\n"
    b"--b\r\nContent-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b"Message-ID: <news-7@example.com>\r\nSubject: News\r\n")
    + b"--b--\r\n"
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (DSN_MIME, {"isBounce": True, "relatedMessageId": "<ticket-1@example.com>"}),
        (ARF_MIME, {"isComplaint": True, "relatedMessageId": "<news-7@example.com>"}),
        (b"From: a@example.com\r\nSubject: hi\r\n\r\nHello\r\n", {}),
    ],
)
def test_mime_report(raw: bytes, expected: dict[str, Any]) -> None:
    """A report found in a MIME source (Graph's $value) decides as the IMAP parts do."""
    assert report_fields(mime_report(raw)) == expected
