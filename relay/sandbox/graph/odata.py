"""Small OData helpers (pure): path segments, keys, dates, case-insensitive bodies."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

from relay.sandbox.graph.errors import bad_request

_KEYED = re.compile(r"^(?P<name>[^()]+)\((?P<key>.*)\)$")


@dataclass(frozen=True)
class Segment:
    """A path segment: a lower-cased name, and the key of ``name('key')`` or ``name()``."""

    name: str
    raw: str
    key: str | None = None
    call: bool = False


def split_path(raw_path: str) -> list[Segment]:
    """Decode a raw URL path into segments.

    Empty segments (``//``) are dropped and each segment is percent-decoded on its own, so
    ``users/shared%40contoso.com`` and ``users('shared@contoso.com')`` name the same user.
    """
    segments: list[Segment] = []
    for part in raw_path.split("/"):
        if not part:
            continue
        text = unquote(part)
        keyed = _KEYED.match(text)
        if keyed is None:
            segments.append(Segment(name=text.lower(), raw=text))
            continue
        key = keyed.group("key")
        if len(key) >= 2 and key[0] == key[-1] == "'":
            key = key[1:-1].replace("''", "'")
        name = keyed.group("name")
        segments.append(Segment(name=name.lower(), raw=name, key=key or None, call=not key))
    return segments


def fold_keys(value: Any) -> Any:
    """``value`` with every object key lower-cased, recursively.

    Graph matches property names case-insensitively (msgraph-sdk sends ``sendMail`` bodies
    as ``{"Message": ..., "SaveToSentItems": ...}``).
    """
    if isinstance(value, dict):
        return {str(k).lower(): fold_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fold_keys(v) for v in value]
    return value


def format_datetime(when: float) -> str:
    """A message date as Graph writes it: ``2026-11-24T10:00:00Z``."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_precise(when: float, *, offset: bool = False) -> str:
    """A subscription date with seven fractional digits, ``Z`` or ``+00:00``."""
    moment = datetime.fromtimestamp(when, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0"
    return text + ("+00:00" if offset else "Z")


def parse_prefer(values: Iterable[str]) -> dict[str, str]:
    """The preferences of ``Prefer`` headers: lower-cased names, unquoted values.

    ``odata.maxpagesize=2, IdType="ImmutableId"`` gives ``{"odata.maxpagesize": "2",
    "idtype": "ImmutableId"}``; a preference's parameters (``; name=value``) are dropped and
    the first of repeated preferences wins (RFC 7240).
    """
    found: dict[str, str] = {}
    for value in values:
        for part in value.split(","):
            name, _, raw = part.partition(";")[0].partition("=")
            name = name.strip().lower()
            if name and name not in found:
                found[name] = raw.strip().strip('"')
    return found


def http_date(when: float) -> str:
    """An HTTP ``Date`` (RFC 7231 IMF-fixdate): ``Tue, 24 Nov 2026 10:00:00 GMT``."""
    return formatdate(when, usegmt=True)


def parse_datetime(raw: Any, name: str) -> float:
    """An ISO 8601 date (no zone means UTC) as a timestamp; 400 otherwise."""
    if not isinstance(raw, str) or not raw.strip():
        raise bad_request(f"{name} is required and must be an ISO 8601 date and time.")
    text = raw.strip()
    # Python reads at most six fractional digits; Graph writes seven.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(
            f"Cannot convert the literal '{raw}' to the expected type 'Edm.DateTimeOffset'."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
