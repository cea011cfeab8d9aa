"""Shared field types: text that is safe to store on every backend."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, StringConstraints


def _printable(value: str) -> str:
    # Postgres rejects NUL in text columns; other control characters are never wanted in a
    # title. Refusing them here turns what would be a 500 into a 422 that says why.
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(_printable),
]
Description = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(_no_nul)]
SearchText = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=255), AfterValidator(_printable)
]


# A pragmatic address check (one @, a dotted domain, no spaces); deliverability is for the
# mail server to judge. The domain part is case-insensitive, so it is stored lower-cased.
_EMAIL = re.compile(
    r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("value is not a valid e-mail address")
    local, domain = value.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


Email = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=254), AfterValidator(_email)
]
