"""Reports -> messageBounce and messageComplaint data, and messageNew's path and seemsLikeNew
(pure, table-driven over the formats of several MTAs and feedback loops)."""

from __future__ import annotations

from typing import Any

import pytest

from relay.events.normalize import message_new
from relay.events.reports import (
    Report,
    complaint,
    imap_report,
    mime_report,
    report_events,
    report_fields,
)
from tests.events.test_normalize import RFC822, TEXT, fetch, multipart

NEW = {"id": "AAAAAQAABy8", "from": {"name": "", "address": "mailer-daemon@example.com"}}


def _mime(content_type: str, *parts: tuple[str, bytes], head: bytes = b"") -> bytes:
    """A multipart source: the report's own header, then ``(part header, body)`` parts."""
    out = head + b"MIME-Version: 1.0\r\nContent-Type: " + content_type.encode()
    out += b'; boundary="=b="\r\n\r\n'
    for header, body in parts:
        out += b"--=b=\r\n" + header.encode() + b"\r\n\r\n" + body + b"\r\n"
    return out + b"--=b=--\r\n"


# -- delivery status notifications of three MTAs -------------------------------------------

POSTFIX = _mime(
    "multipart/report; report-type=delivery-status",
    ("Content-Type: text/plain", b"This is the mail system at host mail.example.com."),
    (
        "Content-Type: message/delivery-status",
        b"Reporting-MTA: dns; mail.example.com\r\nX-Postfix-Queue-ID: 9441D8220E\r\n"
        b"X-Postfix-Sender: rfc822; ann@example.com\r\n"
        b"Arrival-Date: Mon, 17 Oct 2022 09:42:05 +0300 (EEST)\r\n\r\n"
        b"Final-Recipient: rfc822; missing@example.net\r\n"
        b"Original-Recipient: rfc822;missing@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Remote-MTA: dns; mx.example.net\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 <missing@example.net>: Recipient address\r\n"
        b"    rejected: User unknown in virtual mailbox table\r\n",
    ),
    (
        "Content-Type: message/rfc822",
        b"Return-Path: <ann@example.com>\r\n"
        b"Received: from [192.0.2.1] (unknown [192.0.2.1])\r\n"
        b"\tby mail.example.com (Postfix) with ESMTPSA id 9441D8220E\r\n"
        b"\tfor <missing@example.net>; Mon, 17 Oct 2022 09:42:05 +0300 (EEST)\r\n"
        b"From: Ann <ann@example.com>\r\nTo: missing@example.net\r\n"
        b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"Message-ID: <305eabf4@example.com>\r\nDate: Mon, 17 Oct 2022 09:42:05 +0300\r\n"
        b"\r\nHello\r\n",
    ),
    head=b"From: Mail Delivery System <MAILER-DAEMON@mail.example.com>\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n",
)
POSTFIX_BOUNCE = {
    "bounceMessage": "AAAAAQAABy8",
    "recipient": "missing@example.net",
    "action": "failed",
    "response": {
        "source": "smtp",
        "message": "550 5.1.1 <missing@example.net>: Recipient address rejected: User unknown"
        " in virtual mailbox table",
        "status": "5.1.1",
    },
    "mta": "mx.example.net",
    "queueId": "9441D8220E",
    "messageId": "<305eabf4@example.com>",
}

# A Postfix DSN without X-Postfix-Queue-ID: the queue id is in the original's Received field.
POSTFIX_NO_QUEUE_FIELD = POSTFIX.replace(b"X-Postfix-Queue-ID: 9441D8220E\r\n", b"")

