"""Message content in ``messageNew`` webhooks: EmailEngine's ``notify*`` settings.

``notifyText`` adds ``data.text {id, encodedSize, plain, html, hasMore}`` (each part cut to
``notifyTextSize`` bytes), ``notifyWebSafeHtml`` makes that HTML web-safe,
``notifyHeaders`` (names, or ``["*"]``) adds ``data.headers``, ``notifyAttachments`` adds
each attachment's ``content`` (base64) when it is at most ``notifyAttachmentSize`` bytes.

The content is read once, through the account's mailbox backend, after the change was seen
and before its event is stored, within ``mailbox.notify_timeout`` seconds. When the read
fails or runs out of time the event is stored anyway with what was read and
``data.textError`` saying why: content never costs an event. The payload limit
(``webhooks.max_payload_bytes``) still applies when the event is stored.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from relay.errors import RelayError
from relay.events.model import Event
from relay.mailbox.access import Mailboxes
from relay.mailbox.content import pick_headers
from relay.mailbox.model import Mailbox, TextRequest
from relay.store import Store
from relay.store import settings as settings_store

__all__ = ["KEYS", "Enricher", "NotifyOptions"]

log = structlog.get_logger(__name__)

KEYS = (
    "notifyText",
    "notifyTextSize",
    "notifyWebSafeHtml",
    "notifyHeaders",
    "notifyAttachments",
    "notifyAttachmentSize",
)
# Settings are read at most this often (seconds): they change rarely, mail arrives often.
_SETTINGS_TTL = 2.0


@dataclass(frozen=True, slots=True)
class NotifyOptions:
    """The ``notify*`` settings in force."""

    text: bool = False
    text_size: int | None = None
    web_safe: bool = False
    headers: tuple[str, ...] = ()
    attachments: bool = False
    attachment_size: int | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> NotifyOptions:
        """From stored settings (missing keys take the defaults)."""
        headers = values.get("notifyHeaders") or ()
        return cls(
            text=bool(values.get("notifyText")),
            text_size=int(values["notifyTextSize"]) if values.get("notifyTextSize") else None,
            web_safe=bool(values.get("notifyWebSafeHtml")),
            headers=tuple(str(h) for h in headers),
            attachments=bool(values.get("notifyAttachments")),
            attachment_size=(
                int(values["notifyAttachmentSize"]) if values.get("notifyAttachmentSize") else None
            ),
        )

    @property
    def wanted(self) -> bool:
        """Whether any content is to be read at all."""
        return self.text or bool(self.headers) or self.attachments


class Enricher:
    """Adds the configured content to ``messageNew`` events before they are stored."""

    def __init__(self, store: Store, mailboxes: Mailboxes, *, timeout: float) -> None:
        self._store = store
        self._mailboxes = mailboxes
        self._timeout = timeout
        self._options: NotifyOptions | None = None
        self._read_at = 0.0
        # The read in flight, shared by every caller that finds the settings out of date
        # meanwhile: under a burst thousands of listeners commit at once, and each reading
        # for itself would queue thousands of reads before their writes.
        self._reading: asyncio.Future[NotifyOptions] | None = None
        self._generation = 0

    async def options(self) -> NotifyOptions:
        """The settings in force (re-read every couple of seconds, one read at a time)."""
        options = self._options
        if options is not None and time.monotonic() - self._read_at <= _SETTINGS_TTL:
            return options
        reading = self._reading
        if reading is None:
            reading = self._reading = asyncio.ensure_future(self._read(self._generation))
            # Retrieved here too, so a failure nobody waited for is not reported as lost.
            reading.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(reading)

    async def _read(self, generation: int) -> NotifyOptions:
        started = time.monotonic()
        try:
            async with self._store.read() as conn:
                values = {key: await settings_store.get(conn, key) for key in KEYS}
        finally:
            if generation == self._generation:
                self._reading = None
        options = NotifyOptions.of(values)
        if generation == self._generation:
            self._options, self._read_at = options, started
        return options

    def forget(self) -> None:
        """Read the settings again next time (they were just changed on this node); a read
        already under way may predate the change, so it is not waited for."""
        self._generation += 1
        self._options = None
        self._reading = None

    async def __call__(self, events: Sequence[Event]) -> None:
        """Enrich the ``messageNew`` events of ``events`` in place (bounded in time)."""
        new = [e for e in events if e.event == "messageNew" and e.account and "id" in e.data]
        if not new:
            return
        options = await self.options()
        if not options.wanted:
            return
        opened: dict[str, Mailbox] = {}
        done = 0
        try:
            async with asyncio.timeout(self._timeout):
                for event in new:
                    await self._one(event, options, opened)
                    done += 1
        except TimeoutError:
            for event in new[done:]:
                event.data.setdefault("textError", f"content not read within {self._timeout:g} s")

    async def _one(self, event: Event, options: NotifyOptions, opened: dict[str, Mailbox]) -> None:
        """Enrich one event; ``opened`` keeps the mailboxes this batch opened, per account."""
        data = event.data
        assert event.account is not None
        try:
            mailbox = opened.get(event.account)
            if mailbox is None:
                mailbox = opened[event.account] = await self._mailboxes.open(event.account)
            request = TextRequest(
                text_type="*",
                max_bytes=options.text_size,
                web_safe=options.web_safe,
            )
            details = await mailbox.message(str(data["id"]), request if options.text else None)
            if not data.get("attachments") and details.get("attachments"):
                # Graph's change data has no attachment list; the read brought it.
                data["attachments"] = details["attachments"]
            if options.text and "text" in details:
                data["text"] = details["text"]
            if options.headers:
                chosen = pick_headers(
                    details.get("headers") or {},
                    "*" if "*" in options.headers else list(options.headers),
                )
                if chosen:
                    data["headers"] = chosen
            if options.attachments:
                await self._attachments(mailbox, data, options.attachment_size)
        except asyncio.CancelledError:
            raise
        except (RelayError, OSError) as exc:
            log.warning("message content not read", account=event.account, error=str(exc))
            data["textError"] = str(exc) or type(exc).__name__
        except Exception as exc:
            # A bug here must not keep the event from being stored (the listener would
            # retry the same commit for ever).
            log.exception("reading message content failed", account=event.account)
            data["textError"] = f"internal error: {type(exc).__name__}"

    async def _attachments(self, mailbox: Mailbox, data: dict[str, Any], limit: int | None) -> None:
        for item in data.get("attachments") or ():
            size = int(item.get("encodedSize") or 0)
            if limit is not None and size > limit:
                continue
            content = await (await mailbox.attachment(str(item["id"]))).read()
            if limit is not None and len(content) > limit:
                continue
            item["content"] = base64.b64encode(content).decode("ascii")
