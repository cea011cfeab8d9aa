"""Application factory.

`create_app()` builds the FastAPI app from settings; `uvicorn --factory app.main:create_app`
and gunicorn use it. Every process logs its resolved (redacted) configuration at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from app.api import API_PREFIX, IMPORT_PATH, MULTIPART_OVERHEAD_BYTES, OPENAPI_PATH
from app.api.errors import install_error_handlers
from app.api.router import all_routes
from app.api.routing import document_security
from app.core import metrics
from app.core.config import Settings, get_settings
from app.core.logging import configure_logging, log_fields
from app.core.middleware import (
    PROBE_PATHS,
    RequestContextMiddleware,
)
from app.core.security import configure_password_hashing
from app.db.session import Database
from app.services import retention
from app.services.cache import ReadCache
from app.services.health import HealthState
from app.services.local_cache import listener_for
from app.services.login_guard import LoginGuard
from app.web import docs as web_docs
from app.web import errors as web_errors
from app.web import pages as web_pages
from app.web.assets import Assets
from app.worker.dispatch import recover_in_process

logger = logging.getLogger("app")


def _mark_shutdown_on_sigterm(state: HealthState) -> None:
    """Turn /ready to 503 as soon as SIGTERM arrives, before the server stops accepting.

    The server's own handler still runs: this only chains in front of it. Outside the
    main thread (e.g. a test client) signals cannot be hooked, and nothing is lost.
    """
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        state.shutting_down = True
        if callable(previous):
            previous(signum, frame)

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, handler)


def _document_settings_in_openapi(app: FastAPI, settings: Settings) -> None:
    """Limits that come from the settings, in the API document as enforced, and the
    security of the routes whose dependencies read the token themselves."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for parameter in schema["paths"][f"{API_PREFIX}/items"]["get"]["parameters"]:
                if parameter["name"] == "limit":
                    parameter["schema"]["maximum"] = settings.items_max_page_size
            document_security(schema, app.routes)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> FastAPI:
    """The app. `redis` replaces the client built from REDIS_URL (tests pass a double)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    configure_password_hashing(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(settings)
        redis_url = settings.resolved_redis_url
        app.state.redis = redis or (
            Redis.from_url(
                redis_url,
                socket_connect_timeout=settings.ready_timeout_seconds,
                socket_timeout=settings.ready_timeout_seconds,
                # A pooled connection that Redis closed (it restarted) fails once, and the
                # command goes again at once on a new connection instead of failing the
                # request. A timeout is not repeated: it has already cost its full wait.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            if redis_url
            else None
        )
        # The memory cache of this process, kept coherent by Redis (app/services/local_cache.py).
        local = (
            listener_for(
                app.state.redis, settings.local_cache_seconds, settings.local_cache_entries,
                settings.local_cache_max_bytes,
            )
            if app.state.redis is not None and redis is None and settings.cache_ttl_seconds
            else None
        )  # fmt: skip
        if local is not None:
            local.start()
        app.state.cache = ReadCache(app.state.redis, settings.cache_ttl_seconds, local)
        app.state.login_guard = LoginGuard(settings)
        _mark_shutdown_on_sigterm(app.state.health)
        logger.info("starting", extra=log_fields(config=settings.redacted()))
        # Without a worker, this process runs the jobs, so it looks after them as the
        # worker would: it takes back the jobs of a run that stopped and sweeps what they leave.
        chores = (
            [
                asyncio.create_task(retention.sweep_periodically(app.state.db, settings)),
                asyncio.create_task(recover_in_process(app.state.db, settings, app.state.cache)),
            ]
            if settings.jobs_run_in_process
            else []
        )
        try:
            yield
        finally:
            app.state.health.shutting_down = True
            for chore in chores:
                chore.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await chore
            if local is not None:
                await local.stop()
            if app.state.redis is not None and redis is None:  # close only what we opened
                await app.state.redis.aclose()
            await app.state.db.dispose()
            metrics.DEFERRED.flush()  # the last requests' samples, before the process ends
            logger.info("stopped")

    app = FastAPI(
        title=settings.app_name,
        version=settings.version,
        lifespan=lifespan,
        openapi_url=OPENAPI_PATH,
        docs_url=None,  # served by app/web/docs.py, from this site's files (strict CSP)
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False}
        if not settings.otel_enabled
        else None,
    )
    app.state.settings = settings
    app.state.health = HealthState()
    app.state.assets = Assets()
    app.router.routes.extend(all_routes())
    app.router.routes.extend(web_docs.router().routes)
    app.router.routes.extend(web_pages.router(settings).routes)
    _document_settings_in_openapi(app, settings)
    install_error_handlers(app)
    web_errors.install(app, settings)  # HTML error pages on the web UI's paths
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        debug=settings.debug,
        quiet_paths=() if settings.access_log_probes else PROBE_PATHS,
        default_limit=settings.max_request_bytes,
        # The file itself, plus room for the multipart framing and the other form fields.
        limits=dict.fromkeys(
            (IMPORT_PATH, settings.ui_path + web_pages.IMPORT_PATH),
            settings.import_max_bytes + MULTIPART_OVERHEAD_BYTES,
        ),
    )  # outermost: sees every response
    return app
