"""``POST /v1/account/{account}/submit`` and the outbox (``/v1/outbox``).

A submit is stored (MIME encrypted, see ``relay.store.schema.outbox``) before the response;
the outbox worker (``relay.send.worker``) sends it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from datetime import UTC
from typing import Any, Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.api.endpoint import Endpoint, json_response, read_object, read_query, validate
from relay.api.keys import CIPHER, SETTINGS, STORE
from relay.api.middleware import request_grant
from relay.api.models import Out, Paging
from relay.api.referencing import referenced
from relay.auth.grants import Permission
from relay.config import SendSettings
from relay.errors import Conflict, InputError, NotFound
from relay.events.model import iso_ms
from relay.send.intake import Intake
from relay.send.mime import MimeError, build
from relay.send.model import Address, Submit
from relay.send.worker import raw_context
from relay.store import accounts as accounts_store
from relay.store import outbox as outbox_store
from relay.store.engine import Wake, now_ms
from relay.store.schema import OutboxStatus

TAG = "Submit"
_KEY_MAX = 256


class TooLarge(InputError):
    """The message is larger than ``send.max_message_bytes``."""

    status = 413
    reason = "Payload Too Large"
    code = "MessageTooLarge"


def check_size(raw: bytes, settings: SendSettings, *, field: str) -> None:
    """Refuse a message larger than ``send.max_message_bytes`` (``field``: what made it so)."""
    if len(raw) > settings.max_message_bytes:
        raise TooLarge(
            f"message is {len(raw)} bytes; the limit is {settings.max_message_bytes}",
            field=field,
        )


class ReferenceResult(Out):
    """EmailEngine's ``reference`` of the answer: whether the referenced message was used."""

    message: str
    success: bool
    error: str | None = None


class Queued(Out):
    response: str = "Queued for delivery"
    messageId: str
    queueId: str
    sendAt: str
    reference: ReferenceResult | None = Field(
        default=None, description="With a reference in the submit"
    )


class OutboxEntry(Out):
    queueId: str
    account: str
    messageId: str
    subject: str
    envelope: dict[str, Any]
    size: int
    status: str
    # EmailEngine's: attempts made, and attempts allowed (deliveryAttempts repeats it).
    attemptsMade: int
    attempts: int
    deliveryAttempts: int
    created: str
    sendAt: str
    scheduled: str
    nextAttempt: str | None = None
    lastError: str | None = None
    response: str | None = None
    sent: str | None = None


class OutboxList(Out):
    total: int
    page: int
    pages: int
    messages: list[OutboxEntry]


class OutboxQuery(Paging):
    account: str | None = Field(default=None, max_length=256)
    status: Literal["queued", "sending", "sent", "failed"] | None = None


class OutboxDeleted(Out):
    deleted: bool = True


class OutboxRetried(Out):
    queueId: str
    status: str = OutboxStatus.QUEUED


INTAKE = web.AppKey("send_intake", Intake)


def setup(app: web.Application) -> None:
    """Give the application its submit intake (before it starts)."""
    app[INTAKE] = Intake(lambda: app[STORE])


def _entry(row: RowMapping) -> OutboxEntry:
    status = str(row["status"])
    return OutboxEntry(
        queueId=row["queue_id"],
        account=row["account"],
        messageId=row["message_id"],
        subject=row["subject"],
        envelope=dict(row["envelope"]),
        size=int(row["size"]),
        status=status,
        attemptsMade=int(row["attempts"]),
        attempts=int(row["max_attempts"]),
        deliveryAttempts=int(row["max_attempts"]),
        created=iso_ms(int(row["created_ms"])),
        sendAt=iso_ms(int(row["send_at_ms"])),
        scheduled=iso_ms(int(row["send_at_ms"])),
        nextAttempt=iso_ms(int(row["next_attempt_ms"])) if status == OutboxStatus.QUEUED else None,
        lastError=row["last_error"],
        response=row["response"],
        sent=iso_ms(int(row["sent_ms"])) if row["sent_ms"] is not None else None,
    )


