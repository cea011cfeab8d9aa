"""Shared field types: text that is safe to store on every backend (app/core/text.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from app.core.text import (
    MULTI_LINE_SCHEMA,
    SINGLE_LINE_SCHEMA,
    Email,
    multi_line,
    single_line,
)

__all__ = ["CallbackUrl", "Description", "Email", "SearchText", "Title"]

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
