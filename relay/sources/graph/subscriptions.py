"""Graph change subscriptions of one account: create, renew, reauthorize, delete."""

from __future__ import annotations

import secrets
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from msgraph.generated.models.subscription import Subscription

from relay.sources.graph.client import AccountClient

__all__ = ["MAX_LIFETIME", "Created", "create", "delete", "reauthorize", "renew", "resource_for"]

# Graph rejects message subscriptions that expire more than 10,070 minutes ahead.
MAX_LIFETIME = 10070 * 60.0
CHANGE_TYPES = "created,updated,deleted"


@dataclass(frozen=True, slots=True)
class Created:
    """A subscription Graph accepted."""

    id: str
    resource: str
    client_state: str
    expires_ms: int


def resource_for(user: str, folder: str) -> str:
    """The subscription resource of one folder of ``user``'s mailbox."""
    return f"users/{user}/mailFolders('{folder}')/messages"


def _expiry(lifetime: float, now_ms: int) -> datetime:
    start = datetime.fromtimestamp(now_ms / 1000, UTC)
    return start + timedelta(seconds=min(lifetime, MAX_LIFETIME))


async def create(
    client: AccountClient, *, resource: str, base_url: str, lifetime: float, now_ms: int
) -> Created:
    """Create a subscription; Graph calls ``{base_url}/graph/notify`` to validate it first.

    ``now_ms`` is Graph's time: the expiry is ``lifetime`` seconds after it.
    """
    state = secrets.token_urlsafe(48)
    body = Subscription(
        change_type=CHANGE_TYPES,
        notification_url=f"{base_url}/graph/notify",
        lifecycle_notification_url=f"{base_url}/graph/lifecycle",
        resource=resource,
        expiration_date_time=_expiry(lifetime, now_ms),
        client_state=state,
    )
    made = await client.service.subscriptions.post(body)
    assert made is not None
    assert made.id is not None
    expires = made.expiration_date_time or body.expiration_date_time
    assert expires is not None
    return Created(made.id, resource, state, int(expires.timestamp() * 1000))


async def renew(
    client: AccountClient, subscription_id: str, *, lifetime: float, now_ms: int
) -> int:
    """Push the expiry out to ``lifetime`` after ``now_ms`` (Graph's time); the new expiry."""
    body = Subscription(expiration_date_time=_expiry(lifetime, now_ms))
    made = await client.service.subscriptions.by_subscription_id(subscription_id).patch(body)
    expires = (made.expiration_date_time if made else None) or body.expiration_date_time
    assert expires is not None
    return int(expires.timestamp() * 1000)


async def reauthorize(client: AccountClient, subscription_id: str) -> None:
    """Answer ``reauthorizationRequired`` with a fresh token."""
    await client.service.subscriptions.by_subscription_id(subscription_id).reauthorize.post()


async def delete(client: AccountClient, subscription_id: str) -> None:
    """Delete a subscription (404: already gone)."""
    await client.service.subscriptions.by_subscription_id(subscription_id).delete()
