"""Web-safe HTML: hostile markup is removed, mail formatting stays, nothing remote loads."""

from __future__ import annotations

from html import escape

import pytest

from relay.mailbox.content import embed_images, web_safe_html


@pytest.mark.parametrize(
    ("html", "gone", "kept"),
    [
        ("<script>alert(1)</script><p>Hi</p>", ["script", "alert"], ["<p>Hi</p>"]),
        ("<img src=x onerror=alert(1)>", ["onerror", "alert"], ["<img"]),
        ('<a href="javascript:alert(1)">x</a>', ["javascript", "alert"], [">x</a>"]),
        ('<a href=" JaVaScRiPt:alert(1)">x</a>', ["JaVaScRiPt", "alert"], [">x</a>"]),
        ('<a href="&#106;avascript:alert(1)">x</a>', ["avascript", "alert"], [">x</a>"]),
        ('<a href="vbscript:msgbox(1)">x</a>', ["vbscript", "msgbox"], [">x</a>"]),
        ('<a href="data:text/html,<script>x</script>">x</a>', ["data:", "script"], [">x</a>"]),
        ('<img src="data:text/html;base64,PHNjcmlwdD4=">', ["data:"], ["<img"]),
        ("<svg onload=alert(1)><circle r=1 /></svg>ok", ["svg", "onload", "alert"], ["ok"]),
        ("<style>@import url(http://evil/x.css);</style><p>a</p>", ["evil", "@import"], ["a"]),
        ('<iframe src="http://evil/">fallback</iframe><p>after</p>', ["iframe", "evil"], ["after"]),
        ('<object data="http://evil/x.swf">o</object><embed src="http://evil/y">', ["evil"], []),
        ('<meta http-equiv="refresh" content="0;url=http://evil/"><p>x</p>', ["meta", "evil"], []),
        ('<base href="http://evil/"><link rel=stylesheet href="http://evil/s.css">', ["evil"], []),
        (
            '<form action="http://evil/"><input name=q><button>Go</button></form>',
            ["form", "evil", "input", "button"],
            ["Go"],
        ),
        ("<p onclick=alert(1) onmouseover=alert(2)>p</p>", ["onclick", "onmouseover"], ["p>"]),
        ("<html><head><title>Secret</title></head><body>B</body></html>", ["Secret"], ["B"]),
        ("<p>a<!-- <script>alert(1)</script> -->b</p>", ["script", "<!--"], ["<p>ab</p>"]),
    ],
)
def test_hostile_markup_is_removed(html: str, gone: list[str], kept: list[str]) -> None:
    """Scripts, handlers, script URLs and active elements go; the benign content stays."""
    safe = web_safe_html(html)
    for text in gone:
        assert text.lower() not in safe.lower()
    for text in kept:
        assert text in safe


@pytest.mark.parametrize(
    "style",
    [
        "background:url(http://evil/x.png)",
        "background:URL( 'https://evil/x.png' )",
        'background-image:url("//evil/x.png")',
        "background:url(/relative.png)",
        "list-style-image:url(http://evil/x.png)",
    ],
)
def test_css_urls_do_not_load_remote(style: str) -> None:
    """A remote CSS url() is replaced; the other declarations stay."""
    safe = web_safe_html(f'<div style="{escape(style)};color:red">x</div>')
    assert "evil" not in safe
    assert "relative" not in safe
    assert "color:red" in safe
    assert "none" in safe


@pytest.mark.parametrize(
    "style",
    [
        "background:u\\72l(http://evil/x.png)",  # an escape spelling url(
        "background:url(http://evil/x.png",  # unclosed: browsers still load it
        'background-image:-webkit-image-set("http://evil/x.png" 1x)',
        "width:expression(alert(1))",
        "behavior:url(x.htc)",
        "-moz-binding:url(http://evil/x.xml#x)",
        "background:url(javascript:alert(1))",
    ],
)
def test_unreadable_or_scripted_css_is_dropped(style: str) -> None:
    """A style that could load or run something the filter cannot judge is removed whole."""
    safe = web_safe_html(f'<div style="{escape(style)};color:red">x</div>')
    assert safe == "<div>x</div>"


def test_remote_images_do_not_load_by_default() -> None:
    """Remote img src and background attributes go unless remote loads are allowed."""
    html = (
        '<img src="http://tracker/p.gif" width="1" alt="t">'
        '<img src="//tracker/q.gif"><table background="https://evil/bg.png"><tr><td>c</td>'
        "</tr></table>"
    )
    safe = web_safe_html(html)
    assert "tracker" not in safe
    assert "evil" not in safe
    assert "src" not in safe
    assert 'width="1"' in safe
    assert "<td>c</td>" in safe


def test_remote_loads_when_allowed() -> None:
    """With allow_remote, http(s) images and CSS urls stay; scripts still go."""
    html = (
        '<img src="http://tracker/p.gif"><div style="background:url(https://cdn/x.png)">x</div>'
        '<a href="javascript:alert(1)">j</a>'
    )
    safe = web_safe_html(html, allow_remote=True)
    assert '<img src="http://tracker/p.gif">' in safe
    assert "url(https://cdn/x.png)" in safe
    assert "javascript" not in safe


def test_embedded_images_always_load() -> None:
    """cid: and data:image URLs stay, in img src and in CSS."""
    html = (
        '<img src="cid:logo@x"><img src="data:image/png;base64,iVBORw0KGgo=">'
        '<div style="background-image:url(cid:bg@x)">x</div>'
    )
    safe = web_safe_html(html)
    assert '<img src="cid:logo@x">' in safe
    assert '<img src="data:image/png;base64,iVBORw0KGgo=">' in safe
    assert "url(cid:bg@x)" in safe


def test_mail_formatting_stays() -> None:
    """Tables, font, center, style and layout attributes of ordinary mail are kept."""
    html = (
        '<center><table width="600" bgcolor="#ffffff" cellpadding="4" border="0" align="center">'
        '<tbody><tr><td valign="top" style="padding:8px;font-family:Arial">'
        '<font color="red" face="Verdana" size="2">Hello</font> <b>bold</b> <u>u</u>'
        "</td></tr></tbody></table></center>"
    )
    assert web_safe_html(html) == html


def test_links_open_safely() -> None:
    """http(s) and mailto links stay, open in a new window without referrer or opener."""
    safe = web_safe_html('<a href="https://example.org/x?a=1&amp;b=2" target="_self">l</a>')
    assert safe == (
        '<a href="https://example.org/x?a=1&amp;b=2" target="_blank" rel="noopener noreferrer">'
        "l</a>"
    )
    assert 'href="mailto:a@example.org"' in web_safe_html('<a href="mailto:a@example.org">m</a>')


@pytest.mark.parametrize("href", ["//evil.example/x", "/relative", "#top", "cid:part@x"])
def test_links_that_lead_nowhere_safe_lose_their_target(href: str) -> None:
    """Relative, protocol-relative and cid: links are removed (they only resolve locally)."""
    assert "href" not in web_safe_html(f'<a href="{href}">l</a>')


def test_embed_then_sanitize() -> None:
    """Images embedded from cid: survive sanitizing as data: URLs."""
    html = embed_images('<img src="cid:a" onerror="x()">', {"a": ("image/gif", b"GIF89a")})
    assert web_safe_html(html) == '<img src="data:image/gif;base64,R0lGODlh">'
