"""Pure helpers: IMAP response records -> typed values, and values -> command arguments.

A *response* is one logical server response, already framed by the client as a list of
records in the shape ``imapclient.response_parser`` expects: ``bytes`` for text without a
literal, ``(text_ending_in_{n}, literal_bytes)`` for text followed by a literal. The parsing
of nested data (FETCH items, ENVELOPE, BODYSTRUCTURE, LIST, STATUS) is delegated to
``imapclient.response_parser``; only status lines and the ``* [n] KIND`` prefix are split
here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from imapclient import imap_utf7
from imapclient.exceptions import ProtocolError
from imapclient.response_parser import (
    parse_fetch_response,
    parse_message_list,
    parse_response,
)

from relay.imap.errors import ImapProtocolError

__all__ = [
    "AppendResult",
    "Bye",
    "Exists",
    "Expunge",
    "FetchedMessage",
    "Mailbox",
    "OtherResponse",
    "Recent",
    "Record",
    "SearchResult",
    "SelectResult",
    "Tagged",
    "UidSet",
    "Untagged",
    "Update",
    "Vanished",
    "decode_mailbox",
    "encode_mailbox",
    "parse_fetch",
    "parse_sequence_set",
    "parse_untagged",
    "quote",
    "sequence_set",
    "split_status",
    "to_update",
]

Record: TypeAlias = bytes | tuple[bytes, bytes]

_NUMBERED = re.compile(rb"(\d+) ([A-Za-z]+)(?: |\Z)")
_KIND = re.compile(rb"([A-Za-z0-9.-]+)(?: |\Z)")
_SEQSET = re.compile(rb"[0-9:,*]+")


# -- framing-level values -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Untagged:
    """One untagged response: ``* [number] KIND data``.

    ``kind`` is upper case (``"EXISTS"``, ``"FETCH"``, ``"OK"``, ``"CAPABILITY"``...);
    ``data`` holds the records after the kind word, literals included.
    """

    kind: str
    number: int | None
    data: tuple[Record, ...]

    def text(self) -> bytes:
        """The data as one byte string, literals spliced in (for simple responses)."""
        out = bytearray()
        for record in self.data:
            if isinstance(record, tuple):
                out += record[0]
                out += record[1]
            else:
                out += record
        return bytes(out)

    def parsed(self) -> tuple[Any, ...]:
        """The data parsed by ``imapclient.response_parser.parse_response``."""
        try:
            return tuple(parse_response(list(self.data)))
        except (ProtocolError, ValueError, IndexError) as exc:
            raise ImapProtocolError(f"cannot parse {self.kind} response: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Tagged:
    """The tagged completion of a command (``tag OK|NO|BAD [code] text``)."""

    status: str
    code: str | None
    code_data: bytes
    text: str


def parse_untagged(records: Sequence[Record]) -> Untagged:
    """Split ``[n] KIND rest`` (a response whose ``"* "`` is already removed) into parts."""
    first = records[0]
    head = first[0] if isinstance(first, tuple) else first
    number: int | None = None
    match = _NUMBERED.match(head)
    if match:
        number = int(match.group(1))
        kind = match.group(2)
    else:
        match = _KIND.match(head)
        if not match:
            raise ImapProtocolError(f"malformed untagged response: {head[:80]!r}")
        kind = match.group(1)
    rest = head[match.end() :]
    new_first: Record = (rest, first[1]) if isinstance(first, tuple) else rest
    data = (new_first, *records[1:]) if (rest or isinstance(first, tuple)) else tuple(records[1:])
    return Untagged(kind.decode("ascii").upper(), number, data)


def split_status(text: bytes) -> tuple[str | None, bytes, str]:
    """Split ``[CODE data] human text`` into ``(CODE, data, text)``; code None if absent."""
    text = text.strip()
    if text.startswith(b"["):
        end = text.find(b"]")
        if end > 0:
            inner = text[1:end]
            name, _, data = inner.partition(b" ")
            return (
                name.decode("ascii", "replace").upper(),
                data,
                text[end + 1 :].strip().decode("utf-8", "replace"),
            )
    return None, b"", text.decode("utf-8", "replace")


# -- sequence sets --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UidSet:
    """A set of UIDs kept as inclusive ranges (a VANISHED of a million UIDs stays small)."""

    ranges: tuple[tuple[int, int], ...] = ()

    def __iter__(self) -> Iterator[int]:
        for low, high in self.ranges:
            yield from range(low, high + 1)

    def __len__(self) -> int:
        return sum(high - low + 1 for low, high in self.ranges)

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and any(low <= uid <= high for low, high in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)


def parse_sequence_set(text: bytes) -> UidSet:
    """Parse ``1:3,7,9:8`` into a :class:`UidSet` (ranges normalised low..high)."""
    ranges: list[tuple[int, int]] = []
    text = text.strip()
    if not text:
        return UidSet()
    if not _SEQSET.fullmatch(text) or b"*" in text:
        raise ImapProtocolError(f"bad sequence set: {text[:80]!r}")
    for part in text.split(b","):
        low, _, high = part.partition(b":")
        a = int(low)
        b = int(high) if high else a
        ranges.append((min(a, b), max(a, b)))
    return UidSet(tuple(ranges))


def sequence_set(uids: str | int | Iterable[int]) -> bytes:
    """Format UIDs as a compact sequence set (``[1, 2, 3, 7]`` -> ``1:3,7``); str is sent as is."""
    if isinstance(uids, str):
        if not re.fullmatch(r"[0-9:,*$]+", uids):
            raise ValueError(f"not a sequence set: {uids!r}")
        return uids.encode("ascii")
    if isinstance(uids, int):
        return str(uids).encode("ascii")
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("empty sequence set")
    parts: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if start != prev else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts).encode("ascii")


# -- arguments ------------------------------------------------------------------------------


class Literal(bytes):
    """An argument that must be sent as an IMAP literal (``{n}`` + bytes)."""

    __slots__ = ()


def quote(value: str | bytes) -> bytes | Literal:
    """Return ``value`` quoted, or as a :class:`Literal` when a quoted string cannot carry it."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) > 1024 or any(c > 0x7E or c < 0x20 for c in raw):
        return Literal(raw)
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def encode_mailbox(name: str) -> bytes | Literal:
    """Mailbox name -> modified UTF-7, quoted."""
    return quote(imap_utf7.encode(name))