EXCHANGE = _mime(
    "multipart/report; report-type=delivery-status",
    ("Content-Type: text/plain; charset=utf-8", b"Your message couldn't be delivered."),
    (
        "Content-Type: message/delivery-status",
        b"Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com\r\n"
        b"Received-From-MTA: dns;AM0PR01MB5678.eurprd01.prod.exchangelabs.com\r\n"
        b"Arrival-Date: Mon, 17 Oct 2022 06:42:05 +0000\r\n\r\n"
        b"Original-Recipient: rfc822;missing@fabrikam.com\r\n"
        b"Final-Recipient: rfc822;missing@fabrikam.com\r\nAction: failed\r\nStatus: 5.1.10\r\n"
        b"Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not"
        b" found by SMTP address lookup\r\nRemote-MTA: dns;mx.fabrikam.com\r\n\r\n"
        b"Final-Recipient: rfc822;ok@fabrikam.com\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\n"
        b"Final-Recipient: rfc822;full@fabrikam.com\r\nAction: Failed\r\nStatus: 5.2.2\r\n"
        b"Diagnostic-Code: smtp;552 5.2.2 Mailbox full\r\n",
    ),
    (
        "Content-Type: text/rfc822-headers",
        b"Received: from AM0PR01MB5678.eurprd01.prod.exchangelabs.com\r\n"
        b" (2603:10a6:208:ab::12) by AM0PR01MB1234.eurprd01.prod.exchangelabs.com with\r\n"
        b" Microsoft SMTP Server (version=TLS1_2,\r\n"
        b" cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.5723.26; Mon, 17 Oct 2022\r\n"
        b" 06:42:05 +0000\r\nFrom: Ann <ann@contoso.com>\r\n"
        b"To: missing@fabrikam.com, ok@fabrikam.com, full@fabrikam.com\r\n"
        b"Subject: Quarterly report\r\n"
        b"Message-ID: <AM0PR01MB5678ABCD@AM0PR01MB5678.eurprd01.prod.exchangelabs.com>\r\n",
    ),
    head=b"From: Microsoft Outlook <MicrosoftExchange329e71ec88ae@contoso.com>\r\n"
    b"Subject: Undeliverable: Quarterly report\r\n",
)
EXCHANGE_ID = "<AM0PR01MB5678ABCD@AM0PR01MB5678.eurprd01.prod.exchangelabs.com>"

GMAIL = _mime(
    "multipart/report; report-type=delivery-status",
    ("Content-Type: text/plain; charset=UTF-8", b"Address not found"),
    (
        "Content-Type: message/delivery-status",
        b"Reporting-MTA: dns; googlemail.com\r\n"
        b"Arrival-Date: Mon, 17 Oct 2022 06:42:05 -0700 (PDT)\r\n"
        b"X-Original-Message-ID: <CAF1a2b3@mail.gmail.com>\r\n\r\n"
        b"Final-Recipient: rfc822; missing@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Remote-MTA: dns; mx.example.org. (203.0.113.9, the server for the domain"
        b" example.org.)\r\n"
        b"Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does\r\n"
        b"    not exist. 550 5.1.1 https://support.google.com/mail/?p=NoSuchUser a1si123 -"
        b" gsmtp\r\nLast-Attempt-Date: Mon, 17 Oct 2022 06:42:06 -0700 (PDT)\r\n",
    ),
    (
        "Content-Type: message/rfc822",
        b"Received: by 2002:a17:906:1b0a:b0:78d:3f8a:1234 with SMTP id a1csp12345ejb;\r\n"
        b"        Mon, 17 Oct 2022 06:42:05 -0700 (PDT)\r\n"
        b"From: Ann <ann@gmail.com>\r\nDate: Mon, 17 Oct 2022 15:42:04 +0200\r\n"
        b"Message-ID: <CAF1a2b3@mail.gmail.com>\r\nSubject: Hi\r\nTo: missing@example.org\r\n"
        b"\r\nHi\r\n",
    ),
    head=b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n",
)


def dsn(message_id: str, recipient: str, *, sender: str = "me@example.com") -> bytes:
    """A plain RFC 3464 bounce of ``sender``'s message ``message_id`` to ``recipient``."""
    return _mime(
        "multipart/report; report-type=delivery-status",
        ("Content-Type: text/plain", b"Sorry."),
        (
            "Content-Type: message/delivery-status",
            b"Reporting-MTA: dns; mx.example.com\r\n\r\nFinal-Recipient: rfc822; "
            + recipient.encode()
            + b"\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            b"Diagnostic-Code: smtp; 550 5.1.1 No such user\r\n",
        ),
        (
            "Content-Type: text/rfc822-headers",
            f"From: <{sender}>\r\nTo: {recipient}\r\nSubject: Hello\r\n"
            f"Message-ID: {message_id}\r\n".encode(),
        ),
        head=b"From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n"
        b"To: " + sender.encode() + b"\r\nSubject: Undelivered Mail Returned to Sender\r\n",
    )


