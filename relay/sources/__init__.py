"""Mailbox sources: they watch mailboxes and report raw changes (IMAP here; Graph later)."""
