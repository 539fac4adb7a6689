"""Replies and forwards by ``reference``: the original read through the mailbox layer.

A submit (``POST /v1/account/{id}/submit``) and an upload (``POST /v1/account/{id}/message``)
both take EmailEngine's ``reference``; what the original fills in is
:mod:`relay.send.reference` (pure), reading it is here.
"""

from __future__ import annotations

import base64

from aiohttp import web

from relay.api.keys import MAILBOXES
from relay.mailbox.model import MessageNotFound, NotOffered, TextRequest
from relay.send.model import Attachment, Reference, Submit
from relay.send.reference import apply_reference

__all__ = ["referenced"]


async def referenced(
    request: web.Request, account: str, body: Submit, ref: Reference, own: set[str]
) -> tuple[Submit, dict[str, str] | None]:
    """The submit completed from the message it replies to or forwards (read through the
    mailbox layer), and what to flag once it is sent; a missing original is a 404 unless
    ``ignoreMissing``."""
    try:
        mailbox = await request.app[MAILBOXES].open(account)
        text = TextRequest(text_type="*") if ref.inline else None
        original = await mailbox.message(ref.message, text)
    except (MessageNotFound, NotOffered):
        original = None
    if original is not None and ref.messageId and original.get("messageId") != ref.messageId:
        original = None
    if original is None:
        if ref.ignoreMissing:
            return body, None
        raise MessageNotFound("Referenced message was not found", field="reference.message")
    completed = apply_reference(body, original, ref, own)
    if ref.action == "forward" and ref.forwardAttachments:
        extra = []
        for item in original.get("attachments") or ():
            content = await (await mailbox.attachment(str(item["id"]))).read()
            extra.append(
                Attachment(
                    filename=item.get("filename") or None,
                    content=base64.b64encode(content).decode("ascii"),
                    contentType=str(item.get("contentType") or "application/octet-stream"),
                )
            )
        completed = completed.model_copy(update={"attachments": [*completed.attachments, *extra]})
    return completed, {"message": ref.message, "action": ref.action}
