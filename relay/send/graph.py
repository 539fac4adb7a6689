"""Sending through Microsoft Graph ``sendMail``: the stored MIME becomes a Graph message.

A direct aiohttp call rather than msgraph-sdk: one POST, and the SDK's first request loads
about 1,250 modules for it.
"""

from __future__ import annotations

import base64
import json
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from email.utils import getaddresses
from typing import Any
from urllib.parse import quote

import aiohttp

from relay.send.outcome import PermanentFailure, RetryLater

_BODY_LIMIT = 2048


def _recipients(values: list[str]) -> list[dict[str, Any]]:
    out = []
    for name, address in getaddresses(values):
        if address:
            entry: dict[str, Any] = {"address": address}
            if name:
                entry["name"] = name
            out.append({"emailAddress": entry})
    return out


def graph_message(raw: bytes, envelope: dict[str, Any]) -> dict[str, Any]:
    """The Graph ``message`` resource of a MIME message; Bcc comes from the envelope."""
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    to = _recipients(msg.get_all("To", []))
    cc = _recipients(msg.get_all("Cc", []))
    shown = {r["emailAddress"]["address"].lower() for r in (*to, *cc)}
    bcc = [{"emailAddress": {"address": a}} for a in envelope["to"] if a.lower() not in shown]
    html = msg.get_body(("html",))
    text = msg.get_body(("plain",))
    body_part = html or text
    body = {
        "contentType": "html" if html is not None else "text",
        "content": body_part.get_content() if body_part is not None else "",
    }
    out: dict[str, Any] = {
        "subject": str(msg.get("Subject", "")),
        "body": body,
        "from": _recipients(msg.get_all("From", []))[0],
        "toRecipients": to,
        "ccRecipients": cc,
        "bccRecipients": bcc,
        "replyTo": _recipients(msg.get_all("Reply-To", [])),
        "internetMessageId": str(msg.get("Message-ID", "")),
    }
    attachments = []
    for part in msg.walk():
        if part is body_part or part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        if disposition not in ("attachment", "inline"):
            continue
        payload = part.get_payload(decode=True)
        item: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": part.get_filename() or "attachment",
            "contentType": part.get_content_type(),
            "contentBytes": base64.b64encode(
                payload if isinstance(payload, bytes) else b""
            ).decode(),
            "isInline": disposition == "inline",
        }
        cid = part.get("Content-ID")
        if cid:
            item["contentId"] = str(cid).strip("<>")
        attachments.append(item)
    if attachments:
        out["attachments"] = attachments
    headers = [{"name": k, "value": str(v)} for k, v in msg.items() if k.lower().startswith("x-")]
    if headers:
        out["internetMessageHeaders"] = headers
    return out


async def send_graph(
    session: aiohttp.ClientSession,
    *,
    graph_url: str,
    token: str,
    mailbox: str,
    message: dict[str, Any],
    save_to_sent_items: bool,
    trace: Any = None,
) -> str:
    """``POST /users/{mailbox}/sendMail``; raise RetryLater (401, 429, 5xx) or
    PermanentFailure.

    A 401 is retried: Graph refused a token before its expiry (revoked early, or its clock
    is ahead); the caller drops the token, so the next attempt gets a fresh one.
    """
    url = f"{graph_url.rstrip('/')}/v1.0/users/{quote(mailbox, safe='@')}/sendMail"
    body = {"message": message, "saveToSentItems": save_to_sent_items}
    if trace is not None:
        trace.debug("graph request", method="POST", url=url, saveToSentItems=save_to_sent_items)
    try:
        async with session.post(
            url,
            data=json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ) as resp:
            text = (await resp.content.read(_BODY_LIMIT)).decode(errors="replace")
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        timeout = isinstance(exc, TimeoutError)
        kind = "ETIMEDOUT" if timeout else "ECONNECTION"
        raise RetryLater(f"{exc.__class__.__name__}: {exc}", error_code=kind) from exc
    if trace is not None:
        trace.debug("graph response", method="POST", url=url, status=status)
    if status < 300:
        return f"{status} Accepted"
    reason = f"{status} {_graph_error(text)}"
    error_code = _graph_code(text) or f"HTTP{status}"
    if status in (401, 429) or status >= 500:
        raise RetryLater(reason, code=status, error_code=error_code)
    raise PermanentFailure(reason, code=status, error_code=error_code)


def _graph_error(text: str) -> str:
    try:
        error = json.loads(text)["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return text[:200]


def _graph_code(text: str) -> str | None:
    """Graph's error code (``ErrorSendAsDenied``), if the answer has one."""
    try:
        code = json.loads(text)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(code) if code else None
