"""Item payloads."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.schemas.common import Description, Page, Title


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title
    description: Description | None = None


class ItemUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Left out: the title stays. The document says so (a string, not null), and null is
    # refused: an item always has a title.
    title: Title | SkipJsonSchema[None] = None
    description: Description | None = None

    @model_validator(mode="after")
    def _title_not_null(self) -> ItemUpdate:
        if "title" in self.model_fields_set and self.title is None:
            raise ValueError("title cannot be null; leave it out to keep the current title")
        return self


class ItemPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    description: str | None
    owner_id: uuid.UUID
    created_at: datetime
    updated_at: datetime


class ItemPage(Page[ItemPublic]):
    pass
