"""Graph message content: MIME delivery, bodies, headers, attachments, $value, MIME upload."""

from __future__ import annotations

import base64
import functools
import random
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from relay.sandbox.server import RunningSandbox

from .graph_helpers import MAIN, Graph, admin, deliver, mint

BIG = random.Random(7).randbytes(10 * 1024 * 1024)
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
HTML = (
    '<html><body><p>See the <b>report</b> &amp; the chart.</p><img src="cid:logo@example.net">'
    "</body></html>"
)


@functools.cache
def _report(attachment: bytes = BIG) -> bytes:
    """A message as a mail client writes one: text and HTML, an inline image, a file."""
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = '"Alice Example" <alice@example.net>'
    message["To"] = "main@example.com, Bob <bob@example.com>"
    message["Cc"] = "carol@example.org"
    message["Reply-To"] = "replies@example.net"
    message["Subject"] = "Quarterly report"
    message["Message-ID"] = "<report-1@example.net>"
    message["Date"] = "Tue, 03 Mar 2026 09:30:00 +0000"
    message["X-Relay-Test"] = "yes"
    message.set_content("See the report & the chart.\n")
    message.add_alternative(HTML, subtype="html")
    html_part = message.get_body(("html",))
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(
        IMAGE,
        maintype="image",
        subtype="png",
        cid="<logo@example.net>",
        filename="logo.png",
        disposition="inline",
    )
    message.add_attachment(
        attachment, maintype="application", subtype="octet-stream", filename="data.bin"
    )
    return message.as_bytes()


async def _deliver_mime(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, raw: bytes, **fields: Any
) -> dict[str, Any]:
    """Deliver a MIME message through the admin API."""
    body = {"mime": base64.b64encode(raw).decode(), **fields}
    message: dict[str, Any] = await admin(http, sandbox, "POST", f"mailboxes/{MAIN}/messages", body)
    return message


@pytest.fixture
async def report(http: aiohttp.ClientSession, sandbox: RunningSandbox) -> dict[str, Any]:
    """The report message (with a 10 MiB attachment), delivered to the main inbox as MIME."""
    return await _deliver_mime(http, sandbox, _report())


async def _attachments(graph: Graph, message_id: str, query: str = "") -> dict[str, Any]:
    listed: dict[str, dict[str, Any]] = {
        a["name"]: a
        for a in (await graph.ok("GET", f"me/messages/{message_id}/attachments{query}"))["value"]
    }
    return listed


async def test_mime_delivery_fills_the_message_fields(graph: Graph, report: dict[str, Any]) -> None:
    """Subject, addresses, ids, date and the HTML body come from the delivered MIME."""
    message = await graph.ok("GET", f"me/messages/{report['id']}")

    assert message["subject"] == "Quarterly report"
    assert message["from"] == {
        "emailAddress": {"name": "Alice Example", "address": "alice@example.net"}
    }
    assert [r["emailAddress"] for r in message["toRecipients"]] == [
        {"name": "main@example.com", "address": "main@example.com"},
        {"name": "Bob", "address": "bob@example.com"},
    ]
    assert message["ccRecipients"][0]["emailAddress"]["address"] == "carol@example.org"
    assert message["replyTo"][0]["emailAddress"]["address"] == "replies@example.net"
    assert message["internetMessageId"] == "<report-1@example.net>"
    assert message["sentDateTime"] == "2026-03-03T09:30:00Z"
    assert message["body"]["contentType"] == "html"
    assert 'src="cid:logo@example.net"' in message["body"]["content"]
    assert message["bodyPreview"] == "See the report & the chart."
    assert message["hasAttachments"] is True
    assert "internetMessageHeaders" not in message
    assert "uniqueBody" not in message


async def test_headers_and_unique_body_come_only_with_select(
    graph: Graph, report: dict[str, Any]
) -> None:
    """internetMessageHeaders and uniqueBody are returned when $select names them."""
    message = await graph.ok(
        "GET", f"me/messages/{report['id']}?$select=internetMessageHeaders,uniqueBody"
    )

    headers = {h["name"]: h["value"] for h in message["internetMessageHeaders"]}
    assert headers["X-Relay-Test"] == "yes"
    assert headers["Message-ID"] == "<report-1@example.net>"
    assert headers["Content-Type"].startswith("multipart/mixed")
    assert message["uniqueBody"]["contentType"] == "html"
    assert set(message) == {"@odata.etag", "id", "internetMessageHeaders", "uniqueBody"}


async def test_prefer_body_content_type_converts_the_body(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, report: dict[str, Any]
) -> None:
    """Prefer outlook.body-content-type gives HTML as text and text as HTML, and is echoed."""
    plain = await deliver(http, sandbox, body="1 < 2\nsecond line")

    status, headers, as_text = await graph.exchange(
        "GET",
        f"me/messages/{report['id']}",
        headers={"Prefer": 'outlook.body-content-type="text"'},
    )
    _, _, as_html = await graph.exchange(
        "GET",
        f"me/messages/{plain['id']}?$select=body",
        headers={"Prefer": 'outlook.body-content-type="html"'},
    )
    _, untouched_headers, untouched = await graph.exchange("GET", f"me/messages/{report['id']}")

    assert status == 200
    assert headers["Preference-Applied"] == 'outlook.body-content-type="text"'
    assert as_text["body"] == {"contentType": "text", "content": "See the report & the chart."}
    assert as_html["body"]["contentType"] == "html"
    assert "1 &lt; 2<br>" in as_html["body"]["content"]
    assert "Preference-Applied" not in untouched_headers
    assert untouched["body"]["contentType"] == "html"


