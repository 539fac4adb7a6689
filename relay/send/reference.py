"""Replies and forwards by ``reference``: what the original message fills in. Pure.

EmailEngine's rules: a reply goes to the original's Reply-To (else its From), a reply-all
also to its other recipients but the sender's own addresses, the subject gets ``Re: `` or
``Fwd: `` (once), ``In-Reply-To`` (replies) and ``References`` (both) chain to the original.
Whatever the submit gives itself (recipients, subject, In-Reply-To, References) wins.
``inline`` quotes the original's text below a reply, or puts it below a forward's header
block.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from typing import Any

from relay.send.model import Address, Reference, Submit

__all__ = ["apply_reference"]

_PREFIXES = {"reply": "Re: ", "reply-all": "Re: ", "forward": "Fwd: "}
_ALREADY = {"reply": re.compile(r"^\s*re\s*:", re.I), "forward": re.compile(r"^\s*fwd?\s*:", re.I)}


def _addresses(values: Any) -> list[Address]:
    out: list[Address] = []
    for value in values or ():
        if isinstance(value, Mapping) and value.get("address"):
            out.append(Address(name=value.get("name") or None, address=str(value["address"])))
    return out


def _without(addresses: Iterable[Address], skip: set[str]) -> list[Address]:
    out: list[Address] = []
    for address in addresses:
        key = address.address.lower()
        if key not in skip:
            skip.add(key)
            out.append(address)
    return out


def _subject(original: Mapping[str, Any], action: str) -> str:
    subject = str(original.get("subject") or "")
    kind = "forward" if action == "forward" else "reply"
    return subject if _ALREADY[kind].match(subject) else _PREFIXES[action] + subject


def _references(original: Mapping[str, Any]) -> list[str]:
    headers = original.get("headers") or {}
    chain = " ".join(headers.get("references") or []).split()
    message_id = original.get("messageId")
    if message_id and message_id not in chain:
        chain.append(str(message_id))
    return [ref for ref in chain if ref.startswith("<") and ref.endswith(">")]


def _who(original: Mapping[str, Any]) -> str:
    sender = original.get("from") or {}
    name, address = sender.get("name"), sender.get("address") or ""
    return f"{name} <{address}>" if name else str(address)


def _quoted(submit: Submit, original: Mapping[str, Any], action: str) -> dict[str, Any]:
    text = original.get("text") or {}
    plain, rich = text.get("plain"), text.get("html")
    update: dict[str, Any] = {}
    if action == "forward":
        head = [
            "---------- Forwarded message ---------",
            f"From: {_who(original)}",
            f"Date: {original.get('date', '')}",
            f"Subject: {original.get('subject', '')}",
        ]
        intro_text = "\n".join(head) + "\n\n"
        intro_html = "<br>".join(html.escape(line) for line in head) + "<br><br>"
        if plain is not None:
            update["text"] = (submit.text or "") + "\n\n" + intro_text + plain
        if rich is not None and submit.html is not None:
            update["html"] = submit.html + "<br><br>" + intro_html + rich
        return update
    said = f"On {original.get('date', '')}, {_who(original)} wrote:"
    if plain is not None:
        quote = "\n".join("> " + line for line in plain.splitlines())
        update["text"] = (submit.text or "") + f"\n\n{said}\n{quote}\n"
    if rich is not None and submit.html is not None:
        update["html"] = (
            submit.html
            + f"<br><br><div>{html.escape(said)}</div>"
            + f'<blockquote type="cite">{rich}</blockquote>'
        )
    return update


def apply_reference(
    submit: Submit, original: Mapping[str, Any], reference: Reference, own: Iterable[str]
) -> Submit:
    """``submit`` completed from ``original`` (the messages API's message details).

    ``own`` are the sending account's addresses, left out of a reply-all.
    """
    action = reference.action
    update: dict[str, Any] = {}
    if action != "forward" and not (submit.to or submit.cc or submit.bcc):
        skip = {address.lower() for address in own}
        answer = _addresses(original.get("replyTo")) or _addresses([original.get("from")])
        if action == "reply-all":
            update["to"] = _without(answer, set())
            others = [*_addresses(original.get("to")), *_addresses(original.get("cc"))]
            update["cc"] = _without(others, skip | {a.address.lower() for a in update["to"]})
        else:
            update["to"] = answer
    if submit.subject is None:
        update["subject"] = _subject(original, action)
    chain = _references(original)
    if action != "forward" and submit.inReplyTo is None and original.get("messageId"):
        update["inReplyTo"] = str(original["messageId"])
    if submit.references is None and chain:
        update["references"] = chain
    if reference.inline:
        update.update(_quoted(submit, original, action))
    return submit.model_copy(update=update)
