"""Where and as whom a listener logs in: server endpoint and credentials of an account.

Everything is read fresh from the store at every connect, so a changed password or token
takes effect on the next reconnect without restarting anything.

Credentials, in order of preference:

1. ``imap.auth.user`` + ``imap.auth.pass`` -> LOGIN;
2. ``imap.auth.user`` + ``imap.auth.accessToken`` -> XOAUTH2 with that static token;
3. an OAuth2 account (``oauth2`` settings, or a shared mailbox with ``delegatedAccount``) ->
   XOAUTH2 with the user and token a :class:`TokenProvider` returns.

The default provider, :class:`StoredTokens`, hands out the stored ``oauth2.accessToken`` of
the *root* of the delegation chain: a shared mailbox logs in as its ``delegatedUser`` with
the main account's token (how Exchange Online opens shared mailboxes over IMAP). A provider
that refreshes tokens plugs in through the same call signature.

:func:`log_in` connects and logs in for every IMAP user of an account (IDLE listeners, the
connection pool): a token from the provider that the server refuses is rejected and one
fresh token is tried before the refusal counts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from relay.auth.crypto import Cipher
from relay.errors import AuthError, NotFound
from relay.imap.client import ClientOptions, ImapClient
from relay.imap.errors import ImapAuthError
from relay.imap.parse import Update
from relay.imap.tls import TlsContexts
from relay.log import protocol_log
from relay.store import Store
from relay.store import accounts as accounts_store

__all__ = [
    "Credentials",
    "Endpoint",
    "StoredTokens",
    "TokenProvider",
    "account_secrets",
    "log_in",
    "resolve",
]

log = structlog.get_logger(__name__)

DEFAULT_HOST = "outlook.office365.com"
DEFAULT_PORT = 993


class TokenProvider(Protocol):
    """``async def token_for(account_row) -> (user, access_token)`` for XOAUTH2.

    Raise :class:`relay.errors.AuthError` when no token can be had (the account then goes to
    ``authenticationError``); :class:`relay.errors.TokenRefreshFailed` for a transient
    failure.
    """

    async def __call__(self, account: Mapping[Any, Any]) -> tuple[str, str]: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The IMAP server of an account, and how the account reaches it."""

    host: str
    port: int
    secure: bool
    verify: bool
    # The account's ``proxy`` URL (relay.proxy), and its ``logs`` setting (relay.log).
    proxy: str | None = field(default=None, repr=False)
    logs: bool = False
    account: str = ""

    async def connect(
        self,
        tls: TlsContexts,
        options: ClientOptions,
        on_update: Callable[[Update], None] | None = None,
    ) -> ImapClient:
        """A new connection to this server (TLS with the shared context when ``secure``)."""
        return await ImapClient.connect(
            self.host,
            self.port,
            ssl=tls.get(self.verify) if self.secure else None,
            options=options,
            on_update=on_update,
            proxy=self.proxy,
            trace=protocol_log("imap", self.account) if self.logs else None,
        )


@dataclass(frozen=True, slots=True)
class Credentials:
    """How to log in: ``login`` (password) or ``xoauth2`` (bearer token)."""

    method: Literal["login", "xoauth2"]
    user: str
    secret: str = field(repr=False)
    # The token came from the token provider, which can hand out another one.
    refreshable: bool = False

    async def log_in(self, client: ImapClient) -> None:
        """LOGIN or AUTHENTICATE XOAUTH2 on ``client``; ImapAuthError when refused."""
        if self.method == "login":
            await client.login(self.user, self.secret)
        else:
            await client.authenticate_xoauth2(self.user, self.secret)


def account_secrets(cipher: Cipher, row: Mapping[Any, Any]) -> dict[str, str]:
    """The decrypted secrets of an account row (``{"imap.auth.pass": ...}``)."""
    if row["secrets"] is None:
        return {}
    value = cipher.decrypt_json(row["secrets"], context=f"accounts/{row['id']}/secrets")
    return {str(k): str(v) for k, v in dict(value).items()}


def _section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    return dict(value) if isinstance(value, dict) else {}


