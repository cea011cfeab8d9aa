"""Background worker: Celery app and the job tasks (`python -m app worker`)."""

from app.worker.celery_app import celery_app

__all__ = ["celery_app"]