async def test_attachments_are_listed_with_select(graph: Graph, report: dict[str, Any]) -> None:
    """Every non-body part is a fileAttachment; contentBytes needs the type cast in $select."""
    listed = await _attachments(graph, report["id"])
    small = await _attachments(graph, report["id"], "?$select=name,size,isInline")
    cast = await _attachments(
        graph, report["id"], "?$select=name,microsoft.graph.fileAttachment/contentBytes"
    )

    logo, data = listed["logo.png"], listed["data.bin"]
    assert logo["@odata.type"] == "#microsoft.graph.fileAttachment"
    assert (logo["isInline"], logo["contentId"], logo["contentType"]) == (
        True,
        "logo@example.net",
        "image/png",
    )
    assert base64.b64decode(logo["contentBytes"]) == IMAGE
    assert (data["isInline"], data["contentId"], data["size"]) == (False, None, len(BIG))
    assert data["contentType"] == "application/octet-stream"
    assert set(small["logo.png"]) == {"@odata.type", "id", "name", "size", "isInline"}
    assert base64.b64decode(cast["logo.png"]["contentBytes"]) == IMAGE
    assert await graph.error(
        "GET", f"me/messages/{report['id']}/attachments?$select=contentBytes"
    ) == (
        400,
        "RequestBroker--ParseUri",
    )


async def test_attachment_bytes_come_back_byte_for_byte(
    graph: Graph, report: dict[str, Any]
) -> None:
    """attachments/{id}/$value streams the raw bytes with the attachment's content type."""
    listed = await _attachments(graph, report["id"], "?$select=name")
    base = f"me/messages/{report['id']}/attachments"

    status, headers, data = await graph.raw("GET", f"{base}/{listed['data.bin']['id']}/$value")
    _, logo_headers, logo = await graph.raw("GET", f"{base}/{listed['logo.png']['id']}/$value")
    one = await graph.ok("GET", f"{base}('{listed['logo.png']['id']}')")

    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    assert data == BIG
    assert logo_headers["Content-Type"] == "image/png"
    assert logo == IMAGE
    assert one["@odata.context"].endswith("/attachments/$entity")
    assert base64.b64decode(one["contentBytes"]) == IMAGE


