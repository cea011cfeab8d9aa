"""Passwords: changing one's own, a superuser's reset of another user's, and the reset by
e-mail. Every one of them signs the user out everywhere (`revoke_credentials`).

The reset by e-mail, step by step:
1. `may_request_reset`: a request for an address is throttled per client (429) and per
   address (quietly: the same answer, no e-mail). The answer never depends on whether an
   account has the address, and no account is looked up while answering: the lookup runs
   in the worker (`prepare_reset`), so the time of the answer does not tell either.
2. `prepare_reset` (worker): for an active account with that address, a random token whose
   SHA-256 alone is stored, expiring after PASSWORD_RESET_MINUTES, and the e-mail with the
   link; sent by app/services/mail.py.
3. `complete_reset`: the token is spent in the same statement that checks it (used once,
   even by two requests at once), the password set, and every other reset of the user
   deleted.
"""

from __future__ import annotations

import html
import logging
import uuid
from datetime import timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.logging import log_fields
from app.core.security import (
    HashingBusy,
    new_token,
    plausible_token,
    token_digest,
    verify_password,
)
from app.db.base import utcnow
from app.db.models import PasswordReset, User
from app.db.session import Database
from app.services.access import Principal
from app.services.cache import ReadCache
from app.services.errors import Forbidden, NotFound, TooManyRequests
from app.services.login_guard import LoginGuard, RequestLimit
from app.services.mail import Mail
from app.services.users import hash_new_password, hashing_busy, publish, revoke_credentials

logger = logging.getLogger("app.security")

RESET_PATH = "/reset-password"


class WrongPassword(Forbidden):
    """The current password given with a change is not the user's: the change is forbidden."""


class InvalidResetToken(NotFound):
    """No live reset has this token (never issued, used, or expired): there is none to use."""


async def _set_password(
    session: AsyncSession, cache: ReadCache, user_id: uuid.UUID, password: str
) -> Principal:
    hashed = await hash_new_password(password)
    await session.execute(update(User).where(User.id == user_id).values(hashed_password=hashed))
    revoked = await revoke_credentials(session, user_id)
    await session.execute(delete(PasswordReset).where(PasswordReset.user_id == user_id))
    await session.commit()
    await publish(cache, revoked)
    logger.info(
        "password changed", extra=log_fields(event="password_changed", user_id=str(user_id))
    )
    return revoked


async def change_password(
    session: AsyncSession,
    cache: ReadCache,
    guard: LoginGuard,
    principal: Principal,
    current: str,
    new: str,
    client: str,
) -> Principal:
    """Set the principal's own password; the current one is required, and a wrong one counts
    as a failed login of the account (throttled alike)."""
    user = await session.get(User, principal.id)
    if user is None:
        raise NotFound("user not found")
    if (wait := await guard.retry_after(user.username, client)) is not None:
        raise TooManyRequests("too many failed attempts; try again later", retry_after=wait)
    try:
        matches, _ = await verify_password(current, user.hashed_password)
    except HashingBusy:
        raise hashing_busy() from None
    if not matches:
        await guard.failed(user.username, client)
        raise WrongPassword("the current password is not correct")
    return await _set_password(session, cache, user.id, new)


async def reset_password(
    session: AsyncSession, cache: ReadCache, user_id: uuid.UUID, new: str
) -> User:
    """A superuser sets another user's password (the user is signed out everywhere)."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user not found")
    user.credential_version = (await _set_password(session, cache, user_id, new)).credential_version
    return user


async def may_request_reset(guard: LoginGuard, settings: Settings, email: str, client: str) -> bool:
    """Whether to send a reset e-mail for this request: TooManyRequests once the client has
    asked too often, False (answer as usual, send nothing) once the address has."""
    per_client = RequestLimit(guard, settings.password_reset_requests_per_client, "reset-client")
    if not await per_client.take(client):
        raise TooManyRequests("too many password reset requests; try again later", retry_after=3600)
    per_address = RequestLimit(guard, settings.password_reset_requests_per_address, "reset-address")
    if not await per_address.take(email.lower()):
        logger.info(
            "password reset not sent: too many for this address",
            extra=log_fields(event="reset_throttled", client=client),
        )
        return False
    return True


def reset_link(settings: Settings, token: str) -> str:
    base = settings.webui_base_url or f"{settings.base_url}/ui"
    return f"{base}{RESET_PATH}?token={token}"


async def prepare_reset(db: Database, settings: Settings, email: str) -> Mail | None:
    """The reset e-mail for the active account with this address, its token stored; None
    (and nothing stored) when there is no such account."""
    now = utcnow()
    async with db.session() as session:
        user = await session.scalar(select(User).where(User.email == email.lower()))
        if user is None or not user.is_active:
            logger.info(
                "password reset asked for an address without an active account",
                extra=log_fields(event="reset_unknown"),
            )
            return None
        token = new_token()
        # The user's spent and expired resets go now: each user holds a handful at most.
        await session.execute(
            delete(PasswordReset).where(
                PasswordReset.user_id == user.id,
                or_(PasswordReset.expires_at <= now, PasswordReset.used_at.is_not(None)),
            )
        )
        session.add(
            PasswordReset(
                token_hash=token_digest(token),
                user_id=user.id,
                created_at=now,
                expires_at=now + timedelta(minutes=settings.password_reset_minutes),
            )
        )
        await session.commit()
        username = user.username
    link = reset_link(settings, token)
    minutes = settings.password_reset_minutes
    text = (
        f"Hello {username},\n\n"
        f"somebody asked to reset the password of your {settings.app_name} account.\n"
        f"To choose a new password, open this link within {minutes} minutes:\n\n"
        f"{link}\n\n"
        "If it was not you, ignore this e-mail: your password stays as it is.\n"
    )
    page = (
        f"<p>Hello {html.escape(username)},</p>"
        f"<p>somebody asked to reset the password of your {html.escape(settings.app_name)} "
        f"account. To choose a new password, open this link within {minutes} minutes:</p>"
        f'<p><a href="{html.escape(link)}">{html.escape(link)}</a></p>'
        "<p>If it was not you, ignore this e-mail: your password stays as it is.</p>"
    )
    return Mail(to=email, subject=f"Reset your {settings.app_name} password", text=text, html=page)


async def complete_reset(
    session: AsyncSession, cache: ReadCache, token: str, new: str
) -> Principal:
    """Set the password of the reset's user; the token is spent. InvalidResetToken when it is
    unknown, spent, expired, or its user is inactive."""
    invalid = InvalidResetToken("this password reset link is not valid (used or expired)")
    if not plausible_token(token):
        raise invalid
    now = utcnow()
    spent = await session.execute(
        update(PasswordReset)
        .where(
            PasswordReset.token_hash == token_digest(token),
            PasswordReset.used_at.is_(None),
            PasswordReset.expires_at > now,
        )
        .values(used_at=now)
        .returning(PasswordReset.user_id)
    )
    user_id = spent.scalar_one_or_none()
    user = await session.get(User, user_id) if user_id is not None else None
    if user is None or not user.is_active:
        await session.rollback()
        raise invalid
    return await _set_password(session, cache, user.id, new)
