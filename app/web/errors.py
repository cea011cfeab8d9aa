"""Errors on the UI's paths as HTML pages; everywhere else the API's JSON answers stay.

The API's handlers (app/api/errors.py) are wrapped, not replaced: a request under the UI's
path gets a page with the same status and the same safe message (never SQL, paths or a
stack), and a link back; any other request gets exactly what it got before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.deps import app_state
from app.api.errors import retry_after, status_of
from app.core.config import Settings
from app.services.errors import ServiceError
from app.web.auth import CsrfRejected, SignInRequired, login_url
from app.web.pages import render

Handler = Callable[[Request, Exception], Awaitable[Response] | Response]

TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Conflict",
    413: "Too large",
    422: "Not valid",
    429: "Too many attempts",
    503: "Unavailable",
}


def _message(exc: Exception) -> str:
    if isinstance(exc, RequestValidationError):
        fields = sorted({str(error["loc"][-1]) for error in exc.errors() if error.get("loc")})
        return "These values are not valid: " + ", ".join(fields) if fields else "Not valid."
    if isinstance(exc, StarletteHTTPException) and isinstance(exc.detail, str):
        return exc.detail
    return "Something went wrong; try again shortly."


def _page(
    request: Request, status_code: int, message: str, headers: dict[str, str] | None
) -> Response:
    title = TITLES.get(status_code, "Error")
    return render(request, "error.html", status_code, headers=headers, title=title, message=message)


def _on_ui(settings: Settings, request: Request) -> bool:
    path, prefix = request.url.path, settings.ui_path
    return path == prefix or path.startswith(prefix + "/")


def _service_error(settings: Settings, api_handler: Handler) -> Handler:
    """A domain error: a page with its status and `Retry-After` on the UI's paths (not the
    API's `WWW-Authenticate: Bearer`: a page signs in through its form)."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)  # noqa: S101 - registered for it only
        if not _on_ui(settings, request):
            answer = api_handler(request, exc)
            return answer if isinstance(answer, Response) else await answer
        return _page(request, status_of(exc), exc.detail, retry_after(exc))

    return handler


def _wrap(settings: Settings, api_handler: Handler) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        api_response = api_handler(request, exc)
        if not isinstance(api_response, Response):
            api_response = await api_response
        if not _on_ui(settings, request):
            return api_response
        headers = {
            name: value
            for name, value in api_response.headers.items()
            if name.lower() in ("retry-after", "allow")
        }
        return _page(request, api_response.status_code, _message(exc), headers)

    return handler


async def _sign_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)  # noqa: S101 - registered for it only
    settings = app_state(request).settings
    return RedirectResponse(
        login_url(settings, exc.next_path), status_code=303, headers={"Cache-Control": "no-store"}
    )


async def _csrf(request: Request, exc: Exception) -> Response:
    return _page(
        request,
        status.HTTP_403_FORBIDDEN,
        "This form has expired or did not come from this site: nothing was done. "
        "Go back, reload the page and try again.",
        None,
    )


def install(app: FastAPI, settings: Settings) -> None:
    """Call after the API's handlers are installed."""
    for error, api_handler in list(app.exception_handlers.items()):
        if error is ServiceError:
            app.add_exception_handler(error, _service_error(settings, api_handler))
        elif isinstance(error, type):
            app.add_exception_handler(error, _wrap(settings, api_handler))
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(CsrfRejected, _csrf)
