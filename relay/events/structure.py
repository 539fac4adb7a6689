"""A parsed IMAP BODYSTRUCTURE -> its leaf parts, and which of them are the message text;
the decoding of the header words and parameters found there (RFC 2047, RFC 2231); and
header blocks and MIME sources read as far as events need them.

Pure; the one walk of a BODYSTRUCTURE that webhook attachment lists
(:func:`relay.events.normalize.attachments`) and the mailbox layer's reads share. Part
numbers are IMAP's (RFC 3501 6.4.5): the children of a multipart are numbered 1..n,
recursively joined with dots; the body of a message that is not multipart is part
``1``. An attached message (``message/rfc822``) is one leaf: its own parts are not listed.
Every leaf is either the message text (:func:`is_text`) or an attachment.

Header blocks (:func:`header_fields`) and MIME sources (:func:`mime_leaves`) are read with
the stdlib ``email`` parser under ``compat32``, which keeps each value as its source text
and never raises on malformed headers; values are then unfolded and decoded like
BODYSTRUCTURE's.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from typing import Any
from urllib.parse import unquote

__all__ = [
    "Headers",
    "Part",
    "as_text",
    "body_item",
    "decode_body",
    "decode_words",
    "find",
    "first_value",
    "header_blocks",
    "header_fields",
    "header_items",
    "is_text",
    "leaf_parts",
    "mime_leaves",
    "param",
    "param_pairs",
    "source_text",
    "text_parts",
]

_TEXT_TYPES = frozenset({"text/plain", "text/html"})
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})


# -- header words and parameters -----------------------------------------------------------


def as_text(value: bytes | str) -> str:
    """Header bytes as text: UTF-8, else Latin-1 (never fails)."""
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        # Raw 8-bit headers that are not UTF-8 are almost always Windows-1252 / Latin-1.
        return value.decode("latin-1")


def decode_words(value: bytes | str | None) -> str | None:
    """Decode RFC 2047 encoded words (``=?UTF-8?Q?J=C3=BCrgen?=``); None stays None.

    Raw 8-bit text (RFC 6532) is taken as UTF-8. Unknown charsets and broken encodings
    degrade to replacement characters instead of failing.
    """
    if value is None:
        return None
    text = as_text(value)
    if "=?" not in text:
        return text
    try:
        parts = decode_header(text)
    except (HeaderParseError, ValueError):
        return text
    try:
        return str(make_header(parts))
    except (LookupError, UnicodeError, HeaderParseError):
        pass
    out: list[str] = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
        elif charset is None:
            out.append(chunk.decode("raw-unicode-escape", "replace"))
        else:
            try:
                out.append(chunk.decode(charset, "replace"))
            except LookupError:
                out.append(chunk.decode("utf-8", "replace"))
    return "".join(out)


def param_pairs(raw: Any) -> list[tuple[str, bytes | str]]:
    """A parsed parameter list ``(name value ...)`` as ``(lower-case name, value)`` pairs."""
    if not isinstance(raw, tuple | list):
        return []
    items = list(raw)
    pairs: list[tuple[str, bytes | str]] = []
    for i in range(0, len(items) - 1, 2):
        key, value = items[i], items[i + 1]
        if isinstance(key, bytes | str) and isinstance(value, bytes | str):
            pairs.append((as_text(key).lower(), value))
    return pairs


def _rfc2231(value: str) -> str:
    """``UTF-8''r%C3%A9sum%C3%A9.pdf`` -> ``résumé.pdf``."""
    charset, sep, rest = value.partition("'")
    if not sep:
        return unquote(value, encoding="utf-8", errors="replace")
    _lang, sep, encoded = rest.partition("'")
    if not sep:
        return unquote(value, encoding="utf-8", errors="replace")
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="replace")
    except LookupError:
        return unquote(encoded, encoding="utf-8", errors="replace")


def param(pairs: Sequence[tuple[str, bytes | str]], name: str) -> str | None:
    """A parameter's value, whether plain, RFC 2047 encoded, RFC 2231 extended or continued."""
    values = dict(pairs)
    if name + "*" in values:
        return _rfc2231(as_text(values[name + "*"]))
    if name in values:
        return decode_words(values[name])
    segments: list[tuple[int, bool, str]] = []
    for key, value in pairs:
        head, star, index = key.partition("*")
        if head != name or not star:
            continue
        extended = index.endswith("*")
        number = index.rstrip("*")
        if number.isdigit():
            segments.append((int(number), extended, as_text(value)))
    if not segments:
        return None
    segments.sort()
    if not segments[0][1]:
        return decode_words("".join(v for _, _, v in segments))
    charset, _, rest = segments[0][2].partition("'")
    _lang, _, first = rest.partition("'")
    encoded = first + "".join(v for _, _, v in segments[1:])
    return _rfc2231(f"{charset}''{encoded}")