def decode_mailbox(raw: object) -> str:
    """Modified UTF-7 mailbox name from the parser (bytes, or int for a numeric name) -> str."""
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, bytes):
        return str(imap_utf7.decode(raw))
    raise ImapProtocolError(f"bad mailbox name: {raw!r}")


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    """One FETCH response: the result of UID FETCH / UID STORE, or an unsolicited update.

    ``attributes`` holds every returned item keyed by upper-case name as parsed by
    imapclient: ``"ENVELOPE"`` -> ``imapclient.response_types.Envelope``,
    ``"BODYSTRUCTURE"`` -> ``BodyData``, ``"INTERNALDATE"`` -> ``datetime``,
    ``"RFC822.SIZE"`` -> int, ``"BODY[...]"`` -> bytes.
    """

    seq: int
    uid: int | None
    flags: tuple[str, ...] | None
    modseq: int | None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def envelope(self) -> Any:
        """The parsed ENVELOPE, if fetched."""
        return self.attributes.get("ENVELOPE")

    @property
    def bodystructure(self) -> Any:
        """The parsed BODYSTRUCTURE, if fetched."""
        return self.attributes.get("BODYSTRUCTURE")

    @property
    def internaldate(self) -> datetime | None:
        """INTERNALDATE, if fetched."""
        value = self.attributes.get("INTERNALDATE")
        return value if isinstance(value, datetime) else None

    @property
    def size(self) -> int | None:
        """RFC822.SIZE, if fetched."""
        value = self.attributes.get("RFC822.SIZE")
        return value if isinstance(value, int) else None