DELAYED = POSTFIX.replace(b"Action: failed", b"Action: delayed").replace(b"5.1.1", b"4.4.1")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (POSTFIX, [POSTFIX_BOUNCE]),
        (POSTFIX_NO_QUEUE_FIELD, [POSTFIX_BOUNCE]),
        (
            EXCHANGE,
            [
                {
                    "bounceMessage": "AAAAAQAABy8",
                    "recipient": "missing@fabrikam.com",
                    "action": "failed",
                    "response": {
                        "source": "smtp",
                        "message": "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not"
                        " found by SMTP address lookup",
                        "status": "5.1.10",
                    },
                    "mta": "mx.fabrikam.com",
                    "messageId": EXCHANGE_ID,
                },
                {
                    "bounceMessage": "AAAAAQAABy8",
                    "recipient": "full@fabrikam.com",
                    "action": "failed",
                    "response": {
                        "source": "smtp",
                        "message": "552 5.2.2 Mailbox full",
                        "status": "5.2.2",
                    },
                    "mta": "am0pr01mb1234.eurprd01.prod.exchangelabs.com",
                    "messageId": EXCHANGE_ID,
                },
            ],
        ),
        (
            GMAIL,
            [
                {
                    "bounceMessage": "AAAAAQAABy8",
                    "recipient": "missing@example.org",
                    "action": "failed",
                    "response": {
                        "source": "smtp",
                        "message": "550-5.1.1 The email account that you tried to reach does"
                        " not exist. 550 5.1.1 https://support.google.com/mail/?p=NoSuchUser"
                        " a1si123 - gsmtp",
                        "status": "5.1.1",
                    },
                    "mta": "mx.example.org",
                    "queueId": "a1csp12345ejb",
                    "messageId": "<CAF1a2b3@mail.gmail.com>",
                },
            ],
        ),
        (DELAYED, []),
    ],
    ids=["postfix", "postfix-received-id", "exchange", "gmail", "delayed"],
)
def test_bounces_of_each_mta(raw: bytes, expected: list[dict[str, Any]]) -> None:
    """One messageBounce per failed recipient with EmailEngine's fields: the Diagnostic-Code
    without its type, the Status, the Remote-MTA (else the Reporting-MTA) without its type or
    comment, the MTA's queue id (X-Postfix-Queue-ID, else an SMTP Received id; never
    Exchange's server version), the original's Message-ID; a delayed delivery is none."""
    found = report_events(mime_report(raw), NEW)
    assert [name for name, _ in found] == ["messageBounce"] * len(expected)
    data = [dict(d) for _, d in found]
    for item in data:
        item.pop("messageHeaders")
    assert data == expected
    assert report_fields(mime_report(raw)).get("isBounce", False) is bool(expected)


def test_bounce_message_headers_are_the_originals_as_sent() -> None:
    """messageHeaders is the returned original's header: lower-case names, every value
    unfolded but not decoded."""
    ((_, data),) = report_events(mime_report(POSTFIX), NEW)
    headers = data["messageHeaders"]
    assert headers["subject"] == ["=?UTF-8?Q?Gr=C3=BC=C3=9Fe?="]
    assert headers["from"] == ["Ann <ann@example.com>"]
    assert headers["to"] == ["missing@example.net"]
    assert headers["message-id"] == ["<305eabf4@example.com>"]
    assert headers["return-path"] == ["<ann@example.com>"]
    (received,) = headers["received"]
    assert "with ESMTPSA id 9441D8220E" in received
    assert "\n" not in received


