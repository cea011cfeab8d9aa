"""The root page: where the API, its documentation, the web UI and the probes are."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from app.api import API_PREFIX, OPENAPI_PATH
from app.api.deps import app_state
from app.api.routing import Route

router = APIRouter(tags=["meta"], route_class=Route)


@router.get("/")
@router.head("/", include_in_schema=False)  # what uptime checks and `curl -I` send
async def index(request: Request) -> dict[str, str]:
    """The service's name and version, and the paths a newcomer looks for first (`ui`: the
    web UI, for a person with a browser)."""
    settings = app_state(request).settings
    return {
        "name": settings.app_name,
        "version": settings.version,
        "api": API_PREFIX,
        "docs": "/docs",
        "ui": settings.ui_path,
        "openapi": OPENAPI_PATH,
        "ready": "/ready",
    }


@router.get("/openapi.json", include_in_schema=False)
async def openapi_document() -> RedirectResponse:
    """The usual place of the schema, for tools that look there: it lives under the API."""
    return RedirectResponse(OPENAPI_PATH, status_code=308)
