"""A parsed IMAP BODYSTRUCTURE -> its leaf parts, and which of them are the message text;
and the decoding of the header words and parameters found there (RFC 2047, RFC 2231).

Pure; the one walk of a BODYSTRUCTURE that webhook attachment lists
(:func:`relay.events.normalize.attachments`) and the mailbox layer's reads share. Part
numbers are IMAP's (RFC 3501 6.4.5): the children of a multipart are numbered 1..n,
recursively joined with dots; the body of a message that is not multipart is part
``1``. An attached message (``message/rfc822``) is one leaf: its own parts are not listed.
Every leaf is either the message text (:func:`is_text`) or an attachment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from typing import Any
from urllib.parse import unquote

__all__ = [
    "Part",
    "as_text",
    "decode_words",
    "find",
    "is_text",
    "leaf_parts",
    "param",
    "param_pairs",
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


def leaf_parts(bodystructure: Any) -> tuple[Part, ...]:
    """Every leaf part of a parsed BODYSTRUCTURE (imapclient's ``BodyData``), in part order.

    Multipart nodes hold their children as a list in element 0 (imapclient's shape). A
    value that is not a BODYSTRUCTURE gives no parts.
    """
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
