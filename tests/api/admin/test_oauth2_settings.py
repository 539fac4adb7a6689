"""The admin UI's OAuth2 applications and settings pages: every change through the API's
endpoints, write-only secrets never rendered (empty boxes keep them), the API's validation
beside the fields."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from relay.config import Settings
from tests.api.admin.support import sign_in
from tests.api.helpers import add_main, call
from tests.conftest import MakeClient

CLIENT_SECRET = "client-secret-value-1"
APP_FORM = {
    "name": "Contoso",
    "description": "mail for contoso",
    "provider": "outlook",
    "clientId": "11111111-2222-3333-4444-555555555555",
    "clientSecret": CLIENT_SECRET,
    "authority": "common",
    "redirectUrl": "https://relay.example.com/oauth",
    "baseScopes": "imap",
    "extraScopes": "User.ReadBasic.All Mail.ReadWrite.Shared",
    "skipScopes": "",
    "enabled": "on",
}


async def _post(client: TestClient, path: str, data: dict[str, Any]) -> tuple[int, str, str]:
    resp = await client.post(path, data=data, allow_redirects=False)
    return resp.status, resp.headers.get("Location", ""), await resp.text()


async def test_an_oauth2_app_is_added_edited_and_deleted_without_showing_its_secret(
    make_client: MakeClient, settings: Settings
) -> None:
    """Add with a client secret (stored, never shown), edit with the box left empty (the
    secret is kept), remove the secret, then delete the application."""
    client = await make_client(settings)
    csrf = await sign_in(client)
    status, location, _ = await _post(client, "/admin/oauth2/new", {"csrf": csrf, **APP_FORM})
    assert status == 303
    app_id = location.split("/admin/oauth2/")[1].split("?")[0]
    app = await call(client, "GET", f"/v1/oauth2/{app_id}")
    assert app["hasClientSecret"] is True
    assert app["extraScopes"] == ["User.ReadBasic.All", "Mail.ReadWrite.Shared"]
    for path in ("/admin/oauth2", f"/admin/oauth2/{app_id}"):
        html = await (await client.get(path)).text()
        assert CLIENT_SECRET not in html
        assert "Contoso" in html
    edit = await (await client.get(f"/admin/oauth2/{app_id}")).text()
    assert 'name="clientSecret" value=""' in edit
    assert 'value="11111111-2222-3333-4444-555555555555"' in edit

    kept = {**APP_FORM, "name": "Contoso mail", "clientSecret": ""}
    status, _, _ = await _post(client, f"/admin/oauth2/{app_id}", {"csrf": csrf, **kept})
    assert status == 303
    app = await call(client, "GET", f"/v1/oauth2/{app_id}")
    assert (app["name"], app["hasClientSecret"]) == ("Contoso mail", True)
    cleared = {**kept, "clearClientSecret": "on"}
    await _post(client, f"/admin/oauth2/{app_id}", {"csrf": csrf, **cleared})
    assert (await call(client, "GET", f"/v1/oauth2/{app_id}"))["hasClientSecret"] is False

    status, _, _ = await _post(client, f"/admin/oauth2/{app_id}/delete", {})
    assert status == 403
    status, location, _ = await _post(client, f"/admin/oauth2/{app_id}/delete", {"csrf": csrf})
    assert (status, location.split("?")[0]) == (303, "/admin/oauth2")
    await call(client, "GET", f"/v1/oauth2/{app_id}", status=404)


async def test_oauth2_app_errors_show_beside_the_fields(
    make_client: MakeClient, settings: Settings
) -> None:
    """An app-only application with a tenant alias is the API's 400 beside ``authority``,
    the typed secret is not sent back and nothing is stored; an edit that empties the
    client id is refused beside it; an application in use cannot be deleted (the API's
    409, naming the account)."""
    client = await make_client(settings)
    csrf = await sign_in(client)
    bad = {**APP_FORM, "provider": "outlookService", "authority": "common"}
    status, _, html = await _post(client, "/admin/oauth2/new", {"csrf": csrf, **bad})
    assert status == 400
    assert 'data-field="authority"' in html
    assert CLIENT_SECRET not in html
    assert (await call(client, "GET", "/v1/oauth2"))["total"] == 0

    _, location, _ = await _post(client, "/admin/oauth2/new", {"csrf": csrf, **APP_FORM})
    app_id = location.split("/admin/oauth2/")[1].split("?")[0]
    await add_main(client, app_id)
    no_client = {**APP_FORM, "clientSecret": "", "clientId": ""}
    status, _, html = await _post(client, f"/admin/oauth2/{app_id}", {"csrf": csrf, **no_client})
    assert status == 400
    assert 'data-field="clientId"' in html
    assert (await call(client, "GET", f"/v1/oauth2/{app_id}"))["clientId"] == APP_FORM["clientId"]
    status, _, html = await _post(client, f"/admin/oauth2/{app_id}/delete", {"csrf": csrf})
    assert status == 409
    assert "my-account" in html
    await call(client, "GET", f"/v1/oauth2/{app_id}")


async def test_settings_are_saved_through_the_api_and_secrets_stay_hidden(
    make_client: MakeClient, settings: Settings
) -> None:
    """The settings form sets the global webhook (its whsec_ secret shown once), custom
    headers and the service secret (never shown again), and the notify keys; saving it
    unchanged changes nothing; a bad value is the API's 400 beside its field."""
    client = await make_client(settings)
    csrf = await sign_in(client)
    page = await (await client.get("/admin/settings")).text()
    assert 'value="https://relay.example.com"' in page
    form = {
        "csrf": csrf,
        "webhooks": "https://hooks.example.com/all",
        "webhooksEnabled": "on",
        "events": "messageNew",
        "webhooksCustomHeaders": "X-Api-Key: header-secret-value",
        "serviceUrl": "https://relay.example.com",
        "serviceSecret": "service-secret-value",
        "notifyText": "on",
        "notifyTextSize": "2048",
        "notifyHeaders": "subject, x-priority",
        "notifyAttachmentSize": "",
    }
    status, _, html = await _post(client, "/admin/settings", form)
    assert status == 200, html
    secret = html.split('id="new-secret"')[0].rsplit('value="', 1)[1].split('"')[0]
    assert secret.startswith("whsec_")
    assert "header-secret-value" not in html
    assert "service-secret-value" not in html
    stored = await call(client, "GET", "/v1/settings")
    assert stored["webhooks"] == "https://hooks.example.com/all"
    assert stored["webhookEvents"] == ["messageNew"]
    assert stored["webhooksCustomHeaders"][0]["key"] == "X-Api-Key"
    assert stored["serviceSecretSet"] is True
    assert (stored["notifyText"], stored["notifyTextSize"]) == (True, 2048)
    assert stored["notifyHeaders"] == ["subject", "x-priority"]
    assert "notifyAttachments" not in stored

    again = await (await client.get("/admin/settings")).text()
    assert secret not in again
    assert "header-secret-value" not in again
    assert "service-secret-value" not in again
    assert "X-Api-Key" in again
    unchanged = {
        **form,
        "webhooksCustomHeaders": "",
        "serviceSecret": "",
        "notifyHeaders": "subject x-priority",
    }
    status, _, html = await _post(client, "/admin/settings", unchanged)
    assert "nothing changed" in html
    assert await call(client, "GET", "/v1/settings") == stored

    status, _, html = await _post(client, "/admin/settings", {**unchanged, "notifyTextSize": "x"})
    assert status == 400
    assert 'data-field="notifyTextSize"' in html
    status, _, html = await _post(client, "/admin/settings", {**unchanged, "webhooksEnabled": ""})
    assert "saved: webhooksEnabled" in html
    assert (await call(client, "GET", "/v1/settings"))["webhooksEnabled"] is False
    assert (await _post(client, "/admin/settings", {**form, "csrf": "forged"}))[0] == 403
