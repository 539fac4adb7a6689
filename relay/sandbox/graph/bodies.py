"""Message bodies between HTML and text, as Exchange converts them (pure).

Used for ``Prefer: outlook.body-content-type``, ``bodyPreview`` and ``$search``.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_BLOCKS = frozenset(
    {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote"}
)
_HIDDEN = frozenset({"head", "script", "style", "title"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCKS and tag != "br":
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_to_text(content: str) -> str:
    """An HTML body as Exchange's text rendering: tags dropped, blocks on lines, CRLF."""
    extractor = _TextExtractor()
    extractor.feed(content)
    extractor.close()
    lines = [" ".join(line.split()) for line in "".join(extractor.parts).split("\n")]
    text = "\r\n".join(lines).strip("\r\n")
    return re.sub(r"(\r\n){3,}", "\r\n\r\n", text)


def text_to_html(content: str) -> str:
    """A text body as Exchange renders it in HTML: escaped, line breaks kept."""
    lines = html.escape(content).replace("\r\n", "\n").split("\n")
    body = "<br>\r\n".join(lines)
    return (
        '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; '
        'charset=utf-8">\r\n</head>\r\n<body>\r\n<div>' + body + "</div>\r\n</body>\r\n</html>\r\n"
    )
