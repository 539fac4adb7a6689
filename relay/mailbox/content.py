"""EmailEngine's message content: headers, text, web-safe HTML, embedded images, MIME parsing.

Pure. Header blocks and whole messages are parsed with the stdlib ``email`` package under
``compat32``: it keeps every header value as the raw source string, where
``policy.default`` parses structured headers on access and raises on some malformed ones;
decoding (RFC 2047 words, RFC 2231 parameters, 8-bit bytes) is then the same as for
BODYSTRUCTURE (:mod:`relay.events.normalize`), so a part is named alike on both paths.

HTML is sanitized by ``nh3`` (Ammonia). What Ammonia cannot judge is written here:
whether a URL loads a remote resource (``img src``, ``background``, CSS ``url(...)``), and
the CSS of ``style`` attributes, which Ammonia passes through unread. ``<style>`` elements
are dropped with their content because no sanitizer reads the CSS inside them.
``embed_images`` rewrites ``cid:`` references with a regular expression, before sanitizing.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from html import unescape as html_unescape
from io import BytesIO
from typing import Literal, NamedTuple, Required, TypedDict
from urllib.parse import unquote

import nh3

from relay.events.structure import (
    Part,
    decode_words,
    header_fields,
    header_items,
    is_text,
    source_text,
    text_parts,
)
from relay.mailbox.decode import to_text
from relay.mailbox.model import TextType

__all__ = [
    "Attachment",
    "ParsedMessage",
    "Text",
    "attachment_inline",
    "embed_images",
    "encoded_size",
    "headers_of",
    "parse_message",
    "pick_headers",
    "text_of",
    "web_safe_html",
]

# -- headers ----------------------------------------------------------------------------------


def headers_of(raw_header: bytes) -> dict[str, list[str]]:
    """EmailEngine's ``headers``: lower-case name -> values in order, unfolded and decoded.

    ``raw_header`` is a header block (``BODY[HEADER]``) or a whole message, whose body is
    ignored. Malformed input degrades: a line that is neither a header nor a continuation
    ends the block, as the ``email`` parser reads it.
    """
    return header_fields(raw_header)


def pick_headers(
    headers: Mapping[str, Sequence[str]], wanted: Sequence[str] | Literal["*"]
) -> dict[str, list[str]]:
    """The headers named in ``wanted`` (any case), or all for ``"*"`` (``notifyHeaders``)."""
    if isinstance(wanted, str):
        wanted = [wanted]
    if "*" in wanted:
        return {name: list(values) for name, values in headers.items()}
    names = {name.strip().lower() for name in wanted}
    return {name: list(values) for name, values in headers.items() if name.lower() in names}


# -- text -------------------------------------------------------------------------------------


class Text(TypedDict, total=False):
    """EmailEngine's ``text`` object."""

    plain: str
    html: str
    hasMore: Required[bool]


def _cut(value: str, max_bytes: int | None) -> tuple[str, bool]:
    """``value`` within ``max_bytes`` of UTF-8, never ending in part of a character."""
    if max_bytes is None:
        return value, False
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return value, False
    # UTF-8 is self-synchronizing: only the cut character's leading bytes are dropped.
    return encoded[: max(max_bytes, 0)].decode("utf-8", "ignore"), True


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def text_of(
    plain: str | None, html: str | None, *, max_bytes: int | None, text_type: TextType
) -> Text:
    """``{plain?, html?, hasMore}``: the requested kinds that exist, each cut to ``max_bytes``.

    Line ends become ``\n``, as EmailEngine returns text.
    """
    result = Text(hasMore=False)
    if plain is not None and text_type in ("*", "plain"):
        result["plain"], more = _cut(_lf(plain), max_bytes)
        result["hasMore"] = result["hasMore"] or more
    if html is not None and text_type in ("*", "html"):
        result["html"], more = _cut(_lf(html), max_bytes)
        result["hasMore"] = result["hasMore"] or more
    return result


def encoded_size(plain: Part | None, html: Part | None) -> dict[str, int]:
    """EmailEngine's ``text.encodedSize``: ``{plain?, html?}`` encoded octets."""
    sizes: dict[str, int] = {}
    if plain is not None:
        sizes["plain"] = plain.size
    if html is not None:
        sizes["html"] = html.size
    return sizes


def attachment_inline(content: bytes) -> str:
    """An attachment's ``content`` in webhooks (``notifyAttachments``): base64, one line."""
    return base64.b64encode(content).decode("ascii")


# -- images -----------------------------------------------------------------------------------

_CID_SRC = re.compile(
    r"""(?<![\w-])(src\s*=\s*)(?:"\s*cid:([^"]*)"|'\s*cid:([^']*)'|cid:([^\s"'>]+))""",
    re.IGNORECASE,
)
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*")


