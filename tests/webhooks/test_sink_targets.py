"""Broker URLs, sink fields and routing names of queue sink routes (pure)."""

from __future__ import annotations

import pytest

from relay.webhooks.sink_targets import (
    BrokerUrl,
    SinkOptions,
    check_options,
    nats_subject,
    parse_broker_url,
    redacted,
    routing_key,
)


@pytest.mark.parametrize(
    ("kind", "url", "expected"),
    [
        ("amqp", "amqp://u:p@mq:5673/mail", BrokerUrl("amqp", "mq", 5673, "u", "p", "mail")),
        ("amqp", "amqp://mq", BrokerUrl("amqp", "mq", 5672, None, None, "/")),
        ("amqp", "amqp://mq/%2F", BrokerUrl("amqp", "mq", 5672, None, None, "/")),
        ("amqp", "amqp://u:p%40ss@mq/", BrokerUrl("amqp", "mq", 5672, "u", "p@ss", "/")),
        ("nats", "nats://n:4223", BrokerUrl("nats", "n", 4223, None, None, "")),
        ("nats", "nats://tok@n", BrokerUrl("nats", "n", 4222, "tok", None, "")),
        ("redis", "redis://:pw@r/3", BrokerUrl("redis", "r", 6379, None, "pw", "3")),
        ("redis", "redis://r", BrokerUrl("redis", "r", 6379, None, None, "0")),
        ("redis", "redis://[::1]:7000/1", BrokerUrl("redis", "::1", 7000, None, None, "1")),
    ],
)
def test_parse_broker_url(kind: str, url: str, expected: BrokerUrl) -> None:
    """Host, port (the kind's default when absent), credentials (decoded) and vhost or db."""
    assert parse_broker_url(kind, url) == expected


@pytest.mark.parametrize(
    ("kind", "url", "problem"),
    [
        ("amqp", "amqps://mq/", "must be a amqp:// URL"),
        ("amqp", "amqp:///vhost", "must name the broker's host"),
        ("nats", "nats://n:0x1", "invalid port"),
        ("nats", "nats://n/x", "nothing after the port"),
        ("redis", "redis://r/99", "database number"),
        ("redis", "redis://r/0?x=1", "query"),
    ],
)
def test_bad_broker_url(kind: str, url: str, problem: str) -> None:
    """A URL that does not fit the kind says what is wrong."""
    with pytest.raises(ValueError, match=problem):
        parse_broker_url(kind, url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://u:secret@mq:5672/v", "amqp://u:***@mq:5672/v"),
        ("redis://:secret@r/0", "redis://:***@r/0"),
        ("nats://n:4222", "nats://n:4222"),
        ("redis://:secret@[::1]:7000/1", "redis://:***@[::1]:7000/1"),
    ],
)
def test_redacted(url: str, shown: str) -> None:
    """Only the password is hidden."""
    assert redacted(url) == shown


@pytest.mark.parametrize(
    ("kind", "options", "problem"),
    [
        ("amqp", SinkOptions(), "exchange: required"),
        ("amqp", SinkOptions(exchange="x", stream="s"), "stream: only routes of type"),
        ("nats", SinkOptions(subject="a.*"), "subject:"),
        ("nats", SinkOptions(subject="a", stream="s.t"), "stream:"),
        ("redis", SinkOptions(stream="s", max_len=0), "maxLen: at least 1"),
        ("http", SinkOptions(exchange="x"), "exchange: only routes of type amqp"),
    ],
)
def test_check_options(kind: str, options: SinkOptions, problem: str) -> None:
    """Sink fields are checked against the route's type, naming the field first."""
    with pytest.raises(ValueError, match=problem):
        check_options(kind, options)


def test_routing_names() -> None:
    """Routing key and subject: the prefix and the event name, joined by a dot."""
    assert routing_key(None, "messageNew") == "messageNew"
    assert routing_key("mail", "messageNew") == "mail.messageNew"
    assert nats_subject("mail.events", "messageDeleted") == "mail.events.messageDeleted"
    assert SinkOptions.from_json({"maxLen": 5, "other": 1}).to_json() == {"maxLen": 5}
