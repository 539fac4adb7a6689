"""Fitting large events into the webhook size limit by trimming their largest data values."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from relay.events.fit import fit_payload
from relay.events.model import Event

LIMIT = 256 * 1024
SERVICE_URL = "https://relay.example.com"


def envelope(data: dict[str, Any]) -> dict[str, Any]:
    event = Event(
        event="messageNew",
        account="shared",
        data=data,
        created_ms=1_795_000_000_000,
        path="INBOX",
        special_use="\\Inbox",
    )
    return event.envelope(SERVICE_URL)


def message(**extra: Any) -> dict[str, Any]:
    return {
        "id": "AAMk-1",
        "uid": 42,
        "subject": "Grüße aus Zürich",
        "from": {"name": "Zoë", "address": "zoe@example.com"},
        "to": [{"address": "shared@example.com"}],
        "flags": [],
        "unseen": True,
        **extra,
    }


def size(payload: str) -> int:
    return len(payload.encode())


def test_small_event_unchanged_byte_for_byte() -> None:
    """An event under the limit serializes exactly like Event.payload."""
    event = Event(event="messageNew", account="shared", data=message(), created_ms=1, path="INBOX")
    assert fit_payload(event.envelope(SERVICE_URL)) == event.payload(SERVICE_URL)


def test_event_exactly_at_the_limit_unchanged() -> None:
    """The limit is inclusive: an envelope of exactly ``limit`` bytes is left alone."""
    env = envelope(message(text=""))
    padding = 5000 - size(json.dumps(env, separators=(",", ":"), ensure_ascii=False))
    env["data"]["text"] = "x" * padding
    payload = fit_payload(env, limit=5000)
    assert size(payload) == 5000
    assert "trimmed" not in json.loads(payload)["data"]


def test_large_html_body_trimmed_with_marker() -> None:
    """A 1 MiB HTML body is cut under the limit, keeps its start and says how much went."""
    html = "<p>" + "a" * (1024 * 1024) + "</p>"
    env = envelope(message(text={"html": html, "plain": "short"}))
    original = copy.deepcopy(env)
    payload = fit_payload(env)
    assert size(payload) <= LIMIT
    body = json.loads(payload)
    data = body["data"]
    assert data["trimmed"] == ["data.text.html"]
    cut = data["text"]["html"]
    match = re.fullmatch(r"(.*)…\[trimmed (\d+) bytes\]", cut, re.S)
    assert match is not None
    kept = match.group(1)
    assert html.startswith(kept)
    assert len(kept) > LIMIT // 2
    assert int(match.group(2)) == size(html) - size(kept)
    assert data["text"]["plain"] == "short"
    assert {k: v for k, v in data.items() if k not in ("text", "trimmed")} == {
        k: v for k, v in original["data"].items() if k != "text"
    }
    assert {k: v for k, v in body.items() if k != "data"} == {
        k: v for k, v in original.items() if k != "data"
    }
    assert env == original  # the caller's envelope is not modified


def test_large_attachment_list_cut_with_marker_element() -> None:
    """A 1 MiB list of attachments keeps its first entries and ends with a marker."""
    attachments = [
        {"id": f"att-{i}", "filename": f"scan-{i:05d}.pdf", "contentType": "application/pdf"}
        for i in range(16000)
    ]
    env = envelope(message(attachments=attachments))
    assert size(json.dumps(env, ensure_ascii=False)) > 1024 * 1024
    payload = fit_payload(env)
    assert size(payload) <= LIMIT
    data = json.loads(payload)["data"]
    assert data["trimmed"] == ["data.attachments"]
    kept, marker = data["attachments"][:-1], data["attachments"][-1]
    assert kept == attachments[: len(kept)]
    assert len(kept) > 1000
    assert marker == f"…[trimmed {len(attachments) - len(kept)} items]"
    assert data["subject"] == "Grüße aus Zürich"


def test_one_huge_attachment_cut_inside() -> None:
    """A list dominated by one element is cut inside that element; the others stay whole."""
    attachments = [
        {"id": "att-1", "filename": "small.txt"},
        {"id": "att-2", "filename": "big.bin", "content": "QUJD" * 300_000},
        {"id": "att-3", "filename": "other.txt"},
    ]
    payload = fit_payload(envelope(message(attachments=attachments)))
    assert size(payload) <= LIMIT
    data = json.loads(payload)["data"]
    assert data["trimmed"] == ["data.attachments.1.content"]
    assert data["attachments"][0] == attachments[0]
    assert data["attachments"][2] == attachments[2]
    assert data["attachments"][1]["content"].endswith(" bytes]")


def test_several_large_values_share_the_cut() -> None:
    """Two large values both lose some instead of one vanishing whole."""
    env = envelope(message(text={"html": "h" * 400_000, "plain": "p" * 300_000}))
    data = json.loads(fit_payload(env))["data"]
    assert sorted(data["trimmed"]) == ["data.text.html", "data.text.plain"]
    assert len(data["text"]["html"]) > 1000
    assert len(data["text"]["plain"]) > 1000


@pytest.mark.parametrize("char", ["ä", "€", "😀"])
def test_sizes_count_utf8_bytes(char: str) -> None:
    """Multi-byte characters count by their UTF-8 size, not by their number."""
    text = char * (LIMIT // 2)
    env = envelope(message(text={"plain": text}))
    assert len(json.dumps(env, ensure_ascii=False)) < LIMIT  # would fit if chars were bytes
    payload = fit_payload(env)
    assert size(payload) <= LIMIT
    cut = json.loads(payload)["data"]["text"]["plain"]
    kept = cut[: cut.index("…[trimmed")]
    assert text.startswith(kept)
    assert cut == f"{kept}…[trimmed {size(text) - size(kept)} bytes]"


@pytest.mark.parametrize("char", ["\n", '"', "\x01"])
def test_json_escapes_count(char: str) -> None:
    """Characters JSON escapes (2 or 6 bytes each) still end under the limit."""
    env = envelope(message(text={"plain": char * LIMIT}))
    payload = fit_payload(env)
    assert size(payload) <= LIMIT
    assert json.loads(payload)["data"]["trimmed"] == ["data.text.plain"]


def test_never_dropped_when_nothing_can_be_cut() -> None:
    """An event too large outside ``data`` is still delivered whole rather than dropped."""
    env = envelope(message())
    env["path"] = "INBOX/" + "x" * 10_000
    payload = fit_payload(env, limit=4096)
    assert json.loads(payload) == env
