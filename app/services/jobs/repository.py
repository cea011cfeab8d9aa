"""Every statement of the jobs feature, by name: the jobs table's, and the items table's that
imports write and exports read. The modules beside this one hold what a job does, and no SQL.

A statement that reads the unfinished jobs carries the predicate of their partial index
literally (UNFINISHED_SQL): a plan made for bound parameters could not prove it, and would
read the whole table. The conditional updates are the jobs' concurrency control: a job's
delivery count is its version, and an update that matched no row lost a race.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    Uuid,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.states import JobKind, JobState
from app.db.base import utcnow
from app.db.models import EVERY_ROW_SQL, UNFINISHED_SQL, Item, Job
from app.db.precompiled import Precompiled, Rows
from app.services import csvfiles
from app.services.pagination import Cursor, seek

FINISHED = tuple(state for state in JobState if state.finished)

_items = Item.__table__.c
_ITEMS_TABLE = cast(Table, Item.__table__)
# An import's rows, as the items table's columns, in this order.
IMPORTED = ("id", "title", "description", "owner_id", "created_at", "updated_at")
Record = tuple[uuid.UUID, str, str | None, uuid.UUID, datetime, datetime]
# An export's columns: the file's, in its order.
_EXPORTED = (_items.id, _items.title, _items.description, _items.created_at, _items.updated_at)
Position = tuple[datetime, uuid.UUID]  # (created_at, id): where an export stands


class StateSummary(NamedTuple):
    """The jobs in one unfinished state."""

    state: JobState
    jobs: int
    oldest: datetime  # the earliest `updated_at`
    heartbeat: datetime  # the stalest heartbeat (`updated_at` where none yet)
    redelivered: int  # delivered more than once


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def _stalled(cutoff: datetime) -> ColumnElement[bool]:
    """Running jobs whose last heartbeat is older than `cutoff` (or that never beat)."""
    return and_(
        text(UNFINISHED_SQL),
        Job.state == JobState.RUNNING,
        (Job.heartbeat_at < cutoff) | Job.heartbeat_at.is_(None),
    )


def _forgotten(cutoff: datetime) -> ColumnElement[bool]:
    """Queued jobs unchanged since `cutoff`."""
    return and_(text(UNFINISHED_SQL), Job.state == JobState.QUEUED, Job.updated_at < cutoff)


def _export_range(everybody: bool, *columns: Any) -> Select[Any]:
    """The next `limit` rows after a position, oldest first, created before the export
    began: a range of the (owner, created_at, id) index, or for a superuser of the index of
    everybody's items (EVERY_ROW_SQL)."""
    scope = text(EVERY_ROW_SQL) if everybody else _items.owner_id == bindparam("owner_id")
    position = tuple_(_items.created_at, _items.id)
    after = tuple_(bindparam("at", type_=_items.created_at.type), bindparam("at_id", type_=Uuid()))
    return (
        select(*columns)
        .where(scope, _items.created_at <= bindparam("until", type_=_items.created_at.type))
        .where(position > after)
        .order_by(_items.created_at, _items.id)
        .limit(bindparam("limit"))
    )


def _export_end(everybody: bool) -> Precompiled:
    """The last position of the next chunk: read from the index alone."""
    chunk = _export_range(everybody, _items.created_at, _items.id).subquery()
    return Precompiled(
        select(chunk.c.created_at, chunk.c.id)
        .order_by(chunk.c.created_at.desc(), chunk.c.id.desc())
        .limit(literal_column("1"))  # a constant: Precompiled binds only named parameters
    )


def _iso_sql(column: str) -> str:
    """datetime.isoformat() of an aware UTC time, in Postgres's SQL."""
    at = f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    return f"replace({at}, '.000000', '') || '+00:00'"


def _export_copy_sql(everybody: bool) -> str:
    """The rows after $1, $2 up to $3, $4 (positions), formatted by Postgres as
    csvfiles.writer formats them (compared byte for byte in the tests)."""
    scope = EVERY_ROW_SQL if everybody else "owner_id = $5"
    title = csvfiles.neutralised_sql("title")
    description = csvfiles.neutralised_sql("description")
    times = f"{_iso_sql('created_at')}, {_iso_sql('updated_at')}"
    # Constants only: the values are COPY's arguments.
    columns = f"id, {title}, NULLIF({description}, ''), {times}"
    return (
        f"SELECT {columns} FROM items WHERE {scope}"  # noqa: S608
        " AND (created_at, id) > ($1, $2) AND (created_at, id) <= ($3, $4)"
        " ORDER BY created_at, id"
    )


_EXPORT_CHUNKS = {everybody: Precompiled(_export_range(everybody, *_EXPORTED))
                  for everybody in (False, True)}  # fmt: skip
_EXPORT_ENDS = {everybody: _export_end(everybody) for everybody in (False, True)}
_EXPORT_COPIES = {everybody: _export_copy_sql(everybody) for everybody in (False, True)}


