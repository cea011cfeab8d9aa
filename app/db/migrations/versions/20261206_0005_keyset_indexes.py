"""keyset indexes: listings by (created_at, id), unfinished jobs, trigram title search

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

Every listing pages by (created_at, id) newest first, so each gets an index on those columns
(after the owner, where a listing is one owner's); the unfinished jobs get a partial index,
so counting them reads them alone. On Postgres the title search (ILIKE '%text%') is served by
a trigram index, which needs the pg_trgm extension: a trusted extension since Postgres 13,
which the database's owner may create; on a managed Postgres it may need allowing first
(docs/deployment.md).

On a large table, CREATE INDEX blocks writes to it while it runs: an index that exists already
under its name (built beforehand with CREATE INDEX CONCURRENTLY) is kept (docs/operations.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("state IN ('queued', 'running')")
# Everybody's rows by time: an index a listing of one owner's rows cannot take (models.py).
EVERY_ROW = sa.text("created_at > '-infinity'")


def upgrade() -> None:
    op.create_index(
        "ix_items_owner_id_created_at_id",
        "items",
        ["owner_id", "created_at", "id"],
        if_not_exists=True,
    )
    op.drop_index("ix_items_owner_id_created_at", table_name="items")
    op.create_index(
        "ix_items_created_at_id",
        "items",
        ["created_at", "id"],
        postgresql_where=EVERY_ROW,
        sqlite_where=EVERY_ROW,
        if_not_exists=True,
    )
    op.drop_index("ix_items_created_at", table_name="items")
    op.create_index(
        "ix_jobs_owner_id_created_at_id",
        "jobs",
        ["owner_id", "created_at", "id"],
        if_not_exists=True,
    )
    op.drop_index("ix_jobs_owner_id", table_name="jobs")
    op.create_index(
        "ix_jobs_created_at_id",
        "jobs",
        ["created_at", "id"],
        postgresql_where=EVERY_ROW,
        sqlite_where=EVERY_ROW,
        if_not_exists=True,
    )
    op.create_index(
        "ix_jobs_unfinished",
        "jobs",
        ["state"],
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
        if_not_exists=True,
    )
    op.create_index("ix_users_created_at_id", "users", ["created_at", "id"], if_not_exists=True)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_items_title_trgm ON items USING gin (title gin_trgm_ops)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_items_title_trgm")
    op.drop_index("ix_users_created_at_id", table_name="users")
    op.drop_index("ix_jobs_unfinished", table_name="jobs")
    op.drop_index("ix_jobs_created_at_id", table_name="jobs")
    op.create_index("ix_jobs_owner_id", "jobs", ["owner_id"])
    op.drop_index("ix_jobs_owner_id_created_at_id", table_name="jobs")
    op.create_index("ix_items_created_at", "items", ["created_at"])
    op.drop_index("ix_items_created_at_id", table_name="items")
    op.create_index("ix_items_owner_id_created_at", "items", ["owner_id", "created_at"])
    op.drop_index("ix_items_owner_id_created_at_id", table_name="items")
