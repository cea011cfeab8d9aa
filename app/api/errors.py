"""Every error the API answers, as JSON that always encodes.

- Domain errors (app/services/errors.py) map to one status each (`STATUSES`), with
  `Retry-After` where the domain says when to try again.
- Validation errors echo what was wrong, but the echoed input is made safe to encode
  first: JSON bodies may carry NaN, Infinity, 1e999 or lone surrogates, which the standard
  encoder refuses (a 500 where a 422 belongs), and a huge value is cut short.
- 405 lists every method the path answers to in `Allow`, not only those of the first
  route that matched the path.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.logging import describe_error, log_fields
from app.core.middleware import CONNECTION_LOST
from app.db.session import unavailable
from app.services.errors import (
    UNAVAILABLE_RETRY_SECONDS,
    Busy,
    Conflict,
    Forbidden,
    NotFound,
    ServiceError,
    TooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)

logger = logging.getLogger("app.error")

MAX_ECHOED_CHARS = 200
# Each kind of domain error's status; a kind not named answers its nearest base's, and
# ServiceError itself 400.
STATUSES: dict[type[ServiceError], int] = {
    ServiceError: status.HTTP_400_BAD_REQUEST,
    Unauthorized: status.HTTP_401_UNAUTHORIZED,
    Forbidden: status.HTTP_403_FORBIDDEN,
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    TooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
    TooManyRequests: status.HTTP_429_TOO_MANY_REQUESTS,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    Busy: status.HTTP_503_SERVICE_UNAVAILABLE,
}
# `Retry-After` of an unavailable dependency.
UNAVAILABLE_RETRY_AFTER = str(UNAVAILABLE_RETRY_SECONDS)


def status_of(exc: ServiceError) -> int:
    """The HTTP status of a domain error, on both faces."""
    for kind in type(exc).__mro__:
        if kind in STATUSES:
            return STATUSES[kind]
    raise AssertionError(f"no status for {type(exc).__name__}")  # ServiceError has one


def retry_after(exc: ServiceError) -> dict[str, str]:
    """`Retry-After`, where the domain says when to try again; no header otherwise."""
    return {} if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}


_ECHOED_KEYS = ("type", "loc", "msg", "input")


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer other than 422."""

    detail: str


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses an operation can answer."""
    descriptions = {
        400: "Bad request",
        401: "Missing, invalid or expired credentials",
        403: "Not allowed for this user",
        404: "Not found",
        409: "Conflicts with the current state",
        413: "Request body or file too large",
        429: "Too many requests; see Retry-After",
        503: "Temporarily unavailable (a dependency is down, or busy); see Retry-After",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}


def validation_error(loc: list[str | int], msg: str, value: Any = None) -> HTTPException:
    """A 422 shaped like FastAPI's own request validation errors."""
    return HTTPException(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"type": "value_error", "loc": loc, "msg": msg, "input": encodable(value)}],
    )


def encodable(value: Any) -> Any:
    """`value` with everything strict JSON cannot carry replaced by a readable stand-in."""
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        if len(value) > MAX_ECHOED_CHARS:
            value = value[:MAX_ECHOED_CHARS] + "…"
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bytes):
        return encodable(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {str(encodable(k)): encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encodable(v) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    return encodable(str(value))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it only
    errors = [
        {key: encodable(value) for key, value in error.items() if key in _ECHOED_KEYS}
        for error in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": errors})


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)  # noqa: S101 - registered for ServiceError only
    headers = retry_after(exc)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"  # the API's one scheme (RFC 6750)
    return JSONResponse(status_code=status_of(exc), content={"detail": exc.detail}, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for it only
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return await http_exception_handler(request, exc)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on this path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    broken = isinstance(exc, DBAPIError) and exc.connection_invalidated
    if not unavailable(exc):
        # Any other database error is a bug: raised on, to the 500 handler and its log
        # line with the stack.
        raise exc
    if broken:
        # A pooled connection the database had closed: a read is run again (middleware).
        setattr(request.state, CONNECTION_LOST, True)
    # One line per request, without the stack: an outage must not flood the log.
    logger.warning(
        "database unavailable",
        extra=log_fields(method=request.method, path=request.url.path, error=describe_error(exc)),
    )
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": "the database is unavailable; try again shortly"},
        headers={"Retry-After": UNAVAILABLE_RETRY_AFTER},
    )


def install_error_handlers(app: FastAPI) -> None:
    # DBAPIError covers OperationalError and InterfaceError; the others are not DBAPIErrors.
    for error in (DBAPIError, PoolTimeout, ConnectionError, TimeoutError):
        app.add_exception_handler(error, _database_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