@pytest.mark.parametrize(
    ("status", "original", "expected"),
    [
        # The per-message X-Original-Message-ID comes first; no Diagnostic-Code: no message.
        (
            (
                {"reporting-mta": ["dns; MX.Example.COM"], "x-original-message-id": ["<x@e>"]},
                {"final-recipient": ["rfc822; a@example.net"], "action": ["failed"]},
            ),
            {"message-id": ["<t@e>"]},
            {"recipient": "a@example.net", "mta": "mx.example.com", "messageId": "<x@e>"},
        ),
        # A Diagnostic-Code without a type is the message as it is; a status with a comment.
        (
            (
                {
                    "final-recipient": ["a@example.net"],
                    "action": ["failed"],
                    "status": ["5.0.0 (permanent failure)"],
                    "diagnostic-code": ["550 No such user here"],
                },
            ),
            {"message-id": ["<t@e>"]},
            {
                "recipient": "a@example.net",
                "response": {"message": "550 No such user here", "status": "5.0.0"},
                "messageId": "<t@e>",
            },
        ),
        # X-Postfix-Queue-ID wins over a Received id; a Received field without one is skipped.
        (
            (
                {"x-postfix-queue-id": ["AB12"]},
                {"final-recipient": ["rfc822; a@example.net"], "action": ["failed"]},
            ),
            {"message-id": ["<t@e>"], "received": ["by mx with ESMTP id CD34"]},
            {"recipient": "a@example.net", "queueId": "AB12", "messageId": "<t@e>"},
        ),
        (
            ({"final-recipient": ["rfc822; a@example.net"], "action": ["failed"]},),
            {
                "message-id": ["<t@e>"],
                "received": ["from a by b with LMTP; Mon", "from c by d with ESMTPS id EF56 for"],
            },
            {"recipient": "a@example.net", "queueId": "EF56", "messageId": "<t@e>"},
        ),
    ],
)
def test_bounce_fields(
    status: tuple[dict[str, list[str]], ...],
    original: dict[str, list[str]],
    expected: dict[str, Any],
) -> None:
    """What each field of a bounce is read from; fields that cannot be found are left out."""
    ((name, data),) = report_events(Report(status=status, original=original), NEW)
    assert name == "messageBounce"
    assert data == {"bounceMessage": NEW["id"], "action": "failed", **expected}


@pytest.mark.parametrize(
    "report",
    [
        # No original Message-ID: nothing ties the bounce to a message.
        Report(status=({"final-recipient": ["rfc822; a@example.net"], "action": ["failed"]},)),
        # No recipient.
        Report(status=({"action": ["failed"]},), original={"message-id": ["<t@e>"]}),
        Report(),
    ],
)
def test_no_bounce(report: Report) -> None:
    """A report that is not a bounce gives no event (and no isBounce)."""
    assert report_events(report, NEW) == []
    assert "isBounce" not in report_fields(report)


# -- feedback reports ----------------------------------------------------------------------

ARF = _mime(
    "multipart/report; report-type=feedback-report",
    ("Content-Type: text/plain", b"This is a spam complaint from one of our users."),
    (
        "Content-Type: message/feedback-report",
        b"Feedback-Type: abuse\r\nUser-Agent: ISP-FBL/1.0\r\nVersion: 1\r\n"
        b"Original-Mail-From: <newsletter@sender.example.com>\r\n"
        b"Original-Rcpt-To: <user@isp.example.com>\r\n"
        b"Arrival-Date: Thu, 17 Oct 2024 07:06:35 +0000\r\nSource-IP: 203.0.113.42\r\n"
        b"Reporting-MTA: dns; mx.isp.example.com\r\n",
    ),
    (
        "Content-Type: message/rfc822",
        b"From: News <newsletter@sender.example.com>\r\nTo: user@isp.example.com\r\n"
        b"Cc: Other <other@isp.example.com>\r\n"
        b"Subject: =?UTF-8?Q?Your_weekly_newsletter_=E2=9C=89?=\r\n"
        b"Date: Thu, 17 Oct 2024 07:06:34 +0000\r\nMessage-ID: <abc123@sender.example.com>\r\n"
        b"\r\nNews\r\n",
    ),
    head=b"From: abusedesk@isp.example.com\r\nSubject: FBL Notification\r\n",
)
HOTMAIL_JMRP = _mime(
    "multipart/report; report-type=feedback-report",
    ("Content-Type: text/plain", b"This is a complaint from a Hotmail user."),
    (
        "Content-Type: message/rfc822-headers",
        b"Return-Path: <newsletter@sender.example.com>\r\n"
        b"From: newsletter@sender.example.com\r\nTo: user@hotmail.com\r\n"
        b"Subject: Your Weekly Newsletter\r\nDate: Thu, 17 Oct 2024 07:06:34 +0000\r\n"
        b"Message-ID: <abc124@sender.example.com>\r\n"
        b"X-HmXmrOriginalRecipient: <user@hotmail.com>\r\nX-Sender-IP: 203.0.113.42\r\n"
        b"X-MS-Exchange-CrossTenant-OriginalArrivalTime: 17 Oct 2024 07:06:35.0210 (UTC)\r\n",
    ),
    head=b"From: staff@hotmail.com\r\nSubject: complaint about message from 203.0.113.42\r\n",
)
HOTMAIL_MIXED = _mime(
    "multipart/mixed",
    ("Content-Type: text/plain", b"complaint"),
    (
        "Content-Type: message/rfc822",
        b"From: newsletter@sender.example.com\r\nTo: user@hotmail.com\r\n"
        b"Message-ID: <abc125@sender.example.com>\r\n"
        b"X-HmXmrOriginalRecipient: user@hotmail.com\r\n\r\nNews\r\n",
    ),
    head=b"From: staff@hotmail.com\r\nSubject: complaint about message from 203.0.113.42\r\n",
)
HOTMAIL = {"name": "", "address": "staff@hotmail.com"}


