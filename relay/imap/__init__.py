"""IMAP, the protocol: an asyncio IMAP4rev1 client (:mod:`.client`) built for long-lived
IDLE listeners, its response parsing (:mod:`.parse`), errors, XOAUTH2 and shared TLS
contexts. It knows nothing of accounts or the store: the listeners (``relay.sources.imap``)
and the mailbox layer (``relay.mailbox``) use it."""

from relay.imap.client import (
    ClientOptions,
    ExpungeResult,
    FetchResult,
    ImapClient,
    Qresync,
)
from relay.imap.errors import (
    ImapAuthError,
    ImapByeError,
    ImapCommandError,
    ImapConnectionError,
    ImapError,
    ImapProtocolError,
    ImapStateError,
    ImapTimeoutError,
)
from relay.imap.parse import (
    AppendResult,
    Bye,
    Exists,
    Expunge,
    FetchedMessage,
    Mailbox,
    OtherResponse,
    Recent,
    SearchResult,
    SelectResult,
    UidSet,
    Update,
    Vanished,
)

__all__ = [
    "AppendResult",
    "Bye",
    "ClientOptions",
    "Exists",
    "Expunge",
    "ExpungeResult",
    "FetchResult",
    "FetchedMessage",
    "ImapAuthError",
    "ImapByeError",
    "ImapClient",
    "ImapCommandError",
    "ImapConnectionError",
    "ImapError",
    "ImapProtocolError",
    "ImapStateError",
    "ImapTimeoutError",
    "Mailbox",
    "OtherResponse",
    "Qresync",
    "Recent",
    "SearchResult",
    "SelectResult",
    "UidSet",
    "Update",
    "Vanished",
]
