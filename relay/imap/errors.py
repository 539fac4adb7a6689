"""Errors of the IMAP client, under ``relay.errors.ImapError``.

    ImapError                     (relay.errors; -> SourceError -> RelayError)
    ├── ImapCommandError          the server answered a command with NO or BAD
    │   └── ImapAuthError         LOGIN / AUTHENTICATE refused: the credentials are wrong
    ├── ImapConnectionError       the connection cannot be used any more
    │   ├── ImapByeError          the server said BYE (kick, shutdown, idle timeout)
    │   └── ImapTimeoutError      a command (or IDLE's DONE) was not answered: presumed dead
    ├── ImapProtocolError         the server sent something we cannot frame or parse
    └── ImapStateError            the client was used wrongly (a command while IDLE runs)

Connection errors close the client before they are raised, so a caller only has to
reconnect. A protocol error closes it too when the byte stream cannot be framed or an
unsolicited update cannot be parsed; when only the result of one command cannot be parsed,
that command raises and the connection stays usable.
"""

from __future__ import annotations

from relay.errors import ImapError

__all__ = [
    "ImapAuthError",
    "ImapByeError",
    "ImapCommandError",
    "ImapConnectionError",
    "ImapError",
    "ImapProtocolError",
    "ImapStateError",
    "ImapTimeoutError",
]


class ImapCommandError(ImapError):
    """A command was answered ``NO`` or ``BAD``.

    ``status`` is ``"NO"`` or ``"BAD"``, ``code`` the response code without brackets
    (``"AUTHENTICATIONFAILED"``, ``"UNAVAILABLE"``, ...) or None, ``text`` the human text.
    """

    def __init__(self, command: str, status: str, code: str | None, text: str) -> None:
        shown = f"[{code}] {text}" if code else text
        super().__init__(f"{command} failed: {status} {shown}")
        self.command = command
        self.status = status
        self.code = code
        self.text = text


class ImapAuthError(ImapCommandError):
    """The server refused the credentials (password or OAuth2 token).

    Callers set the account's ``authenticationError`` state on this and do not retry in a
    loop. ``details`` holds the decoded XOAUTH2 error challenge (e.g. ``{"status": "401"}``)
    when the server sent one. A temporary server-side failure (``[UNAVAILABLE]``) is a plain
    :class:`ImapCommandError`, not this.
    """

    def __init__(
        self,
        command: str,
        status: str,
        code: str | None,
        text: str,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(command, status, code, text)
        self.details = details


class ImapConnectionError(ImapError):
    """The connection failed, was closed, or is presumed dead; reconnect to go on."""


class ImapByeError(ImapConnectionError):
    """The server sent ``BYE``; ``text`` is what it said."""

    def __init__(self, text: str) -> None:
        super().__init__(f"server said BYE: {text}")
        self.text = text


class ImapTimeoutError(ImapConnectionError):
    """A command or IDLE's ``DONE`` was not answered in time; the connection was dropped."""


class ImapProtocolError(ImapError):
    """The server sent a response that cannot be framed or parsed."""


class ImapStateError(ImapError):
    """The client was asked for something its state does not allow (e.g. a command during IDLE)."""
