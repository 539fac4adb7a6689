"""A ready demo tenant: a user, a shared mailbox they may use, and an app for the relay."""

from __future__ import annotations

from dataclasses import dataclass

from relay.sandbox.scopes import GRAPH, OUTLOOK
from relay.sandbox.state import SandboxState

# Demo credentials, printed at start by design: the sandbox holds nothing real.
MAIN_USER = "main@example.com"
MAIN_PASSWORD = "sandbox-password"  # noqa: S105
SHARED_MAILBOX = "shared@example.com"
CLIENT_ID = "3f1c5a9e-7d42-4e0b-9c6a-2b8d1e4f7a01"
CLIENT_SECRET = "sandbox-client-secret"  # noqa: S105
REDIRECT_URI = "http://127.0.0.1:3000/oauth"


@dataclass(frozen=True)
class SeedInfo:
    """What the seed created, for printing and for tests."""

    tenant_id: str
    main_user: str
    main_password: str
    shared_mailbox: str
    client_id: str
    client_secret: str
    redirect_uri: str


def seed_demo_tenant(state: SandboxState) -> SeedInfo:
    """Create the demo tenant in ``state``.

    ``main@example.com`` may open ``shared@example.com`` and send as it; the app accepts the
    relay's default redirect URI and holds the application permissions an app-only
    (``outlookService``) account needs.
    """
    state.add_user(MAIN_USER, password=MAIN_PASSWORD, display_name="Main User")
    state.add_user(SHARED_MAILBOX, password=None, display_name="Shared Mailbox", shared=True)
    state.set_grant(MAIN_USER, SHARED_MAILBOX, send_as=True)
    state.add_app(
        CLIENT_ID,
        CLIENT_SECRET,
        [REDIRECT_URI],
        display_name="mailrelay (sandbox)",
        app_permissions={
            GRAPH: frozenset({"Mail.ReadWrite", "Mail.Send", "User.Read.All"}),
            OUTLOOK: frozenset({"IMAP.AccessAsApp", "SMTP.SendAsApp"}),
        },
    )
    return SeedInfo(
        tenant_id=state.tenant_id,
        main_user=MAIN_USER,
        main_password=MAIN_PASSWORD,
        shared_mailbox=SHARED_MAILBOX,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,
    )
