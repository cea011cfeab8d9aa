"""OAuth2 password flow: exchange a username (or e-mail) and password for a JWT; and the
password reset by e-mail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from app.api import API_PREFIX
from app.api.client import client_address, device_cookie, set_device_cookie
from app.api.deps import CacheDep, LoginGuardDep, SessionDep, SettingsDep, app_state
from app.api.errors import error_responses
from app.api.routing import Route
from app.core.security import create_access_token
from app.schemas.users import Message, PasswordResetConfirm, PasswordResetRequest, Token
from app.services import passwords
from app.services.users import log_in
from app.worker.dispatch import submit_password_reset

router = APIRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"], route_class=Route)

RESET_REQUESTED = (
    "If an account has this address, an e-mail with a link to choose a new password is on its way."
)


@router.post("/token", response_model=Token, responses=error_responses(400, 401, 413, 429, 503))
async def login(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    guard: LoginGuardDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """Exchange credentials for an access token. Failed attempts are throttled per account
    and client address (429 with Retry-After); a client that keeps the cookie this answer
    sets is not held back by other clients' failures from its address."""
    found = await log_in(
        session,
        guard,
        settings,
        form.username,
        form.password,
        client_address(request),
        device_cookie(request),
    )
    set_device_cookie(response, settings, found.device_token)
    return Token(
        access_token=create_access_token(settings, found.user.id, found.user.credential_version),
        expires_in=settings.access_token_expire_minutes * 60,
    )


@router.post(
    "/password-reset",
    response_model=Message,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(400, 413, 429, 503),
)
async def request_password_reset(
    request: Request,
    background: BackgroundTasks,
    data: PasswordResetRequest,
    settings: SettingsDep,
    guard: LoginGuardDep,
) -> Message:
    """Ask for an e-mail with a link to choose a new password. The answer is the same
    whether or not an account has the address; requests are throttled per client (429) and
    per address (no more e-mails)."""
    if await passwords.may_request_reset(guard, settings, data.email, client_address(request)):
        await submit_password_reset(background, app_state(request).db, settings, data.email)
    return Message(detail=RESET_REQUESTED)


@router.post(
    "/password-reset/confirm", response_model=Message, responses=error_responses(400, 404, 413, 503)
)
async def confirm_password_reset(
    data: PasswordResetConfirm, session: SessionDep, cache: CacheDep
) -> Message:
    """Set a new password with the token of the reset e-mail (used once; it expires after
    PASSWORD_RESET_MINUTES). Every token and session of the account is refused from now on."""
    await passwords.complete_reset(session, cache, data.token, data.new_password)
    return Message(detail="Your password is changed. Sign in with the new one.")
