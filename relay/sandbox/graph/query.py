"""``$filter`` and ``$search`` on message lists (pure): parse, then match messages.

**$filter** (OData): comparisons ``property op literal`` joined with ``and``, ``or``,
``not`` and parentheses, and the functions ``contains`` and ``startswith`` on text
properties. Properties, matched ignoring case:

- ``isRead``, ``isDraft``, ``hasAttachments`` (``eq``/``ne`` ``true|false``)
- ``subject``, ``importance``, ``flag/flagStatus``, ``inferenceClassification``,
  ``from|sender/emailAddress/address|name`` (``eq``/``ne`` a string, ignoring case;
  ``contains``/``startswith``), ``conversationId``, ``internetMessageId``,
  ``parentFolderId`` (exact)
- ``receivedDateTime``, ``sentDateTime``, ``createdDateTime``, ``lastModifiedDateTime``
  (``eq ne gt ge lt le`` an unquoted ISO 8601 date)
- ``categories/any(c:c eq 'Red')``, ``toRecipients/any(r:r/emailAddress/address eq 'x')``
  (``ccRecipients``, ``bccRecipients``, ``replyTo`` too; ``/name`` as well)

Errors, as Graph gives them: a name that is no message property is 400
``RequestBroker--ParseUri``; a property or operator Exchange (or the sandbox) cannot
filter on is 400 ``ErrorInvalidUrlQueryFilter``; syntax errors and mismatched literal
types are 400 ``BadRequest``.

**$search** (a KQL subset; the value may be wrapped in double quotes, quotes inside then
escaped ``\\"``): terms are ``property:value`` or bare words, ``"phrases"`` too; terms are joined
with ``AND`` (also implied by a space) and ``OR``, and ``NOT`` negates the next term.
Properties: ``subject``, ``body``, ``from``, ``to``, ``cc``, ``bcc``, ``participants``
(from, to, cc, bcc), ``recipients`` (to, cc, bcc), ``attachment`` (file names),
``hasAttachment(s)``, ``importance``; a bare term matches from, subject or body (Graph's
default search properties). Matching is by whole words ignoring case; a term ending in
``*`` matches word prefixes; a value of several words matches them in sequence. Addresses
match on display name and address (so an alias, the address's local part, matches).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from relay.sandbox.graph.bodies import html_to_text
from relay.sandbox.graph.errors import GraphError, bad_request
from relay.sandbox.graph.mail import Address, Message
from relay.sandbox.graph.odata import format_datetime
from relay.sandbox.graph.views import MESSAGE_PROPERTIES

Predicate = Callable[[Message], bool]

# -- $filter -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Property:
    name: str
    kind: str  # bool | text | id | datetime
    get: Callable[[Message], Any]


def _address_part(address: Address | None, part: str) -> str | None:
    if address is None:
        return None
    return address.address if part == "address" else address.name


_PROPERTIES = {
    p.name.lower(): p
    for p in (
        _Property("isRead", "bool", lambda m: m.is_read),
        _Property("isDraft", "bool", lambda m: m.is_draft),
        _Property("hasAttachments", "bool", lambda m: m.has_attachments),
        _Property("subject", "text", lambda m: m.subject),
        _Property("importance", "text", lambda m: m.importance),
        _Property("flag/flagStatus", "text", lambda m: m.flag_status),
        _Property("inferenceClassification", "text", lambda m: "focused"),
        _Property("from/emailAddress/address", "text", lambda m: _address_part(m.from_, "address")),
        _Property("from/emailAddress/name", "text", lambda m: _address_part(m.from_, "name")),
        _Property(
            "sender/emailAddress/address", "text", lambda m: _address_part(m.sender, "address")
        ),
        _Property("sender/emailAddress/name", "text", lambda m: _address_part(m.sender, "name")),
        _Property("conversationId", "id", lambda m: m.conversation_id),
        _Property("internetMessageId", "id", lambda m: m.internet_message_id),
        _Property("parentFolderId", "id", lambda m: m.folder_id),
        _Property("receivedDateTime", "datetime", lambda m: m.received),
        _Property("sentDateTime", "datetime", lambda m: m.sent),
        _Property("createdDateTime", "datetime", lambda m: m.created),
        _Property("lastModifiedDateTime", "datetime", lambda m: m.modified),
    )
}
_KNOWN = frozenset(name.lower() for name in MESSAGE_PROPERTIES)
_COLLECTIONS: dict[str, tuple[str, Callable[[Message], list[Any]]]] = {
    "categories": ("categories", lambda m: m.categories),
    "torecipients": ("toRecipients", lambda m: m.to),
    "ccrecipients": ("ccRecipients", lambda m: m.cc),
    "bccrecipients": ("bccRecipients", lambda m: m.bcc),
    "replyto": ("replyTo", lambda m: m.reply_to),
}
_EDM = {"bool": "Edm.Boolean", "text": "Edm.String", "id": "Edm.String"}
_EDM["datetime"] = "Edm.DateTimeOffset"
_OPERATORS = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
_TOKEN = re.compile(r"\s*(?:(?P<text>'(?:[^']|'')*')|(?P<punct>[(),])|(?P<word>[^\s(),']+))")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?$", re.IGNORECASE)


def invalid_filter() -> GraphError:
    """400 ``ErrorInvalidUrlQueryFilter``: Exchange cannot filter on this."""
    return GraphError(
        400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes."
    )


@dataclass(frozen=True)
class _Literal:
    kind: str  # bool | text | datetime | null
    value: Any
    raw: str


@dataclass(frozen=True)
class Filter:
    """A parsed ``$filter``: the predicate, and the properties in order of appearance."""

    matches: Predicate
    properties: tuple[str, ...]


def parse_filter(raw: str) -> Filter:
    """Parse a message ``$filter``; GraphError (400) when Graph would refuse it."""
    parser = _FilterParser(raw)
    predicate = parser.expression()
    if parser.peek() is not None:
        raise parser.syntax_error()
    return Filter(predicate, tuple(dict.fromkeys(parser.properties)))


class _FilterParser:
    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.tokens: list[tuple[str, str, int]] = []
        self.properties: list[str] = []
        position = 0
        while position < len(raw):
            if not raw[position:].strip():
                break
            found = _TOKEN.match(raw, position)
            if found is None or found.lastgroup is None:
                raise self.syntax_error(position)
            self.tokens.append((found.lastgroup, found.group(found.lastgroup), found.start()))
            position = found.end()
        self.index = 0

    def syntax_error(self, position: int | None = None) -> GraphError:
        if position is None:
            token = self.peek()
            position = token[2] if token is not None else len(self.raw)
        return bad_request(
            f"Invalid filter clause: Syntax error at position {position} in '{self.raw}'."
        )

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise self.syntax_error()
        self.index += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "word" and token[1].lower() == word:
            self.index += 1
            return True
        return False

    def expect(self, punct: str) -> None:
        token = self.take()
        if token[0] != "punct" or token[1] != punct:
            self.index -= 1
            raise self.syntax_error()

    def expression(self) -> Predicate:
        terms = [self.conjunction()]
        while self.keyword("or"):
            terms.append(self.conjunction())
        if len(terms) == 1:
            return terms[0]
        return lambda m: any(term(m) for term in terms)

    def conjunction(self) -> Predicate:
        terms = [self.unary()]
        while self.keyword("and"):
            terms.append(self.unary())
        if len(terms) == 1:
            return terms[0]
        return lambda m: all(term(m) for term in terms)

    def unary(self) -> Predicate:
        if self.keyword("not"):
            inner = self.unary()
            return lambda m: not inner(m)
        token = self.take()
        if token[0] == "punct" and token[1] == "(":
            inner = self.expression()
            self.expect(")")
            return inner
        if token[0] != "word":
            self.index -= 1
            raise self.syntax_error()
        following = self.peek()
        if following is not None and following[0] == "punct" and following[1] == "(":
            if token[1].lower().endswith(("/any", "/all")):
                return self.lambda_(token[1])
            return self.function(token[1])
        return self.comparison(token[1])

    def lambda_(self, name: str) -> Predicate:
        """``categories/any(c:c eq 'x')``, ``toRecipients/any(r:r/emailAddress/address eq
        'x')`` (also ``ccRecipients``, ``bccRecipients``, ``replyTo``)."""
        collection, _, kind = name.rpartition("/")
        key = collection.lower()
        if key not in _COLLECTIONS:
            if key.split("/")[0] not in _KNOWN:
                raise bad_request(
                    f"Could not find a property named '{collection}' on type "
                    "'microsoft.graph.message'.",
                    "RequestBroker--ParseUri",
                )
            raise invalid_filter()
        self.properties.append(_COLLECTIONS[key][0])
        self.expect("(")
        token = self.take()
        variable, colon, path = token[1].partition(":")
        if token[0] != "word" or not colon or not variable:
            self.index -= 1
            raise self.syntax_error()
        operator = self.take()[1].lower()
        literal = self.literal()
        self.expect(")")
        values = _COLLECTIONS[key][1]
        part = path[len(variable) :].lower()
        if not path.startswith(variable) or operator != "eq" or kind.lower() != "any":
            raise invalid_filter()
        if literal.kind != "text":
            raise bad_request(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'Edm.String' and '{_EDM.get(literal.kind, 'Edm.String')}' for operator kind "
                "'Equal'."
            )
        wanted = str(literal.value).casefold()
        if key == "categories":
            if part:
                raise invalid_filter()
            return lambda m: any(str(v).casefold() == wanted for v in values(m))
        if part not in ("/emailaddress/address", "/emailaddress/name"):
            raise invalid_filter()
        field = "address" if part.endswith("address") else "name"
        return lambda m: any(getattr(a, field).casefold() == wanted for a in values(m))

    def property(self, name: str) -> _Property:
        found = _PROPERTIES.get(name.lower())
        if found is not None:
            self.properties.append(found.name)
            return found
        head = name.split("/")[0].lower()
        if head not in _KNOWN:
            raise bad_request(
                f"Could not find a property named '{name.split('/')[0]}' on type "
                "'microsoft.graph.message'.",
                "RequestBroker--ParseUri",
            )
        raise invalid_filter()

    def literal(self) -> _Literal:
        token = self.take()
        kind, text = token[0], token[1]
        if kind == "text":
            return _Literal("text", text[1:-1].replace("''", "'"), text)
        if kind == "word":
            lowered = text.lower()
            if lowered in ("true", "false"):
                return _Literal("bool", lowered == "true", text)
            if lowered == "null":
                return _Literal("null", None, text)
            if _DATE.match(text):
                return _Literal("datetime", _parse_date(text, self), text)
        self.index -= 1
        raise self.syntax_error()

    def comparison(self, name: str) -> Predicate:
        prop = self.property(name)
        token = self.take()
        operator = token[1].lower()
        if token[0] != "word" or operator not in _OPERATORS:
            self.index -= 1
            raise self.syntax_error()
        literal = self.literal()
        expected = "text" if prop.kind == "id" else prop.kind
        if literal.kind not in (expected, "null"):
            raise bad_request(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{_EDM[prop.kind]}' and '{_EDM.get(literal.kind, 'Edm.String')}' for "
                f"operator kind '{_OPERATORS[operator]}'."
            )
        if operator not in ("eq", "ne") and (prop.kind != "datetime" or literal.kind == "null"):
            raise invalid_filter()
        return _compare(prop, operator, literal)

    def function(self, name: str) -> Predicate:
        lowered = name.lower()
        if lowered not in ("contains", "startswith", "endswith", "tolower", "toupper"):
            raise bad_request(f"An unknown function with name '{name}' was found.")
        self.expect("(")
        token = self.take()
        if token[0] != "word":
            self.index -= 1
            raise self.syntax_error()
        prop = self.property(token[1])
        self.expect(",")
        literal = self.literal()
        self.expect(")")
        if lowered not in ("contains", "startswith") or prop.kind != "text":
            raise invalid_filter()
        if literal.kind != "text":
            raise bad_request(
                f"No function signature for the function with name '{name}' matches the "
                "specified arguments."
            )
        needle = str(literal.value).casefold()

        def matches(m: Message) -> bool:
            value = prop.get(m)
            if value is None:
                return False
            text = str(value).casefold()
            return needle in text if lowered == "contains" else text.startswith(needle)

        return matches


def _parse_date(text: str, parser: _FilterParser) -> float:
    value = text.upper().replace("Z", "+00:00")
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise parser.syntax_error() from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _compare(prop: _Property, operator: str, literal: _Literal) -> Predicate:
    def matches(m: Message) -> bool:
        value = prop.get(m)
        if literal.kind == "null" or value is None:
            same = value is None and literal.kind == "null"
            return same if operator == "eq" else not same
        if prop.kind == "text":
            value, wanted = str(value).casefold(), str(literal.value).casefold()
        else:
            wanted = literal.value
        if prop.kind == "datetime":
            # Graph compares at the precision it shows: whole seconds.
            value = datetime.fromisoformat(format_datetime(value)).timestamp()
        result: bool
        if operator == "eq":
            result = value == wanted
        elif operator == "ne":
            result = value != wanted
        elif operator == "gt":
            result = value > wanted
        elif operator == "ge":
            result = value >= wanted
        elif operator == "lt":
            result = value < wanted
        else:
            result = value <= wanted
        return result

    return matches


# -- $search -------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)
_SEARCH_TOKEN = re.compile(
    r'\s*(?:"(?P<phrase>[^"]*)"|(?P<term>[^\s"]+?:)"(?P<value>[^"]*)"|(?P<word>[^\s"]+))'
)
_ADDRESS_FIELDS: dict[str, Callable[[Message], list[Address]]] = {
    "from": lambda m: [m.from_] if m.from_ is not None else [],
    "to": lambda m: m.to,
    "cc": lambda m: m.cc,
    "bcc": lambda m: m.bcc,
    "participants": lambda m: [*([m.from_] if m.from_ else []), *m.to, *m.cc, *m.bcc],
    "recipients": lambda m: [*m.to, *m.cc, *m.bcc],
}


def _body_text(m: Message) -> str:
    return html_to_text(m.body) if m.body_type == "html" else m.body


def _addresses_text(addresses: list[Address]) -> list[str]:
    return [f"{a.name} {a.address}" for a in addresses]


_TEXT_FIELDS: dict[str, Callable[[Message], list[str]]] = {
    "subject": lambda m: [m.subject],
    "body": lambda m: [_body_text(m)],
    "attachment": lambda m: [a.name for a in m.attachments],
}


def parse_search(raw: str) -> Predicate:
    """Parse a message ``$search``; 400 ``BadRequest`` for what the sandbox cannot read."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        # Quotes inside the quoted query are escaped.
        text = text[1:-1].replace('\\"', '"')
    groups: list[list[Predicate]] = [[]]
    negate = False
    position = 0
    while text[position:].strip():
        found = _SEARCH_TOKEN.match(text, position)
        if found is None:
            raise bad_request(f"Syntax error: the search query '{raw}' is not valid.")
        position = found.end()
        if found.group("word") in ("AND",):
            continue
        if found.group("word") == "OR":
            groups.append([])
            continue
        if found.group("word") == "NOT":
            negate = not negate
            continue
        term = _term(found, raw)
        groups[-1].append(_negated(term) if negate else term)
        negate = False
    groups = [group for group in groups if group]
    if not groups:
        raise bad_request("The search query must not be empty.")
    return lambda m: any(all(term(m) for term in group) for group in groups)