def _cid_key(value: str) -> str:
    return unquote(html_unescape(value)).strip().removeprefix("<").removesuffix(">").strip().lower()


def _media_type(content_type: str) -> str:
    """A bare, lower-case ``type/subtype``; anything else could break out of the attribute."""
    bare = content_type.split(";", 1)[0].strip().lower()
    return bare if _MEDIA_TYPE.fullmatch(bare) else "application/octet-stream"


def embed_images(html: str, images: Mapping[str, tuple[str, bytes]]) -> str:
    """``src="cid:ID"`` -> ``src="data:TYPE;base64,..."`` (``embedAttachedImages``).

    ``images`` maps a Content-ID (with or without ``<>``) to ``(content type, bytes)``;
    references are matched case-insensitively, other ``cid:`` references stay.
    """
    by_id = {_cid_key(cid): image for cid, image in images.items()}

    def replace(match: re.Match[str]) -> str:
        cid = next(group for group in match.groups()[1:] if group is not None)
        image = by_id.get(_cid_key(cid))
        if image is None:
            return match.group(0)
        encoded = base64.b64encode(image[1]).decode("ascii")
        return f'{match.group(1)}"data:{_media_type(image[0])};base64,{encoded}"'

    return _CID_SRC.sub(replace, html)


# -- web-safe HTML ----------------------------------------------------------------------------

_TAGS = nh3.ALLOWED_TAGS | {"font", "big", "tfoot", "address", "section", "main"}
_DROPPED_WITH_CONTENT = {
    "script",
    "style",
    "title",
    "iframe",
    "object",
    "embed",
    "applet",
    "template",
    "noscript",
}
_MAIL_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"style", "align", "valign", "width", "height", "bgcolor", "background", "dir", "lang"},
    "font": {"color", "face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "frame", "rules"},
    "td": {"nowrap", "scope", "abbr"},
    "th": {"nowrap", "abbr"},
    "img": {"border", "hspace", "vspace"},
    "ol": {"type", "reversed"},
    "ul": {"type"},
    "li": {"type", "value"},
    "hr": {"noshade", "color"},
    "br": {"clear"},
}
_ATTRIBUTES = {
    tag: set(nh3.ALLOWED_ATTRIBUTES.get(tag, ())) | _MAIL_ATTRIBUTES.get(tag, set())
    for tag in nh3.ALLOWED_ATTRIBUTES.keys() | _MAIL_ATTRIBUTES.keys()
}
_LINK_SCHEMES = ("http:", "https:", "mailto:")
_REMOTE_SCHEMES = ("http:", "https:")
_EMBEDDED = ("cid:", "data:image/")

_CSS_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.DOTALL)
_CSS_URL = re.compile(
    r"""url\s*\(\s*(?:"([^"]*)"|'([^']*)'|([^\s"')]*))\s*\)""",
    re.IGNORECASE,
)
# Script (expression(), javascript:), other ways of naming a resource (image-set("..."),
# @import "...") and escapes, which can spell any of them (\75 rl).
_CSS_UNSAFE = re.compile(
    r"""\\|image-set|image\s*\(|src\s*\(|@import|expression|javascript:|vbscript:|behavior
    |binding""",
    re.IGNORECASE | re.VERBOSE,
)
# Left after every well-formed url(...) is judged: an unclosed one, which browsers load.
_CSS_OPEN_URL = re.compile(r"url\s*\(", re.IGNORECASE)


def _loads_ok(url: str, allow_remote: bool) -> bool:
    """Whether an image URL may load: embedded always, http(s) only when allowed."""
    value = url.strip().lower()
    return value.startswith(_EMBEDDED) or (allow_remote and value.startswith(_REMOTE_SCHEMES))


def _safe_css(css: str, allow_remote: bool) -> str | None:
    """A ``style`` attribute without remote loads (unless allowed) and script; None: drop."""
    css = _CSS_COMMENT.sub("", css)
    if _CSS_UNSAFE.search(css) or _CSS_OPEN_URL.search(_CSS_URL.sub("none", css)):
        return None

    def judge(match: re.Match[str]) -> str:
        url = next(group for group in match.groups() if group is not None)
        return match.group(0) if _loads_ok(url, allow_remote) else "none"

    return _CSS_URL.sub(judge, css)


def _filter(allow_remote: bool, element: str, attribute: str, value: str) -> str | None:
    """Ammonia's attribute callback: what its allow-lists cannot decide."""
    if attribute == "style":
        return _safe_css(value, allow_remote)
    if attribute == "src" or attribute == "background":
        return value if _loads_ok(value, allow_remote) else None
    if attribute == "href":
        return value if value.strip().lower().startswith(_LINK_SCHEMES) else None
    return value


@functools.cache
def _cleaner(allow_remote: bool) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=_TAGS,
        clean_content_tags=_DROPPED_WITH_CONTENT,
        attributes=_ATTRIBUTES,
        attribute_filter=functools.partial(_filter, allow_remote),
        url_schemes={"http", "https", "mailto", "cid", "data"},
        url_relative="deny",
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )


