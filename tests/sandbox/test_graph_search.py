"""Graph message lists: $filter, $search, their errors and paging."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from relay.sandbox.server import RunningSandbox

from .graph_helpers import Graph, deliver

Mail = dict[str, dict[str, Any]]


@pytest.fixture
async def mail(http: aiohttp.ClientSession, sandbox: RunningSandbox) -> Mail:
    """Four messages a minute apart: invoice (oldest), lunch, reply, newsletter (newest)."""
    specs: dict[str, dict[str, Any]] = {
        "invoice": {
            "subject": "Invoice March",
            "from": {"name": "Billing Team", "address": "billing@vendor.example"},
            "body": "Please pay the invoice by Friday.",
        },
        "lunch": {
            "subject": "Lunch plans",
            "from": {"name": "Alice Smith", "address": "alice@example.net"},
            "isRead": True,
            "flag": "flagged",
            "categories": ["Red"],
            "attachments": [
                {"name": "menu.pdf", "contentBytes": base64.b64encode(b"%PDF").decode()}
            ],
        },
        "reply": {
            "subject": "Re: Invoice March",
            "from": {"name": "Alice Smith", "address": "alice@example.net"},
            "to": ["main@example.com", {"name": "Bob Jones", "address": "bob@example.com"}],
            "body": "<p>It was paid <b>today</b>.</p>",
            "bodyType": "html",
        },
        "newsletter": {
            "subject": "Weekly news",
            "from": "news@example.org",
            "isRead": True,
            "importance": "low",
            "body": "Nothing about bills.",
        },
    }
    made: Mail = {}
    for key, fields in specs.items():
        made[key] = await deliver(http, sandbox, **fields)
        sandbox.state.advance_clock(60)
    return made


def _url(path: str, **options: str) -> str:
    """``path`` with percent-encoded ``$options``."""
    return (
        path + "?" + "&".join(f"${name}={quote(value, safe='')}" for name, value in options.items())
    )


def _keys(mail: Mail, page: dict[str, Any]) -> list[str]:
    by_id = {m["id"]: key for key, m in mail.items()}
    return [by_id[m["id"]] for m in page["value"]]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("isRead eq false", ["reply", "invoice"]),
        ("IsRead eq true", ["newsletter", "lunch"]),
        ("flag/flagStatus eq 'flagged'", ["lunch"]),
        ("flag/flagStatus eq 'notFlagged'", ["newsletter", "reply", "invoice"]),
        ("hasAttachments eq true", ["lunch"]),
        ("hasAttachments eq false and isRead eq true", ["newsletter"]),
        ("from/emailAddress/address eq 'ALICE@example.net'", ["reply", "lunch"]),
        ("subject eq 'lunch plans'", ["lunch"]),
        ("subject eq 'it''s not there'", []),
        ("contains(subject,'invoice')", ["reply", "invoice"]),
        ("startswith(subject, 'Re:')", ["reply"]),
        ("importance eq 'low' or flag/flagStatus eq 'flagged'", ["newsletter", "lunch"]),
        ("not (isRead eq true) and contains(subject,'march')", ["reply", "invoice"]),
        ("categories/any(c:c eq 'red')", ["lunch"]),
        ("toRecipients/any(r:r/emailAddress/address eq 'BOB@example.com')", ["reply"]),
    ],
)
async def test_filter_matches_messages(
    graph: Graph, mail: Mail, expression: str, expected: list[str]
) -> None:
    """$filter keeps the messages that match, newest first."""
    page = await graph.ok("GET", _url("me/messages", filter=expression))

    assert _keys(mail, page) == expected


async def test_filter_on_received_date_and_paging(graph: Graph, mail: Mail) -> None:
    """Date comparisons take ISO literals; filtered pages carry the filter and the count."""
    since = mail["lunch"]["receivedDateTime"]

    after = await graph.ok(
        "GET", _url("me/mailFolders/inbox/messages", filter=f"receivedDateTime gt {since}")
    )
    first = await graph.ok(
        "GET",
        _url(
            "me/messages",
            filter=f"receivedDateTime ge {since} and isRead eq true",
            top="1",
            count="true",
        ),
    )
    second = await graph.ok("GET", first["@odata.nextLink"])
    before = await graph.ok("GET", _url("me/messages", filter=f"receivedDateTime lt {since}"))

    assert _keys(mail, after) == ["newsletter", "reply"]
    assert (_keys(mail, first), first["@odata.count"]) == (["newsletter"], 2)
    assert "$filter=receivedDateTime%20ge%20" in first["@odata.nextLink"]
    assert _keys(mail, second) == ["lunch"]
    assert "@odata.nextLink" not in second
    assert _keys(mail, before) == ["invoice"]


@pytest.mark.parametrize(
    ("expression", "code"),
    [
        ("colour eq 'red'", "RequestBroker--ParseUri"),
        ("toRecipients eq 'bob@example.com'", "ErrorInvalidUrlQueryFilter"),
        ("subject gt 'a'", "ErrorInvalidUrlQueryFilter"),
        ("endswith(subject,'March')", "ErrorInvalidUrlQueryFilter"),
        ("contains(isRead,'x')", "ErrorInvalidUrlQueryFilter"),
        ("isRead eq 'yes'", "BadRequest"),
        ("receivedDateTime ge 'yesterday'", "BadRequest"),
        ("isRead eq", "BadRequest"),
        ("subject eq 'unterminated", "BadRequest"),
        ("(isRead eq true", "BadRequest"),
        ("isRead eq true isDraft", "BadRequest"),
        ("frobnicate(subject,'x')", "BadRequest"),
        ("toRecipients/all(r:r/emailAddress/address eq 'x')", "ErrorInvalidUrlQueryFilter"),
        ("colours/any(c:c eq 'x')", "RequestBroker--ParseUri"),
    ],
)
async def test_filter_errors(graph: Graph, expression: str, code: str) -> None:
    """Unknown properties, unsupported nodes and syntax errors are 400 with Graph's codes."""
    assert await graph.error("GET", _url("me/messages", filter=expression)) == (400, code)


