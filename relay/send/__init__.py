"""Sending mail as a mailbox: the submit payload, MIME, the outbox worker and its transports."""
