"""Tables: users, their items, the jobs that import and export items, the web UI's
sign-ins and the password resets asked for by e-mail."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Enum, ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.states import JobKind, JobState, WebhookState
from app.db.base import Base, UTCDateTime, utcnow

# Every row meets it (no row is created at minus infinity). The indexes of everybody's rows
# by time are partial on it: a listing of everybody's rows states it to use that index, and a
# listing of one owner's rows, which does not, cannot take it (filtering out the other
# owners' newer rows, an unbounded number) and takes the owner's index instead.
EVERY_ROW_SQL = "created_at > '-infinity'"
UNFINISHED = tuple(state for state in JobState if not state.finished)
UNFINISHED_SQL = "state IN ({})".format(", ".join(f"'{state.value}'" for state in UNFINISHED))
FINISHED_SQL = "state IN ({})".format(
    ", ".join(f"'{state.value}'" for state in JobState if state.finished)
)


def _everybody_by_time(name: str) -> Index:
    """The index of a table's rows by (created_at, id), partial on EVERY_ROW_SQL."""
    every_row = text(EVERY_ROW_SQL)
    return Index(name, "created_at", "id", postgresql_where=every_row, sqlite_where=every_row)


def _enum(states: type[StrEnum]) -> Enum:
    """A state column: VARCHAR(16) holding the member's value (no database enum type, so a
    new member needs no ALTER TYPE), read back as the enum member."""
    return Enum(
        states,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class User(Base):
    __tablename__ = "users"
    # The users listing pages newest first by (created_at, id) (app/services/pagination.py).
    __table_args__ = (Index("ix_users_created_at_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    email: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    hashed_password: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    # Raised by every change that must sign the user out everywhere (new password,
    # deactivation): an access token carries the version it was issued under and is refused
    # once it differs (`revoke_credentials`, app/services/users.py).
    credential_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    items: Mapped[list[Item]] = relationship(
        back_populates="owner", cascade="all, delete-orphan", passive_deletes=True
    )


class Item(Base):
    __tablename__ = "items"
    # Listings page by (created_at, id), newest first: one owner's items through the first
    # index, everybody's (and the export) through the second (see EVERY_ROW_SQL). On Postgres
    # a trigram index also serves the title search (migration 0005; not declared here: it has
    # no SQLite form).
    __table_args__ = (
        Index("ix_items_owner_id_created_at_id", "owner_id", "created_at", "id"),
        _everybody_by_time("ix_items_created_at_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=False
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    owner: Mapped[User] = relationship(back_populates="items")


class Job(Base):
    """A background job (CSV import or export) and the delivery of its webhook."""

    __tablename__ = "jobs"
    # Listings page by (created_at, id) as items do; the unfinished jobs (what /health and the
    # metrics count, what the reaper watches) are read through a partial index that holds
    # them alone, however many finished jobs the table keeps.
    __table_args__ = (
        Index("ix_jobs_owner_id_created_at_id", "owner_id", "created_at", "id"),
        _everybody_by_time("ix_jobs_created_at_id"),
        Index(
            "ix_jobs_unfinished",
            "state",
            postgresql_where=text(UNFINISHED_SQL),
            sqlite_where=text(UNFINISHED_SQL),
        ),
        # The retention sweep finds the jobs that ended longest ago through this one.
        Index(
            "ix_jobs_finished_updated_at",
            "updated_at",
            postgresql_where=text(FINISHED_SQL),
            sqlite_where=text(FINISHED_SQL),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind))
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.QUEUED)
    done: Mapped[int] = mapped_column(Integer, default=0)
    # Times a worker started this job: more than one means a worker was lost running it.
    deliveries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Renewed by the run holding the job every JOB_HEARTBEAT_SECONDS; a stale one means the
    # worker died, and the reaper hands the job on (app/services/jobs/reaper.py).
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    # import: the rejected rows; export: the file name and row count
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Where a run stopped and the next one resumes (an export's position and file size),
    # committed with the progress; internal, never shown.
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    callback_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_state: Mapped[WebhookState] = mapped_column(
        _enum(WebhookState), default=WebhookState.NONE
    )
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class BrowserSession(Base):
    """A sign-in to the web UI. The cookie carries a random token; only its SHA-256 is stored
    (a copy of the table signs nobody in). Signing out deletes the row, so the cookie is dead
    at once, wherever a copy of it is."""

    __tablename__ = "browser_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # Every state-changing form carries it (the synchronizer-token pattern against CSRF).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class PasswordReset(Base):
    """A password reset sent by e-mail. Only the SHA-256 of its token is stored: a copy of
    the table resets nobody's password. Used once (`used_at`), dead after `expires_at`;
    the retention sweep deletes it a day after either."""

    __tablename__ = "password_resets"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
