"""Reading and changing mailboxes: one interface, an IMAP and a Microsoft Graph backend.

Used by the messages API, by the webhook content fetch (``notifyText`` and friends) and by
the sent-copy step of sending, so that none of them knows which backend it talks to.

    model.py      what goes in and comes out (:class:`~relay.mailbox.model.Mailbox`)
    structure.py  IMAP BODYSTRUCTURE -> parts (pure)
    decode.py     transfer decoding, also incremental for streamed parts (pure)
    content.py    text, headers, web-safe HTML, embedded images (pure)
    pool.py       per-account IMAP connections apart from the IDLE listeners
    imap.py       the IMAP backend
    graph.py      the Microsoft Graph backend
    access.py     which backend an account uses
"""
