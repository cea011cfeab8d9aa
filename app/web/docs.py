"""The interactive API documentation (Swagger UI) from this site's own files.

FastAPI's built-in page loads Swagger UI from a CDN and starts it with an inline script: a
strict Content-Security-Policy blocks both, and an offline site cannot reach the CDN. This
page loads the same Swagger UI from the fingerprinted static files (app/web/assets.py) and
starts it from docs.js, which reads its settings from the page's data attributes.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api import API_PREFIX, OPENAPI_PATH
from app.api.routing import Route
from app.web.pages import render

DOCS_PATH = "/docs"


async def docs_page(request: Request) -> HTMLResponse:
    return render(
        request,
        "docs.html",
        openapi_url=OPENAPI_PATH,
        token_url=f"{API_PREFIX}/auth/token",
    )


def router() -> APIRouter:
    docs = APIRouter(include_in_schema=False, route_class=Route)
    docs.add_api_route(DOCS_PATH, docs_page, methods=["GET"], response_class=HTMLResponse)
    return docs
