"""The web UI's sign-ins: server-side sessions behind an opaque cookie.

The cookie holds a random token; the table holds its SHA-256, the user, the CSRF token of
the session's forms and when it expires. Signing out deletes the row, and so does
deactivating the user: a copied cookie is worth nothing afterwards. Expired rows are
deleted whenever somebody signs in, so the table holds live sessions only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.security import new_token, plausible_token, token_digest
from app.db.base import utcnow
from app.db.models import BrowserSession, User
from app.services.access import Principal


@dataclass(frozen=True, slots=True)
class SignedIn:
    """Who a session cookie belongs to, and the token its forms must carry."""

    principal: Principal
    username: str
    csrf_token: str


async def start(session: AsyncSession, settings: Settings, user_id: uuid.UUID) -> str:
    """A new session for the user; returns the cookie's token (never stored as such)."""
    now = utcnow()
    await session.execute(delete(BrowserSession).where(BrowserSession.expires_at <= now))
    token = new_token()
    session.add(
        BrowserSession(
            token_hash=token_digest(token),
            user_id=user_id,
            csrf_token=new_token(),
            created_at=now,
            expires_at=now + timedelta(minutes=settings.ui_session_minutes),
        )
    )
    await session.commit()
    return token


async def resolve(session: AsyncSession, token: str) -> SignedIn | None:
    """The live session of this cookie token and its active user, or None."""
    if not plausible_token(token):
        return None
    row = (
        await session.execute(
            select(
                User.id,
                User.username,
                User.is_active,
                User.is_superuser,
                User.credential_version,
                BrowserSession.csrf_token,
                BrowserSession.expires_at,
            )
            .join(User, User.id == BrowserSession.user_id)
            .where(BrowserSession.token_hash == token_digest(token))
        )
    ).first()
    if row is None or row.expires_at <= utcnow() or not row.is_active:
        return None
    principal = Principal(
        id=row.id,
        is_active=True,
        is_superuser=row.is_superuser,
        credential_version=row.credential_version,
    )
    return SignedIn(principal=principal, username=row.username, csrf_token=row.csrf_token)


async def end(session: AsyncSession, token: str) -> None:
    """Sign out: the session is gone, whoever holds a copy of the cookie."""
    if plausible_token(token):
        await session.execute(
            delete(BrowserSession).where(BrowserSession.token_hash == token_digest(token))
        )
        await session.commit()


async def end_all(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Every session of the user (deactivated: signed out everywhere). Not committed here."""
    await session.execute(delete(BrowserSession).where(BrowserSession.user_id == user_id))
