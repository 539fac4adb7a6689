"""Content-Transfer-Encoding decoding, whole or in chunks, and bytes -> text by charset.

Pure. The incremental decoders are written here because the stdlib decodes only whole
values (``base64.b64decode``, ``quopri``, ``email``): a large attachment streamed from the
server in chunks has its base64 quanta and quoted-printable escapes split at arbitrary
points, so each decoder keeps the unfinished tail for the next :meth:`Decoder.feed`. The
decoding itself is ``binascii``'s.
"""

from __future__ import annotations

import binascii
from typing import Protocol

__all__ = ["Decoder", "decode_body", "decoder", "to_text"]

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
# Every byte that is not base64 (line breaks, spaces, junk) is dropped before counting.
_NOT_B64 = bytes(b for b in range(256) if b not in _B64_ALPHABET)
# A quoted-printable line longer than this is decoded before its end arrives, so a part
# without line breaks does not collect in memory.
QP_MAX_PENDING = 64 * 1024
# Charsets that mail declares but Python does not know, or knows more narrowly than the
# mail that uses them (WHATWG Encoding's mapping: GB2312 text is GBK, Korean is CP949).
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "x-mac-roman": "mac-roman",
}


class Decoder(Protocol):
    """Decodes one transfer-encoded body fed in chunks of any size."""

    def feed(self, chunk: bytes) -> bytes:
        """The decoded bytes that ``chunk`` completes (possibly none)."""
        ...

    def flush(self) -> bytes:
        """The rest, at the end of the body."""
        ...


class _Identity:
    """7bit, 8bit, binary and unknown encodings: the bytes as they are."""

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def flush(self) -> bytes:
        return b""


def _b64_segment(data: bytes) -> bytes:
    """A last base64 run, padding added; a lone trailing character carries no byte."""
    data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4)) if data else b""


class _Base64:
    """Decodes whole 4-character quanta; ``=`` ends a run, as in concatenated encodings."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = chunk.translate(None, _NOT_B64)
        if self._pending:
            data = self._pending + data
        if b"=" not in data:
            # The common case (a run with its padding still ahead): no further copies.
            whole = len(data) - len(data) % 4
            self._pending = data[whole:]
            return binascii.a2b_base64(memoryview(data)[:whole]) if whole else b""
        out: list[bytes] = []
        while b"=" in data:
            run, _, data = data.partition(b"=")
            out.append(_b64_segment(run))
            data = data.lstrip(b"=")
        whole = len(data) - len(data) % 4
        out.append(binascii.a2b_base64(data[:whole]) if whole else b"")
        self._pending = data[whole:]
        return b"".join(out)

    def flush(self) -> bytes:
        pending, self._pending = self._pending, b""
        return _b64_segment(pending)


def _qp_cut(data: bytes) -> int:
    """Where ``data`` may be cut: not inside an ``=XX`` escape or trailing white space."""
    cut = len(data.rstrip(b" \t\r"))
    escape = data.rfind(b"=", max(0, cut - 2), cut)
    if escape != -1:
        cut = escape
    while cut and data[cut - 1] == ord("="):
        cut -= 1
    return cut


class _QuotedPrintable:
    """Decodes complete lines; the unfinished last line waits for the next chunk."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) > QP_MAX_PENDING:
            end = _qp_cut(data)
        self._pending = data[end:]
        return binascii.a2b_qp(data[:end]) if end else b""

    def flush(self) -> bytes:
        pending, self._pending = self._pending, b""
        return binascii.a2b_qp(pending) if pending else b""


def decoder(encoding: str) -> Decoder:
    """A fresh incremental decoder for a Content-Transfer-Encoding (any case)."""
    name = encoding.strip().lower()
    if name == "base64":
        return _Base64()
    if name == "quoted-printable":
        return _QuotedPrintable()
    return _Identity()


def decode_body(raw: bytes, encoding: str) -> bytes:
    """A whole transfer-encoded body, decoded."""
    step = decoder(encoding)
    return step.feed(raw) + step.flush()


def to_text(data: bytes, charset: str | None) -> str:
    """Decoded body bytes as text.

    Without a charset: UTF-8, else Latin-1 (raw 8-bit text is almost always one of them).
    An unknown charset is read as UTF-8; undecodable bytes become U+FFFD.
    """
    if charset is None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    name = charset.strip().strip('"').lower()
    try:
        return data.decode(_CHARSET_ALIASES.get(name, name), "replace")
    except (LookupError, UnicodeError):
        # LookupError: unknown, or a bytes-to-bytes codec (``base64``); UnicodeError: codecs
        # that refuse everything (``undefined``).
        return data.decode("utf-8", "replace")
