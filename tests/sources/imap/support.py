"""Helpers shared by the IMAP client tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

_counter = itertools.count(1)
_users = itertools.count(1)
POOL_SIZE = 400


@dataclass(frozen=True)
class Account:
    """A Dovecot user handed to one test."""

    user: str
    password: str
    token: str


def pool_user(n: int) -> tuple[str, str]:
    """The n-th pre-created user and its password (a quote and a backslash test quoting)."""
    return f"user{n}@example.com", f'pw-{n}-"q"\\'


def user_pool(size: int = POOL_SIZE) -> dict[str, str]:
    """Users to create before Dovecot starts (it re-reads its passwd-file at most once a second)."""
    return dict(pool_user(n) for n in range(1, size + 1))


class _Server(Protocol):
    def grant(self, token: str, owner: str) -> None: ...


def new_account(server: _Server) -> Account:
    """Hand out an unused pre-created user with a fresh token granting its own mailbox."""
    n = next(_users)
    if n > POOL_SIZE:
        raise RuntimeError("user pool exhausted; raise POOL_SIZE")
    user, password = pool_user(n)
    account = Account(user, password, f"token-{n}-{next(_counter)}")
    server.grant(account.token, account.user)
    return account


def message(subject: str = "hello", body: str = "body\r\n", sender: str = "a@example.org") -> bytes:
    """A small RFC 5322 message."""
    return (
        f"From: Sender <{sender}>\r\nTo: r@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{next(_counter)}@example.org>\r\n\r\n{body}"
    ).encode()
