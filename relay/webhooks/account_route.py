"""The route behind an account's own ``webhooks`` URL (EmailEngine's per-account webhook).

An account payload may carry ``webhooks: <url>``: that account's events go there in addition to
the global routes. It is an ordinary route (id ``acct_<hash>``, ``accounts: [id]``) so it gets
the same queue, signatures, retries and delivery log; it is kept in step with the account in
the account's own transaction.
"""

from __future__ import annotations

import hashlib

from sqlalchemy.ext.asyncio import AsyncConnection

from relay.auth.crypto import Cipher
from relay.store import webhook_routes as routes_store
from relay.webhooks.routes import encrypt_headers, secret_context
from relay.webhooks.signing import new_route_secret


def account_route_id(account: str) -> str:
    """A stable route id for ``account`` (ids may be longer than a route id may be)."""
    return "acct_" + hashlib.sha256(account.encode()).hexdigest()[:24]


async def sync_account_route(
    conn: AsyncConnection, cipher: Cipher, account: str, url: str | None
) -> None:
    """Create, point or disable the account's own route to match its ``webhooks`` setting."""
    route_id = account_route_id(account)
    row = await routes_store.get(conn, route_id)
    if url is None:
        if row is not None and row["enabled"]:
            await routes_store.update(
                conn, route_id, {"enabled": 0, "disabled_reason": "the account has no webhooks URL"}
            )
        return
    if row is None:
        await routes_store.insert(
            conn,
            {
                "id": route_id,
                "url": url,
                "description": f"webhooks URL of account {account}",
                "events": ["*"],
                "accounts": [account],
                "headers": encrypt_headers(cipher, route_id, {}),
                "enabled": 1,
                "ordering": "none",
                "retry_schedule": None,
                "secret": cipher.encrypt(
                    new_route_secret().encode(), context=secret_context(route_id)
                ),
            },
        )
    elif row["url"] != url or not row["enabled"]:
        await routes_store.update(
            conn, route_id, {"url": url, "enabled": 1, "disabled_reason": None}
        )
