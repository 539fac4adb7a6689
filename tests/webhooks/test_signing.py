"""Webhook signatures and headers, checked against the standardwebhooks package."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from relay.webhooks.signing import (
    PROTECTED_HEADERS,
    delivery_headers,
    ee_signature,
    new_route_secret,
    sign,
    signature_header,
)

BODY = '{"account":"shared","event":"messageNew","data":{"subject":"Grüße"}}'.encode()
SERVICE_SECRET = "ee-service-secret"


def headers_for(
    secrets: tuple[str, ...], *, body: bytes = BODY, msg_id: str = "evt-1", ts: int | None = None
) -> dict[str, str]:
    return delivery_headers(
        msg_id=msg_id,
        timestamp=int(time.time()) if ts is None else ts,
        body=body,
        route_secrets=secrets,
        service_secret=SERVICE_SECRET,
        attempt=1,
        user_agent="mailrelay/test",
        custom={},
    )


def test_new_route_secret_is_32_random_bytes() -> None:
    """A route secret is whsec_ + base64 of 32 bytes, different every time."""
    first, second = new_route_secret(), new_route_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert first != second


def test_sign_known_answer() -> None:
    """The Standard Webhooks reference example signs to its published signature."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_delivery_headers_verify_with_standardwebhooks() -> None:
    """The standardwebhooks package accepts our headers and body."""
    secret = new_route_secret()
    headers = headers_for((secret,))
    assert Webhook(secret).verify(BODY, headers) == {
        "account": "shared",
        "event": "messageNew",
        "data": {"subject": "Grüße"},
    }


@pytest.mark.parametrize("holder", ["old", "new"])
def test_rotation_either_secret_verifies(holder: str) -> None:
    """During rotation both secrets sign, so a receiver holding either one verifies."""
    old, new = new_route_secret(), new_route_secret()
    headers = headers_for((new, old))
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook({"old": old, "new": new}[holder]).verify(BODY, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_route_secret()).verify(BODY, headers, json_parse=False)


@pytest.mark.parametrize("tamper", ["body", "webhook-id", "webhook-timestamp"])
def test_signature_covers_id_timestamp_and_body(tamper: str) -> None:
    """Changing the body, the id or the timestamp breaks the signature."""
    secret = new_route_secret()
    headers = headers_for((secret,))
    body = BODY
    if tamper == "body":
        body = BODY.replace(b"shared", b"shaRed")
    elif tamper == "webhook-id":
        headers["webhook-id"] = "evt-2"
    else:
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers, json_parse=False)


def test_signature_header_one_per_secret() -> None:
    """Each secret contributes its own v1 signature, current one first."""
    old, new = new_route_secret(), new_route_secret()
    value = signature_header([new, old], "evt-1", 1700000000, BODY)
    assert value == f"{sign(new, 'evt-1', 1700000000, BODY)} {sign(old, 'evt-1', 1700000000, BODY)}"
    with pytest.raises(ValueError, match="at least one secret"):
        signature_header([], "evt-1", 1700000000, BODY)


@pytest.mark.parametrize("secret", ["whsec_", "whsec_A", ""])
def test_unusable_secret_is_refused(secret: str) -> None:
    """A secret that is empty or not base64 raises instead of signing with a weak key."""
    with pytest.raises(ValueError, match="webhook secret"):
        sign(secret, "evt-1", 1700000000, BODY)


@pytest.mark.parametrize(
    ("secret", "body", "expected"),
    [
        # RFC 4231 test case 2 (HMAC-SHA256 5bdcc146...843), in unpadded base64url.
        ("Jefe", b"what do ya want for nothing?", "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM"),
        # Node: crypto.createHmac('sha256', secret).update(body).digest('base64url').
        (SERVICE_SECRET, BODY, "ElzzXpSKb6-ofrAjPbiwtmwjGBuZKjil97IecmACqVo"),
    ],
)
def test_ee_signature_known_answers(secret: str, body: bytes, expected: str) -> None:
    """X-EE-Wh-Signature is EmailEngine's base64url HMAC-SHA256 of the raw body."""
    assert ee_signature(secret, body) == expected


def test_delivery_headers_content() -> None:
    """Every attempt carries the content type, ids, attempt number and both signatures."""
    secret = new_route_secret()
    headers = delivery_headers(
        msg_id="evt-9",
        timestamp=1700000000,
        body=BODY,
        route_secrets=[secret],
        service_secret=SERVICE_SECRET,
        attempt=3,
        user_agent="mailrelay/1.0",
        custom={"X-Tenant": "acme"},
    )
    assert headers == {
        "User-Agent": "mailrelay/1.0",
        "X-Tenant": "acme",
        "Content-Type": "application/json",
        "webhook-id": "evt-9",
        "webhook-timestamp": "1700000000",
        "webhook-signature": sign(secret, "evt-9", 1700000000, BODY),
        "X-EE-Wh-Signature": "ElzzXpSKb6-ofrAjPbiwtmwjGBuZKjil97IecmACqVo",
        "X-EE-Wh-Event-Id": "evt-9",
        "X-EE-Wh-Attempts-Made": "3",
    }


@pytest.mark.parametrize(
    "name",
    [
        "Content-Type",
        "content-type",
        "WEBHOOK-ID",
        "Webhook-Timestamp",
        "webhook-signature",
        "x-ee-wh-signature",
        "X-EE-WH-EVENT-ID",
        "X-Ee-Wh-Attempts-Made",
        "Content-Length",
        "Host",
    ],
)
def test_custom_headers_cannot_override_protected(name: str) -> None:
    """A route's custom header never replaces a signed, id, timestamp or framing header."""
    secret = new_route_secret()
    plain = headers_for((secret,), ts=1700000000)
    headers = delivery_headers(
        msg_id="evt-1",
        timestamp=1700000000,
        body=BODY,
        route_secrets=[secret],
        service_secret=SERVICE_SECRET,
        attempt=1,
        user_agent="mailrelay/test",
        custom={name: "forged"},
    )
    assert headers == plain
    assert name.lower() in PROTECTED_HEADERS


def test_custom_headers_may_set_user_agent_and_skip_broken_values() -> None:
    """User-Agent may be replaced (any case, no duplicate); header injection is dropped."""
    headers = delivery_headers(
        msg_id="evt-1",
        timestamp=1700000000,
        body=BODY,
        route_secrets=[new_route_secret()],
        service_secret=SERVICE_SECRET,
        attempt=1,
        user_agent="mailrelay/test",
        custom={"user-agent": "acme-hook", "X-Evil": "a\r\nX-Injected: 1", "Bad Name": "x"},
    )
    assert [k for k in headers if k.lower() == "user-agent"] == ["user-agent"]
    assert headers["user-agent"] == "acme-hook"
    assert "X-Evil" not in headers
    assert "Bad Name" not in headers