def web_safe_html(html: str, *, allow_remote: bool = False) -> str:
    """HTML safe to show in a web page: no script, no active content, no remote loads.

    Mail formatting stays (tables, ``font``, ``style`` attributes, layout attributes);
    images load only from ``cid:`` and ``data:image/`` URLs, and from http(s) only with
    ``allow_remote``; links are http(s) or mailto, open in a new window and carry
    ``rel="noopener noreferrer"``. Embed ``cid:`` images (:func:`embed_images`) first.
    """
    return _cleaner(allow_remote).clean(html)


# -- whole messages ---------------------------------------------------------------------------

# CRLF lines, no refolding of the headers as they were.
_FLAT = compat32.clone(linesep="\r\n", max_line_length=0)
_DECODED_BY_EMAIL = frozenset({"base64", "quoted-printable", "x-uuencode", "uuencode", "uue"})


class Attachment(NamedTuple):
    """A part of a parsed message that is not its text; ``content()`` decodes it."""

    section: str
    part: Part
    content: Callable[[], bytes]


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A whole message: headers, text, leaf parts numbered as IMAP does, and attachments."""

    headers: dict[str, list[str]]
    plain: str | None = None
    html: str | None = None
    plain_part: Part | None = None
    html_part: Part | None = None
    parts: tuple[Part, ...] = ()
    attachments: tuple[Attachment, ...] = ()


def _body_bytes(node: Message) -> bytes:
    """A part's body as it would be sent: for an attached message, the message."""
    buffer = BytesIO()
    BytesGenerator(buffer, mangle_from_=False, policy=_FLAT).flatten(node)
    flat = buffer.getvalue()
    if flat.startswith(b"\r\n"):
        return flat[2:]
    head_end = flat.find(b"\r\n\r\n")
    return flat[head_end + 4 :] if head_end != -1 else b""


def _content(node: Message) -> bytes:
    if isinstance(node.get_payload(), list):
        return _body_bytes(node)
    data = node.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _encoded_size(node: Message, encoding: str) -> int:
    payload = node.get_payload()
    if isinstance(payload, list):
        return len(_body_bytes(node))
    if encoding in _DECODED_BY_EMAIL:
        return len(str(payload).encode("utf-8", "surrogateescape"))
    return len(_content(node))  # not transfer-encoded: the decoded bytes are the source


def _decoded(value: str | None) -> str | None:
    return decode_words(source_text(value)) if value else None


def _part_of(node: Message, section: str, related: bool) -> Part:
    encoding = source_text(str(node.get("content-transfer-encoding") or "")).strip().lower()
    content_id = (_decoded(str(node.get("content-id") or "")) or "").strip()
    return Part(
        section=section,
        content_type=node.get_content_type(),
        charset=node.get_content_charset(),
        encoding=encoding or "7bit",
        size=_encoded_size(node, encoding),
        filename=_decoded(node.get_filename()),
        disposition=node.get_content_disposition(),
        content_id=content_id.removeprefix("<").removesuffix(">").strip() or None,
        related=related,
    )


def _leaves(node: Message, section: str, related: bool) -> list[tuple[Part, Message]]:
    payload = node.get_payload()
    if node.get_content_maintype() == "multipart" and isinstance(payload, list):
        subtype = node.get_content_subtype()
        found: list[tuple[Part, Message]] = []
        for index, child in enumerate(payload, 1):
            number = f"{section}.{index}" if section else str(index)
            found.extend(_leaves(child, number, subtype == "related"))
        return found
    return [(_part_of(node, section or "1", related), node)]


def parse_message(raw: bytes) -> ParsedMessage:
    """A whole RFC 822 message (Graph ``$value``, an upload) parsed for the message API.

    Parts are numbered as IMAP numbers them (attached messages are not descended into);
    the text is the first ``text/plain`` and ``text/html`` part that is not an attachment;
    every other leaf is an attachment. Malformed MIME degrades, it does not raise.
    """
    message = BytesParser(policy=compat32).parsebytes(raw)
    leaves = _leaves(message, "", False)
    nodes = {part.section: node for part, node in leaves}
    parts = tuple(part for part, _ in leaves)
    plain_part, html_part = text_parts(parts)

    def text(part: Part | None) -> str | None:
        return None if part is None else to_text(_content(nodes[part.section]), part.charset)

    return ParsedMessage(
        headers=header_items(message.raw_items()),
        plain=text(plain_part),
        html=text(html_part),
        plain_part=plain_part,
        html_part=html_part,
        parts=parts,
        attachments=tuple(
            Attachment(part.section, part, functools.partial(_content, nodes[part.section]))
            for part in parts
            if not is_text(part)
        ),
    )
