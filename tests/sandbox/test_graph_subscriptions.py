"""Graph subscriptions: creation rules, validation handshake, renew, delete, reauthorize."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.sandbox.graph.notifier import NotifierSettings
from relay.sandbox.graph.subscriptions import Subscription
from relay.sandbox.server import RunningSandbox, start_sandbox
from relay.sandbox.signing import Signer
from relay.sandbox.state import SandboxState

from .graph_helpers import (
    INBOX_RESOURCE,
    MAIN,
    SHARED,
    Graph,
    Receiver,
    admin,
    app_only,
    expires_in,
    mint,
    subscription_body,
)

INBOX = INBOX_RESOURCE


def _in(sandbox: RunningSandbox, minutes: float) -> str:
    return expires_in(sandbox, minutes)


def _subscription(sandbox: RunningSandbox, receiver: Receiver, **fields: Any) -> dict[str, Any]:
    return subscription_body(sandbox, receiver.url, **fields)


async def test_create_runs_the_validation_handshake(
    graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Create POSTs an url-encoded validationToken first, then answers 201 with the id."""
    created = await graph.ok("POST", "subscriptions", _subscription(sandbox, receiver))

    [token] = receiver.validations
    assert token.startswith("Validation: Testing client application reachability")
    assert created["id"] in sandbox.state.subscriptions
    assert created["resource"] == INBOX
    assert created["changeType"] == "created,updated,deleted"
    assert created["clientState"] == "secret-state"
    assert created["notificationUrl"] == receiver.url
    assert created["creatorId"] == sandbox.state.users[MAIN].object_id
    assert created["expirationDateTime"].endswith("Z")
    fetched = await graph.ok("GET", f"subscriptions/{created['id']}")
    assert fetched["id"] == created["id"]


@pytest.mark.parametrize(
    ("validation", "message"),
    [
        ("raw", "Response must exactly match validationToken"),
        ("json", "content type of 'text/plain'"),
        ("forbidden", "HTTP status code is 'Forbidden'"),
    ],
)
async def test_a_wrong_handshake_answer_fails_the_create(
    graph: Graph, sandbox: RunningSandbox, receiver: Receiver, validation: str, message: str
) -> None:
    """An encoded token, a non-text answer or a non-200 status is 400 ValidationError."""
    receiver.validation = validation

    status, body = await graph.call("POST", "subscriptions", _subscription(sandbox, receiver))

    assert status == 400
    assert body["error"]["code"] == "ValidationError"
    assert message in body["error"]["message"]
    assert sandbox.state.subscriptions == {}


async def test_a_slow_handshake_times_out(
    graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """No answer within the validation timeout (10 s at Graph) fails the create."""
    sandbox.notifier.settings = dataclasses.replace(
        sandbox.notifier.settings, validation_timeout=0.05
    )
    receiver.validation, receiver.delay = "slow", 0.3

    status, body = await graph.call("POST", "subscriptions", _subscription(sandbox, receiver))

    assert (status, body["error"]["code"]) == (400, "ValidationError")
    assert body["error"]["message"] == "Subscription validation request timed out."


async def test_the_lifecycle_url_is_validated_too(
    graph: Graph,
    sandbox: RunningSandbox,
    receivers: Callable[[], Awaitable[Receiver]],
) -> None:
    """A lifecycleNotificationUrl that fails the handshake fails the create."""
    notify, lifecycle = await receivers(), await receivers()
    lifecycle.validation = "raw"

    status, body = await graph.call(
        "POST",
        "subscriptions",
        _subscription(sandbox, notify, lifecycleNotificationUrl=lifecycle.url),
    )

    assert (status, body["error"]["code"]) == (400, "ValidationError")
    assert len(notify.validations) == len(lifecycle.validations) == 1


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        (
            {"expirationDateTime": "+10071"},
            "ExtensionError",
            "Subscription expiration can only be 10070 minutes in the future.",
        ),
        ({"expirationDateTime": "-1"}, "ExtensionError", "in the future"),
        ({"expirationDateTime": "tomorrow"}, "BadRequest", "Edm.DateTimeOffset"),
        ({"clientState": "x" * 129}, "InvalidRequest", "128 characters"),
        ({"changeType": "created,moved"}, "InvalidRequest", "'moved'"),
        ({"resource": "me/events"}, "InvalidRequest", "not supported"),
        ({"resource": "me/messages?$filter=isRead eq false"}, "InvalidRequest", "not supported"),
        ({"notificationUrl": "http://relay.example.com/graph"}, "ValidationError", "https"),
        ({"lifecycleNotificationUrl": "ftp://127.0.0.1/x"}, "ValidationError", "https"),
    ],
)
async def test_create_rules(
    graph: Graph,
    sandbox: RunningSandbox,
    receiver: Receiver,
    fields: dict[str, Any],
    code: str,
    message: str,
) -> None:
    """Bad expirations, client states, change types, resources and URLs are 400s."""
    expiration = fields.get("expirationDateTime", "")
    if expiration.startswith(("+", "-")):
        fields = {**fields, "expirationDateTime": _in(sandbox, float(expiration))}

    status, body = await graph.call(
        "POST", "subscriptions", _subscription(sandbox, receiver, **fields)
    )

    assert (status, body["error"]["code"]) == (400, code)
    assert message in body["error"]["message"]
    assert receiver.validations == []


