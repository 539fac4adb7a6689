"""Delivery and feedback reports: what ``messageNew`` says of them, and the ``messageBounce``
and ``messageComplaint`` events that follow it. Pure: no I/O, no clock, no store.

A delivery status notification (RFC 3464: ``multipart/report`` with a
``message/delivery-status`` part) and a feedback report (RFC 5965, ARF: a
``message/feedback-report`` part) are recognised in INBOX only, as EmailEngine does, on both
backends. The sources read their machine-readable parts into a :class:`Report`: the IMAP
listener fetches the parts :func:`report_items` names and :func:`imap_report` reads them;
the Graph watcher reads the source of a message :func:`graph_report_wanted` picks and
:func:`mime_report` reads it.

From a report come ``messageNew``'s ``isBounce`` / ``isComplaint`` / ``relatedMessageId``
(:func:`report_fields`) and the events that follow that ``messageNew``
(:func:`report_events`), with EmailEngine's payloads (``learn-emailengine-app``,
``docs/webhooks/messagebounce.md`` and ``messagecomplaint.md``):

- ``messageBounce``: one per recipient whose ``Action`` is ``failed`` (EmailEngine reports
  the first recipient only; a report on several recipients here gives one event each):
  ``{bounceMessage, recipient, action, response {source, message, status}, mta, queueId,
  messageId, messageHeaders}``; a field that cannot be found is left out. The store adds
  ``sentQueueId`` when the original went out through the relay's outbox
  (:func:`relay.store.events.record`).
- ``messageComplaint``: ``{complaintMessage, arf {...}, headers {...}}`` for a feedback
  report naming the complaining recipient, and for Hotmail's complaint mail without one.

Bounces that are plain text only (no delivery status part: some MTAs send an "Undelivered
Mail Returned to Sender" text body) are not recognised: EmailEngine reads them with a stack
of wording heuristics per MTA, which would be guesswork to keep in step with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from relay.events.model import parse_iso
from relay.events.structure import (
    Headers,
    Part,
    as_text,
    body_item,
    decode_body,
    decode_words,
    first_value,
    header_blocks,
    header_fields,
    leaf_parts,
    mime_leaves,
)

__all__ = [
    "REPORT_PART_BYTES",
    "Report",
    "bounces",
    "complaint",
    "graph_report_wanted",
    "imap_report",
    "mime_report",
    "report_events",
    "report_fields",
    "report_items",
]

# Report parts (RFC 3464 delivery status, RFC 5965 feedback report) and where the header of
# the reported message is: a header-only part, else an attached message.
_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_FEEDBACK_TYPES = frozenset({"message/feedback-report"})
_HEADER_TYPES = frozenset(
    {"text/rfc822-headers", "message/rfc822-headers", "message/global-headers"}
)
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
# Each report part is read up to this many bytes: its fields, or the header of the
# reported message, are at the start; an attached original can be large.
REPORT_PART_BYTES = 65536
_BOUNCE_NAME = re.compile(
    r"Mail Delivery System|Mail Delivery Subsystem|Internet Mail Delivery", re.IGNORECASE
)
_BOUNCE_ADDRESS = re.compile(r"mailer-daemon@|postmaster@", re.IGNORECASE)
_COMPLAINT_SENDER = "staff@hotmail.com"
_COMPLAINT_SUBJECT = re.compile("complaint", re.IGNORECASE)

# The queue id an MTA writes into its Received field (Postfix, Sendmail, Gmail: ``with
# ESMTPSA id 9441D8220E``). Exchange's ``with Microsoft SMTP Server (...) id 15.20.x`` is
# its version, not a queue id, and does not match.
_RECEIVED_ID = re.compile(r"\bwith\s+E?SMTP\w*\s+id\s+([A-Za-z0-9][\w.-]*)", re.IGNORECASE)
# Exchange's X-MS-Exchange-CrossTenant-OriginalArrivalTime: ``17 Oct 2022 07:06:35.0210 (UTC)``.
_FRACTION = re.compile(r"(\d{1,2}:\d{2}:\d{2})\.(\d+)")
_COMMENT = re.compile(r"\([^()]*\)")

# Feedback report fields that are one value each, and the names EmailEngine's ``arf`` gives
# them; then the order of ``arf``'s keys.
_ARF_FIELDS = (
    ("feedback-type", "feedbackType"),
    ("abuse-type", "abuseType"),
    ("original-mail-from", "originalMailFrom"),
    ("source-ip", "sourceIp"),
    ("user-agent", "userAgent"),
    ("version", "version"),
    ("reporting-mta", "reportingMta"),
    ("original-envelope-id", "originalEnvelopeId"),
    ("subscription-link", "subscriptionLink"),
    ("incidents", "incidents"),
)
_ARF_ORDER = (
    "source",
    "feedbackType",
    "abuseType",
    "originalMailFrom",
    "originalRcptTo",
    "sourceIp",
    "arrivalDate",
    "userAgent",
    "version",
    "reportingMta",
    "originalEnvelopeId",
    "subscriptionLink",
    "incidents",
)


@dataclass(frozen=True, slots=True)
class Report:
    """The machine-readable parts of a delivery or feedback report.

    ``status`` holds the groups of fields of the delivery status (the per-message group,
    then one per recipient), ``feedback`` the feedback report's fields, ``original`` the
    header of the message the report is about (values decoded) and ``original_raw`` the
    same header with its values as they were sent (unfolded, not decoded).
    """

    status: tuple[Headers, ...] = ()
    feedback: Headers | None = None
    original: Headers | None = None
    original_raw: Headers | None = None


# -- reading the fields ----------------------------------------------------------------------


def _typed_value(value: str | None) -> str | None:
    """``rfc822; user@example.com`` -> ``user@example.com``."""
    if value is None:
        return None
    _, sep, rest = value.partition(";")
    return (rest if sep else value).strip() or None


def _is_recipient(group: Headers) -> bool:
    return "final-recipient" in group or "original-recipient" in group


def _per_message(groups: Sequence[Headers]) -> Headers:
    """The fields of a delivery status that are not about one recipient."""
    merged: Headers = {}
    for group in groups:
        if not _is_recipient(group):
            for name, values in group.items():
                merged.setdefault(name, []).extend(values)
    return merged


def _bare(value: str | None) -> str | None:
    """``<a@example.com>`` -> ``a@example.com``."""
    if value is None:
        return None
    return value.strip().strip("<>").strip() or None


def _mta(value: str | None) -> str | None:
    """``dns; mx.example.com. (1.2.3.4, the server for ...)`` -> ``mx.example.com``."""
    name = _typed_value(value)
    if name is None:
        return None
    words = _COMMENT.sub(" ", name).split()
    return words[0].rstrip(".").lower() if words else None


def _queue_id(per_message: Headers, original: Headers) -> str | None:
    """The reporting MTA's queue id of the original: Postfix's ``X-Postfix-Queue-ID``, else
    the id in the topmost Received field of the returned original that has one."""
    found = first_value(per_message.get("x-postfix-queue-id"))
    if found:
        return found
    for received in original.get("received", ()):
        match = _RECEIVED_ID.search(received)
        if match:
            return match.group(1)
    return None


def _date(value: str | None) -> str | None:
    """A date in a header (RFC 5322, with or without fractions of a second, or ISO 8601)
    as ``2022-10-17T07:06:35.021Z``; None when it is not one."""
    if not value:
        return None
    fraction = 0.0
    match = _FRACTION.search(value)
    if match:
        fraction = float("0." + match.group(2))
        value = value[: match.start()] + match.group(1) + value[match.end() :]
    cleaned = " ".join(_COMMENT.sub(" ", value).split())
    moment: datetime | None
    try:
        moment = parsedate_to_datetime(cleaned)
    except (TypeError, ValueError, IndexError):
        moment = parse_iso(cleaned)
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    utc = moment.astimezone(UTC) + timedelta(seconds=fraction)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _addresses(values: Sequence[str] | None) -> list[str]:
    """The bare addresses in address header values."""
    found: list[str] = []
    for _, address in getaddresses(list(values or ())):
        if "@" in address and address not in found:
            found.append(address)
    return found


# -- bounces ----------------------------------------------------------------------------------


def _failed(report: Report) -> tuple[list[tuple[str, Headers]], str | None]:
    """``([(recipient, its fields with the per-message ones)], original Message-ID)`` of the
    recipients a delivery status reports as failed."""
    per_message = _per_message(report.status)
    original = report.original or {}
    message_id = first_value(per_message.get("x-original-message-id")) or first_value(
        original.get("message-id")
    )
    failed: list[tuple[str, Headers]] = []
    for group in report.status:
        if not _is_recipient(group):
            continue
        fields = {**per_message, **group}
        action = first_value(fields.get("action"))
        recipient = _typed_value(first_value(fields.get("final-recipient"))) or _typed_value(
            first_value(fields.get("original-recipient"))
        )
        if action is not None and action.lower() == "failed" and recipient:
            failed.append((recipient, fields))
    return failed, message_id


def bounces(report: Report, bounce_message: str) -> list[dict[str, Any]]:
    """The ``messageBounce`` data of a report: one per recipient it reports as failed,
    none without the original's Message-ID (nothing would tie the bounce to a message).

    ``bounce_message`` is the report's own message id (``messageNew``'s ``data.id``).
    ``response.message`` is the Diagnostic-Code without its type (``smtp; ``), which is
    ``response.source``; ``mta`` the Remote-MTA, else the Reporting-MTA; ``queueId`` the
    reporting MTA's queue id (:func:`_queue_id`); ``messageHeaders`` the returned
    original's header, lower-case name -> values as sent.
    """
    failed, message_id = _failed(report)
    if not failed or not message_id:
        return []
    original = report.original or {}
    queue_id = _queue_id(_per_message(report.status), original)
    out: list[dict[str, Any]] = []
    for recipient, fields in failed:
        data: dict[str, Any] = {
            "bounceMessage": bounce_message,
            "recipient": recipient,
            "action": "failed",
        }
        response: dict[str, str] = {}
        diagnostic = first_value(fields.get("diagnostic-code"))
        if diagnostic:
            kind, sep, text = diagnostic.partition(";")
            if sep and kind.strip() and " " not in kind.strip():
                response["source"] = kind.strip()
            else:
                text = diagnostic
            response["message"] = " ".join(text.split())
        status = first_value(fields.get("status"))
        if status:
            response["status"] = status.split()[0]
        if response:
            data["response"] = response
        mta = _mta(first_value(fields.get("remote-mta"))) or _mta(
            first_value(fields.get("reporting-mta"))
        )
        if mta:
            data["mta"] = mta
        if queue_id:
            data["queueId"] = queue_id
        data["messageId"] = message_id
        if report.original_raw:
            data["messageHeaders"] = {name: list(v) for name, v in report.original_raw.items()}
        out.append(data)
    return out


# -- complaints -------------------------------------------------------------------------------


def _complained(report: Report) -> list[str]:
    """The recipients a feedback report (or Hotmail's complaint mail) names."""
    original = report.original or {}
    hotmail = "x-hmxmroriginalrecipient" in original and not report.status
    if report.feedback is None and not hotmail:
        return []
    found: list[str] = []
    for value in (report.feedback or {}).get("original-rcpt-to", ()):
        address = _bare(value)
        if address and address not in found:
            found.append(address)
    for address in _addresses(original.get("x-hmxmroriginalrecipient")):
        if address not in found:
            found.append(address)
    return found


def complaint(report: Report, complaint_message: str, sender: str | None) -> dict[str, Any] | None:
    """The ``messageComplaint`` data of a report, or None when it is no complaint.

    ``complaint_message`` is the report's own message id, ``sender`` its From address.
    ``arf`` holds the feedback report's fields under EmailEngine's names, with
    ``originalRcptTo`` a list and ``arrivalDate`` (Arrival-Date or Received-Date) in ISO
    8601; the reported message's header fills in what the report lacks (Return-Path,
    Microsoft's X-Sender-IP, X-MS-Exchange-CrossTenant-OriginalArrivalTime, Hotmail's
    X-HmXmrOriginalRecipient). Hotmail's complaint mail (from ``staff@hotmail.com``) has
    ``source: "Hotmail"`` with ``feedbackType: "abuse"`` and ``abuseType: "complaint"``;
    otherwise ``source`` is the report's Source, else its User-Agent. ``headers`` is the
    reported message's ``messageId, from, to, cc, bcc, subject, date``.
    """
    recipients = _complained(report)
    if not recipients:
        return None
    feedback = report.feedback or {}
    original = report.original or {}
    arf: dict[str, Any] = {"source": first_value(feedback.get("source"))}
    arf.update((key, first_value(feedback.get(name))) for name, key in _ARF_FIELDS)
    if arf["source"] is None and (sender or "").lower() == _COMPLAINT_SENDER:
        arf["source"] = "Hotmail"
        arf["feedbackType"] = arf["feedbackType"] or "abuse"
        arf["abuseType"] = arf["abuseType"] or "complaint"
    arf["source"] = arf["source"] or arf["userAgent"]
    arf["originalMailFrom"] = _bare(arf["originalMailFrom"]) or _bare(
        first_value(original.get("return-path"))
    )
    arf["originalRcptTo"] = recipients
    arf["sourceIp"] = arf["sourceIp"] or first_value(original.get("x-sender-ip"))
    arf["arrivalDate"] = (
        _date(first_value(feedback.get("arrival-date")))
        or _date(first_value(feedback.get("received-date")))
        or _date(first_value(original.get("x-ms-exchange-crosstenant-originalarrivaltime")))
    )
    data: dict[str, Any] = {
        "complaintMessage": complaint_message,
        "arf": {key: arf[key] for key in _ARF_ORDER if arf.get(key)},
    }
    headers = _original_headers(original)
    if headers:
        data["headers"] = headers
    return data


def _original_headers(original: Headers) -> dict[str, Any]:
    """``messageId, from, to, cc, bcc, subject, date`` of the reported message's header."""
    out: dict[str, Any] = {}
    message_id = first_value(original.get("message-id"))
    if message_id:
        out["messageId"] = message_id
    sender = _addresses(original.get("from"))
    if sender:
        out["from"] = sender[0]
    for key in ("to", "cc", "bcc"):
        found = _addresses(original.get(key))
        if found:
            out[key] = found
    subject = first_value(original.get("subject"))
    if subject is not None:
        out["subject"] = subject
    date = _date(first_value(original.get("date")))
    if date:
        out["date"] = date
    return out


# -- what messageNew says, and what follows it -------------------------------------------------


def report_fields(report: Report) -> dict[str, Any]:
    """``isBounce`` / ``isComplaint`` and ``relatedMessageId`` of a report, as EmailEngine
    decides them (``lib/bounce-detect.js``, ``lib/arf-detect.js``); empty when it is neither.

    A bounce is a delivery status naming a recipient whose action is ``failed`` and the
    original Message-ID (``X-Original-Message-ID``, else the reported message's header):
    exactly when :func:`bounces` reports something. A complaint is a feedback report naming
    the original recipient (``Original-Rcpt-To``, or Hotmail's
    ``X-HmXmrOriginalRecipient``): exactly when :func:`complaint` does. ``relatedMessageId``
    is the Message-ID of the message the report is about.
    """
    out: dict[str, Any] = {}
    original_id = first_value((report.original or {}).get("message-id"))
    if _complained(report):
        out["isComplaint"] = True
        if original_id:
            out["relatedMessageId"] = original_id
    failed, message_id = _failed(report)
    if failed and message_id:
        out["isBounce"] = True
        out["relatedMessageId"] = message_id
    return out


def report_events(
    report: Report | None, message: Mapping[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of the events that follow the ``messageNew`` whose data is
    ``message`` (its ``id`` and ``from``): each ``messageBounce`` (:func:`bounces`), then
    the ``messageComplaint`` (:func:`complaint`). None for a message that is no report."""
    if report is None:
        return []
    own_id = str(message["id"])
    found: list[tuple[str, dict[str, Any]]] = [
        ("messageBounce", data) for data in bounces(report, own_id)
    ]
    sender = message.get("from")
    address = sender.get("address") if isinstance(sender, Mapping) else None
    complained = complaint(report, own_id, address)
    if complained is not None:
        found.append(("messageComplaint", complained))
    return found


# -- where the sources find the parts ----------------------------------------------------------


def _first_part(parts: Sequence[Part], types: frozenset[str]) -> Part | None:
    return next((part for part in parts if part.content_type in types), None)


def _envelope_sender(envelope: Any) -> str | None:
    """The first From address of a parsed ENVELOPE."""
    for addr in getattr(envelope, "from_", None) or ():
        mailbox = getattr(addr, "mailbox", None)
        host = getattr(addr, "host", None)
        if mailbox is not None and host is not None:
            return f"{as_text(mailbox)}@{as_text(host)}"
    return None


def _report_plan(fetch: Mapping[str, Any]) -> list[tuple[str, Part, str]]:
    """``(role, part, section)`` of the report parts to read; empty when not a report."""
    parts = leaf_parts(fetch.get("BODYSTRUCTURE"))
    status = _first_part(parts, _STATUS_TYPES)
    feedback = _first_part(parts, _FEEDBACK_TYPES)
    headers = _first_part(parts, _HEADER_TYPES)
    attached = _first_part(parts, _MESSAGE_TYPES)
    if status is None and feedback is None:
        envelope = fetch.get("ENVELOPE")
        sender = _envelope_sender(envelope) or ""
        subject = decode_words(getattr(envelope, "subject", None)) or ""
        hotmail = sender.lower() == _COMPLAINT_SENDER and bool(_COMPLAINT_SUBJECT.search(subject))
        if not hotmail or (headers is None and attached is None):
            return []
    plan: list[tuple[str, Part, str]] = []
    if status is not None:
        plan.append(("status", status, status.section))
    if feedback is not None:
        plan.append(("feedback", feedback, feedback.section))
    if headers is not None:
        plan.append(("original", headers, headers.section))
    elif attached is not None:
        plan.append(("original", attached, f"{attached.section}.HEADER"))
    return plan


def report_items(fetch: Mapping[str, Any], *, inbox: bool) -> list[str]:
    """The FETCH items that read a report's parts (each its first
    :data:`REPORT_PART_BYTES`); none unless the message is in INBOX and is a delivery or
    feedback report (a part of that type; or Hotmail's complaint mail)."""
    if not inbox:
        return []
    return [f"BODY.PEEK[{section}]<0.{REPORT_PART_BYTES}>" for _, _, section in _report_plan(fetch)]


def imap_report(fetch: Mapping[str, Any]) -> Report | None:
    """The :class:`Report` of a FETCH that has the items of :func:`report_items`, else None."""
    found: dict[str, Any] = {}
    for role, part, section in _report_plan(fetch):
        raw = body_item(fetch, section)
        if raw is None:
            continue
        if not section.endswith(".HEADER"):
            raw = decode_body(raw, part.encoding)
        if role == "status":
            found[role] = tuple(header_blocks(raw))
        elif role == "original":
            found[role] = header_fields(raw)
            found["original_raw"] = header_fields(raw, decode=False)
        else:
            found[role] = header_fields(raw)
    if not found:
        return None
    return Report(**found)


def mime_report(raw: bytes) -> Report:
    """The :class:`Report` in a MIME source (empty when it holds no report parts)."""
    status: tuple[Headers, ...] = ()
    feedback: Headers | None = None
    headers: bytes | None = None
    attached: bytes | None = None
    for content_type, body in mime_leaves(raw):
        if content_type in _STATUS_TYPES and not status:
            status = tuple(header_blocks(body))
        elif content_type in _FEEDBACK_TYPES and feedback is None:
            feedback = header_fields(body)
        elif content_type in _HEADER_TYPES and headers is None:
            headers = body
        elif content_type in _MESSAGE_TYPES and attached is None:
            attached = body
    original = headers if headers is not None else attached
    if original is None:
        return Report(status=status, feedback=feedback)
    return Report(
        status=status,
        feedback=feedback,
        original=header_fields(original),
        original_raw=header_fields(original, decode=False),
    )


def _graph_sender(message: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(name, address)`` of a Graph message's ``from``."""
    sender = message.get("from")
    inner = sender.get("emailAddress") if isinstance(sender, Mapping) else None
    if not isinstance(inner, Mapping) or not inner.get("address"):
        return None
    return str(inner.get("name") or ""), str(inner["address"])


def graph_report_wanted(
    message: Mapping[str, Any], headers: Mapping[str, Sequence[str]], *, inbox: bool
) -> bool:
    """Whether a new Graph message in INBOX may be a delivery or feedback report, so that
    its source is worth reading (:func:`mime_report`): a ``multipart/report``, mail from a
    mailer daemon or postmaster (EmailEngine's signs), or Hotmail's complaint mail."""
    if not inbox:
        return False
    content_type = (first_value(headers.get("content-type")) or "").lower()
    if content_type.startswith("multipart/report"):
        return True
    sender = _graph_sender(message)
    if sender is None:
        return False
    name, address = sender
    if _BOUNCE_NAME.search(name) or _BOUNCE_ADDRESS.search(address):
        return True
    subject = str(message.get("subject") or "")
    return address.lower() == _COMPLAINT_SENDER and bool(_COMPLAINT_SUBJECT.search(subject))
