"""App-only tokens (client credentials) for outlookService accounts, through azure-identity."""

from __future__ import annotations

import aiohttp
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import ClientSecretCredential

from relay.sandbox.server import RunningSandbox


def _credential(sandbox: RunningSandbox, secret: str | None = None) -> ClientSecretCredential:
    assert sandbox.seed is not None
    return ClientSecretCredential(
        sandbox.seed.tenant_id,
        sandbox.seed.client_id,
        secret or sandbox.seed.client_secret,
        authority=sandbox.url,
        connection_verify=str(sandbox.ca_path),
    )


async def test_client_secret_credential_gets_an_app_only_token(sandbox: RunningSandbox) -> None:
    """azure-identity's ClientSecretCredential gets a Graph token carrying the app's roles."""
    async with _credential(sandbox) as credential:
        token = await credential.get_token("https://graph.microsoft.com/.default")

    granted = sandbox.state.introspect(token.token)
    assert granted["active"] is True
    assert granted["user"] is None
    assert granted["resource"] == "https://graph.microsoft.com"
    assert granted["roles"] == ["Mail.ReadWrite", "Mail.Send", "User.Read.All"]
    assert granted["mailboxes"] == ["main@example.com", "shared@example.com"]


async def test_app_only_token_for_exchange(sandbox: RunningSandbox) -> None:
    """outlook.office365.com/.default yields an Exchange token with the IMAP and SMTP roles."""
    async with _credential(sandbox) as credential:
        token = await credential.get_token("https://outlook.office365.com/.default")

    granted = sandbox.state.introspect(token.token)
    assert granted["resource"] == "https://outlook.office.com"
    assert granted["roles"] == ["IMAP.AccessAsApp", "SMTP.SendAsApp"]


async def test_wrong_secret_fails_with_7000215(sandbox: RunningSandbox) -> None:
    """A wrong client secret is refused with AADSTS7000215."""
    async with _credential(sandbox, secret="wrong") as credential:
        with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
            await credential.get_token("https://graph.microsoft.com/.default")


@pytest.mark.parametrize(
    ("tenant", "scope", "code"),
    [
        ("{tenant}", "https://graph.microsoft.com/Mail.Read", 1002012),
        (
            "{tenant}",
            "https://graph.microsoft.com/.default https://outlook.office.com/.default",
            70011,
        ),
        ("{tenant}", "https://example.com/.default", 500011),
        ("common", "https://graph.microsoft.com/.default", 50059),
    ],
)
async def test_client_credentials_rules(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, tenant: str, scope: str, code: int
) -> None:
    """Client credentials need one /.default scope of a known resource and a named tenant."""
    assert sandbox.seed is not None
    path = tenant.format(tenant=sandbox.seed.tenant_id)
    async with http.post(
        f"{sandbox.url}/{path}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox.seed.client_id,
            "client_secret": sandbox.seed.client_secret,
            "scope": scope,
        },
    ) as response:
        body = await response.json()
        assert response.status == 400

    assert body["error_codes"] == [code]
    assert "access_token" not in body