@pytest.mark.parametrize(
    ("raw", "sender", "expected"),
    [
        (
            ARF,
            {"name": "", "address": "abusedesk@isp.example.com"},
            {
                "complaintMessage": "C1",
                "arf": {
                    "source": "ISP-FBL/1.0",
                    "feedbackType": "abuse",
                    "originalMailFrom": "newsletter@sender.example.com",
                    "originalRcptTo": ["user@isp.example.com"],
                    "sourceIp": "203.0.113.42",
                    "arrivalDate": "2024-10-17T07:06:35.000Z",
                    "userAgent": "ISP-FBL/1.0",
                    "version": "1",
                    "reportingMta": "dns; mx.isp.example.com",
                },
                "headers": {
                    "messageId": "<abc123@sender.example.com>",
                    "from": "newsletter@sender.example.com",
                    "to": ["user@isp.example.com"],
                    "cc": ["other@isp.example.com"],
                    "subject": "Your weekly newsletter ✉",
                    "date": "2024-10-17T07:06:34.000Z",
                },
            },
        ),
        (
            HOTMAIL_JMRP,
            HOTMAIL,
            {
                "complaintMessage": "C1",
                "arf": {
                    "source": "Hotmail",
                    "feedbackType": "abuse",
                    "abuseType": "complaint",
                    "originalMailFrom": "newsletter@sender.example.com",
                    "originalRcptTo": ["user@hotmail.com"],
                    "sourceIp": "203.0.113.42",
                    "arrivalDate": "2024-10-17T07:06:35.021Z",
                },
                "headers": {
                    "messageId": "<abc124@sender.example.com>",
                    "from": "newsletter@sender.example.com",
                    "to": ["user@hotmail.com"],
                    "subject": "Your Weekly Newsletter",
                    "date": "2024-10-17T07:06:34.000Z",
                },
            },
        ),
        (
            HOTMAIL_MIXED,
            HOTMAIL,
            {
                "complaintMessage": "C1",
                "arf": {
                    "source": "Hotmail",
                    "feedbackType": "abuse",
                    "abuseType": "complaint",
                    "originalRcptTo": ["user@hotmail.com"],
                },
                "headers": {
                    "messageId": "<abc125@sender.example.com>",
                    "from": "newsletter@sender.example.com",
                    "to": ["user@hotmail.com"],
                },
            },
        ),
    ],
    ids=["arf", "hotmail-jmrp", "hotmail-without-arf"],
)
def test_complaints(raw: bytes, sender: dict[str, str], expected: dict[str, Any]) -> None:
    """A feedback report (or Hotmail's complaint mail) gives one messageComplaint: the
    report's fields under EmailEngine's names, the reported message's header filling in
    what the report lacks, Hotmail's defaults; and isComplaint on its messageNew."""
    report = mime_report(raw)
    found = report_events(report, {"id": "C1", "from": sender})
    assert found == [("messageComplaint", expected)]
    assert report_fields(report)["isComplaint"] is True


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"arrival-date": ["Thu, 17 Oct 2024 09:06:35 +0200 (CEST)"]}, "2024-10-17T07:06:35.000Z"),
        ({"received-date": ["2024-10-17T07:06:35Z"]}, "2024-10-17T07:06:35.000Z"),
        ({"arrival-date": ["17 Oct 2024 07:06:35.5 (UTC)"]}, "2024-10-17T07:06:35.500Z"),
        ({"arrival-date": ["Thu, 17 Oct 2024 07:06:35"]}, "2024-10-17T07:06:35.000Z"),
        ({"arrival-date": ["yesterday"]}, None),
    ],
)
def test_complaint_arrival_date(fields: dict[str, list[str]], expected: str | None) -> None:
    """Arrival-Date (or Received-Date) becomes an ISO date; one that is no date is left out."""
    report = Report(feedback={"original-rcpt-to": ["a@example.net"], **fields})
    data = complaint(report, "C1", None)
    assert data is not None
    assert data["arf"].get("arrivalDate") == expected


