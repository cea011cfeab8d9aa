"""finished jobs index: the retention sweep finds the jobs that ended longest ago

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINISHED = sa.text("state IN ('succeeded', 'failed')")


def upgrade() -> None:
    op.create_index(
        "ix_jobs_finished_updated_at",
        "jobs",
        ["updated_at"],
        postgresql_where=FINISHED,
        sqlite_where=FINISHED,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_updated_at", table_name="jobs")
