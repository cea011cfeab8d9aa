"""All versioned API routes under /api/v1.

Each router carries the full /api/v1/... prefix itself, so a matched route's path is the
complete template: that is the label request metrics and logs use.
"""

from fastapi import APIRouter

from app.api.routes import auth, items, jobs, users

api_router = APIRouter()
api_router.include_router(auth.router)
api_router.include_router(users.router)
api_router.include_router(jobs.router)  # before items: /items/import, /items/export
api_router.include_router(items.router)
