"""The test message of the mailbox tests: text, HTML, an inline image and a big attachment."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.policy import SMTP

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)
PLAIN = "Hello from the support queue.\nSecond line: grüße.\n"
HTML = (
    '<p>Hello <b>from</b> the support queue.</p><img src="cid:logo@relay.test">'
    "<script>alert(1)</script><img src=x onerror=alert(2)>"
    '<a href="javascript:alert(3)">click</a><img src="https://tracker.example/p.gif">'
)


def big_attachment(size: int) -> bytes:
    """``size`` pseudo-random bytes (incompressible, deterministic)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def rich_message(
    subject: str = "Ticket 4711",
    *,
    attachment_size: int = 10 * 1024 * 1024,
    sender: str = "rita@example.net",
    to: str = "support@example.com",
) -> tuple[bytes, bytes]:
    """A message (CRLF, as servers store it) and the bytes of its big attachment."""
    payload = big_attachment(attachment_size)
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Rita <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{hashlib.sha256(subject.encode()).hexdigest()}@example.net>"
    msg["X-Ticket"] = "4711"
    msg.set_content(PLAIN)
    msg.add_alternative(HTML, subtype="html")
    html_part = msg.get_body(("html",))
    assert html_part is not None
    html_part.add_related(
        PNG,
        maintype="image",
        subtype="png",
        cid="<logo@relay.test>",
        filename="logo.png",
        disposition="inline",
    )
    msg.add_attachment(
        payload, maintype="application", subtype="octet-stream", filename="report.bin"
    )
    return bytes(msg), payload
