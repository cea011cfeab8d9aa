"""Browser sign-in for the web UI: the session cookie, CSRF tokens, security headers.

- The session cookie is `HttpOnly` (no script reads it), `SameSite=Lax` (no cross-site
  form post carries it) and, in staging and production, `Secure`. It holds an opaque token;
  the session lives in the database (app/services/sessions.py), so signing out ends it.
- Every state-changing form carries the session's CSRF token in a hidden field, checked
  with a constant-time comparison. The sign-in form, which has no session yet, carries a
  token that must equal the one in a short-lived cookie set with the form (double submit),
  so another site cannot sign a browser in to an account of its choosing.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, Request, Response

from app.api.deps import app_state
from app.api.routing import authenticates_first
from app.core.config import Settings
from app.core.security import MAX_TOKEN_LENGTH
from app.services import sessions
from app.services.sessions import SignedIn

SESSION_COOKIE = "shipshape_session"
LOGIN_COOKIE = "shipshape_login"
LOGIN_COOKIE_SECONDS = 3600

# Pages only load what this site serves; nothing inline, no plugins, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages show a user's data: never stored by a shared cache, nor by the browser's.
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in page (app/web/errors.py)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRejected(Exception):
    """A state-changing form without the right token: 403, nothing done."""


def _cookie_options(settings: Settings) -> dict[str, object]:
    return {
        "path": settings.ui_path,
        "httponly": True,
        "samesite": "lax",
        "secure": settings.is_strict,
    }


def set_session_cookie(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.ui_session_minutes * 60,
        **_cookie_options(settings),  # type: ignore[arg-type]
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(SESSION_COOKIE, **_cookie_options(settings))  # type: ignore[arg-type]


def session_token(request: Request) -> str:
    return request.cookies.get(SESSION_COOKIE, "")


def new_login_token() -> str:
    """A token for the sign-in form; `set_login_cookie` sets it as the cookie the post must
    come with."""
    return secrets.token_urlsafe(32)


def set_login_cookie(response: Response, settings: Settings, token: str) -> None:
    options = {**_cookie_options(settings), "samesite": "strict"}
    response.set_cookie(LOGIN_COOKIE, token, max_age=LOGIN_COOKIE_SECONDS, **options)  # type: ignore[arg-type]


def _same(expected: str, given: str) -> bool:
    return (
        bool(expected)
        and len(given) <= MAX_TOKEN_LENGTH
        and hmac.compare_digest(expected.encode(), given.encode())
    )


def check_login_token(request: Request, given: str) -> None:
    if not _same(request.cookies.get(LOGIN_COOKIE, ""), given):
        raise CsrfRejected


async def _signed_in_first(request: Request) -> None:
    """The gate of forms (app/api/routing.py): the session, before the form is read."""
    async with app_state(request).db.read_sessionmaker() as session:
        found = await sessions.resolve(session, session_token(request))
    if found is None:
        raise SignInRequired(request.url.path)
    request.state.signed_in = found


@authenticates_first(_signed_in_first)
async def signed_in(request: Request) -> SignedIn:
    """The session of the request's cookie, or a redirect to the sign-in page."""
    found: SignedIn | None = getattr(request.state, "signed_in", None)
    if found is None:
        await _signed_in_first(request)
        found = request.state.signed_in
    return found


SignedInDep = Annotated[SignedIn, Depends(signed_in)]


async def checked_form(
    user: SignedInDep,
    csrf_token: Annotated[str, Form(max_length=MAX_TOKEN_LENGTH)] = "",
) -> SignedIn:
    """The session, for a state-changing form: refused unless it carries the CSRF token."""
    if not _same(user.csrf_token, csrf_token):
        raise CsrfRejected
    return user


FormUserDep = Annotated[SignedIn, Depends(checked_form)]


def safe_next(settings: Settings, value: str | None) -> str:
    """Where to go after signing in: a page of the UI, never another site."""
    home = f"{settings.ui_path}/items"
    if not value or not value.startswith(settings.ui_path + "/") or "//" in value:
        return home
    if any(ord(char) < 0x21 or char in "\\\x7f" for char in value):
        return home
    return value


def login_url(settings: Settings, next_path: str | None = None) -> str:
    url = f"{settings.ui_path}/login"
    return f"{url}?next={quote(next_path, safe='/')}" if next_path else url
