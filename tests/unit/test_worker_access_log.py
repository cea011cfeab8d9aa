"""uvicorn's own access line is never built: the app's middleware writes the access log."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from app.core.server import DrainingHttpProtocol, DrainingUvicornWorker


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # pragma: no cover
    return None


def test_the_workers_connections_build_no_uvicorn_access_line() -> None:
    """gunicorn's worker gives uvicorn's access logger gunicorn's handlers before it makes
    its Config, and uvicorn's protocol then formats a line (client address, path and query)
    for every response, disabled logger or not, whenever that logger has a handler."""
    access = logging.getLogger("uvicorn.access")
    saved = (access.handlers[:], access.propagate)
    access.handlers = [logging.NullHandler()]  # as UvicornWorker.__init__ does
    try:
        config = Config(app=_app, **{**DrainingUvicornWorker.CONFIG_KWARGS, "log_config": None})
        loop = asyncio.new_event_loop()
        try:
            protocol = DrainingHttpProtocol(
                config=config, server_state=ServerState(), app_state={}, _loop=loop
            )
        finally:
            loop.close()
        assert protocol.access_log is False
        assert access.handlers == []
    finally:
        access.handlers, access.propagate = saved
