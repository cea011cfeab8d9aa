"""GET /metrics: Prometheus text format, for operators only (METRICS_TOKEN or
METRICS_ALLOWED_NETWORKS); nginx does not serve it to the public either."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request, Response, status

from app.api.deps import OperatorDep, app_state
from app.api.routing import Route
from app.core import metrics
from app.core.config import Settings
from app.services import jobs, retention, vitals

router = APIRouter(tags=["health"], route_class=Route)


@router.get("/metrics", include_in_schema=False)
async def read_metrics(request: Request, operator: OperatorDep) -> Response:
    if not operator:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="metrics need the METRICS_TOKEN bearer token or an allowed network",
            headers={"WWW-Authenticate": "Bearer"},
        )
    report = await jobs.queue_report(app_state(request).db)
    if report is not None:  # else the database did not answer: the gauges keep their values
        for state, count in report.counts.items():
            metrics.JOBS.labels(state).set(count)
            metrics.JOBS_OLDEST_AGE.labels(state).set(report.oldest_seconds[state])
        metrics.JOBS_HEARTBEAT_AGE.set(report.heartbeat_age_seconds)
        metrics.JOBS_REDELIVERED.set(report.redelivered)
    # Bounded by retention (app/services/retention.py): a few thousand files at most.
    used = await asyncio.to_thread(retention.storage_in_use, app_state(request).settings)
    for volume, (files, size) in used.items():
        metrics.STORAGE_FILES.labels(volume).set(files)
        metrics.STORAGE_BYTES.labels(volume).set(size)
    await _observe_operations(app_state(request).settings)
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


async def _observe_operations(settings: Settings) -> None:
    """The volumes, the newest backup, the served certificate: what is not there (a volume
    not mounted, no backup yet, no TLS server answering) is not reported."""
    used = await asyncio.to_thread(vitals.volume_use, settings.monitored_volume_paths)
    for volume, use in used.items():
        metrics.VOLUME_SIZE.labels(volume).set(use.size_bytes)
        metrics.VOLUME_AVAILABLE.labels(volume).set(use.available_bytes)
    if settings.backup_dir:
        backup = await asyncio.to_thread(vitals.newest_backup, settings.backup_dir)
        if backup is not None:
            metrics.BACKUP_FINISHED.set(backup.finished_at)
            metrics.BACKUP_SIZE.set(backup.size_bytes)
    if settings.tls_probe_address:
        server_name = urlsplit(settings.base_url).hostname or ""
        expiry = await vitals.served_certificate_expiry(
            settings.tls_probe_address, server_name, settings.ready_timeout_seconds
        )
        if expiry is not None:
            metrics.CERTIFICATE_EXPIRY.set(expiry)