class StoredTokens:
    """The default :class:`TokenProvider`: the stored access token of the chain's root account."""

    def __init__(self, store: Store, cipher: Cipher) -> None:
        self._store = store
        self._cipher = cipher

    async def __call__(self, account: Mapping[Any, Any]) -> tuple[str, str]:
        async with self._store.read() as conn:
            chain = await accounts_store.delegation_chain(conn, str(account["id"]))
            root = await accounts_store.get(conn, chain[-1])
        if root is None:
            raise AuthError(f"delegated account {chain[-1]!r} does not exist")
        token = account_secrets(self._cipher, root).get("oauth2.accessToken")
        if not token:
            raise AuthError(f"account {root['id']!r} has no OAuth2 access token stored")
        if account["delegated_account"]:
            user = str(account["delegated_user"] or account["email"])
        else:
            auth = _section(_section(account["config"], "oauth2"), "auth")
            user = str(auth.get("user") or account["email"])
        return user, token


async def resolve(
    store: Store,
    cipher: Cipher,
    token_for: TokenProvider,
    account: str,
    *,
    row: Mapping[Any, Any] | None = None,
) -> tuple[Endpoint, Credentials]:
    """Read ``account`` (or use ``row``, just read by the caller) and return its server and
    credentials.

    Raises :class:`NotFound` when the account is gone and :class:`AuthError` when it has no
    usable credentials. A shared mailbox without its own ``imap`` settings uses the server
    of the account it delegates to.
    """
    if row is None:
        async with store.read() as conn:
            row = await accounts_store.get(conn, account)
    if row is None:
        raise NotFound(f"account {account!r} not found")
    server_row = row
    if not _section(row["config"], "imap").get("host") and row["delegated_account"]:
        async with store.read() as conn:
            chain = await accounts_store.delegation_chain(conn, account)
            for link in chain[1:]:
                candidate = await accounts_store.get(conn, link)
                if candidate is not None and _section(candidate["config"], "imap").get("host"):
                    server_row = candidate
                    break
    imap = _section(row["config"], "imap")
    server = _section(server_row["config"], "imap")
    tls = _section(server, "tls")
    secrets = account_secrets(cipher, row)
    endpoint = Endpoint(
        host=str(server.get("host") or DEFAULT_HOST),
        port=int(server.get("port") or DEFAULT_PORT),
        secure=bool(server.get("secure", True)),
        verify=bool(tls.get("rejectUnauthorized", True)),
        proxy=secrets.get("proxy"),
        logs=bool(row["config"].get("logs")) if isinstance(row["config"], dict) else False,
        account=str(row["id"]),
    )
    auth = _section(imap, "auth")
    user = auth.get("user")
    if user and secrets.get("imap.auth.pass"):
        return endpoint, Credentials("login", str(user), secrets["imap.auth.pass"])
    if user and secrets.get("imap.auth.accessToken"):
        return endpoint, Credentials("xoauth2", str(user), secrets["imap.auth.accessToken"])
    if row["delegated_account"] or row["oauth2_app"] or _section(row["config"], "oauth2"):
        login, token = await token_for(row)
        return endpoint, Credentials("xoauth2", login, token, refreshable=True)
    raise AuthError(f"account {account!r} has no IMAP credentials")


async def log_in(
    connect: Callable[[Endpoint], Awaitable[ImapClient]],
    credentials: Callable[[], Awaitable[tuple[Endpoint, Credentials]]],
    reject: Callable[[str], None],
) -> tuple[ImapClient, Credentials]:
    """Connect (``connect``) and log in with ``credentials()``, read afresh for each try.

    A server may refuse an OAuth2 token the relay still takes for valid (revoked early,
    its clock ahead of ours): such a token is rejected (``reject(token)``: the token manager
    refreshes it on the next request) and the login is tried once more, on a new connection
    with the fresh token. Raises :class:`~relay.imap.errors.ImapAuthError` when that is
    refused too, or at once when a password or a token given as it is is refused.
    """
    for attempt in (1, 2):
        endpoint, creds = await credentials()
        client = await connect(endpoint)
        try:
            await creds.log_in(client)
        except ImapAuthError as exc:
            client.discard()
            if not creds.refreshable or attempt == 2:
                raise
            reject(creds.secret)
            log.info(
                "the IMAP server refused the access token; refreshing",
                account=endpoint.account,
                user=creds.user,
                error=exc.text,
            )
            continue
        except BaseException:
            client.discard()
            raise
        return client, creds
    raise AssertionError("unreachable")
