"""The real msgraph-sdk against the sandbox: what the relay's Graph backend will do."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from azure.identity.aio import ClientSecretCredential

# kiota warns about its own deprecated GetQueryParameters when msgraph's request builders
# are first imported; pytest turns warnings into errors.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import msgraph
    from kiota_abstractions.api_error import APIError
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph.generated.models.body_type import BodyType
    from msgraph.generated.models.email_address import EmailAddress
    from msgraph.generated.models.item_body import ItemBody
    from msgraph.generated.models.message import Message
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.models.recipient import Recipient
    from msgraph.generated.models.subscription import Subscription
    from msgraph.generated.users.item.messages.item.move.move_post_request_body import (
        MovePostRequestBody,
    )
    from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
        SendMailPostRequestBody,
    )
    from msgraph.graph_request_adapter import GraphRequestAdapter
    from msgraph.graph_request_adapter import options as graph_options
    from msgraph.graph_service_client import GraphServiceClient
    from msgraph_core import GraphClientFactory  # type: ignore[import-untyped]

from relay.sandbox.server import RunningSandbox

from .graph_helpers import MAIN, SHARED, Receiver, admin, deliver, mint

Client = Callable[[str], Awaitable[GraphServiceClient]]

# The request builders these tests reach; msgraph-sdk imports them on first use.
_BUILDERS = (
    "generated/users/users_request_builder.py",
    "generated/users/item/user_item_request_builder.py",
    "generated/users/item/mail_folders",
    "generated/users/item/messages",
    "generated/users/item/send_mail",
    "generated/subscriptions",
)


@pytest.fixture(scope="module", autouse=True)
def _warm_msgraph() -> None:
    """Import the request builders up front, as the relay does at start-up.

    Each of them warns about deprecated request configuration classes when imported, and
    pytest turns warnings into errors; importing them here also keeps ~130 imports off the
    event loop of the first test.
    """
    root = Path(msgraph.__file__).parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for entry in _BUILDERS:
            base = root / entry
            files = [base] if base.suffix == ".py" else sorted(base.rglob("*.py"))
            for path in files:
                if path.name != "__init__.py":
                    parts = path.relative_to(root).with_suffix("").parts
                    importlib.import_module(".".join(("msgraph", *parts)))


class StaticToken(AccessTokenProvider):
    """Hands msgraph-sdk one access token (the relay's token cache does this for real)."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        """The token, whatever the URL."""
        return self.token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        """Any host: the sandbox runs on a loopback address."""
        return AllowedHostsValidator([])


async def _http_client(
    sandbox: RunningSandbox,
) -> tuple[httpx.AsyncClient, httpx.AsyncHTTPTransport]:
    """httpx with the sandbox CA, wrapped in msgraph's middleware (retry, redirect, /me).

    Also returns the transport: msgraph-core's wrapper does not close it on ``aclose()``.
    """
    context = await asyncio.to_thread(ssl.create_default_context, cafile=str(sandbox.ca_path))
    transport = httpx.AsyncHTTPTransport(verify=context)
    http_client = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(transport=transport, timeout=30.0), options=graph_options
    )
    return http_client, transport


def _service(
    http_client: httpx.AsyncClient, sandbox: RunningSandbox, auth: Any
) -> GraphServiceClient:
    adapter = GraphRequestAdapter(auth, client=http_client)
    adapter.base_url = f"{sandbox.url}/v1.0"
    return GraphServiceClient(request_adapter=adapter)


@pytest.fixture
async def sdk(sandbox: RunningSandbox) -> AsyncIterator[Client]:
    """Factory of msgraph-sdk clients bound to a bearer token, pointed at the sandbox."""
    clients: list[tuple[httpx.AsyncClient, httpx.AsyncHTTPTransport]] = []

    async def make(token: str) -> GraphServiceClient:
        http_client, transport = await _http_client(sandbox)
        clients.append((http_client, transport))
        auth = BaseBearerTokenAuthenticationProvider(StaticToken(token))
        return _service(http_client, sandbox, auth)

    yield make
    for http_client, transport in clients:
        await http_client.aclose()
        await transport.aclose()


@pytest.fixture
async def client(sdk: Client, sandbox: RunningSandbox) -> GraphServiceClient:
    """msgraph-sdk with main@example.com's delegated token (the relay's scopes)."""
    return await sdk(mint(sandbox))


