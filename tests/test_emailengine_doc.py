"""docs/emailengine.md against the code: the compatibility page may not drift from the routes
and events mailrelay really has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relay.api.routes import endpoints
from relay.events.model import EVENT_TYPES

PAGE = Path(__file__).resolve().parent.parent / "docs" / "emailengine.md"
STATUSES = ("same", "different", "not offered")
SERVED = ("same", "different")
ROUTE_HEADER = ["method", "path", "status", "notes"]
EVENT_HEADER = ["event", "status", "notes"]
_PARAM = re.compile(r"\{[^}]*\}")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")

Route = tuple[str, str]


def normalized(method: str, path: str) -> Route:
    """A route with its parameter names dropped: ``{account}`` and ``{id}`` compare equal."""
    return method.strip().upper(), _PARAM.sub("{}", path.strip())


def _cells(line: str) -> list[str]:
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [c.strip().strip("`").replace("\\|", "|") for c in _CELL_SPLIT.split(inner)]


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table of ``text``: its header cells and its rows' cells."""
    found: list[tuple[list[str], list[list[str]]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.startswith("|") and re.fullmatch(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?", following):
            header = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            found.append((header, rows))
        else:
            i += 1
    return found


def _page_tables() -> list[tuple[list[str], list[list[str]]]]:
    return tables(PAGE.read_text(encoding="utf-8"))


def documented_routes() -> dict[Route, str]:
    """Route -> status, from every ``| method | path | status | notes |`` table."""
    out: dict[Route, str] = {}
    for header, rows in _page_tables():
        if [h.lower() for h in header] != ROUTE_HEADER:
            continue
        for row in rows:
            assert len(row) == len(ROUTE_HEADER), f"malformed route row: {row}"
            key = normalized(row[0], row[1])
            assert key not in out, f"route listed twice: {row[0]} {row[1]}"
            out[key] = row[2]
    return out


def documented_events() -> dict[str, str]:
    """Event -> status, from every ``| event | status | notes |`` table."""
    out: dict[str, str] = {}
    for header, rows in _page_tables():
        if [h.lower() for h in header] != EVENT_HEADER:
            continue
        for row in rows:
            assert len(row) == len(EVENT_HEADER), f"malformed event row: {row}"
            assert row[0] not in out, f"event listed twice: {row[0]}"
            out[row[0]] = row[1]
    return out


def served_routes() -> set[Route]:
    return {normalized(ep.method, ep.path) for ep in endpoints()}


def test_tables_parse() -> None:
    """The parser finds route and event tables, with the method/path of a known row."""
    routes = documented_routes()
    assert routes[("POST", "/v1/account/{}/submit")] in STATUSES
    assert len(routes) > 50
    assert len(documented_events()) > 10


def test_statuses_use_the_three_words() -> None:
    """Every status cell is exactly same, different or not offered."""
    statuses = [*documented_routes().values(), *documented_events().values()]
    assert statuses
    assert sorted({s for s in statuses if s not in STATUSES}) == []


def test_every_served_v1_route_is_documented() -> None:
    """Each route the code serves under /v1/ is on the page as same or different."""
    documented = documented_routes()
    missing = sorted(r for r in served_routes() if r[1].startswith("/v1/") and r not in documented)
    assert missing == [], f"routes served but not on docs/emailengine.md: {missing}"
    wrong = sorted(
        (r, documented[r])
        for r in served_routes()
        if r[1].startswith("/v1/") and documented[r] not in SERVED
    )
    assert wrong == [], f"served routes the page marks not offered: {wrong}"


def test_every_route_marked_served_exists() -> None:
    """Each route the page marks same or different is in endpoints()."""
    served = served_routes()
    stale = sorted(r for r, s in documented_routes().items() if s in SERVED and r not in served)
    assert stale == [], f"docs/emailengine.md lists routes the code does not serve: {stale}"


def test_routes_marked_not_offered_are_not_served() -> None:
    """No route the page marks not offered is in endpoints()."""
    served = served_routes()
    offered = sorted(
        r for r, s in documented_routes().items() if s == "not offered" and r in served
    )
    assert offered == [], f"marked not offered but served: {offered}"


def test_events_match_event_types() -> None:
    """EVENT_TYPES and the events marked same or different are the same set."""
    documented = documented_events()
    missing = sorted(e for e in EVENT_TYPES if documented.get(e) not in SERVED)
    assert missing == [], f"events the relay sends but the page does not mark served: {missing}"
    stale = sorted(e for e, s in documented.items() if s in SERVED and e not in EVENT_TYPES)
    assert stale == [], f"events the page marks served but EVENT_TYPES lacks: {stale}"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v1/account/{account}", ("GET", "/v1/account/{}")),
        ("get", "/v1/webhooks/{id}/test", ("GET", "/v1/webhooks/{}/test")),
        ("GET", "/.well-known/x/{suffix?}", ("GET", "/.well-known/x/{}")),
    ],
)
def test_normalized_drops_parameter_names(method: str, path: str, expected: Route) -> None:
    """Parameter names (and Hapi's optional marker) do not matter when comparing paths."""
    assert normalized(method, path) == expected


def test_escaped_pipes_stay_in_their_cell() -> None:
    """A ``\\|`` inside a cell does not split it."""
    parsed = tables("| a | b |\n|---|---|\n| `x \\| y` | z |\n")
    assert parsed == [(["a", "b"], [["x | y", "z"]])]