async def test_10070_minutes_is_accepted(
    graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """An expiration just inside 10,070 minutes is accepted, with 7 fractional digits too."""
    moment = datetime.fromtimestamp(sandbox.state.now(), UTC) + timedelta(minutes=10069)
    expiration = moment.strftime("%Y-%m-%dT%H:%M:%S.1234567Z")

    created = await graph.ok(
        "POST", "subscriptions", _subscription(sandbox, receiver, expirationDateTime=expiration)
    )

    assert created["expirationDateTime"].startswith(moment.strftime("%Y-%m-%dT%H:%M:%S.123456"))


async def test_https_is_required_unless_http_is_allowed(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """An http loopback URL is refused until the admin flag allows it."""
    await admin(http, sandbox, "POST", "settings", {"allowHttpNotifications": False})
    assert await graph.error("POST", "subscriptions", _subscription(sandbox, receiver)) == (
        400,
        "ValidationError",
    )

    settings = await admin(http, sandbox, "POST", "settings", {"allowHttpNotifications": True})

    assert settings == {"allowHttpNotifications": True}
    await graph.ok("POST", "subscriptions", _subscription(sandbox, receiver))


async def test_delegated_tokens_cannot_watch_a_shared_mailbox(
    graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """A delegated subscription on a shared mailbox is 403, though delta works there."""
    for resource in (f"users/{SHARED}/messages", f"users/{SHARED}/mailFolders('Inbox')/messages"):
        assert await graph.error(
            "POST", "subscriptions", _subscription(sandbox, receiver, resource=resource)
        ) == (403, "ExtensionError")

    await graph.ok("GET", f"users/{SHARED}/mailFolders/inbox/messages/delta")
    assert receiver.validations == []


async def test_app_only_tokens_can_watch_a_shared_mailbox(
    graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """An app-only token with Mail.Read subscribes to any mailbox, by upn or id."""
    shared_id = sandbox.state.users[SHARED].object_id
    token = app_only(sandbox, "Mail.Read")

    by_upn = await graph.ok(
        "POST",
        "subscriptions",
        _subscription(sandbox, receiver, resource=f"users/{SHARED}/messages"),
        token=token,
    )
    by_id = await graph.ok(
        "POST",
        "subscriptions",
        _subscription(sandbox, receiver, resource=f"users/{shared_id}/mailFolders/inbox/messages"),
        token=token,
    )

    assert sandbox.seed is not None
    assert by_upn["creatorId"] == sandbox.state.apps[sandbox.seed.client_id].object_id
    assert sandbox.state.subscriptions[by_id["id"]].folder_id is not None
    assert sandbox.state.subscriptions[by_upn["id"]].folder_id is None
    assert await graph.error(
        "POST", "subscriptions", _subscription(sandbox, receiver), token=token
    ) == (400, "BadRequest")


@pytest.mark.parametrize(
    ("scopes", "roles"),
    [
        (["Mail.ReadWrite.Shared", "Mail.Send"], ()),
        (["Mail.Read.Shared"], ()),
        ([], ("Mail.Send",)),
    ],
)
async def test_subscriptions_need_a_read_permission(
    graph: Graph,
    sandbox: RunningSandbox,
    receiver: Receiver,
    scopes: list[str],
    roles: tuple[str, ...],
) -> None:
    """Only Mail.Read/ReadBasic/ReadWrite (not .Shared, not Send) allow a subscription."""
    token = mint(sandbox, user=None, roles=roles) if roles else mint(sandbox, scopes=scopes)
    resource = f"users/{MAIN}/messages"

    assert await graph.error(
        "POST", "subscriptions", _subscription(sandbox, receiver, resource=resource), token=token
    ) == (403, "ExtensionError")


async def test_one_thousand_subscriptions_per_mailbox(
    graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """The 1,001st active subscription on a mailbox is refused."""
    created = await graph.ok("POST", "subscriptions", _subscription(sandbox, receiver))
    template = sandbox.state.subscriptions[created["id"]]
    for n in range(999):
        copy = dataclasses.replace(template, id=f"copy-{n}")
        sandbox.state.subscriptions[copy.id] = copy

    assert await graph.error("POST", "subscriptions", _subscription(sandbox, receiver)) == (
        403,
        "ExtensionError",
    )
    del sandbox.state.subscriptions["copy-0"]
    await graph.ok("POST", "subscriptions", _subscription(sandbox, receiver))


async def test_renew_delete_and_reauthorize(
    graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """PATCH renews within 10,070 minutes, reauthorize is 204, DELETE is 204 then 404."""
    created = await graph.ok("POST", "subscriptions", _subscription(sandbox, receiver))
    path = f"subscriptions/{created['id']}"
    sub: Subscription = sandbox.state.subscriptions[created["id"]]
    sub.needs_reauthorization = True

    renewed = await graph.ok("PATCH", path, {"ExpirationDateTime": _in(sandbox, 10000)})
    too_far = await graph.error("PATCH", path, {"expirationDateTime": _in(sandbox, 10080)})
    status, _ = await graph.call("POST", f"{path}/reauthorize")

    assert renewed["expirationDateTime"] != created["expirationDateTime"]
    assert sub.expires_at > sandbox.state.now() + 9999 * 60
    assert too_far == (400, "ExtensionError")
    assert status == 204
    assert sub.needs_reauthorization is False
    assert (await graph.call("DELETE", path))[0] == 204
    assert await graph.error("GET", path) == (404, "ResourceNotFound")
    assert await graph.error("DELETE", path) == (404, "ResourceNotFound")


async def test_subscriptions_belong_to_their_app(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Another application neither sees nor renews a subscription; GET lists the app's own."""
    created = await graph.ok("POST", "subscriptions", _subscription(sandbox, receiver))
    await admin(
        http,
        sandbox,
        "POST",
        "apps",
        {"clientId": "other-app", "clientSecret": "s", "redirectUris": ["https://o.example/cb"]},
    )
    state = sandbox.state
    other = state.new_access_token(
        state.apps["other-app"],
        issuer=sandbox.url,
        resource="https://graph.microsoft.com",
        user=state.users[MAIN],
        scopes=["Mail.Read"],
    ).value

    listed = await graph.ok("GET", "subscriptions")
    assert [s["id"] for s in listed["value"]] == [created["id"]]
    assert (await graph.ok("GET", "subscriptions", token=other))["value"] == []
    assert await graph.error("GET", f"subscriptions/{created['id']}", token=other) == (
        404,
        "ResourceNotFound",
    )


async def test_expired_subscriptions_are_gone(
    graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """After expirationDateTime the subscription cannot be read or renewed."""
    body = _subscription(sandbox, receiver, expirationDateTime=_in(sandbox, 5))
    created = await graph.ok("POST", "subscriptions", body)
    sandbox.state.advance_clock(301)
    assert await graph.error("GET", f"subscriptions/{created['id']}") == (404, "ResourceNotFound")


async def test_sandbox_start_options(tmp_path: Path, signer: Signer) -> None:
    """start_sandbox takes notifier settings and the http switch (documented start options)."""
    running = await start_sandbox(
        "127.0.0.1",
        0,
        tmp_path,
        state=SandboxState(signer=signer),
        allow_http_notifications=True,
        notifier_settings=NotifierSettings(validation_timeout=2.0),
    )
    try:
        assert running.state.allow_http_notifications is True
        assert running.notifier.settings.validation_timeout == 2.0
        assert "http notification URLs" in running.summary()
        assert f"RELAY_GRAPH_URL={running.url}\n" in running.summary() + "\n"
    finally:
        await running.close()
