"""When an IDLE listener looks for a change the server never pushed (pure: no I/O).

A push (``* N EXISTS``, ``EXPUNGE``, ``FETCH``) is only a trigger for a sync
(:mod:`relay.sources.imap.sync`), and some servers fail to send one on a healthy connection:
Exchange Online's IDLE is known to go quiet without closing, and Dovecot tells only one of two
IDLE sessions of a mailbox served by one ``imap`` process. Without another trigger the change
would wait for the next push, reconnect or sync request. So a listener whose connection has
not shown the folder current for ``imap.push_check`` seconds (no push, no sync, no check)
ends its IDLE, asks once (:meth:`FolderSync.check
<relay.sources.imap.sync.FolderSync.check>`) and IDLEs again.

Why on the listener's own connection (DONE, one command, IDLE) rather than STATUS on a
separate pooled connection per account:

* no second connection: servers limit connections per mailbox (Exchange Online: 20), and a
  pooled connection unused for ``mailbox.pool_idle`` s is closed, so a check a minute would
  mean a new TLS handshake and login a minute, or one more connection held per account;
* the command asks the very session whose pushes went missing, and what it finds goes
  straight into the sync on the same connection and task: a push that arrives late is a
  trigger like any other, and the sync diffs against the stored state, so the change is
  reported once whichever comes first;
* ending IDLE itself helps: DONE unanswered means a dead connection (reconnect), and
  Dovecot sends the EXISTS it held back once the session runs a command;
* the other way to ask on the same connection, a STATUS of the selected mailbox, is what
  RFC 3501 (6.3.10) says a client must not use to look for new mail.

Cost: one command per check; INBOX's listener ends IDLE every ``imap.poll_interval`` s for
its poller round anyway, and rounds are moved to share the checks' breaks (:func:`plan`),
so there the check adds no DONE/IDLE of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Plan", "plan"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a listener between two IDLEs does now, and when its next IDLE should end."""

    # Run the push check now.
    check: bool
    # Run the poller round now.
    round: bool
    # When the next IDLE ends for a check or a round (monotonic seconds); None: neither.
    wake_at: float | None


def plan(now: float, *, seen: float, interval: float, round_at: float | None) -> Plan:
    """The plan at ``now`` (monotonic seconds) for a connection that last showed the folder
    current at ``seen`` (a push, a sync, a check), checked every ``interval`` s (0: never),
    whose poller round (None: it has none) is due at ``round_at``.

    A check never runs early: at most one per ``interval``. So that a check and a round
    share one DONE/IDLE, a round due less than a quarter interval before the check waits
    for it, and a round that would otherwise need a break of its own before the next check
    runs early, with this one (from then on rounds come with the checks, when
    ``poll_interval`` divides ``interval``).
    """
    check_at = seen + interval if interval > 0 else None
    round_wake = round_at
    if round_at is not None and check_at is not None and check_at - interval / 4 <= round_at:
        round_wake = max(round_at, check_at)
    check = check_at is not None and now >= check_at
    round_due = (
        round_at is not None
        and round_wake is not None
        and (now >= round_wake or (check and round_at < now + interval))
    )
    times = [t for t in (check_at, round_wake) if t is not None]
    return Plan(check=check, round=round_due, wake_at=min(times) if times else None)
