"""What every request passes through before its route, as one pure ASGI middleware: its id,
its metrics and access line, the body size limits, and a read's second run after a lost
database connection.

Pure ASGI (not BaseHTTPMiddleware) because it is on every request's path: it adds no
extra task or body buffering. One layer, not three: each layer is a coroutine and a send
wrapper more on every request (the three cost 9 µs of `/live`'s 42 in one process).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterable

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics
from app.core.logging import log_fields, request_id_var

access_logger = logging.getLogger("app.access")
error_logger = logging.getLogger("app.error")

REQUEST_ID_HEADER = b"x-request-id"
# On every answer, not only behind nginx (`make run`, a Kubernetes ingress): a browser never
# guesses another type than the one sent (a download, a JSON error).
_NOSNIFF = (b"x-content-type-options", b"nosniff")
# A caller's id is kept only if it is short and plain: it ends up in every log line.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Health checks call these every few seconds: only their failures are worth a log line.
PROBE_PATHS = ("/live", "/ready", "/health")

_INTERNAL_ERROR_BODY = b'{"detail":"internal server error","request_id":"%s"%s}'


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            candidate: str = value.decode("latin-1")
            if _VALID_REQUEST_ID.match(candidate):
                return candidate
            break
    # Not a secret, only unique: the PRNG needs no system call (os.urandom does, per request).
    return f"{random.getrandbits(128):032x}"


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        debug: bool = False,
        quiet_paths: Iterable[str] = (),
        default_limit: int,
        limits: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.debug = debug  # name the exception type in 500 bodies
        self.quiet_paths = frozenset(quiet_paths)  # access-logged only when they fail
        self.bodies = BodySizeLimits(app, default_limit=default_limit, limits=limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope)
        token = request_id_var.set(request_id)
        metrics.request_started()
        started = time.perf_counter()
        status = 0
        encoded_id = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, encoded_id)]
                if not any(name.lower() == _NOSNIFF[0] for name, _ in headers):
                    headers.append(_NOSNIFF)
                message["headers"] = headers
            await send(message)

        try:
            method = scope["method"]
            if method in _READS:
                await retry_on_lost_connection(self.app, scope, receive, send_with_id)
            elif method in _BODYLESS:
                await self.app(scope, receive, send_with_id)
            else:
                await self.bodies(scope, receive, send_with_id)
        except Exception as exc:
            error_logger.exception(
                "unhandled error",
                extra=log_fields(method=scope["method"], path=scope["path"]),
            )
            if status == 0:  # nothing sent yet: the client still gets a JSON answer
                status = 500
                extra = b',"error":"%s"' % type(exc).__name__.encode() if self.debug else b""
                body = _INTERNAL_ERROR_BODY % (encoded_id, extra)
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - started
            route = metrics.route_template(scope)
            metrics.request_finished(scope["method"], route, status, elapsed)
            if status >= 400 or scope["path"] not in self.quiet_paths:
                access_logger.info(
                    "request",
                    extra=log_fields(
                        method=scope["method"],
                        path=scope["path"],
                        status=status,
                        route=route,
                        duration_ms=round(elapsed * 1000, 2),
                        client=scope["client"][0] if scope.get("client") else None,
                    ),
                )
            request_id_var.reset(token)


class BodySizeLimits:
    """Starlette's request body limit, with a limit of their own for some paths (for the
    requests that may have a body: RequestContextMiddleware sends no other here).

    Starlette refuses a body above the limit from its `Content-Length` before reading any
    of it, and counts the bytes of a body sent without a length as they arrive: nothing
    reads or parses more than the limit, so the service is safe without nginx in front
    (`make run`, a Kubernetes ingress). The upload route's limit comes from the settings,
    which a route decorator cannot see: hence the choice by path here.
    """

    def __init__(self, app: ASGIApp, *, default_limit: int, limits: dict[str, int]) -> None:
        self.app = app
        self.default = RequestBodyLimitMiddleware(app, max_body_size=default_limit)
        self.by_path = {
            path: RequestBodyLimitMiddleware(app, max_body_size=limit)
            for path, limit in limits.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limited = self.by_path.get(scope["path"], self.default)
        for name, value in scope["headers"]:
            # Answered here, as JSON, before any route runs: Starlette would let the route
            # run first and then replace its answer with a plain-text 413.
            if name == b"content-length":
                if not value.isdigit() or int(value) > limited.max_body_size:
                    await _too_large(send)
                    return
                break
        await limited(scope, receive, send)


# No route reads a GET's, HEAD's or OPTIONS' body: the probes and reads skip the counting.
_READS = frozenset({"GET", "HEAD"})
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})

# Set in the request's state by the API's error handler when the database closed the
# connection a request was using (after a database restart or restore).
CONNECTION_LOST = "db_connection_lost"


async def retry_on_lost_connection(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    """Runs a GET or HEAD once more when the database connection it used was dead.

    After a database restart every pooled connection is closed, and the pool learns it only
    when a request uses one (it then replaces them all). That request would get 503; a read
    has changed nothing yet, so it is run again, on a fresh connection, and its caller never
    sees the restart. A write is never repeated: it gets the 503 and its Retry-After.
    """
    discarded = False

    async def first(message: Message) -> None:
        nonlocal discarded
        if message["type"] == "http.response.start":
            discarded = message["status"] == 503 and bool(
                scope.get("state", {}).pop(CONNECTION_LOST, False)
            )
        if not discarded:
            await send(message)

    await app(scope, receive, first)
    if not discarded:
        return
    error_logger.info(
        "retried on a fresh database connection", extra=log_fields(path=scope["path"])
    )
    body_sent = False

    async def bodyless() -> Message:  # a GET's (empty) body, then the client's own events
        nonlocal body_sent
        if body_sent:
            return await receive()
        body_sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    await app(scope, bodyless, send)


_TOO_LARGE = b'{"detail":"Content Too Large"}'


async def _too_large(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_TOO_LARGE)).encode()),
                (b"connection", b"close"),  # the body is never read
            ],
        }
    )
    await send({"type": "http.response.body", "body": _TOO_LARGE})
