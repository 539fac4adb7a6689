"""A parsed IMAP BODYSTRUCTURE -> its leaf parts, and which of them are the message text.

Pure. Part numbers are IMAP's (RFC 3501 6.4.5): the children of a multipart are numbered
1..n, recursively joined with dots; the body of a message that is not multipart is part
``1``. An attached message (``message/rfc822``) is one leaf: its own parts are not listed,
as :func:`relay.events.normalize.attachments` does not list them either. Whether a part is
the message text or an attachment follows the same rule as that function, so every leaf is
exactly one of the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from relay.events.normalize import decode_words, param, param_pairs

__all__ = ["Part", "find", "is_text", "leaf_parts", "text_parts"]

_TEXT_TYPES = frozenset({"text/plain", "text/html"})
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})


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


def _leaf(node: Sequence[Any], section: str, related: bool) -> Part:
    fields = list(node) + [None] * max(0, 7 - len(node))
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
        found.append(_leaf(node, section or "1", related))

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