async def test_value_returns_the_mime_source_byte_for_byte(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """$value answers text/plain with exactly the bytes that were delivered."""
    raw = _report()
    delivered = await _deliver_mime(http, sandbox, raw)

    status, headers, source = await graph.raw("GET", f"me/messages/{delivered['id']}/$value")
    _, _, by_folder = await graph.raw(
        "GET", f"me/mailFolders/inbox/messages/{delivered['id']}/$value"
    )

    assert status == 200
    assert headers["Content-Type"] == "text/plain"
    assert source == raw
    assert by_folder == raw


async def test_unknown_ids_are_item_not_found(graph: Graph, report: dict[str, Any]) -> None:
    """Unknown message or attachment ids are 404 ErrorItemNotFound, $value included."""
    missing = "AAMkAGNvbm5vdC1iZS1mb3VuZA=="
    base = f"me/messages/{report['id']}/attachments"

    assert await graph.error("GET", f"me/messages/{missing}/$value") == (404, "ErrorItemNotFound")
    assert await graph.error("GET", f"me/messages/{missing}/attachments") == (
        404,
        "ErrorItemNotFound",
    )
    assert await graph.error("GET", f"{base}/{missing}") == (404, "ErrorItemNotFound")
    assert await graph.error("GET", f"{base}/{missing}/$value") == (404, "ErrorItemNotFound")


async def test_messages_made_from_fields_get_a_generated_source(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """A message delivered from fields has a MIME source with its fields and attachments."""
    delivered = await deliver(
        http,
        sandbox,
        subject="Minutes",
        body="<p>Notes attached</p>",
        bodyType="html",
        attachments=[
            {
                "name": "notes.txt",
                "contentType": "text/plain",
                "contentBytes": base64.b64encode(b"line one\n").decode(),
            }
        ],
    )

    status, _, source = await graph.raw("GET", f"me/messages/{delivered['id']}/$value")
    parsed = message_from_bytes(source, policy=policy.default)
    headers = await graph.ok(
        "GET", f"me/messages/{delivered['id']}?$select=internetMessageHeaders,hasAttachments"
    )
    listed = await _attachments(graph, delivered["id"])

    assert status == 200
    assert parsed["Subject"] == "Minutes"
    assert parsed["From"] == "alice@example.net"
    assert parsed["Message-ID"] == delivered["internetMessageId"]
    assert isinstance(parsed, EmailMessage)
    files = [(p.get_filename(), p.get_content()) for p in parsed.iter_attachments()]
    assert files == [("notes.txt", "line one\n")]
    assert {"name": "Subject", "value": "Minutes"} in headers["internetMessageHeaders"]
    assert headers["hasAttachments"] is True
    assert base64.b64decode(listed["notes.txt"]["contentBytes"]) == b"line one\n"


async def test_read_basic_cannot_read_sources_or_attachments(
    graph: Graph, sandbox: RunningSandbox, report: dict[str, Any]
) -> None:
    """With Mail.ReadBasic only, $value and attachments are 403 ErrorAccessDenied."""
    basic = mint(sandbox, scopes=["Mail.ReadBasic"])

    assert await graph.error("GET", f"me/messages/{report['id']}/$value", token=basic) == (
        403,
        "ErrorAccessDenied",
    )
    assert await graph.error("GET", f"me/messages/{report['id']}/attachments", token=basic) == (
        403,
        "ErrorAccessDenied",
    )


async def test_mime_upload_creates_a_draft(graph: Graph) -> None:
    """POST of base64 MIME (text/plain) saves a draft that keeps its source until edited."""
    raw = _report(attachment=b"%PDF-1.4 small")
    encoded = base64.b64encode(raw)

    status, _, created = await graph.exchange_bytes(
        "me/messages", encoded, content_type="text/plain"
    )
    _, _, archived = await graph.exchange_bytes(
        "me/mailFolders/archive/messages", encoded, content_type="text/plain"
    )
    drafts = await graph.ok("GET", "me/mailFolders/drafts")
    archive = await graph.ok("GET", "me/mailFolders/archive")
    _, _, source = await graph.raw("GET", f"me/messages/{created['id']}/$value")

    assert status == 201
    assert created["@odata.context"].endswith("/messages/$entity")
    assert (created["isDraft"], created["isRead"]) == (True, True)
    assert created["parentFolderId"] == drafts["id"]
    assert archived["parentFolderId"] == archive["id"]
    assert created["subject"] == "Quarterly report"
    assert created["hasAttachments"] is True
    assert source == raw
    await graph.ok("PATCH", f"me/messages/{created['id']}", {"subject": "Quarterly report v2"})
    _, _, rewritten = await graph.raw("GET", f"me/messages/{created['id']}/$value")
    assert message_from_bytes(rewritten, policy=policy.default)["Subject"] == "Quarterly report v2"
    assert len((await graph.ok("GET", f"me/messages/{created['id']}/attachments"))["value"]) == 2


@pytest.mark.parametrize(
    "payload",
    [b"this is not base64!", base64.b64encode(b"no header here"), b""],
)
async def test_mime_upload_refuses_malformed_content(graph: Graph, payload: bytes) -> None:
    """Malformed base64 or a source without headers is 400 ErrorMimeContentInvalidBase64String."""
    status, _, body = await graph.exchange_bytes("me/messages", payload, content_type="text/plain")

    assert status == 400
    assert body["error"] == {
        "code": "ErrorMimeContentInvalidBase64String",
        "message": "Invalid base64 string for MIME content.",
        "innerError": body["error"]["innerError"],
    }
    assert (await graph.ok("GET", "me/mailFolders/drafts"))["totalItemCount"] == 0


async def test_admin_mime_refuses_clashing_fields_and_bad_sources(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """The admin API takes content from mime or from fields, not both; bad sources are 400."""
    url = f"{sandbox.url}/sandbox/mailboxes/{MAIN}/messages"
    good = base64.b64encode(_report(attachment=b"x")).decode()
    answers = []
    for body in (
        {"mime": good, "subject": "Other"},
        {"mime": "%%%"},
        {"mime": base64.b64encode(b"no header").decode()},
    ):
        async with http.post(url, json=body) as response:
            answers.append((response.status, (await response.json())["field"]))
    kept = await _deliver_mime(
        http, sandbox, _report(attachment=b"x"), folder="archive", isRead=True, flag="flagged"
    )

    assert answers == [(400, "mime"), (400, "mime"), (400, "mime")]
    assert (kept["isRead"], kept["flag"], kept["subject"]) == (
        True,
        {"flagStatus": "flagged"},
        "Quarterly report",
    )


async def test_message_size_comes_as_an_extended_property(
    graph: Graph, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """$expand of PR_MESSAGE_SIZE (Integer 0x0E08) gives the size, named back the way Graph
    names it; an $expand the sandbox does not know is a 400."""
    raw = _report(b"x" * 1000)
    sent = await _deliver_mime(http, sandbox, raw)
    wanted = quote("singleValueExtendedProperties($filter=id eq 'Integer 0x0E08')")
    expand = f"$expand={wanted}"
    message = await graph.ok("GET", f"me/messages/{sent['id']}?$select=subject&{expand}")
    assert message["singleValueExtendedProperties"] == [
        {"id": "Integer 0xe08", "value": str(len(raw))}
    ]
    status, _ = await graph.call("GET", f"me/messages/{sent['id']}?$expand=attachments(x)")
    assert status == 400
