"""All versioned API routes under /api/v1."""

from fastapi import APIRouter

from app.api.routes import auth, items, jobs, users

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(auth.router)
api_router.include_router(users.router)
api_router.include_router(jobs.router)  # before items: /items/import, /items/export
api_router.include_router(items.router)
