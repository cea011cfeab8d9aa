"""OAuth2 password flow: exchange a username (or e-mail) and password for a JWT."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from app.api import API_PREFIX
from app.api.deps import LoginGuardDep, SessionDep, SettingsDep
from app.api.errors import error_responses
from app.api.routing import Route
from app.core.security import create_access_token
from app.schemas.users import Token
from app.services.users import log_in

router = APIRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"], route_class=Route)


@router.post(
    "/token", response_model=Token, responses=error_responses(400, 401, 403, 413, 429, 503)
)
async def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    guard: LoginGuardDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """Exchange credentials for an access token. Failed attempts are throttled per account
    and client address (429 with Retry-After)."""
    client = request.client.host if request.client else "unknown"
    user = await log_in(session, guard, form.username, form.password, client)
    return Token(
        access_token=create_access_token(settings, user.id),
        expires_in=settings.access_token_expire_minutes * 60,
    )
