"""Shared field types: text that is safe to store on every backend (app/core/text.py); and
the one shape of a page of any listing."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from app.core.text import (
    MULTI_LINE_SCHEMA,
    SEARCH_SCHEMA,
    SINGLE_LINE_SCHEMA,
    Email,
    multi_line,
    refuse_controls_first,
    single_line,
)

__all__ = ["CallbackUrl", "Description", "Email", "Page", "SearchText", "Title"]

Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(single_line),
    SINGLE_LINE_SCHEMA,
    refuse_controls_first,  # listed last: it runs first
]
Description = Annotated[
    str, StringConstraints(max_length=10_000), AfterValidator(multi_line), MULTI_LINE_SCHEMA
]
MIN_SEARCH_CHARS = 3


def _searchable(text: str) -> str:
    """Empty (no search) or long enough for Postgres' trigram index to serve it: a shorter
    pattern has no trigram, and its search would read every row."""
    if 0 < len(text) < MIN_SEARCH_CHARS:
        raise ValueError(f"a search needs at least {MIN_SEARCH_CHARS} characters")
    return text


SearchText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=255),
    AfterValidator(single_line),
    AfterValidator(_searchable),
    SEARCH_SCHEMA,
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
    """One page of a listing, newest first, and the cursors of the pages around it: every
    listing answers in this shape (and with the same cursors in a `Link` header). Each
    listing subclasses it under its own name (ItemPage, ...), the name the API document
    shows. There is no total: see docs/api.md, "Pages"."""

    items: list[T]
    limit: int
    next: str | None = Field(
        description="Cursor of the following (older) page, for `?cursor=`; null on the last page."
    )
    prev: str | None = Field(
        description="Cursor of the preceding (newer) page; null on the first page."
    )