async def test_sdk_lists_folders_and_reads_messages(
    client: GraphServiceClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """mail_folders.get and messages.by_message_id work on the own and a shared mailbox."""
    delivered = await deliver(http, sandbox, mailbox=SHARED, subject="For the team")

    folders = await client.me.mail_folders.get()
    shared = client.users.by_user_id(SHARED)
    listed = await shared.mail_folders.by_mail_folder_id("inbox").messages.get()
    message = await shared.messages.by_message_id(delivered["id"]).get()

    assert folders is not None
    assert folders.value is not None
    assert [f.display_name for f in folders.value] == [
        "Inbox",
        "Sent Items",
        "Drafts",
        "Deleted Items",
        "Junk Email",
        "Archive",
    ]
    assert listed is not None
    assert listed.value is not None
    assert [m.subject for m in listed.value] == ["For the team"]
    assert message is not None
    assert message.subject == "For the team"
    assert message.from_ is not None
    assert message.from_.email_address is not None
    assert message.from_.email_address.address == "alice@example.net"
    assert message.is_read is False
    assert message.received_date_time is not None


async def test_sdk_delta_pages_and_delta_link(
    client: GraphServiceClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """delta() pages with odata.maxpagesize, then the deltaLink brings only the changes."""
    first = [await deliver(http, sandbox, mailbox=SHARED, subject=f"m{n}") for n in range(3)]
    builder = client.users.by_user_id(SHARED).mail_folders.by_mail_folder_id("inbox")
    config: RequestConfiguration[Any] = RequestConfiguration()
    config.headers.add("Prefer", "odata.maxpagesize=2")

    page = await builder.messages.delta.get(request_configuration=config)
    assert page is not None
    assert page.value is not None
    seen = [m.id for m in page.value]
    assert page.odata_next_link is not None
    page = await builder.messages.delta.with_url(page.odata_next_link).get()
    assert page is not None
    assert page.value is not None
    seen += [m.id for m in page.value]
    delta_link = page.odata_delta_link
    assert delta_link is not None
    await client.users.by_user_id(SHARED).messages.by_message_id(first[0]["id"]).delete()
    new = await deliver(http, sandbox, mailbox=SHARED, subject="new")
    changes = await builder.messages.delta.with_url(delta_link).get()

    assert seen == [m["id"] for m in first]
    assert changes is not None
    assert changes.value is not None
    removed = [m.id for m in changes.value if m.additional_data.get("@removed")]
    added = [m.id for m in changes.value if not m.additional_data.get("@removed")]
    assert removed == [first[0]["id"]]
    assert added == [new["id"]]


async def test_sdk_expired_delta_link_raises_410(
    client: GraphServiceClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """An expired deltaLink raises ODataError 410 with the error code."""
    builder = client.me.mail_folders.by_mail_folder_id("inbox").messages.delta
    page = await builder.get()
    assert page is not None
    assert page.odata_delta_link is not None
    await admin(http, sandbox, "POST", f"mailboxes/{MAIN}/folders/inbox/expire-delta")

    with pytest.raises(ODataError) as raised:
        await builder.with_url(page.odata_delta_link).get()

    assert raised.value.response_status_code == 410
    assert raised.value.error is not None
    assert raised.value.error.code == "syncStateNotFound"


def _send_body(sender: str) -> SendMailPostRequestBody:
    return SendMailPostRequestBody(
        message=Message(
            subject="Your order",
            body=ItemBody(content_type=BodyType.Text, content="Shipped today."),
            to_recipients=[Recipient(email_address=EmailAddress(address="buyer@example.net"))],
            from_=Recipient(email_address=EmailAddress(address=sender)),
        ),
        save_to_sent_items=True,
    )


async def test_sdk_send_mail_as_shared(client: GraphServiceClient, sandbox: RunningSandbox) -> None:
    """send_mail.post as the shared mailbox (PascalCase body) lands in its Sent Items."""
    await client.users.by_user_id(SHARED).send_mail.post(_send_body(SHARED))

    sent = sandbox.state.mail.folder(SHARED, "sentitems").messages.values()
    assert [(m.subject, m.from_.address if m.from_ else None) for m in sent] == [
        ("Your order", SHARED)
    ]


async def test_sdk_send_mail_without_send_as_is_denied(
    client: GraphServiceClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Without Send As the SDK raises ODataError 403 ErrorSendAsDenied."""
    await admin(http, sandbox, "POST", "grants", {"user": MAIN, "mailbox": SHARED})

    with pytest.raises(ODataError) as raised:
        await client.users.by_user_id(SHARED).send_mail.post(_send_body(SHARED))

    assert raised.value.response_status_code == 403
    assert raised.value.error is not None
    assert raised.value.error.code == "ErrorSendAsDenied"
    assert sandbox.state.mail.folder(SHARED, "sentitems").messages == {}


async def test_sdk_patch_and_move(
    client: GraphServiceClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """PATCH isRead and move through the SDK; move returns the message with a new id."""
    delivered = await deliver(http, sandbox, mailbox=SHARED)
    messages = client.users.by_user_id(SHARED).messages

    patched = await messages.by_message_id(delivered["id"]).patch(Message(is_read=True))
    moved = await messages.by_message_id(delivered["id"]).move.post(
        MovePostRequestBody(destination_id="deleteditems")
    )

    assert patched is not None
    assert patched.is_read is True
    assert moved is not None
    assert moved.id != delivered["id"]
    deleted_items = sandbox.state.mail.folder(SHARED, "deleteditems")
    assert moved.parent_folder_id == deleted_items.id
    assert list(deleted_items.messages) == [moved.id]


def _prefer(*preferences: str) -> RequestConfiguration[Any]:
    config: RequestConfiguration[Any] = RequestConfiguration()
    for preference in preferences:
        config.headers.add("Prefer", preference)
    return config


async def test_sdk_immutable_ids_with_the_prefer_header(
    client: GraphServiceClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """With Prefer: IdType="ImmutableId" a message keeps its id across a move and in delta."""
    delivered = await deliver(http, sandbox, mailbox=SHARED)
    messages = client.users.by_user_id(SHARED).messages
    immutable = _prefer('IdType="ImmutableId"')

    seen = await messages.by_message_id(delivered["id"]).get(request_configuration=immutable)
    moved = await messages.by_message_id(delivered["immutableId"]).move.post(
        MovePostRequestBody(destination_id="archive"), request_configuration=immutable
    )
    archive = client.users.by_user_id(SHARED).mail_folders.by_mail_folder_id("archive")
    page = await archive.messages.delta.get(
        request_configuration=_prefer("odata.maxpagesize=1", 'IdType="ImmutableId"')
    )
    plain = await messages.by_message_id(delivered["immutableId"]).get()

    assert seen is not None
    assert moved is not None
    assert seen.id == moved.id == delivered["immutableId"]
    assert page is not None
    assert page.value is not None
    assert [m.id for m in page.value] == [delivered["immutableId"]]
    assert plain is not None
    assert plain.id not in (delivered["id"], delivered["immutableId"])
    assert plain.id in sandbox.state.mail.folder(SHARED, "archive").messages


async def test_sdk_draft_sent_is_found_by_its_immutable_id(
    client: GraphServiceClient, sandbox: RunningSandbox
) -> None:
    """Microsoft's recipe: create a draft with immutable ids, send it, get the sent copy."""
    messages = client.users.by_user_id(SHARED).messages
    immutable = _prefer('IdType="ImmutableId"')

    draft = await messages.post(
        Message(
            subject="Your order",
            body=ItemBody(content_type=BodyType.Text, content="Shipped today."),
            to_recipients=[Recipient(email_address=EmailAddress(address=MAIN))],
        ),
        request_configuration=immutable,
    )
    assert draft is not None
    assert draft.id is not None
    await messages.by_message_id(draft.id).send.post()
    sent = await messages.by_message_id(draft.id).get(request_configuration=immutable)

    assert draft.is_draft is True
    assert sent is not None
    assert (sent.id, sent.is_draft) == (draft.id, False)
    assert sent.parent_folder_id == sandbox.state.mail.folder(SHARED, "sentitems").id
    assert sent.sent_date_time is not None
    inbox = sandbox.state.mail.folder(MAIN, "inbox").messages.values()
    assert [m.subject for m in inbox] == ["Your order"]


async def test_sdk_subscription_create_renew_delete(
    client: GraphServiceClient, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Create (handshake answered correctly), renew and delete a subscription via the SDK."""
    soon = datetime.fromtimestamp(sandbox.state.now(), UTC) + timedelta(hours=1)

    created = await client.subscriptions.post(
        Subscription(
            change_type="created,updated,deleted",
            notification_url=receiver.url,
            lifecycle_notification_url=receiver.url,
            resource="me/mailFolders('Inbox')/messages",
            expiration_date_time=soon,
            client_state="relay-state",
        )
    )
    assert created is not None
    assert created.id is not None
    renewed = await client.subscriptions.by_subscription_id(created.id).patch(
        Subscription(expiration_date_time=soon + timedelta(days=6))
    )
    await client.subscriptions.by_subscription_id(created.id).delete()

    assert len(receiver.validations) == 1
    assert created.client_state == "relay-state"
    assert renewed is not None
    assert renewed.expiration_date_time is not None
    assert renewed.expiration_date_time > soon + timedelta(days=5)
    assert sandbox.state.subscriptions == {}


async def test_sdk_subscription_with_a_wrong_handshake_fails(
    client: GraphServiceClient, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """A receiver that echoes the still-encoded token makes the SDK raise 400 ValidationError."""
    receiver.validation = "raw"

    with pytest.raises(ODataError) as raised:
        await client.subscriptions.post(
            Subscription(
                change_type="created",
                notification_url=receiver.url,
                resource="me/messages",
                expiration_date_time=datetime.now(UTC) + timedelta(hours=1),
            )
        )

    assert raised.value.response_status_code == 400
    assert raised.value.error is not None
    assert raised.value.error.code == "ValidationError"


async def test_sdk_with_azure_identity_app_only(
    sandbox: RunningSandbox,
    http: aiohttp.ClientSession,
    receivers: Callable[[], Awaitable[Receiver]],
) -> None:
    """azure-identity's app-only token through the SDK subscribes to the shared mailbox."""
    assert sandbox.seed is not None
    receiver = await receivers()
    credential = ClientSecretCredential(
        sandbox.seed.tenant_id,
        sandbox.seed.client_id,
        sandbox.seed.client_secret,
        authority=sandbox.url,
        connection_verify=str(sandbox.ca_path),
    )
    http_client, transport = await _http_client(sandbox)
    auth = AzureIdentityAuthenticationProvider(
        credential, scopes=["https://graph.microsoft.com/.default"]
    )
    service = _service(http_client, sandbox, auth)
    try:
        created = await service.subscriptions.post(
            Subscription(
                change_type="created",
                notification_url=receiver.url,
                resource=f"users/{SHARED}/mailFolders('inbox')/messages",
                expiration_date_time=datetime.now(UTC) + timedelta(hours=1),
                client_state="app-only",
            )
        )
        await deliver(http, sandbox, mailbox=SHARED)
        async with asyncio.timeout(5):
            await sandbox.notifier.settle()
    finally:
        await http_client.aclose()
        await transport.aclose()
        await credential.close()

    assert created is not None
    [note] = receiver.notifications
    assert (note["subscriptionId"], note["clientState"]) == (created.id, "app-only")


async def test_sdk_sees_401_for_a_foreign_token(sdk: Client, sandbox: RunningSandbox) -> None:
    """A token the sandbox did not issue raises 401 InvalidAuthenticationToken."""
    client = await sdk("eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.c2ln")

    with pytest.raises(APIError) as raised:
        await client.me.mail_folders.get()

    assert raised.value.response_status_code == 401


async def test_sdk_retry_handler_waits_retry_after_then_succeeds(
    client: GraphServiceClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Two throttled answers: msgraph's retry handler waits Retry-After before each retry
    and the call succeeds; the caller sees only the answer."""
    await deliver(http, sandbox, mailbox=SHARED, subject="after the wait")
    await admin(
        http, sandbox, "POST", f"mailboxes/{SHARED}/throttle", {"requests": 2, "retryAfter": 1}
    )

    inbox = client.users.by_user_id(SHARED).mail_folders.by_mail_folder_id("inbox")
    listed = await inbox.messages.get()
    recorded = await admin(http, sandbox, "GET", f"mailboxes/{SHARED}/requests")

    assert listed is not None
    assert listed.value is not None
    assert [m.subject for m in listed.value] == ["after the wait"]
    assert [r["status"] for r in recorded] == [429, 429, 200]
    gaps = [later["time"] - earlier["time"] for earlier, later in itertools.pairwise(recorded)]
    # Clock readings of two processes' requests: a few milliseconds of slack.
    assert min(gaps) >= 1 - 0.02, gaps


async def test_sdk_gives_up_after_its_retries_with_the_429(
    client: GraphServiceClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Throttled for longer than its three retries, the SDK raises ODataError 429 with the
    error code and the Retry-After header, after four requests."""
    await admin(
        http, sandbox, "POST", f"mailboxes/{SHARED}/throttle", {"requests": 10, "retryAfter": 1}
    )

    with pytest.raises(ODataError) as raised:
        await client.users.by_user_id(SHARED).mail_folders.get()

    recorded = await admin(http, sandbox, "GET", f"mailboxes/{SHARED}/requests")
    assert raised.value.response_status_code == 429
    assert raised.value.error is not None
    assert raised.value.error.code == "ApplicationThrottled"
    assert raised.value.response_headers is not None
    assert raised.value.response_headers.get("retry-after") == "1"
    assert [r["status"] for r in recorded] == [429] * 4
