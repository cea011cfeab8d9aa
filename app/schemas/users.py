"""User and token payloads."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool, StringConstraints

from app.core.text import SINGLE_LINE_SCHEMA, Email, refuse_controls_first, single_line
from app.schemas.common import Page

Username = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"
    ),
    refuse_controls_first,  # listed last: it runs first
]
MAX_PASSWORD_LENGTH = 128
Password = Annotated[
    str,
    StringConstraints(min_length=8, max_length=MAX_PASSWORD_LENGTH),
    AfterValidator(single_line),
    SINGLE_LINE_SCHEMA,
]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    email: Email
    password: Password
    # Strict: "yes", 1 or "true" are refused, not read as true.
    is_superuser: StrictBool = False


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    email: str
    is_active: bool
    is_superuser: bool
    created_at: datetime


class UserUpdate(BaseModel):
    """What a superuser may change of another user."""

    model_config = ConfigDict(extra="forbid")
    is_active: StrictBool


class UserPage(Page[UserPublic]):
    pass


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class PasswordChange(BaseModel):
    """The user's own new password; the current one proves it is them."""

    model_config = ConfigDict(extra="forbid")

    current_password: Annotated[str, StringConstraints(max_length=MAX_PASSWORD_LENGTH)]
    new_password: Password


class PasswordSet(BaseModel):
    """A superuser's reset of another user's password."""

    model_config = ConfigDict(extra="forbid")

    new_password: Password


class PasswordResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email


ResetToken = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]


class PasswordResetConfirm(BaseModel):
    """The token from the reset e-mail's link, and the new password."""

    model_config = ConfigDict(extra="forbid")

    token: ResetToken
    new_password: Password


class Message(BaseModel):
    detail: str
