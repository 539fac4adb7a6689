"""Reading and changing mailboxes: one interface, an IMAP and a Microsoft Graph backend.

Used by the messages API, by the webhook content fetch (``notifyText`` and friends) and by
the sent-copy step of sending, so that none of them knows which backend it talks to.

    model.py        what goes in and comes out (:class:`~relay.mailbox.model.Mailbox`)
    decode.py       transfer decoding, also incremental for streamed parts (pure)
    content.py      text, headers, web-safe HTML, embedded images (pure)
    credentials.py  where and as whom an account logs in to IMAP
    pool.py         per-account IMAP connections apart from the IDLE listeners
    imap.py         the IMAP backend
    graph.py        the Microsoft Graph backend
    access.py       which backend an account uses
    notify.py       message content in ``messageNew`` webhooks

A message's parts (IMAP BODYSTRUCTURE) are read by :mod:`relay.events.structure`, the walk
webhook attachment lists use too.
"""
