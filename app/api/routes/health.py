"""Probes: /live (process), /ready (dependencies), /health (full report)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import OperatorDep, app_state
from app.api.errors import UNAVAILABLE_RETRY_AFTER
from app.api.routing import Route
from app.services.health import HealthState, run_checks

router = APIRouter(tags=["health"], route_class=Route)


@router.get("/live")
@router.head("/live", include_in_schema=False)
async def live() -> dict[str, str]:
    """The process answers. No I/O: a slow database must not get the container killed."""
    return {"status": "ok"}


async def _report(request: Request) -> tuple[bool, dict[str, Any], HealthState]:
    app = app_state(request)
    state = app.health
    healthy, checks = await run_checks(
        app.db,
        app.redis,
        app.settings.ready_timeout_seconds,
    )
    if state.shutting_down:
        healthy = False
        checks["shutdown"] = {"status": "error", "error": "shutting down"}
    return healthy, checks, state


def _answer(healthy: bool, content: dict[str, Any]) -> JSONResponse:
    """200, or 503 with `Retry-After` as every other answer of a dependency that is down."""
    if healthy:
        return JSONResponse(status_code=200, content=content)
    return JSONResponse(
        status_code=503, content=content, headers={"Retry-After": UNAVAILABLE_RETRY_AFTER}
    )


@router.get("/ready", responses={503: {"description": "A dependency check failed"}})
@router.head("/ready", include_in_schema=False)
async def ready(request: Request) -> JSONResponse:
    """Serve traffic? Database reachable, schema at head, Redis (if configured), not stopping."""
    healthy, checks, _ = await _report(request)
    return _answer(healthy, {"status": "ready" if healthy else "not ready", "checks": checks})


@router.get("/health", responses={503: {"description": "A dependency check failed"}})
@router.head("/health", include_in_schema=False)
async def health(request: Request, operator: OperatorDep) -> JSONResponse:
    """Everything an operator wants on one page: build, uptime, each dependency's latency.
    Others (no METRICS_TOKEN, not from METRICS_ALLOWED_NETWORKS) get the status alone."""
    healthy, checks, state = await _report(request)
    settings = app_state(request).settings
    status = "ok" if healthy else "degraded"
    if not operator:
        return _answer(healthy, {"status": status})
    return _answer(
        healthy,
        {
            "status": status,
            "service": settings.app_name,
            "version": settings.version,
            "git_commit": settings.git_commit,
            "environment": settings.environment.value,
            "uptime_seconds": state.uptime_seconds,
            "checks": checks,
        },
    )