class JobRepository:
    """The statements of one session. None of them commits: the caller's transaction does."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def postgres(self) -> bool:
        return (await self.session.connection()).dialect.name == "postgresql"

    async def _driver(self) -> Any:
        """The session's own asyncpg connection, inside its transaction."""
        connection = await self.session.connection()
        return (await connection.get_raw_connection()).driver_connection

    # The listing and the queue

    async def page(self, owner: uuid.UUID | None, at: Cursor | None, limit: int) -> list[Job]:
        """A page of one owner's jobs (None: everybody's), newest first (keyset)."""
        scope = text(EVERY_ROW_SQL) if owner is None else Job.owner_id == owner
        query = seek(select(Job).where(scope), Job.created_at, Job.id, at, limit)
        return list(await self.session.scalars(query))

    async def unfinished_by_state(self) -> list[StateSummary]:
        """A summary per unfinished state that has jobs, through their index alone."""
        oldest = func.min(Job.updated_at)
        heartbeat = func.min(func.coalesce(Job.heartbeat_at, Job.updated_at))
        redelivered = func.sum(case((Job.deliveries > 1, 1), else_=0))
        result = await self.session.execute(
            select(Job.state, func.count(), oldest, heartbeat, redelivered)
            .where(text(UNFINISHED_SQL))
            .group_by(Job.state)
        )
        return [StateSummary(row[0], row[1], row[2], row[3], int(row[4] or 0)) for row in result]

    # A run's claim on its job

    async def claim(self, job_id: uuid.UUID, deliveries: int) -> bool:
        """Mark the job running for one more delivery, unless another delivery changed its
        count first or it has finished."""
        now = utcnow()
        result = await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.deliveries == deliveries, Job.state.not_in(FINISHED))
            .values(
                state=JobState.RUNNING,
                deliveries=Job.deliveries + 1,
                heartbeat_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    async def hold(self, job_id: uuid.UUID, deliveries: int) -> bool:
        """Lock the running job's row in this transaction, if the claim made with
        `deliveries` still stands."""
        result = await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.deliveries == deliveries, Job.state == JobState.RUNNING)
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    async def beat(self, job_id: uuid.UUID) -> None:
        """A running job's heartbeat."""
        await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING)
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )

    async def set_done(self, job_id: uuid.UUID, done: int) -> None:
        """A job's progress, written without reading the job."""
        await self.session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(done=done, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )

    # Lost runs and lost messages

    async def stalled(self, cutoff: datetime) -> list[tuple[uuid.UUID, int, JobKind]]:
        """(id, deliveries, kind) of the running jobs that have not beaten since `cutoff`."""
        query = select(Job.id, Job.deliveries, Job.kind).where(_stalled(cutoff))
        return [(row[0], row[1], row[2]) for row in await self.session.execute(query)]

    async def end_stalled(
        self, job_id: uuid.UUID, deliveries: int, cutoff: datetime, values: dict[str, Any]
    ) -> bool:
        """Set `values` on a stalled job, if it is still stalled with that delivery count."""
        result = await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.deliveries == deliveries, _stalled(cutoff))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    async def forgotten(self, cutoff: datetime, limit: int) -> list[uuid.UUID]:
        """The ids of up to `limit` jobs queued and unchanged since `cutoff`, oldest first."""
        query = select(Job.id).where(_forgotten(cutoff)).order_by(Job.updated_at).limit(limit)
        return list(await self.session.scalars(query))

    async def touch_forgotten(self, ids: list[uuid.UUID], cutoff: datetime) -> list[uuid.UUID]:
        """Move `updated_at` on for those of `ids` still forgotten; returns those."""
        result = await self.session.execute(
            update(Job)
            .where(Job.id.in_(ids), _forgotten(cutoff))
            .values(updated_at=utcnow())
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        return list(result.scalars())

    # What imports write and exports read

    async def insert_items(self, records: list[Record]) -> None:
        """An import's rows (IMPORTED), inside the session's transaction."""
        if not records:
            return
        if await self.postgres():
            # COPY (binary, through asyncpg) on the session's own connection, so inside its
            # transaction: 4 to 5 times the rows per second of a multi-row INSERT.
            driver = await self._driver()
            await driver.copy_records_to_table("items", records=records, columns=IMPORTED)
            return
        await self.session.execute(
            insert(_ITEMS_TABLE), [dict(zip(IMPORTED, record, strict=True)) for record in records]
        )

    async def count_items(self, owner: uuid.UUID | None, until: datetime) -> int:
        """An owner's items (None: everybody's) created up to `until`: an export's total."""
        scope = text(EVERY_ROW_SQL) if owner is None else Item.owner_id == owner
        counted = select(func.count()).select_from(Item).where(Item.created_at <= until, scope)
        return await self.session.scalar(counted) or 0

    async def export_chunk(
        self, owner: uuid.UUID | None, until: datetime, at: Position, limit: int
    ) -> Rows:
        """Up to `limit` rows after `at` (_EXPORTED's columns), oldest first."""
        return await _EXPORT_CHUNKS[owner is None].all(
            self.session, at=at[0], at_id=at[1], owner_id=owner, until=until, limit=limit
        )

    async def export_end(
        self, owner: uuid.UUID | None, until: datetime, at: Position, limit: int
    ) -> Position | None:
        """Where the chunk `export_chunk` would read ends: None when it is empty."""
        ends = await _EXPORT_ENDS[owner is None].all(
            self.session, at=at[0], at_id=at[1], owner_id=owner, until=until, limit=limit
        )
        return (ends[0][0], ends[0][1]) if ends else None

    async def copy_export(
        self,
        owner: uuid.UUID | None,
        at: Position,
        end: Position,
        output: Callable[[bytes], Awaitable[None]],
    ) -> int:
        """Postgres only: the rows after `at` up to `end` as CSV (COPY ... TO STDOUT), handed
        to `output` as they arrive; returns how many."""
        driver = await self._driver()
        owned = () if owner is None else (owner,)
        status = await driver.copy_from_query(
            _EXPORT_COPIES[owner is None], at[0], at[1], end[0], end[1], *owned,
            output=output, format="csv",
        )  # fmt: skip
        return int(status.rsplit(" ", 1)[1])  # "COPY <rows>"
