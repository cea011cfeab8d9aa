"""GET /metrics: Prometheus text format, for operators only (METRICS_TOKEN or
METRICS_ALLOWED_NETWORKS); nginx does not serve it to the public either."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from sqlalchemy import func, select

from app.api.deps import OperatorDep
from app.core import metrics
from app.core.states import JobState
from app.db.models import Job
from app.db.session import Database

router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
async def read_metrics(request: Request, operator: OperatorDep) -> Response:
    if not operator:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="metrics need the METRICS_TOKEN bearer token or an allowed network",
            headers={"WWW-Authenticate": "Bearer"},
        )
    db: Database = request.app.state.db
    try:
        async with db.session() as session:
            counts = dict(
                (await session.execute(select(Job.state, func.count()).group_by(Job.state))).all()
            )
    except Exception:  # metrics must answer even when the database does not
        counts = None
    if counts is not None:
        for state in JobState:
            metrics.JOBS.labels(state).set(counts.get(state, 0))
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
