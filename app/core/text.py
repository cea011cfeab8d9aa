"""One rule for text from outside, on every backend.

Postgres refuses NUL in text columns (SQLite stores it), a lone surrogate cannot be
encoded as UTF-8 (the database driver and the JSON encoder fail on it), and other control
characters are never meaningful in a name, a title or a URL. Refusing them where the text
enters turns what would be a 500 on one database and not on the other into the same 422
everywhere.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

# C0 controls, DEL, C1 controls, lone surrogates.
_SINGLE_LINE_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The same, but tab and line breaks are part of free text.
_MULTI_LINE_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def find_forbidden(value: str, *, multi_line: bool = False) -> int | None:
    """Index of the first character the rule refuses, or None."""
    pattern = _MULTI_LINE_FORBIDDEN if multi_line else _SINGLE_LINE_FORBIDDEN
    found = pattern.search(value)
    return None if found is None else found.start()


def is_clean(value: str, *, multi_line: bool = False) -> bool:
    return find_forbidden(value, multi_line=multi_line) is None


def single_line(value: str) -> str:
    if not is_clean(value):
        raise ValueError("must not contain control characters or invalid Unicode")
    return value


def multi_line(value: str) -> str:
    if not is_clean(value, multi_line=True):
        raise ValueError(
            "must not contain control characters (other than tab and line breaks) "
            "or invalid Unicode"
        )
    return value


def printable(value: str) -> str:
    """`value` with refused characters replaced by U+FFFD: for echoing input in messages."""
    return _SINGLE_LINE_FORBIDDEN.sub("\ufffd", value)


# A pragmatic address check (one @, a dotted domain, no spaces); deliverability is for the
# mail server to judge. The domain part is case-insensitive, so it is stored lower-cased.
_EMAIL = re.compile(
    r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def _email(value: str) -> str:
    if not is_clean(value) or not _EMAIL.match(value):
        raise ValueError("value is not a valid e-mail address")
    local, domain = value.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


# The rules as JSON Schema patterns, so that the API document says what is refused.
SINGLE_LINE_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"
MULTI_LINE_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
SINGLE_LINE_SCHEMA = Field(json_schema_extra={"pattern": SINGLE_LINE_PATTERN})
MULTI_LINE_SCHEMA = Field(json_schema_extra={"pattern": MULTI_LINE_PATTERN})

Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$"),
    AfterValidator(_email),
    Field(json_schema_extra={"format": "email"}),
]
