"""A Dovecot for hundreds or thousands of mailboxes: one ``imap`` process per connection and
one system uid per mailbox.

Two IDLEs on one mailbox inside one ``imap`` process are not both told of new mail (what a
handover between relay nodes looks like from Dovecot's side: the old owner's IDLE is still
open when the new owner's starts), and the kernel counts inotify instances per uid (128 by
default; past that Dovecot polls every 30 s instead). Used by ``bench/imap_scale.py``,
``bench/cluster.py`` and ``tests/cluster``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.peers.dovecot import TUNING, DovecotServer, render_config

__all__ = ["ScaleDovecot"]


@dataclass
class ScaleDovecot(DovecotServer):
    """The tuned test Dovecot, with one ``imap`` process per connection and one uid per user."""

    process_limit: int = 1000
    # First system uid of the mailboxes; servers running at once need ranges of their own
    # only if they share mailboxes' uids (the inotify limit counts per uid).
    uid_base: int = 200_000

    def prepare(self) -> None:
        super().prepare()
        mail = self.root / "mail" / "example.com"
        mail.mkdir(parents=True, exist_ok=True)
        for uid, home in self._homes().values():
            path = Path(home)
            path.mkdir(exist_ok=True)
            os.chown(path, uid, 65534)
            path.chmod(0o700)
        text = render_config(self.root, port=self.port, tls_port=self.tls_port, tuned=True)
        static = (
            "  driver = static\n"
            "  args = uid=nobody gid=nogroup home="
            f"{self.root}/mail/%d/%n allow_all_users=yes\n"
        )
        per_user = f"  driver = passwd-file\n  args = username_format=%u {self.root}/users\n"
        tuning = f"""
default_client_limit = {4 * self.process_limit}
default_process_limit = 1000
service imap {{
  client_limit = 1
  process_limit = {self.process_limit}
}}
"""
        if static not in text or TUNING not in text:
            raise RuntimeError("tests/peers/dovecot.py renders another config; update this class")
        text = text.replace(static, per_user).replace(TUNING, tuning)
        self.config_path.write_text(text)

    def _homes(self) -> dict[str, tuple[int, str]]:
        homes = {}
        for n, name in enumerate(sorted(self._users)):
            local = name.split("@", 1)[0]
            homes[name] = (self.uid_base + n, f"{self.root}/mail/example.com/{local}")
        return homes

    def _write_users(self) -> None:
        homes = self._homes()
        lines = "".join(
            f"{name}:{{PLAIN}}{pw}:{homes[name][0]}:65534::{homes[name][1]}::\n"
            for name, pw in self._users.items()
        )
        path = self.root / "users"
        tmp = path.with_name("users.tmp")
        tmp.write_text(lines)
        tmp.chmod(0o644)
        tmp.replace(path)
