"""Users: lookup, authentication, creation and the idempotent first superuser."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.logging import log_fields
from app.core.security import (
    HashingBusy,
    configure_password_hashing,
    hash_password,
    verify_password,
)
from app.core.text import is_clean
from app.db.models import User
from app.db.session import Database
from app.schemas.users import MAX_PASSWORD_LENGTH, UserCreate
from app.services import sessions
from app.services.access import Principal
from app.services.cache import ReadCache
from app.services.errors import (
    Busy,
    Conflict,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from app.services.login_guard import LoginGuard, device_user, issue_device_token
from app.services.pagination import Cursor, CursorCodec, Listed, listed, position_of, seek

logger = logging.getLogger(__name__)

MAX_LOGIN_LENGTH = 254  # the longest e-mail address


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


_users = User.__table__.c


async def get_principal(session: AsyncSession, user_id: uuid.UUID) -> Principal | None:
    """What authorization needs of a user: two columns, read without building an ORM object
    (this runs on every authenticated request that misses the cache)."""
    row = (
        await session.execute(
            select(_users.is_active, _users.is_superuser, _users.credential_version).where(
                _users.id == user_id
            )
        )
    ).first()
    if row is None:
        return None
    return Principal(
        id=user_id,
        is_active=row.is_active,
        is_superuser=row.is_superuser,
        credential_version=row.credential_version,
    )


async def revoke_credentials(session: AsyncSession, user_id: uuid.UUID) -> Principal:
    """Sign the user out everywhere, in the caller's transaction (pending changes to the
    user are flushed first): every access token issued so far carries an older credential
    version from now on (raised in the database, so two changes at once both count), and
    every web UI session is deleted. Once committed, `publish` makes every process see it."""
    row = (
        await session.execute(
            update(User)
            .where(User.id == user_id)
            .values(credential_version=User.credential_version + 1)
            .returning(User.is_active, User.is_superuser, User.credential_version)
        )
    ).one()
    await sessions.end_all(session, user_id)
    return Principal(
        id=user_id,
        is_active=row.is_active,
        is_superuser=row.is_superuser,
        credential_version=row.credential_version,
    )


async def publish(cache: ReadCache, principal: Principal) -> None:
    """After the commit of a change to the user: the cached principal is replaced, so every
    process of every replica refuses the revoked tokens from its next request on."""
    await cache.set_principal(principal, changed=True)


async def find_login(session: AsyncSession, login: str) -> User | None:
    """The user whose username or e-mail is `login`. A login no account can have (too long,
    control characters, invalid Unicode) finds nobody without a query: the same answer on
    every database (Postgres refuses NUL in a query parameter; SQLite does not)."""
    login = login.strip()
    if not _plausible(login, MAX_LOGIN_LENGTH):
        return None
    return await session.scalar(
        select(User).where(or_(User.username == login, User.email == login.lower()))
    )


async def _password_matches(password: str, hashed: str | None) -> tuple[bool, str | None]:
    """(whether the password matches the hash, a new hash when the stored one has other
    parameters than configured now), in the time a real check takes also when there is no
    hash or the password is implausible."""
    if not _plausible(password, MAX_PASSWORD_LENGTH):
        await verify_password("", None)  # the same time as a wrong password
        return False, None
    return await verify_password(password, hashed)


@dataclass(frozen=True, slots=True)
class LoggedIn:
    user: User
    device_token: str  # for the client to present on its next login (app/services/login_guard.py)


async def log_in(
    session: AsyncSession,
    guard: LoginGuard,
    settings: Settings,
    login: str,
    password: str,
    client: str,
    device_token: str | None = None,
) -> LoggedIn:
    """The user for these credentials, with failed attempts throttled (429) and password
    hashing bounded (503 when every slot stays busy). A deactivated account fails like a
    wrong password. `device_token` is what the client's last login here returned."""
    user = await find_login(session, login)
    device = device_user(settings, device_token)
    # Exempt from the per-address limit only for the account it was issued for.
    trusted = (
        device[1] if device is not None and user is not None and device[0] == user.id else None
    )
    if (wait := await guard.retry_after(login, client, trusted)) is not None:
        raise TooManyRequests("too many failed logins; try again later", retry_after=wait)
    try:
        matches, rehashed = await _password_matches(
            password, user.hashed_password if user else None
        )
    except HashingBusy:
        raise hashing_busy() from None
    if not matches or user is None:
        await guard.failed(login, client, trusted)
        raise Unauthorized(_WRONG_CREDENTIALS)
    if not user.is_active:
        # The same answer as a wrong password: a different one would tell whoever has a
        # password that it is right. The log keeps the reason.
        logger.info(
            "login refused: the account is inactive",
            extra=log_fields(event="login_inactive", user_id=str(user.id), client=client),
        )
        await guard.failed(login, client, trusted)
        raise Unauthorized(_WRONG_CREDENTIALS)
    if rehashed is not None:  # stored with other hashing parameters than configured now
        user.hashed_password = rehashed
        await session.commit()
    await guard.succeeded(login, client)
    return LoggedIn(user, issue_device_token(settings, user.id))


