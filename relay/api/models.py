"""Shapes shared by several resources."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Body(BaseModel):
    """Base of request bodies: unknown keys are refused (as EmailEngine's validation does)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Out(BaseModel):
    """Base of response bodies."""

    model_config = ConfigDict(extra="forbid")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _identifier(value: str) -> str:
    if "/" in value or _CONTROL.search(value):
        raise ValueError("must not contain '/' or control characters")
    return value


Text = Annotated[str, Field(max_length=1024), AfterValidator(_no_control)]
Identifier = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_identifier)]


class Paging(Body):
    # Query strings: other arguments (access_token) are not ours to refuse.
    model_config = ConfigDict(extra="ignore")
    page: int = Field(default=0, ge=0, le=1_000_000)
    pageSize: int = Field(default=20, ge=1, le=1000)


class Deleted(Out):
    deleted: bool = True
