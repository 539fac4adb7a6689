"""The :class:`OutboxWorker`: claim -> resolve credentials -> SMTP or Graph -> record.

A message is ``sending`` under a lease from its claim until its outcome is written, and the
outcome (with its events) is written in one transaction inside ``asyncio.shield``. When a node
dies mid-attempt, the lease runs out and the message is queued again: sending is at least
once. SMTP gives no way to learn whether a transfer cut off after the end of DATA was
accepted, so a crash in that window sends the message again, with the same Message-ID.

Store round trips are shared: the attempts of a round end at about the same time, and their
outcomes are written together (one transaction, which also claims the next round); a claim
fetches a round ahead, so that a slot set free starts its next message at once. A slot is
held until its outcome is written, so that at most ``concurrency`` messages are ever sent
and not yet recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.auth.crypto import Cipher
from relay.auth.scopes import EXCHANGE, GRAPH
from relay.auth.tokens import TokenManager, account_user, secrets_context
from relay.config import MicrosoftSettings, SendSettings
from relay.errors import AuthError, ConsentRequired, NotFound, RelayError, StoreError
from relay.events.model import Event, iso_ms
from relay.log import protocol_log
from relay.mailbox.access import Mailboxes
from relay.mailbox.model import FlagChange, NotOffered
from relay.send import accounts as senders
from relay.send.accounts import Missing, Sender
from relay.send.graph import graph_message, send_graph
from relay.send.outcome import PermanentFailure, RetryLater, SendFailed, retry_delay
from relay.send.sentcopy import SentCopy, tidy, upload_wanted
from relay.send.smtp import SmtpTarget
from relay.send.smtp_pool import SmtpPool
from relay.store import Store
from relay.store import events as events_store
from relay.store import outbox as queue
from relay.store.engine import Wake
from relay.store.outage import retry_level
from relay.store.outbox import Claimed
from relay.store.schema import OutboxStatus

log = structlog.get_logger(__name__)

_RECORD_RETRY = 0.5
# Longest an outcome waits for others to be written with (see _flush_loop).
_FLUSH_WAIT = 0.005
_PRUNE_EVERY = 3600.0
_RETENTION_MS = 7 * 86_400_000


def raw_context(queue_id: str) -> str:
    """The encryption context of a queued message's MIME."""
    return f"outbox/{queue_id}"


@dataclass
class _Outcome:
    """One attempt's result, waiting for the next flush."""

    queue_id: str
    attempt: int
    now: int
    status: str
    next_ms: int | None
    error: str | None
    response: str | None
    events: list[Event]
    written: asyncio.Future[None]


@dataclass
class Counters:
    sent: int = 0
    retried: int = 0
    failed: int = 0


@dataclass
class _Batch:
    """What the messages of one claim share: account rows (read with the claim) and
    credentials, looked up once."""

    senders: dict[str, Sender | Missing]
    # When the messages were claimed (epoch ms).
    claimed_at: int
    lookups: dict[tuple[str, str], asyncio.Future[Any]] = field(default_factory=dict)

    async def once(self, key: tuple[str, str], make: Callable[[], Awaitable[Any]]) -> Any:
        """``await make()`` for the first message that asks; the others share its result."""
        future = self.lookups.get(key)
        if future is None:
            future = self.lookups[key] = asyncio.ensure_future(make())
        return await asyncio.shield(future)


