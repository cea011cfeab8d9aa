"""Domain errors carry no HTTP: the API maps each kind to one status and its headers, and
the web UI to a page with that status and `Retry-After`, never the API's bearer challenge."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.requests import Request

from app.api.errors import _service_error, retry_after, status_of
from app.services import errors
from app.services.pagination import InvalidCursor
from app.services.passwords import InvalidResetToken, WrongPassword
from tests.docker_utils import ROOT


@pytest.mark.parametrize(
    ("error", "status", "headers"),
    [
        (errors.ServiceError("bad"), 400, {}),
        (InvalidCursor("bad cursor"), 400, {}),
        (errors.Unauthorized("who?"), 401, {"www-authenticate": "Bearer"}),
        (errors.Forbidden("no"), 403, {}),
        (WrongPassword("wrong"), 403, {}),
        (errors.NotFound("gone"), 404, {}),
        (InvalidResetToken("gone"), 404, {}),
        (errors.Conflict("busy"), 409, {}),
        (errors.TooLarge("big"), 413, {}),
        (errors.TooManyRequests("slow down", retry_after=42), 429, {"retry-after": "42"}),
        (errors.Unavailable("down"), 503, {"retry-after": "5"}),
        (errors.Busy("full", retry_after=1), 503, {"retry-after": "1"}),
    ],
)
def test_the_api_answers_each_domain_error_with_its_status_and_headers(
    error: errors.ServiceError, status: int, headers: dict[str, str]
) -> None:
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    response = asyncio.run(_service_error(request, error))
    assert response.status_code == status == status_of(error)
    assert json.loads(bytes(response.body)) == {"detail": error.detail}
    sent = {
        k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
    }
    assert sent == headers
    assert retry_after(error) == (
        {"Retry-After": headers["retry-after"]} if "retry-after" in headers else {}
    )


def test_the_service_layer_names_no_status_and_no_header() -> None:
    """What HTTP says about an error (its status, `Retry-After`, `WWW-Authenticate`) is the
    faces' to say: no module of the service layer names one."""
    found = []
    for path in sorted((ROOT / "app" / "services").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for word in ("Retry-After", "WWW-Authenticate", "status_code"):
            if word.lower() in source.lower():
                found.append(f"{path.relative_to(ROOT)}: {word}")
    assert found == []