def parse_fetch(response: Untagged) -> FetchedMessage:
    """Parse one ``* n FETCH (...)`` response."""
    if response.number is None:
        raise ImapProtocolError("FETCH response without a message number")
    first = response.data[0] if response.data else b""
    prefix = str(response.number).encode("ascii") + b" "
    head: Record = (prefix + first[0], first[1]) if isinstance(first, tuple) else prefix + first
    try:
        parsed = parse_fetch_response([head, *response.data[1:]], True, False)
    except (ProtocolError, ValueError, IndexError, TypeError) as exc:
        raise ImapProtocolError(f"cannot parse FETCH response: {exc}") from exc
    items = parsed.get(response.number)
    if items is None:
        raise ImapProtocolError("FETCH response without items")
    attributes: dict[str, Any] = {}
    for key, value in items.items():
        attributes[key.decode("ascii", "replace").upper()] = value
    uid = attributes.get("UID")
    flags = attributes.get("FLAGS")
    modseq = attributes.get("MODSEQ")
    if isinstance(modseq, tuple) and modseq and isinstance(modseq[0], int):
        modseq = modseq[0]
    return FetchedMessage(
        seq=response.number,
        uid=uid if isinstance(uid, int) else None,
        flags=tuple(_text(f) for f in flags) if isinstance(flags, tuple) else None,
        modseq=modseq if isinstance(modseq, int) else None,
        attributes=attributes,
    )


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One LIST entry; ``flags`` carry special-use flags (``\\Sent``...) when sent."""

    name: str
    delimiter: str | None
    flags: tuple[str, ...]

    @property
    def special_use(self) -> str | None:
        """The RFC 6154 special-use flag (``\\Sent``, ``\\Trash``...), if any."""
        for flag in self.flags:
            if flag.lower() in _SPECIAL_USE:
                return flag
        return None


_SPECIAL_USE = {
    "\\all",
    "\\archive",
    "\\drafts",
    "\\flagged",
    "\\junk",
    "\\sent",
    "\\trash",
    "\\important",
}


def parse_list(response: Untagged) -> Mailbox:
    """Parse one ``* LIST (flags) "delim" name`` response."""
    parsed = response.parsed()
    if len(parsed) < 3 or not isinstance(parsed[0], tuple):
        raise ImapProtocolError(f"malformed LIST response: {response.text()[:80]!r}")
    delimiter = parsed[1]
    return Mailbox(
        name=decode_mailbox(parsed[2]),
        delimiter=_text(delimiter) if delimiter is not None else None,
        flags=tuple(_text(f) for f in parsed[0]),
    )


def parse_status(response: Untagged) -> tuple[str, dict[str, int]]:
    """Parse ``* STATUS name (ITEM n ...)`` into ``(name, {ITEM: n})``."""
    parsed = response.parsed()
    if len(parsed) < 2 or not isinstance(parsed[-1], tuple):
        raise ImapProtocolError(f"malformed STATUS response: {response.text()[:80]!r}")
    items = parsed[-1]
    values: dict[str, int] = {}
    for i in range(0, len(items) - 1, 2):
        if isinstance(items[i + 1], int):
            values[_text(items[i]).upper()] = items[i + 1]
    return decode_mailbox(parsed[0]), values


@dataclass(frozen=True, slots=True)
class SearchResult:
    """UIDs found by UID SEARCH, and the HIGHESTMODSEQ of them when MODSEQ was searched."""

    uids: tuple[int, ...]
    modseq: int | None = None


def parse_search(responses: Iterable[Untagged]) -> SearchResult:
    """Merge ``* SEARCH ...`` responses."""
    uids: list[int] = []
    modseq: int | None = None
    for response in responses:
        try:
            ids = parse_message_list([response.text()])
        except ValueError as exc:
            raise ImapProtocolError(f"malformed SEARCH response: {exc}") from exc
        uids.extend(int(i) for i in ids)
        if ids.modseq is not None:
            modseq = int(ids.modseq)
    return SearchResult(tuple(uids), modseq)


@dataclass(frozen=True, slots=True)
class SelectResult:
    """What SELECT / EXAMINE reported about the mailbox.

    ``highestmodseq`` is None when the server has no CONDSTORE or the mailbox has
    ``NOMODSEQ``. With QRESYNC, ``vanished`` holds the UIDs expunged since the given
    modseq and ``changed`` the messages whose flags changed.
    """

    mailbox: str
    exists: int
    recent: int
    uidvalidity: int | None
    uidnext: int | None
    highestmodseq: int | None
    flags: tuple[str, ...]
    permanent_flags: tuple[str, ...]
    read_only: bool
    unseen: int | None = None
    vanished: UidSet = UidSet()
    changed: tuple[FetchedMessage, ...] = ()


def parse_select(mailbox: str, responses: Iterable[Untagged], tagged: Tagged) -> SelectResult:
    """Build a :class:`SelectResult` from the untagged responses of SELECT / EXAMINE."""
    exists = recent = 0
    uidvalidity = uidnext = highestmodseq = unseen = None
    flags: tuple[str, ...] = ()
    permanent: tuple[str, ...] = ()
    vanished: list[tuple[int, int]] = []
    changed: list[FetchedMessage] = []
    for response in responses:
        kind = response.kind
        if kind == "EXISTS" and response.number is not None:
            exists = response.number
        elif kind == "RECENT" and response.number is not None:
            recent = response.number
        elif kind == "FLAGS":
            parsed = response.parsed()
            if parsed and isinstance(parsed[0], tuple):
                flags = tuple(_text(f) for f in parsed[0])
        elif kind == "OK":
            code, data, _ = split_status(response.text())
            if code in ("UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ", "UNSEEN"):
                try:
                    value = int(data)
                except ValueError as exc:
                    raise ImapProtocolError(f"bad {code} value: {data!r}") from exc
                if code == "UIDVALIDITY":
                    uidvalidity = value
                elif code == "UIDNEXT":
                    uidnext = value
                elif code == "HIGHESTMODSEQ":
                    highestmodseq = value
                else:
                    unseen = value
            elif code == "PERMANENTFLAGS":
                parsed = parse_response([data])
                if parsed and isinstance(parsed[0], tuple):
                    permanent = tuple(_text(f) for f in parsed[0])
            elif code == "CLOSED":
                # QRESYNC: everything before this belonged to the previously selected mailbox.
                exists = recent = 0
                uidvalidity = uidnext = highestmodseq = unseen = None
                flags = permanent = ()
                vanished.clear()
                changed.clear()
        elif kind == "VANISHED":
            vanished.extend(parse_vanished(response).uids.ranges)
        elif kind == "FETCH":
            changed.append(parse_fetch(response))
    return SelectResult(
        mailbox=mailbox,
        exists=exists,
        recent=recent,
        uidvalidity=uidvalidity,
        uidnext=uidnext,
        highestmodseq=highestmodseq,
        flags=flags,
        permanent_flags=permanent,
        read_only=tagged.code == "READ-ONLY",
        unseen=unseen,
        vanished=UidSet(tuple(vanished)),
        changed=tuple(changed),
    )


@dataclass(frozen=True, slots=True)
class AppendResult:
    """APPENDUID of an APPEND (None when the server lacks UIDPLUS)."""

    uidvalidity: int | None
    uid: int | None


@dataclass(frozen=True, slots=True)
class CopyResult:
    """COPYUID of a COPY or MOVE: the target's UIDVALIDITY and old UID -> new UID."""

    uidvalidity: int | None
    uids: dict[int, int]


