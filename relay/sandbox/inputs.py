"""Reading the admin API's JSON bodies; bad input raises :class:`relay.errors.InputError`."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from relay.errors import InputError


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError("body: must be a JSON object", field="body") from None
    if not isinstance(body, dict):
        raise InputError("body: must be a JSON object", field="body")
    return body


def text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """A string member; a required one must not be blank."""
    value = body.get(name)
    if value is None:
        if required:
            raise InputError(f"{name}: required", field=name)
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InputError(f"{name}: must be a non-empty string", field=name)
    return value


def required_text(body: dict[str, Any], name: str) -> str:
    """A required, non-blank string member."""
    value = text(body, name)
    assert value is not None
    return value


def flag(body: dict[str, Any], name: str, default: bool = False) -> bool:
    """A boolean member."""
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise InputError(f"{name}: must be true or false", field=name)
    return value


def texts(body: dict[str, Any], name: str, *, required: bool) -> list[str]:
    """A list of non-empty strings."""
    value = body.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"{name}: must be a list of non-empty strings", field=name)
    if required and not value:
        raise InputError(f"{name}: needs at least one entry", field=name)
    return value