def _queued(row: Mapping[Any, Any]) -> Queued:
    return Queued(
        messageId=row["message_id"], queueId=row["queue_id"], sendAt=iso_ms(row["send_at_ms"])
    )


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 0 < len(key) <= _KEY_MAX or not key.isprintable():
        raise InputError(
            f"Idempotency-Key must be 1-{_KEY_MAX} printable characters", field="Idempotency-Key"
        )
    return key


async def submit(request: web.Request) -> web.Response:
    account = request.match_info["account"]
    settings = request.app[SETTINGS].send
    key = _idempotency_key(request)
    raw_body = await read_object(request)
    body = validate(Submit, raw_body)
    request_hash = hashlib.sha256(
        json.dumps(raw_body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()

    intake = request.app[INTAKE]
    row = await intake.account(account)
    if row is None:
        raise NotFound(f"Account {account!r} not found", field="account")
    own = str(row["email"])
    allowed = {own.lower()}
    if row["delegated_user"]:
        allowed.add(str(row["delegated_user"]).lower())
    sender = body.from_ or Address(name=row["name"], address=own)
    if sender.address.lower() not in allowed:
        raise InputError(
            f"from: account {account!r} may not send as {sender.address}", field="from"
        )
    if body.sentMailPath is not None:
        if row["backend"] == "graph":
            raise InputError(
                "sentMailPath: Microsoft Graph's sendMail saves the sent copy to Sent Items"
                " only; leave sentMailPath out for Graph accounts",
                field="sentMailPath",
            )
        if body.copy_ is False:
            raise InputError(
                "sentMailPath: has no effect with copy: false (no copy is uploaded)",
                field="sentMailPath",
            )
    reference: dict[str, str] | None = None
    if body.reference is not None:
        body, reference = await referenced(request, account, body, body.reference, allowed)
    recipients = body.recipients()
    if not recipients:
        raise InputError("to: at least one recipient (to, cc or bcc) is required", field="to")
    try:
        message = build(body, sender)
    except MimeError as exc:
        raise InputError(f"{exc.field}: {exc}", field=exc.field) from None
    raw = message.as_bytes()
    check_size(raw, settings, field="attachments")

    now = now_ms()
    send_at = now
    if body.sendAt is not None:
        moment = body.sendAt if body.sendAt.tzinfo else body.sendAt.replace(tzinfo=UTC)
        send_at = max(now, int(moment.timestamp() * 1000))
    queue_id = secrets.token_hex(8)
    message_id = str(message["Message-ID"])
    envelope = {"from": sender.address, "to": recipients}
    sealed = request.app[CIPHER].encrypt(raw, context=raw_context(queue_id))
    admitted = await intake.store_row(
        {
            "queue_id": queue_id,
            "account": account,
            "message_id": message_id,
            "subject": body.subject or "",
            "envelope": envelope,
            "raw": sealed,
            "size": len(raw),
            "status": OutboxStatus.QUEUED,
            "attempts": 0,
            "max_attempts": body.deliveryAttempts or settings.attempts,
            "send_at_ms": send_at,
            "next_attempt_ms": send_at,
            "reference": reference,
            "copy": body.copy_,
            "sent_mail_path": body.sentMailPath,
            "idempotency_key": key,
            "request_hash": request_hash,
            "created_ms": now,
            "updated_ms": now,
        },
        keys_since_ms=now - int(settings.idempotency_ttl * 1000),
    )
    if admitted.conflict:
        raise Conflict("Idempotency-Key was used for a different request", field="Idempotency-Key")
    answer = _queued(admitted.row)
    if raw_body.get("reference") is not None:
        answer.reference = _reference_result(raw_body, reference)
    response = json_response(answer)
    if admitted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _reference_result(raw_body: dict[str, Any], used: dict[str, str] | None) -> ReferenceResult:
    """What the answer says of the submit's reference (EmailEngine's ``reference``)."""
    asked = raw_body.get("reference")
    message = str(asked.get("message", "")) if isinstance(asked, dict) else ""
    if used is not None:
        return ReferenceResult(message=message, success=True)
    return ReferenceResult(message=message, success=False, error="Referenced message was not found")


async def list_outbox(request: web.Request) -> web.Response:
    query = read_query(request, OutboxQuery)
    grant = request_grant(request)
    async with request.app[STORE].read() as conn:
        only = await accounts_store.visible_to(conn, grant) if grant is not None else None
        total, rows = await outbox_store.page(
            conn,
            offset=query.page * query.pageSize,
            limit=query.pageSize,
            account=query.account,
            status=query.status,
            only=only,
        )
    pages = max(1, -(-total // query.pageSize))
    return json_response(
        OutboxList(total=total, page=query.page, pages=pages, messages=[_entry(r) for r in rows])
    )


async def _queued_row(request: web.Request, conn: AsyncConnection) -> RowMapping:
    """The queued message the path names; 404 when unknown or another account's than an
    account-bound token's (the same answer: it is not revealed)."""
    queue_id = request.match_info["queueId"]
    row = await outbox_store.get(conn, queue_id)
    grant = request_grant(request)
    if row is not None and grant is not None and grant.account is not None:
        visible = await accounts_store.visible_to(conn, grant) or []
        if row["account"] not in visible:
            row = None
    if row is None:
        raise NotFound(f"Queued message {queue_id!r} not found", field="queueId")
    return row


async def get_outbox(request: web.Request) -> web.Response:
    async with request.app[STORE].read() as conn:
        row = await _queued_row(request, conn)
    return json_response(_entry(row))


async def delete_outbox(request: web.Request) -> web.Response:
    async with request.app[STORE].write() as conn:
        row = await _queued_row(request, conn)
        queue_id = row["queue_id"]
        if row["status"] == OutboxStatus.SENDING:
            raise Conflict("The message is being sent right now", field="queueId")
        await outbox_store.remove(conn, queue_id)
    return json_response(OutboxDeleted())


async def retry_outbox(request: web.Request) -> web.Response:
    async with request.app[STORE].write(notify=Wake.OUTBOX) as conn:
        row = await _queued_row(request, conn)
        queue_id = row["queue_id"]
        if not await outbox_store.retry(conn, queue_id, now=now_ms()):
            raise Conflict(
                f"Only a failed message can be retried; this one is {row['status']}",
                field="queueId",
            )
    return json_response(OutboxRetried(queueId=queue_id))


_NOT_FOUND = {404: "No such queued message"}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/account/{account}/submit",
        submit,
        "Queue a message for sending as the account (Idempotency-Key header honoured)",
        TAG,
        body=Submit,
        response=Queued,
        errors={
            404: "No such account",
            409: "Idempotency-Key reused with another body",
            413: "The message (send.max_message_bytes) or the request body is too large",
        },
        permission=Permission("submit", "send"),
        carries_message=True,
    ),
    Endpoint(
        "GET",
        "/v1/outbox",
        list_outbox,
        "List queued messages",
        TAG,
        query=OutboxQuery,
        response=OutboxList,
        permission=Permission("outbox", "read"),
    ),
    Endpoint(
        "GET",
        "/v1/outbox/{queueId}",
        get_outbox,
        "Read a queued message",
        TAG,
        response=OutboxEntry,
        errors=_NOT_FOUND,
        permission=Permission("outbox", "read"),
    ),
    Endpoint(
        "DELETE",
        "/v1/outbox/{queueId}",
        delete_outbox,
        "Remove a queued message",
        TAG,
        response=OutboxDeleted,
        errors={**_NOT_FOUND, 409: "The message is being sent"},
        permission=Permission("outbox", "destructive"),
    ),
    Endpoint(
        "POST",
        "/v1/outbox/{queueId}/retry",
        retry_outbox,
        "Queue a failed message again, with its attempts reset",
        TAG,
        response=OutboxRetried,
        errors={**_NOT_FOUND, 409: "The message is not failed (the answer names its state)"},
        permission=Permission("outbox", "write"),
    ),
]
