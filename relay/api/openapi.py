"""``/openapi.json``: the API described from the same route table that serves it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from relay import __version__
from relay.api.endpoint import Endpoint

_PARAM = re.compile(r"\{(\w+)\}")
_REF = "#/components/schemas/{model}"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["statusCode", "error", "message", "code"],
    "properties": {
        "statusCode": {"type": "integer"},
        "error": {"type": "string"},
        "message": {"type": "string"},
        "code": {"type": "string"},
        "field": {"type": "string", "description": "Dotted path of the offending input"},
    },
}


def build_document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """An OpenAPI 3.1 document for ``endpoints``."""
    models: list[tuple[type[BaseModel], Any]] = []
    for ep in endpoints:
        if ep.body is not None:
            models.append((ep.body, "validation"))
        if ep.response is not None:
            models.append((ep.response, "serialization"))
    keys, defs = models_json_schema(models, ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["Error"] = ERROR_SCHEMA
    paths: dict[str, Any] = {}
    for ep in endpoints:
        op: dict[str, Any] = {
            "summary": ep.summary,
            "tags": [ep.tag],
            "operationId": f"{ep.method.lower()}_{ep.handler.__name__}",
        }
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(ep.path)
        ]
        if ep.query is not None:
            props = ep.query.model_json_schema()["properties"]
            params += [
                {"name": name, "in": "query", "required": False, "schema": schema}
                for name, schema in props.items()
            ]
        if params:
            op["parameters"] = params
        if ep.permission is not None:
            op["x-permission"] = str(ep.permission)
            op["description"] = f"Needs a token with the `{ep.permission}` permission" + (
                " (an account-bound token: its own account; any other answers 404)."
                if "{account}" in ep.path
                else " (an account-bound token: only if its permissions name"
                f" `{ep.permission.group}`)."
            )
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": keys[(ep.body, "validation")]}},
            }
        if ep.response is not None:
            content: dict[str, Any] = {
                ep.content_type: {"schema": keys[(ep.response, "serialization")]}
            }
        else:
            content = {ep.content_type: {"schema": dict(ep.body_schema or {"type": "string"})}}
        success: dict[str, Any] = {"description": "Success"}
        if ep.content_type:
            success["content"] = content
        responses: dict[str, Any] = {str(ep.status): success}
        for status, (description, kind) in ep.alternatives.items():
            responses[str(status)] = {
                "description": description,
                "content": {kind: {"schema": {"type": "string"}}},
            }
        error = {"content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}}}
        if ep.body is not None or ep.query is not None or params:
            responses["400"] = {"description": "Invalid input; `field` names it", **error}
        if ep.body is not None:
            responses["413"] = {
                "description": "The body is larger than the route accepts"
                + (
                    " (server.max_body_bytes plus send.max_message_bytes as base64)"
                    if ep.carries_message
                    else " (server.max_body_bytes)"
                ),
                **error,
            }
            responses["415"] = {
                "description": "The body is not application/json (utf-8); `field` is"
                " Content-Type. A body without a Content-Type is read as JSON",
                **error,
            }
        responses["414"] = {"description": "The URL is longer than 8 KiB", **error}
        responses["431"] = {
            "description": "A header over 8 KiB (`field` names it), over 100 headers or over"
            " 32 KiB of them",
            **error,
        }
        if not ep.public:
            responses["401"] = {"description": "Missing or unknown API token", **error}
            op["security"] = [{"bearer": []}]
            if ep.permission is not None:
                responses["403"] = {
                    "description": "The token lacks the scope or permission (the message names it)",
                    **error,
                }
        for status, description in ep.errors.items():
            responses[str(status)] = {"description": description, **error}
        responses["503"] = {"description": "The store is unavailable", **error}
        op["responses"] = responses
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mailrelay",
            "version": __version__,
            "description": "Microsoft 365 mailboxes (own and shared) to signed webhooks.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


OPENAPI = web.AppKey("openapi", dict[str, Any])


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


ENDPOINT = Endpoint("GET", "/openapi.json", openapi, "This document", "Service", public=True)
