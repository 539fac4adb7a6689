"""A local emulator of the Microsoft Graph v1.0 mail subset the relay uses.

- :mod:`~relay.sandbox.graph.mail`: mailboxes, folders and messages (in memory).
- :mod:`~relay.sandbox.graph.delta`: delta query tokens and pages.
- :mod:`~relay.sandbox.graph.access`: what a token may do with a mailbox.
- :mod:`~relay.sandbox.graph.subscriptions`: change subscriptions and their rules.
- :mod:`~relay.sandbox.graph.notifier`: validation, batching, retries, slow endpoints.
- :mod:`~relay.sandbox.graph.routes`: the ``/v1.0/`` endpoints.
- :mod:`~relay.sandbox.graph.admin`: the admin API for mail and subscriptions.
"""
