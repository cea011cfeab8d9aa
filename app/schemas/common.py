"""Shared field types: text that is safe to store on every backend (app/core/text.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints

from app.core.text import Email, multi_line, single_line

__all__ = ["Description", "Email", "SearchText", "Title"]

Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(single_line),
]
Description = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(multi_line)]
SearchText = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=255), AfterValidator(single_line)
]