def test_complaint_source_field_wins_and_no_recipient_is_no_complaint() -> None:
    """A report's Source is the source (not its User-Agent, not Hotmail); a feedback report
    that names no recipient is no complaint."""
    report = Report(
        feedback={
            "source": ["Yahoo"],
            "user-agent": ["YahooFBL/1"],
            "original-rcpt-to": ["a@example.net", "<b@example.net>", "a@example.net"],
        }
    )
    data = complaint(report, "C1", "staff@hotmail.com")
    assert data is not None
    assert data["arf"] == {
        "source": "Yahoo",
        "originalRcptTo": ["a@example.net", "b@example.net"],
        "userAgent": "YahooFBL/1",
    }
    assert "headers" not in data
    assert complaint(Report(feedback={"feedback-type": ["abuse"]}), "C1", None) is None
    assert report_events(Report(feedback={"feedback-type": ["abuse"]}), NEW) == []


def test_report_with_a_bounce_and_a_complaint_lists_bounces_first() -> None:
    """Both kinds in one report: the bounces, then the complaint."""
    report = Report(
        status=({"final-recipient": ["rfc822; a@example.net"], "action": ["failed"]},),
        feedback={"original-rcpt-to": ["b@example.net"]},
        original={"message-id": ["<t@e>"]},
    )
    assert [name for name, _ in report_events(report, NEW)] == [
        "messageBounce",
        "messageComplaint",
    ]
    assert report_events(None, NEW) == []


# -- the IMAP parts ------------------------------------------------------------------------

STATUS = b'("message" "delivery-status" NIL NIL NIL "7bit" 120 NIL NIL NIL NIL)'


def test_imap_report_keeps_the_original_header_as_sent() -> None:
    """The parts the listener read give the same bounce as the MIME source, messageHeaders
    undecoded."""
    attributes = {
        **fetch(b"BODYSTRUCTURE " + multipart(b"report", TEXT, STATUS, RFC822)),
        "BODY[2]<0>": b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
        b"Final-Recipient: rfc822; nobody@example.net\r\nAction: failed\r\n",
        "BODY[3.HEADER]<0>": b"Message-ID: <t1@example.com>\r\n"
        b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\n",
    }
    report = imap_report(attributes)
    assert report is not None
    assert report.original == {"message-id": ["<t1@example.com>"], "subject": ["Grüße"]}
    ((_, data),) = report_events(report, NEW)
    assert data == {
        "bounceMessage": NEW["id"],
        "recipient": "nobody@example.net",
        "action": "failed",
        "mta": "mx.example.com",
        "messageId": "<t1@example.com>",
        "messageHeaders": {
            "message-id": ["<t1@example.com>"],
            "subject": ["=?UTF-8?Q?Gr=C3=BC=C3=9Fe?="],
        },
    }


# -- messageNew: path and seemsLikeNew -----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "special_use", "by_email_id", "seems", "key"),
    [
        ({"emailId": "E1", "messageId": "<m@e>"}, "\\Inbox", True, True, "E1"),
        ({"messageId": "<m@e>"}, None, True, True, "<m@e>"),
        ({"emailId": "G1", "messageId": "<m@e>"}, "\\Inbox", False, True, "<m@e>"),
        ({"emailId": "G1"}, None, False, True, None),
        ({}, "\\Archive", True, True, None),
        ({"emailId": "E1", "messageId": "<m@e>"}, "\\Sent", True, False, None),
        ({"messageId": "<m@e>"}, "\\sent", False, False, None),
    ],
)
def test_message_new(
    fields: dict[str, str],
    special_use: str | None,
    by_email_id: bool,
    seems: bool,
    key: str | None,
) -> None:
    """path follows uid; seemsLikeNew is false in a \\Sent folder (not looked up), else true
    with the key the store looks up: emailId (not Graph's), else messageId, else none."""
    data: dict[str, Any] = {"id": "m", "uid": 4, **fields, "flags": []}
    found = message_new(data, path="Box", special_use=special_use, by_email_id=by_email_id)
    assert found == key
    assert list(data)[:3] == ["id", "uid", "path"]
    assert data["path"] == "Box"
    assert data["seemsLikeNew"] is seems
