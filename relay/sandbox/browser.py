"""Play the user's part of the sign-in flow against the sandbox, for tests and demos."""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import unescape
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp

_FLOW = re.compile(r'name="flow" value="([^"]*)"')
_ACTION = re.compile(r'<form method="post" action="([^"]*)"')
_ALERT = re.compile(r'<p class="error" role="alert">([^<]*)</p>')
_PAGE_ERROR = re.compile(r'<p id="error_description">([^<]*)</p>')
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')


class SignInFailed(Exception):
    """The sandbox showed an error instead of redirecting back to the app."""


def redirect_params(location: str) -> dict[str, str]:
    """The parameters of a redirect back to the app (query or fragment)."""
    parts = urlsplit(location)
    return dict(parse_qsl(parts.fragment or parts.query))


def _answer(status: int, headers: Mapping[str, str], page: str) -> dict[str, str] | None:
    """The parameters the sandbox sends back to the app, or None if it showed a page."""
    if status == 302:
        return redirect_params(headers["Location"])
    if status == 200 and 'id="response"' in page:  # response_mode=form_post
        return {unescape(name): unescape(value) for name, value in _HIDDEN.findall(page)}
    return None


async def sign_in(
    session: aiohttp.ClientSession,
    auth_uri: str,
    email: str,
    password: str,
    *,
    accept: bool = True,
) -> dict[str, str]:
    """Open ``auth_uri``, sign in and consent (or cancel); return what comes back to the app.

    Works with every response mode: the parameters of the redirect (query or fragment) or
    of the auto-submitted form (``form_post``).

    The result (``code`` and ``state``, or ``error`` and ``error_description``) is what
    msal's ``acquire_token_by_auth_code_flow`` takes as ``auth_response``. ``session`` must
    trust the sandbox's CA.
    """
    async with session.get(auth_uri, allow_redirects=False) as response:
        page = await response.text()
        answer = _answer(response.status, response.headers, page)
        if answer is not None:
            return answer
        page_url = str(response.url)
    flow, action = _FLOW.search(page), _ACTION.search(page)
    if response.status != 200 or flow is None or action is None:
        error = _PAGE_ERROR.search(page)
        raise SignInFailed(unescape(error.group(1)) if error else f"HTTP {response.status}")
    form = {
        "flow": unescape(flow.group(1)),
        "login": email,
        "passwd": password,
        "action": "accept" if accept else "cancel",
    }
    target = urljoin(page_url, unescape(action.group(1)))
    async with session.post(target, data=form, allow_redirects=False) as response:
        page = await response.text()
        answer = _answer(response.status, response.headers, page)
        if answer is not None:
            return answer
    error = _ALERT.search(page) or _PAGE_ERROR.search(page)
    raise SignInFailed(unescape(error.group(1)) if error else f"HTTP {response.status}")
