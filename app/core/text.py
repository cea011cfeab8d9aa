"""One rule for text from outside, on every backend.

Postgres refuses NUL in text columns (SQLite stores it), a lone surrogate cannot be
encoded as UTF-8 (the database driver and the JSON encoder fail on it), and other control
characters are never meaningful in a name, a title or a URL. Refusing them where the text
enters turns what would be a 500 on one database and not on the other into the same 422
everywhere.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

# C0 controls, DEL, C1 controls; in free text, tab and line breaks are allowed. One
# spelling for both Python's regular expressions and the API document's JSON Schema.
_CONTROLS = r"\u0000-\u001f\u007f-\u009f"
_TEXT_CONTROLS = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f"
# Lone surrogates have no UTF-8 form (JSON text cannot carry them, so the schema omits them).
_SURROGATES = r"\ud800-\udfff"
_SINGLE_LINE_FORBIDDEN = re.compile(f"[{_CONTROLS}{_SURROGATES}]")
_MULTI_LINE_FORBIDDEN = re.compile(f"[{_TEXT_CONTROLS}{_SURROGATES}]")


def is_clean(value: str, *, multi_line: bool = False) -> bool:
    pattern = _MULTI_LINE_FORBIDDEN if multi_line else _SINGLE_LINE_FORBIDDEN
    return pattern.search(value) is None


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


def _controls_first(value: Any) -> Any:
    if isinstance(value, str):
        return single_line(value)
    return value


# Before a field strips its whitespace: a tab or line break at either end is refused as
# it is anywhere else, not silently removed (only spaces are).
refuse_controls_first = BeforeValidator(_controls_first)


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
SINGLE_LINE_PATTERN = f"^[^{_CONTROLS}]*$"
MULTI_LINE_PATTERN = f"^[^{_TEXT_CONTROLS}]*$"
SINGLE_LINE_SCHEMA = Field(json_schema_extra={"pattern": SINGLE_LINE_PATTERN})
# A search: single-line, and blank or at least 3 characters once stripped (two non-blank
# characters with one or more between them).
_BLANK, _CHAR, _EDGE = f"[^\\S{_CONTROLS}]", f"[^{_CONTROLS}]", f"[^\\s{_CONTROLS}]"
SEARCH_PATTERN = f"^(?:{_BLANK}*|{_CHAR}*{_EDGE}{_CHAR}+{_EDGE}{_CHAR}*)$"
SEARCH_SCHEMA = Field(json_schema_extra={"pattern": SEARCH_PATTERN})
MULTI_LINE_SCHEMA = Field(json_schema_extra={"pattern": MULTI_LINE_PATTERN})

Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$"),
    AfterValidator(_email),
    Field(json_schema_extra={"format": "email"}),
    refuse_controls_first,  # listed last: it runs first
]
