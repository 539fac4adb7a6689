"""Contract tests: EmailEngine's documented payload and answer shapes, checked on what the
relay produces against real peers."""
