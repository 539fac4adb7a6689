"""msgraph-sdk clients for Graph accounts, pointed at ``microsoft.graph_url``.

One httpx client (with msgraph's retry middleware, which honours ``Retry-After`` on 429)
serves every account; each account gets a cheap :class:`GraphServiceClient` whose bearer
tokens come from the :class:`~relay.auth.tokens.TokenManager` (a shared mailbox resolves to
its main account's Graph token).

Every request asks for immutable ids (``Prefer: IdType="ImmutableId"``): a message keeps
its id when it moves between folders, which is how a move is told from a delete. Every
response's ``Date`` tells Graph's time; subscription expiries are planned on it, so a skewed
local clock neither renews too late nor asks for an expiry Graph refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import structlog

# kiota warns about its own deprecated request configuration classes when msgraph's
# request builders are first imported.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import msgraph
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from kiota_abstractions.serialization import Parsable
    from kiota_serialization_json.json_serialization_writer import JsonSerializationWriter
    from msgraph.graph_request_adapter import GraphRequestAdapter
    from msgraph.graph_request_adapter import options as graph_options
    from msgraph.graph_service_client import GraphServiceClient
    from msgraph_core import GraphClientFactory  # type: ignore[import-untyped]

from relay.config import MicrosoftSettings
from relay.errors import NotFound

__all__ = ["IMMUTABLE_IDS", "GraphClients", "TokenSource", "gather_all", "to_json", "warm"]

log = structlog.get_logger(__name__)

# (account) -> (user, access token) for the Graph resource.
TokenSource = Callable[[str], Awaitable[tuple[str, str]]]

_T = TypeVar("_T")
IMMUTABLE_IDS = 'IdType="ImmutableId"'
# A Date header has whole seconds: smaller differences are not skew.
_SKEW_FLOOR_MS = 2000

# The request builders the backend reaches; msgraph-sdk would import them on first use.
_BUILDERS = (
    "generated/me/me_request_builder.py",
    "generated/me/mail_folders",
    "generated/users/users_request_builder.py",
    "generated/users/item/user_item_request_builder.py",
    "generated/users/item/mail_folders",
    "generated/users/item/messages",
    "generated/subscriptions",
    "generated/models/message.py",
    "generated/models/subscription.py",
)


def warm() -> int:
    """Import the request builders the backend uses; returns how many modules were loaded.

    The first Graph request would otherwise import ~1,250 modules on the event loop (about
    a second); this runs in a thread at start-up instead.
    """
    root = Path(msgraph.__file__).parent
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for entry in _BUILDERS:
            base = root / entry
            files = [base] if base.suffix == ".py" else sorted(base.rglob("*.py"))
            for path in files:
                if path.name == "__init__.py" or not path.exists():
                    continue
                parts = path.relative_to(root).with_suffix("").parts
                importlib.import_module(".".join(("msgraph", *parts)))
                count += 1
    return count


async def gather_all(calls: Iterable[Awaitable[_T]]) -> list[_T]:
    """Run ``calls`` together; the first failure cancels the others and is raised as is.

    (``asyncio.gather`` leaves the others running, so a throttled mailbox would still get
    their requests; ``TaskGroup`` would wrap the failure in an ``ExceptionGroup``.)
    """
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def to_json(value: Parsable) -> dict[str, Any]:
    """A msgraph model as Graph's JSON (property names as Graph spells them)."""
    writer = JsonSerializationWriter()
    writer.write_object_value(None, value)
    out = json.loads(writer.get_serialized_content())
    return dict(out) if isinstance(out, dict) else {}


class _Tokens(AccessTokenProvider):
    """Hands msgraph-sdk the account's current Graph token; remembers the last one."""

    def __init__(self, account: str, source: TokenSource) -> None:
        self.account = account
        self.source = source
        self.user: str | None = None
        self.last: str | None = None

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        """The account's Graph token (refreshed by the token manager when due)."""
        try:
            self.user, self.last = await self.source(self.account)
        except NotFound:
            # The account was just deleted: its last token still deletes its subscription.
            if self.last is None:
                raise
        return self.last

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        """Every host: ``graph_url`` decides where requests go."""
        return AllowedHostsValidator([])


class AccountClient:
    """One account's Graph client and the user its token acts for."""

    def __init__(self, account: str, service: GraphServiceClient, tokens: _Tokens) -> None:
        self.account = account
        self.service = service
        self._tokens = tokens

    async def user(self) -> str:
        """The mailbox address the account reads (``/users/{user}``)."""
        if self._tokens.user is None:
            await self._tokens.get_authorization_token("")
        assert self._tokens.user is not None
        return self._tokens.user

    @property
    def last_token(self) -> str | None:
        """The last token handed out: what can still delete a deleted account's subscription."""
        return self._tokens.last


class GraphClients:
    """Factory of per-account Graph clients sharing one HTTP client."""

    def __init__(
        self,
        settings: MicrosoftSettings,
        tokens: TokenSource,
        reject: Callable[[str], None] | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        """Nothing is opened until :meth:`start`; ``reject(token)`` is told of a token Graph
        refused (401) so that the next one is fresh; ``timeout``: seconds one request may
        take (httpx's connect, read, write and pool timeouts)."""
        self.settings = settings
        self.timeout = timeout
        self.reject = reject or (lambda token: None)
        self.base_url = settings.graph_url.rstrip("/") + "/v1.0"
        self._tokens = tokens
        self._http: httpx.AsyncClient | None = None
        self._transport: httpx.AsyncHTTPTransport | None = None
        # Graph's clock minus ours, from the last response's Date header.
        self.skew_ms = 0

    def server_ms(self) -> int:
        """Graph's current time in epoch milliseconds, as far as its responses tell."""
        return int(time.time() * 1000) + self.skew_ms

    async def _on_response(self, response: httpx.Response) -> None:
        value = response.headers.get("date")
        if not value:
            return
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            skew = int((parsedate_to_datetime(value).timestamp() - time.time()) * 1000)
            self.skew_ms = skew if abs(skew) >= _SKEW_FLOOR_MS else 0

    async def start(self) -> None:
        """Build the TLS context and the HTTP client; warm msgraph-sdk in a thread."""
        bundle = self.settings.ca_bundle

        def context() -> ssl.SSLContext:
            return ssl.create_default_context(cafile=bundle or None)

        verify, loaded = await asyncio.gather(asyncio.to_thread(context), asyncio.to_thread(warm))
        log.debug("msgraph-sdk warmed", modules=loaded)
        self._transport = httpx.AsyncHTTPTransport(verify=verify)
        self._http = GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(
                transport=self._transport,
                timeout=self.timeout,
                headers={"Prefer": IMMUTABLE_IDS},
                event_hooks={"response": [self._on_response]},
            ),
            options=graph_options,
        )

    def for_account(self, account: str) -> AccountClient:
        """A Graph client acting for ``account``."""
        assert self._http is not None, "GraphClients not started"
        tokens = _Tokens(account, self._tokens)
        adapter = GraphRequestAdapter(
            BaseBearerTokenAuthenticationProvider(tokens), client=self._http
        )
        adapter.base_url = self.base_url
        return AccountClient(account, GraphServiceClient(request_adapter=adapter), tokens)

    async def close(self) -> None:
        """Close the HTTP client and its transport (msgraph's wrapper leaves it open)."""
        if self._http is not None:
            await self._http.aclose()
        if self._transport is not None:
            await self._transport.aclose()
        self._http = self._transport = None
