"""Soak: many mailboxes, mail flowing, random kicks and Dovecot and PostgreSQL restarts, for a
long time; nothing may be lost or doubled and the relay's memory should stay flat.

    python bench/soak.py [--minutes 30] [--mailboxes 500] [--rate 5] [--seed 1]
                         [--store postgresql|sqlite] [--gap 20 60] [--logs DIR]
                         [--faults kick,dovecot_restart,postgres_crash]

Starts a PostgreSQL of its own on a free port (``--store sqlite``: a SQLite file, and no
database faults), a Dovecot with one user per mailbox (one ``imap`` process per connection,
one uid per mailbox, as in ``bench/imap_scale.py``), a verifying webhook receiver in this
process and one ``relay serve`` process; adds every mailbox as an account through the API and
waits for every ``accountInitialized``. Then, for ``--minutes``, APPENDs ``--rate`` messages a
second to random mailboxes, each with a subject of its own, while faults come one at a time
after random pauses (``--gap MIN MAX`` seconds), taking turns in a shuffled order: ``kick``
(``doveadm kick`` of a twentieth of the users), ``dovecot_restart`` (stop, 2-5 s, start on the
same ports and mail) and ``postgres_crash`` (``pg_ctl -m immediate stop``, 5-20 s, start);
``--faults`` names the kinds to use (``--faults ''``: none, a baseline for the memory figures).
At the end the flow and the faults stop, what the mailboxes really hold is read from the
maildir files, and the run waits until every message there was reported (at most 3 minutes).
``tests/faults/soak.py`` has the run and defines every figure; ``tests/faults/test_soak.py``
runs it for about 2 minutes with 50 mailboxes in ``make test``.

Prints one JSON line: ``sent`` / ``received`` / ``lost`` / ``duplicated`` (reported under two
``webhook-id`` values: an unexpected duplicate) / ``redelivered`` (the same ``webhook-id``
again: allowed), ``faults`` by kind and ``fault_log`` ([kind, start s, seconds, detail, the
relay's RSS in KiB after it]), ``rss_start_kib`` (after the initial sync) / ``rss_end_kib`` /
``rss_growth_pct`` (goal under 5 %), ``rss_samples`` ([s, KiB] every minute),
``latency_p50_ms`` / ``latency_p99_ms`` (APPEND -> webhook outside faults), the durations,
the options and ``loadavg`` (1-minute load before and after: other work on the
cores). Progress and each fault go to stderr. Exits 1 when anything was lost, duplicated,
reported for the wrong account or reported without being sent. Every process it started is
stopped by its PID, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults.soak import KINDS, Soak, SoakOptions  # noqa: E402

GOAL_RSS_GROWTH_PCT = 5.0


def progress(text: str) -> None:
    """A line on stderr (stdout carries only the result)."""
    print(f"soak: {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of mail and faults")
    parser.add_argument("--mailboxes", type=int, default=500)
    parser.add_argument("--rate", type=float, default=5.0, help="messages per second")
    parser.add_argument("--seed", type=int, default=1, help="mailboxes, faults and their order")
    parser.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--gap", type=float, nargs=2, default=(20.0, 60.0), metavar=("MIN", "MAX"),
        help="seconds between two faults",
    )  # fmt: skip
    parser.add_argument(
        "--faults", default=",".join(KINDS), help="kinds to take turns through ('' for none)"
    )
    parser.add_argument("--drain", type=float, default=180.0, help="seconds to wait at the end")
    parser.add_argument("--log-level", default="info", help="the relay's log.level")
    parser.add_argument("--logs", type=Path, help="keep the logs and one line per message here")
    args = parser.parse_args()
    options = SoakOptions(
        minutes=args.minutes,
        mailboxes=args.mailboxes,
        rate=args.rate,
        seed=args.seed,
        store=args.store,
        fault_gap=(args.gap[0], args.gap[1]),
        drain=args.drain,
        logs=args.logs,
        log_level=args.log_level,
        only=tuple(k for k in args.faults.split(",") if k),
    )
    # One socket per mailbox in the relay and Dovecot, and the sender's (children inherit).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # SIGTERM unwinds like Ctrl-C, so that every process started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_before = os.getloadavg()[0]
    soak = Soak(options, progress)
    try:
        result = asyncio.run(soak.run())
    finally:
        soak.close()
    result["loadavg"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    result["goal_rss_growth_pct"] = GOAL_RSS_GROWTH_PCT
    print(json.dumps(result))
    failed = result["lost"] or result["duplicated"] or result["wrong_account"] or result["unknown"]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