async def test_filter_with_orderby_must_lead_with_the_sort_property(
    graph: Graph, mail: Mail
) -> None:
    """$orderby with $filter needs the ordered property first in the filter (InefficientFilter)."""
    since = mail["invoice"]["receivedDateTime"]

    ordered = await graph.ok(
        "GET",
        _url(
            "me/messages",
            filter=f"receivedDateTime ge {since} and isRead eq false",
            orderby="receivedDateTime asc",
        ),
    )

    assert _keys(mail, ordered) == ["invoice", "reply"]
    assert await graph.error(
        "GET", _url("me/messages", filter="isRead eq false", orderby="receivedDateTime desc")
    ) == (400, "InefficientFilter")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('"subject:invoice"', ["reply", "invoice"]),
        ("subject:lunch", ["lunch"]),
        ('"from:alice"', ["reply", "lunch"]),
        ('"from:billing@vendor.example"', ["invoice"]),
        ('"from:\\"Billing Team\\""', ["invoice"]),
        ('"to:bob"', ["reply"]),
        ('"body:paid"', ["reply"]),
        ('"invoice"', ["reply", "invoice"]),
        ('"invo"', []),
        ('"invo*"', ["reply", "invoice"]),
        ('"\\"invoice march\\""', ["reply", "invoice"]),
        ('"bills"', ["newsletter"]),
        ('"subject:lunch OR subject:weekly"', ["newsletter", "lunch"]),
        ('"invoice AND from:alice"', ["reply"]),
        ('"invoice NOT from:alice"', ["invoice"]),
        ('"attachment:menu.pdf"', ["lunch"]),
        ('"hasAttachments:true"', ["lunch"]),
        ('"importance:low"', ["newsletter"]),
    ],
)
async def test_search_matches_messages(
    graph: Graph, mail: Mail, query: str, expected: list[str]
) -> None:
    """$search matches KQL terms by whole words (prefix with *), newest sent first."""
    page = await graph.ok("GET", _url("me/messages", search=query))

    assert _keys(mail, page) == expected


async def test_search_pages_with_a_skip_token(graph: Graph, mail: Mail) -> None:
    """$search pages with $skiptoken in @odata.nextLink, and $count counts every match."""
    first = await graph.ok(
        "GET",
        _url(
            "me/mailFolders/inbox/messages",
            search='"invoice"',
            top="1",
            count="true",
            select="subject",
        ),
    )
    second = await graph.ok("GET", first["@odata.nextLink"])

    assert (_keys(mail, first), first["@odata.count"]) == (["reply"], 2)
    assert "$skiptoken=" in first["@odata.nextLink"]
    assert "$skip=" not in first["@odata.nextLink"]
    assert _keys(mail, second) == ["invoice"]
    assert set(second["value"][0]) == {"@odata.etag", "id", "subject"}
    assert "@odata.nextLink" not in second
    assert await graph.error("GET", _url("me/messages", search="invoice", skiptoken="bogus")) == (
        400,
        "BadRequest",
    )


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"search": '"invoice"', "orderby": "receivedDateTime desc"}, "SearchWithOrderBy"),
        ({"search": '"invoice"', "filter": "isRead eq true"}, "SearchWithFilter"),
        ({"search": '"invoice"', "skip": "1"}, "BadRequest"),
        ({"search": '"kind:email"'}, "BadRequest"),
        ({"search": '""'}, "BadRequest"),
    ],
)
async def test_search_errors(graph: Graph, options: dict[str, str], code: str) -> None:
    """$search refuses $orderby, $filter and $skip, and what the sandbox cannot search."""
    assert await graph.error("GET", _url("me/messages", **options)) == (400, code)
