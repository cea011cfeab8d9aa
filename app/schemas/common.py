"""Shared field types: text that is safe to store on every backend (app/core/text.py); and
the one shape of a page of any listing."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from app.core.text import (
    MULTI_LINE_SCHEMA,
    SINGLE_LINE_SCHEMA,
    Email,
    multi_line,
    single_line,
)

__all__ = ["CallbackUrl", "Description", "Email", "Page", "SearchText", "Title"]

Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(single_line),
    SINGLE_LINE_SCHEMA,
]
Description = Annotated[
    str, StringConstraints(max_length=10_000), AfterValidator(multi_line), MULTI_LINE_SCHEMA
]
SearchText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=255),
    AfterValidator(single_line),
    SINGLE_LINE_SCHEMA,
]
# An absolute http(s) URL (the rest is checked by the webhook service).
CALLBACK_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[\x21-\x7e]+$"
CallbackUrl = Annotated[
    str,
    StringConstraints(max_length=2048, pattern=CALLBACK_URL_PATTERN),
    Field(json_schema_extra={"format": "uri"}),
]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a listing and where it sits: every listing answers in this shape. Each
    listing subclasses it under its own name (ItemPage, ...), the name the API document
    shows."""

    items: list[T]
    total: int
    limit: int
    offset: int