def parse_copyuid(data: bytes) -> CopyResult:
    """``COPYUID <validity> <source set> <target set>`` (RFC 4315); malformed -> empty."""
    fields = data.split()
    if len(fields) != 3 or not fields[0].isdigit():
        return CopyResult(None, {})
    try:
        source = [u for lo, hi in parse_sequence_set(fields[1]).ranges for u in range(lo, hi + 1)]
        target = [u for lo, hi in parse_sequence_set(fields[2]).ranges for u in range(lo, hi + 1)]
    except ImapProtocolError:
        return CopyResult(int(fields[0]), {})
    if len(source) != len(target):
        return CopyResult(int(fields[0]), {})
    return CopyResult(int(fields[0]), dict(zip(source, target, strict=True)))


# -- updates --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exists:
    """``* n EXISTS``: the mailbox now holds ``count`` messages."""

    count: int


@dataclass(frozen=True, slots=True)
class Recent:
    """``* n RECENT``."""

    count: int


@dataclass(frozen=True, slots=True)
class Expunge:
    """``* n EXPUNGE``: message number ``seq`` is gone (later numbers shift down)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Vanished:
    """``* VANISHED [(EARLIER)] uids`` (QRESYNC): these UIDs are gone."""

    uids: UidSet
    earlier: bool


@dataclass(frozen=True, slots=True)
class Bye:
    """``* BYE text``: the server is closing the connection."""

    text: str


@dataclass(frozen=True, slots=True)
class OtherResponse:
    """Any other untagged response (``* OK Still here``, ``* FLAGS``, alerts...)."""

    kind: str
    code: str | None
    text: str
    response: Untagged


Update: TypeAlias = Exists | Recent | Expunge | Vanished | FetchedMessage | Bye | OtherResponse


def parse_vanished(response: Untagged) -> Vanished:
    """Parse ``* VANISHED [(EARLIER)] set``."""
    text = response.text().strip()
    earlier = False
    if text.upper().startswith(b"(EARLIER)"):
        earlier = True
        text = text[len(b"(EARLIER)") :]
    return Vanished(parse_sequence_set(text), earlier)


def to_update(response: Untagged) -> Update:
    """Turn an untagged response that no command asked for into an :data:`Update`."""
    kind = response.kind
    if kind == "EXISTS" and response.number is not None:
        return Exists(response.number)
    if kind == "EXPUNGE" and response.number is not None:
        return Expunge(response.number)
    if kind == "FETCH":
        return parse_fetch(response)
    if kind == "VANISHED":
        return parse_vanished(response)
    if kind == "RECENT" and response.number is not None:
        return Recent(response.number)
    if kind == "BYE":
        return Bye(split_status(response.text())[2])
    if kind in ("OK", "NO", "BAD"):
        code, _, text = split_status(response.text())
        return OtherResponse(kind, code, text, response)
    return OtherResponse(kind, None, response.text().decode("utf-8", "replace"), response)