# -- parts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Part:
    """One leaf body part.

    ``encoding`` is the lower-case Content-Transfer-Encoding (``7bit`` when not given),
    ``size`` the encoded size in octets, ``content_id`` the Content-ID without ``<>``;
    ``related`` says the part is a direct child of a ``multipart/related``.
    """

    section: str
    content_type: str
    charset: str | None = None
    encoding: str = "7bit"
    size: int = 0
    filename: str | None = None
    disposition: str | None = None
    content_id: str | None = None
    related: bool = False


def is_text(part: Part) -> bool:
    """Whether ``part`` is the message text rather than an attachment.

    ``text/plain`` or ``text/html`` without a file name or ``attachment`` disposition, and
    not an embedded resource (a Content-ID inside ``multipart/related``).
    """
    return (
        part.content_type in _TEXT_TYPES
        and part.disposition != "attachment"
        and not part.filename
        and not (part.related and part.content_id)
    )


def _str(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _lower(value: Any, default: str) -> str:
    text = _str(value)
    return text.strip().lower() if text else default


def _content_id(value: Any) -> str | None:
    text = decode_words(value) if isinstance(value, bytes | str) else None
    if text is None:
        return None
    return text.strip().removeprefix("<").removesuffix(">").strip() or None


def _leaf(node: Sequence[Any], section: str, related: bool) -> Part | None:
    if len(node) < 7:
        return None  # not a body part (a server's malformed answer): nothing to read
    fields = list(node)
    content_type = f"{_lower(fields[0], 'application')}/{_lower(fields[1], 'octet-stream')}"
    # Extension data starts after the type-specific fields: lines for text/*, envelope +
    # body + lines for message/rfc822.
    if content_type.startswith("text/"):
        ext = 8
    elif content_type in _MESSAGE_TYPES:
        ext = 10
    else:
        ext = 7
    disposition_raw = node[ext + 1] if len(node) > ext + 1 else None
    disposition: str | None = None
    disposition_params: list[tuple[str, bytes | str]] = []
    if isinstance(disposition_raw, tuple | list) and disposition_raw:
        disposition = _lower(disposition_raw[0], "") or None
        if len(disposition_raw) > 1:
            disposition_params = param_pairs(disposition_raw[1])
    type_params = param_pairs(fields[2])
    charset = (param(type_params, "charset") or "").strip().lower() or None
    return Part(
        section=section,
        content_type=content_type,
        charset=charset,
        encoding=_lower(fields[5], "7bit"),
        size=fields[6] if isinstance(fields[6], int) else 0,
        filename=param(disposition_params, "filename") or param(type_params, "name") or None,
        disposition=disposition,
        content_id=_content_id(fields[3]),
        related=related,
    )


# The last BODYSTRUCTURE walked, and its parts: normalizing one message asks for the parts
# of the same object three times (attachments, text, report check), and the walk was a
# third of the time a burst of new mail spent in the relay. Compared by identity, and held,
# so the object cannot be freed and its id reused.
_last_walked: tuple[Any, tuple[Part, ...]] = (None, ())


def leaf_parts(bodystructure: Any) -> tuple[Part, ...]:
    """Every leaf part of a parsed BODYSTRUCTURE (imapclient's ``BodyData``), in part order.

    Multipart nodes hold their children as a list in element 0 (imapclient's shape). A
    value that is not a BODYSTRUCTURE gives no parts.
    """
    global _last_walked
    walked, parts = _last_walked
    if walked is bodystructure and walked is not None:
        return parts
    parts = _leaf_parts(bodystructure)
    _last_walked = (bodystructure, parts)
    return parts


def _leaf_parts(bodystructure: Any) -> tuple[Part, ...]:
    found: list[Part] = []
    if not isinstance(bodystructure, tuple | list) or not bodystructure:
        return ()

    def walk(node: Sequence[Any], section: str, related: bool) -> None:
        if node and isinstance(node[0], list):
            subtype = _lower(node[1], "mixed") if len(node) > 1 else "mixed"
            for index, child in enumerate(node[0], 1):
                if isinstance(child, tuple | list):
                    number = f"{section}.{index}" if section else str(index)
                    walk(child, number, subtype == "related")
            return
        part = _leaf(node, section or "1", related)
        if part is not None:
            found.append(part)

    walk(bodystructure, "", False)
    return tuple(found)


def text_parts(parts: Iterable[Part]) -> tuple[Part | None, Part | None]:
    """``(plain, html)``: the first ``text/plain`` and ``text/html`` part that is message text."""
    plain: Part | None = None
    html: Part | None = None
    for part in parts:
        if not is_text(part):
            continue
        if plain is None and part.content_type == "text/plain":
            plain = part
        elif html is None and part.content_type == "text/html":
            html = part
    return plain, html


def find(parts: Iterable[Part], section: str) -> Part | None:
    """The leaf part numbered ``section`` (``"2"``, ``"1.2"``), or None."""
    return next((part for part in parts if part.section == section), None)


# -- header blocks and MIME sources --------------------------------------------------------

# Header name (lower case) -> its values in source order, unfolded and decoded.
Headers = dict[str, list[str]]

_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def source_text(value: str) -> str:
    """A string from the ``compat32`` parser, its raw 8-bit bytes read as UTF-8 or Latin-1."""
    return as_text(value.encode("utf-8", "surrogateescape"))


def header_items(items: Iterable[tuple[str, Any]], *, decode: bool = True) -> Headers:
    """``(name, value)`` pairs as :data:`Headers`: names lower case, values unfolded,
    RFC 2047 words decoded (unless not ``decode``) and surrounding white space removed."""
    found: Headers = {}
    for name, value in items:
        key = source_text(str(name)).strip().lower()
        if not key:
            continue
        unfolded = re.sub(r"[\r\n]+", "", source_text(str(value)))
        text = (decode_words(unfolded) or "") if decode else unfolded
        found.setdefault(key, []).append(text.strip())
    return found


def header_fields(raw: bytes | str | None, *, decode: bool = True) -> Headers:
    """A header block (``BODY[HEADER.FIELDS (...)]``, or a whole message whose body is
    ignored) as :data:`Headers` (see :func:`header_items`). A line that is neither a field
    nor a continuation ends the block, as the ``email`` parser reads it."""
    if not raw:
        return {}
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")
    message = BytesParser(policy=compat32).parsebytes(data, headersonly=True)
    return header_items(message.raw_items(), decode=decode)


def first_value(values: Sequence[str] | None) -> str | None:
    """The first value of a header field that is not blank, stripped (None: there is none)."""
    for value in values or ():
        if value.strip():
            return value.strip()
    return None


def header_blocks(raw: bytes | str | None) -> list[Headers]:
    """Groups of header fields separated by empty lines, such as the per-message and
    per-recipient groups of a ``message/delivery-status`` body (RFC 3464); empty groups
    are left out."""
    if not raw:
        return []
    text = as_text(raw).replace("\r\n", "\n").replace("\r", "\n")
    blocks = (header_fields(chunk.strip("\n") + "\n") for chunk in _BLANK_LINE.split(text))
    return [block for block in blocks if block]


def body_item(fetch: Mapping[str, Any], section: str) -> bytes | None:
    """``BODY[section]`` of a parsed FETCH, whatever partial suffix (``<0>``) the server added."""
    exact = f"BODY[{section}]"
    for key, value in fetch.items():
        if key == exact or (key.startswith(exact + "<") and key.endswith(">")):
            return value if isinstance(value, bytes) else as_text(value or b"").encode("utf-8")
    return None


def decode_body(raw: bytes, encoding: str) -> bytes:
    """A part's body with its Content-Transfer-Encoding (``base64``, ``quoted-printable``)
    undone; a body cut short by a partial FETCH decodes as far as it goes."""
    if encoding == "base64":
        compact = re.sub(rb"[^A-Za-z0-9+/=]", b"", raw)
        compact = compact[: len(compact) - len(compact) % 4]
        try:
            return base64.b64decode(compact)
        except (binascii.Error, ValueError):
            return b""
    if encoding == "quoted-printable":
        return quopri.decodestring(raw)
    return raw


def _inner_source(part: Message) -> bytes:
    """The content of a ``message/*`` part as source text (for a ``delivery-status`` part,
    its groups separated by empty lines)."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        body = part.get_payload(decode=True)
        return body if isinstance(body, bytes) else b""
    chunks: list[bytes] = []
    for inner in payload:
        if not isinstance(inner, Message):
            continue
        try:
            chunks.append(inner.as_bytes())
        except (LookupError, UnicodeError, ValueError, TypeError):
            continue
    return b"\n".join(chunks)


def mime_leaves(raw: bytes) -> list[tuple[str, bytes]]:
    """The leaf parts of a MIME source as ``(lower-case content type, body)``, in order.

    Like :func:`leaf_parts` an attached message is one leaf and is not descended into.
    Bodies come with their transfer encoding undone; a ``message/*`` part's body is the
    source of what it holds.
    """
    message = BytesParser(policy=compat32).parsebytes(raw)

    def walk(part: Message) -> Iterator[tuple[str, bytes]]:
        content_type = part.get_content_type().lower()
        payload = part.get_payload()
        if part.get_content_maintype() == "multipart":
            for child in payload if isinstance(payload, list) else ():
                if isinstance(child, Message):
                    yield from walk(child)
            return
        if part.get_content_maintype() == "message":
            yield content_type, _inner_source(part)
            return
        body = part.get_payload(decode=True)
        yield content_type, body if isinstance(body, bytes) else b""

    return list(walk(message))