_WRONG_CREDENTIALS = "incorrect username or password"


def hashing_busy() -> Busy:
    """Every password-hashing slot stayed busy: 503, come back in a second."""
    return Busy("too many logins at once; try again shortly", retry_after=1)


async def hash_new_password(password: str) -> str:
    try:
        return await hash_password(password)
    except HashingBusy:
        raise hashing_busy() from None


def _plausible(value: str, max_length: int) -> bool:
    return len(value) <= max_length and is_clean(value)


async def create_user(session: AsyncSession, data: UserCreate) -> User:
    user = User(
        username=data.username,
        email=data.email.lower(),
        hashed_password=await hash_new_password(data.password),
        is_superuser=data.is_superuser,
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict("a user with this username or e-mail already exists") from None
    await session.refresh(user)
    return user


async def list_users(
    session: AsyncSession, settings: Settings, *, limit: int, cursor: str | None = None
) -> Listed[User]:
    """One page of the users, newest first (for superusers: one listing for all of them)."""
    codec = CursorCodec(settings.secret_key, "users", "all")

    async def read(at: Cursor | None) -> list[User]:
        return list(await session.scalars(seek(select(User), User.created_at, User.id, at, limit)))

    return await listed(codec, cursor, limit, read, position_of)


async def set_active(
    session: AsyncSession,
    cache: ReadCache,
    principal: Principal,
    user_id: uuid.UUID,
    active: bool,
) -> User:
    """Activate or deactivate a user. A deactivated user is signed out everywhere at once:
    web UI sessions deleted, access tokens refused from the next request on, in every
    process (`revoke_credentials`)."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user not found")
    if user.id == principal.id and not active:
        raise Conflict("you cannot deactivate yourself")
    user.is_active = active
    if active:
        await session.commit()
        activated = Principal(
            id=user.id,
            is_active=True,
            is_superuser=user.is_superuser,
            credential_version=user.credential_version,
        )
        await publish(cache, activated)
        return user
    revoked = await revoke_credentials(session, user_id)
    await session.commit()
    await publish(cache, revoked)
    user.credential_version = revoked.credential_version
    return user


async def ensure_superuser(session: AsyncSession, settings: Settings) -> bool:
    """Create the ADMIN_* superuser unless a user with that name or e-mail exists; True when
    it was created now.

    Safe to run on every start and from parallel replicas: a concurrent insert loses
    on the unique constraint and is reported as "exists". The password is never logged.
    """
    username = settings.admin_username
    email = settings.admin_email.lower()
    existing = await session.scalar(
        select(User).where(or_(User.username == username, User.email == email))
    )
    if existing is not None:
        return False
    data = UserCreate(
        username=username, email=email, password=settings.admin_password, is_superuser=True
    )
    try:
        await create_user(session, data)
    except Conflict:
        return False
    logger.info("superuser created", extra=log_fields(username=username, email=email))
    return True


async def ensure_superuser_standalone(settings: Settings) -> bool:
    """`ensure_superuser` with a database connection of its own (CLI, entrypoint, tests)."""
    configure_password_hashing(settings)
    db = Database(settings)
    try:
        async with db.session() as session:
            return await ensure_superuser(session, settings)
    finally:
        await db.dispose()