class OutboxWorker:
    """Owns the sending loop of one node."""

    def __init__(
        self,
        store: Store,
        cipher: Cipher,
        settings: SendSettings,
        tokens: TokenManager,
        microsoft: MicrosoftSettings,
        *,
        service_url: str,
        max_payload_bytes: int,
        node: str | None = None,
        clock: Callable[[], float] = time.time,
        mailboxes: Mailboxes | None = None,
    ) -> None:
        """``mailboxes`` reads and changes Sent folders for ``sentCopy``."""
        self.store = store
        self.mailboxes = mailboxes
        self.cipher = cipher
        self.settings = settings
        self.tokens = tokens
        self.microsoft = microsoft
        self.service_url = service_url
        self.max_payload_bytes = max_payload_bytes
        self.node = node or f"{socket.gethostname()}:{id(self):x}"
        self.clock = clock
        self.counters = Counters()
        self._wakeup = asyncio.Event()
        self._stopping = False
        # Claimed messages until their outcome is written (or they are given back). An attempt
        # holds one of the slots until its outcome is written, so that at most `concurrency`
        # messages are ever sent and not yet recorded (those a crash may send twice). A claim
        # fetches a round ahead, so that a slot set free starts the next message at once:
        # _queued of them wait for a slot.
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._queued = 0
        # The last claim took all it asked for: more may be due.
        self._more = False
        # Outcomes being written: shutdown waits for them before giving messages back.
        self._records: set[asyncio.Future[None]] = set()
        self._outcomes: list[_Outcome] = []
        self._refill_at = max(1, settings.concurrency // 4)
        # An attempt and the write of its outcome must end before the claim's lease: a
        # claimed message starts within half of what the lease leaves over the timeout (the
        # other half is for the write), or goes back to the queue.
        self._start_within_ms = int((settings.lease - settings.timeout) * 500)
        self._flush_needed = asyncio.Event()
        # Attempts running (not counting those whose outcome waits to be written), and
        # whether none is.
        self._attempting = 0
        self._all_ended = asyncio.Event()
        # The write of outcomes in progress (it may claim too).
        self._flushing: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.smtp = SmtpPool(io_timeout=settings.timeout)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the Graph client session and start claiming."""
        context: ssl.SSLContext | bool = True
        if self.microsoft.ca_bundle:
            context = await asyncio.to_thread(
                ssl.create_default_context, cafile=self.microsoft.ca_bundle
            )
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
        )
        self.store.on_commit(Wake.OUTBOX, self.wake)
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="outbox.claim"),
            asyncio.create_task(self._maintenance_loop(), name="outbox.maintenance"),
            asyncio.create_task(self._flush_loop(), name="outbox.flush"),
        ]

    async def stop(self, grace: float) -> None:
        """Stop claiming, let running attempts finish for up to ``grace`` s, give back the rest."""
        self._stopping = True
        self._wakeup.set()
        self.store.off_commit(Wake.OUTBOX, self.wake)
        running = list(self._inflight.values())
        if running:
            await asyncio.wait(running, timeout=grace)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        # Claimed as stopping began: not attempted (see _run).
        late = [task for task in self._inflight.values() if not task.done()]
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        await self._flush()
        for o in self._outcomes:
            # Not written (the store is down): the lease runs out and the message goes again.
            if not o.written.done():
                o.written.set_result(None)
        self._outcomes = []
        await asyncio.gather(*self._records, return_exceptions=True)
        if self._inflight:
            # Not attempted, or cancelled mid-attempt (whether the server took the message
            # is unknown): waiting for the lease would delay it; queue it again now.
            with contextlib.suppress(StoreError):
                async with self.store.write(notify=False) as conn:
                    await queue.release(
                        conn, list(self._inflight), node=self.node, now=self._now_ms()
                    )
        await self.smtp.close()
        if self._session is not None:
            await self._session.close()

    def wake(self) -> None:
        """Something was submitted: look for work now instead of at the next poll."""
        self._wakeup.set()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- claiming ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        backoff = 0.0
        while not self._stopping:
            self._wakeup.clear()
            limit = self._wanted()
            if limit > 0:
                try:
                    batch = await self._claim(limit)
                    backoff = 0.0
                except StoreError as exc:
                    backoff = min(max(backoff * 2, 0.5), 30.0)
                    log.log(
                        retry_level(exc),
                        "claiming outgoing messages failed; retrying",
                        retry_in=backoff,
                    )
                    await self.store.outage.wait(backoff)
                    continue
                self._more = len(batch) == limit
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.settings.poll_interval)

    def _wanted(self, freed: int = 0) -> int:
        """How many messages to claim now (once ``freed`` more slots are free): once fewer
        than a quarter round wait for a slot, enough to make it a round."""
        queued = max(0, self._queued - freed)
        if queued >= self._refill_at:
            return 0
        return self.settings.concurrency - queued

    async def _claim(self, limit: int) -> list[Claimed]:
        """Claim up to ``limit`` due messages and start a task for each."""
        async with self.store.write(notify=False) as conn:
            claim = await self._claim_in(conn, limit)
        self._start(claim)
        return claim[0]

    async def _claim_in(
        self, conn: AsyncConnection, limit: int
    ) -> tuple[list[Claimed], dict[str, Sender | Missing], int]:
        """Claim up to ``limit`` due messages in the caller's transaction; :meth:`_start`
        them once it is committed."""
        now = self._now_ms()
        batch = await queue.claim(
            conn,
            now=now,
            limit=limit,
            lease_until=now + int(self.settings.lease * 1000),
            node=self.node,
        )
        # The batch's accounts, in the same transaction: no read of its own.
        return batch, await senders.load(conn, (c.account for c in batch)), now

    def _start(self, claim: tuple[list[Claimed], dict[str, Sender | Missing], int]) -> None:
        batch, found, now = claim
        shared = _Batch(found, now)
        for claimed in batch:
            self._queued += 1
            self._inflight[claimed.queue_id] = asyncio.create_task(self._run(claimed, shared))

    def _moved(self) -> None:
        """A message took a slot: claim again if more are due."""
        if self._more:
            self._wakeup.set()

    # -- one attempt -------------------------------------------------------------------------

    async def _run(self, claimed: Claimed, shared: _Batch) -> None:
        try:
            await self._slots.acquire()
        finally:
            self._queued -= 1
            self._moved()
        attempt = claimed.attempts + 1
        with structlog.contextvars.bound_contextvars(
            account=claimed.account, queue_id=claimed.queue_id, attempt=attempt
        ):
            try:
                if self._stopping:
                    return  # shutting down: not attempted; stop() gives it back
                if self._now_ms() - shared.claimed_at > self._start_within_ms:
                    # It waited for a slot behind slow attempts: the lease could run out
                    # before its outcome is written, and another claim send it again.
                    await self._give_back(claimed)
                    return
                failure = await self._send(claimed, shared, attempt)
            finally:
                self._slots.release()
            if failure is None and claimed.reference:
                await self._mark_reference(claimed.account, claimed.reference)

    async def _give_back(self, claimed: Claimed) -> None:
        """Queue a claimed message again without attempting it."""
        log.info("lease too short for an attempt; queued again")
        try:
            async with self.store.write(notify=Wake.OUTBOX) as conn:
                await queue.release(conn, [claimed.queue_id], node=self.node, now=self._now_ms())
        except StoreError:
            return  # still claimed: its lease runs out and the reaper queues it again
        finally:
            self._inflight.pop(claimed.queue_id, None)

    async def _send(self, claimed: Claimed, shared: _Batch, attempt: int) -> SendFailed | None:
        """Attempt, and return once the outcome is written (or given up on): the failure."""
        response: str | None = None
        extra: dict[str, Any] = {}
        failure: SendFailed | None = None
        self._attempting += 1
        try:
            async with asyncio.timeout(self.settings.timeout):
                response, extra = await self._attempt(claimed, shared)
        except SendFailed as exc:
            failure = exc
        except TimeoutError:
            failure = RetryLater(
                f"timed out after {self.settings.timeout:g} s", error_code="ETIMEDOUT"
            )
        except Exception as exc:
            # A bug must not leave the message claimed until its lease runs out.
            log.exception("sending failed unexpectedly")
            failure = RetryLater(f"internal error: {exc.__class__.__name__}")
        finally:
            self._attempting -= 1
            if not self._attempting:
                self._all_ended.set()
        written = self._record(claimed, attempt, response, failure, extra)
        await asyncio.shield(written)
        return failure

    async def _mark_reference(self, account: str, reference: Mapping[str, Any]) -> None:
        """Flag the message this one answered (``\\Answered``) or forwarded (``$Forwarded``).

        After the outcome is stored: the message went out whatever happens here.
        """
        flag = "$Forwarded" if reference.get("action") == "forward" else "\\Answered"
        try:
            if self.mailboxes is None:
                raise NotOffered("no mailbox access on this node")
            mailbox = await self.mailboxes.open(account, unwatched=True)
            await mailbox.update(str(reference["message"]), FlagChange(add=(flag,)))
        except (RelayError, OSError) as exc:
            log.warning("could not flag the referenced message", error=str(exc), flag=flag)

    async def _attempt(self, claimed: Claimed, shared: _Batch) -> tuple[str, dict[str, Any]]:
        """Send once: the server's reply, and what became of the Sent Items copies."""
        sender = shared.senders[claimed.account]
        if isinstance(sender, Missing):
            raise PermanentFailure(sender.reason)
        row, root = sender.row, sender.root
        raw = self.cipher.decrypt(claimed.raw, context=raw_context(claimed.queue_id))
        envelope = claimed.envelope
        mode = senders.sent_copy(row)
        account_copy = senders.account_copy(row)
        account = claimed.account
        try:
            if row["backend"] == "graph":
                _, token = await shared.once(
                    ("graph", account), lambda: self.tokens.access_token(account, GRAPH)
                )
                assert self._session is not None
                save = {"shared": True, "none": False}.get(mode, self.settings.save_to_sent_items)
                # EmailEngine's copy: the submit's, else the account's, decides saveToSentItems.
                for copy in (account_copy, claimed.copy):
                    if copy is not None:
                        save = copy
                try:
                    reply = await send_graph(
                        self._session,
                        graph_url=self.microsoft.graph_url,
                        token=token,
                        mailbox=str(row["delegated_user"] or row["email"]),
                        message=graph_message(raw, envelope),
                        save_to_sent_items=save,
                        trace=protocol_log("graph", account)
                        if senders.section(row["config"]).get("logs")
                        else None,
                    )
                except RetryLater as exc:
                    if exc.code == 401:
                        self.tokens.reject(token)
                    raise
                return reply, {}
            target: SmtpTarget = await shared.once(
                ("smtp", account), lambda: self._smtp_target(row, root)
            )
        except ConsentRequired as exc:
            raise PermanentFailure(f"authentication failed: {exc}", error_code="EAUTH") from exc
        except NotFound as exc:
            raise PermanentFailure(str(exc)) from exc
        except AuthError as exc:
            raise RetryLater(f"authentication failed: {exc}", error_code="EAUTH") from exc
        reply = await self.smtp.send(
            account,
            target,
            sender=str(envelope["from"]),
            recipients=list(envelope["to"]),
            raw=raw,
        )
        if target.token is None:
            # Exchange keeps copies of what XOAUTH2 logins send; a password login's server
            # is left alone but for the upload EmailEngine's copy asks for.
            mode = "provider"
        upload = upload_wanted(
            mode,
            shared=bool(row["delegated_user"]),
            account_copy=account_copy,
            message_copy=claimed.copy,
            path=claimed.sent_mail_path,
        )
        if mode == "provider" and not upload:
            return reply, {}
        done = await self._tidy(mode, row, root, target, claimed, raw, upload=upload)
        return reply, {"sentCopy": done}

    async def _tidy(
        self,
        mode: SentCopy,
        row: Mapping[Any, Any],
        root: Mapping[Any, Any],
        smtp: SmtpTarget,
        claimed: Claimed,
        raw: bytes,
        *,
        upload: bool,
    ) -> dict[str, Any]:
        """Apply ``sentCopy`` and ``copy``; the message is gone already, so a failure is only
        reported."""
        try:
            if self.mailboxes is None:
                raise NotOffered("no mailbox access on this node")
            main = await self.mailboxes.open(str(root["id"]), root, unwatched=True)
            shared = (
                await self.mailboxes.open(str(row["id"]), row, unwatched=True)
                if row["delegated_user"]
                else None
            )
            done = await tidy(
                mode,
                main,
                shared,
                main_user=smtp.user,
                shared_user=str(row["delegated_user"]) if row["delegated_user"] else None,
                message_id=claimed.message_id,
                raw=raw,
                upload=upload,
                path=claimed.sent_mail_path,
            )
        except (RelayError, OSError) as exc:
            log.warning("could not tidy the Sent Items copies", error=str(exc), mode=mode)
            return {"mode": mode, "error": str(exc)}
        out: dict[str, Any] = {"mode": mode, "removed": done.removed, "appended": done.appended}
        if done.path is not None:
            out["path"] = done.path
        return out

    async def _smtp_target(self, row: Mapping[Any, Any], root: Mapping[Any, Any]) -> SmtpTarget:
        """Server and credentials: a shared mailbox logs in as the main user with its token."""
        server = senders.smtp_server(row, root)
        place = (server.host, server.port, server.secure)
        secrets: dict[str, Any] = {}
        if row["secrets"] is not None:
            secrets = dict(
                self.cipher.decrypt_json(row["secrets"], context=secrets_context(str(row["id"])))
            )
        proxy = str(secrets["proxy"]) if secrets.get("proxy") else None
        logs = str(row["id"]) if senders.section(row["config"]).get("logs") else None
        if server.oauth:
            _, token = await self.tokens.access_token(str(row["id"]), EXCHANGE)
            # access_token names the shared mailbox for a delegated account; SMTP wants the
            # user who owns the token.
            return SmtpTarget(
                *place,
                account_user(root),
                token=token,
                verify=server.verify,
                proxy=proxy,
                logs=logs,
            )
        password = secrets.get("smtp.auth.pass")
        return SmtpTarget(
            *place,
            str(server.auth.get("user") or row["email"]),
            password=str(password) if password is not None and server.auth else None,
            verify=server.verify,
            proxy=proxy,
            logs=logs,
        )

    # -- recording ---------------------------------------------------------------------------

    def _record(
        self,
        claimed: Claimed,
        attempt: int,
        response: str | None,
        failure: SendFailed | None,
        extra: dict[str, Any],
    ) -> asyncio.Future[None]:
        """Queue the outcome for the next flush; the future is done once it is written (or
        given up on), whether or not its attempt's task is still there to wait."""
        outcome = self._outcome(claimed, attempt, response, failure, extra)
        self._outcomes.append(outcome)
        self._flush_needed.set()
        written = outcome.written
        self._records.add(written)

        def recorded(_: asyncio.Future[None]) -> None:
            self._records.discard(written)
            self._inflight.pop(claimed.queue_id, None)
            self._moved()

        written.add_done_callback(recorded)
        return written

    def _outcome(
        self,
        claimed: Claimed,
        attempt: int,
        response: str | None,
        failure: SendFailed | None,
        extra: dict[str, Any],
    ) -> _Outcome:
        now = self._now_ms()
        envelope = claimed.envelope
        common = {"messageId": claimed.message_id, "queueId": claimed.queue_id}
        batch: list[Event] = []
        next_ms: int | None = None
        if failure is None:
            status = OutboxStatus.SENT
            data = {**common, "response": response, "envelope": envelope, **extra}
            batch.append(Event("messageSent", claimed.account, data, now))
        else:
            final = isinstance(failure, PermanentFailure) or attempt >= claimed.max_attempts
            status = OutboxStatus.FAILED if final else OutboxStatus.QUEUED
            if not final:
                delay = retry_delay(
                    attempt, minimum=self.settings.retry_min, maximum=self.settings.retry_max
                )
                next_ms = now + int(delay * 1000)
            error: dict[str, Any] = {
                **common,
                "envelope": envelope,
                **failure.event_data(),
                "job": {
                    "attemptsMade": attempt,
                    "attempts": claimed.max_attempts,
                    # EmailEngine's false when no attempt follows.
                    "nextAttempt": False if next_ms is None else iso_ms(next_ms),
                },
            }
            batch.append(Event("messageDeliveryError", claimed.account, error, now))
            if final:
                failed = {**common, "envelope": envelope, "error": failure.reason}
                batch.append(Event("messageFailed", claimed.account, failed, now))
        return _Outcome(
            queue_id=claimed.queue_id,
            attempt=attempt,
            now=now,
            status=status,
            next_ms=next_ms,
            error=None if failure is None else failure.reason,
            response=response,
            events=batch,
            written=asyncio.get_running_loop().create_future(),
        )

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_needed.wait()
            # Every write is a transaction (that may wake the webhook worker, which then
            # claims): wait for the outcomes of the attempts still running, for a few
            # milliseconds at most (the slots of the ended ones wait meanwhile).
            if self._attempting:
                self._all_ended.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._all_ended.wait(), _FLUSH_WAIT)
            self._flush_needed.clear()
            self._flushing = asyncio.ensure_future(self._flush())
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        """Write the pending outcomes and their events in one transaction."""
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        # The slots this write sets free: refill them in the same transaction, instead of a
        # claim of its own right after, when the last claim suggests more are due.
        limit = self._wanted(freed=len(batch)) if self._more and not self._stopping else 0
        claim: tuple[list[Claimed], dict[str, Sender | Missing], int] | None = None
        try:
            # No topic to name: recording the outcomes' events wakes the webhook worker when
            # a route wants them (the outbox itself need not look again).
            async with self.store.write(notify=False) as conn:
                kept = await queue.finish_many(
                    conn,
                    [
                        queue.Outcome(
                            o.queue_id,
                            now=o.now,
                            status=o.status,
                            attempts=o.attempt,
                            next_attempt_ms=o.next_ms,
                            error=o.error,
                            response=o.response,
                        )
                        for o in batch
                    ],
                    node=self.node,
                )
                held = [o for o in batch if o.queue_id in kept]
                await events_store.record(
                    conn,
                    [e for o in held for e in o.events],
                    default_service_url=self.service_url,
                    max_bytes=self.max_payload_bytes,
                )
                if limit:
                    claim = await self._claim_in(conn, limit)
        except StoreError:
            # Keep them: the leases protect the rows meanwhile; a row whose lease ran out is
            # queued again by reap and its outcome is then no longer written.
            now = self._now_ms()
            lease_ms = int(self.settings.lease * 1000)
            keep = [o for o in batch if now - o.now < lease_ms]
            for o in batch:
                if o not in keep and not o.written.done():
                    o.written.set_result(None)
            self._outcomes = keep + self._outcomes
            self._flush_needed.set()
            log.warning("recording send outcomes failed; will retry", count=len(batch))
            await asyncio.sleep(_RECORD_RETRY)
            return
        for o in batch:
            self._count(o, o.queue_id in kept)
            if not o.written.done():
                o.written.set_result(None)
        if claim is not None:
            self._start(claim)
            self._more = len(claim[0]) == limit

    def _count(self, o: _Outcome, held: bool) -> None:
        with structlog.contextvars.bound_contextvars(queue_id=o.queue_id, attempt=o.attempt):
            if not held:
                log.info("message was deleted or taken back during the attempt")
            elif o.status == OutboxStatus.SENT:
                self.counters.sent += 1
                log.info("message sent", response=o.response)
            elif o.status == OutboxStatus.FAILED:
                self.counters.failed += 1
                log.warning("message failed", error=o.error)
            else:
                self.counters.retried += 1
                log.info("send failed; will retry", error=o.error)

    # -- housekeeping ------------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        last_prune = 0.0
        interval = max(0.2, min(5.0, self.settings.lease / 4))
        while True:
            await asyncio.sleep(interval)
            self.smtp.prune()
            try:
                now = self._now_ms()
                async with self.store.write(notify=False) as conn:
                    reaped = await queue.reap(conn, now=now)
                    if self.clock() - last_prune > _PRUNE_EVERY:
                        await queue.prune(conn, before_ms=now - _RETENTION_MS)
                        last_prune = self.clock()
                if reaped:
                    log.info("took back messages whose lease ran out", count=reaped)
                    self._wakeup.set()
            except StoreError as exc:
                log.log(retry_level(exc), "outbox maintenance failed; will retry")