def _negated(term: Predicate) -> Predicate:
    return lambda m: not term(m)


def _term(found: re.Match[str], raw: str) -> Predicate:
    if found.group("phrase") is not None:
        return _default_term(found.group("phrase"))
    if found.group("term") is not None:
        name, value = found.group("term")[:-1], found.group("value")
    else:
        word = found.group("word")
        name, sep, value = word.partition(":")
        if not sep:
            return _default_term(word)
    return _property_term(name, value, raw)


def _default_term(value: str) -> Predicate:
    match = _matcher(value)
    return lambda m: (
        match(_addresses_text(_ADDRESS_FIELDS["from"](m)))
        or match([m.subject])
        or match([_body_text(m)])
    )


def _property_term(name: str, value: str, raw: str) -> Predicate:
    key = name.lower()
    if not value:
        raise bad_request(f"Syntax error: the search query '{raw}' is not valid.")
    if key in _ADDRESS_FIELDS:
        addresses = _ADDRESS_FIELDS[key]
        address_match = _matcher(value)
        return lambda m: address_match(_addresses_text(addresses(m)))
    if key in _TEXT_FIELDS:
        texts = _TEXT_FIELDS[key]
        text_match = _matcher(value)
        return lambda m: text_match(texts(m))
    if key in ("hasattachment", "hasattachments"):
        wanted = value.lower() == "true"
        return lambda m: m.has_attachments is wanted
    if key == "importance":
        level = value.lower()
        return lambda m: m.importance == level
    raise bad_request(f"The sandbox does not support the search property '{name}'.")


def _matcher(value: str) -> Callable[[list[str]], bool]:
    prefix = value.endswith("*")
    wanted = [w.casefold() for w in _WORD.findall(value)]
    if not wanted:
        return lambda texts: False

    def matches(texts: list[str]) -> bool:
        for text in texts:
            words = [w.casefold() for w in _WORD.findall(text)]
            for start in range(len(words) - len(wanted) + 1):
                window = words[start : start + len(wanted)]
                if window[:-1] != wanted[:-1]:
                    continue
                last, target = window[-1], wanted[-1]
                if last == target or (prefix and last.startswith(target)):
                    return True
        return False

    return matches
