"""Background worker: Celery app factory (celery_app.py), job tasks (tasks.py), and the
in-process fallback used when no broker is configured (dispatch.py)."""
