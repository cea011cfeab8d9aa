"""Password hashing (argon2 via pwdlib) and access tokens (JWT)."""

from __future__ import annotations

import functools
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from app.core.config import Settings

_hasher = PasswordHash((Argon2Hasher(),))

# Verifying against this hash when a user does not exist keeps the response time of a
# failed login the same whether or not the name is known.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class InvalidToken(Exception):
    """The token is malformed, expired or signed with another key."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    if hashed is None:
        _hasher.verify(password, _DUMMY_HASH)
        return False
    try:
        return _hasher.verify(password, hashed)
    except Exception:  # a corrupt stored hash is a failed login, not a 500
        return False


def create_access_token(settings: Settings, subject: uuid.UUID) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": str(subject),
        "iat": now,
        "exp": now + timedelta(minutes=settings.access_token_expire_minutes),
        "type": "access",
    }
    return jwt.encode(payload, settings.jwt_secret_key, algorithm=settings.jwt_algorithm)


# Clocks of the servers that issue and check a token may differ by this much.
LEEWAY_SECONDS = 30


def decode_access_token(settings: Settings, token: str) -> uuid.UUID:
    subject, expires = _verified_claims(
        settings.jwt_secret_key,
        settings.jwt_algorithm,
        settings.access_token_expire_minutes * 60,
        token,
    )
    if expires <= time.time():  # checked on every use: a cached token still expires
        raise InvalidToken("Signature has expired")
    return subject


# A client sends the same token on every request until it expires: checking its signature
# and claims once per process instead of once per request saves a noticeable share of an
# authenticated request. Failures raise and are not cached.
@functools.lru_cache(maxsize=4096)
def _verified_claims(
    secret: str, algorithm: str, max_lifetime: int, token: str
) -> tuple[uuid.UUID, float]:
    """Signature, type, subject, and a lifetime no longer than this service gives: a token
    signed with the key but valid for ever (a leaked key's forgery, or another issuer's
    token) is refused, as is one issued in the future."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[algorithm],
            options={"require": ["sub", "exp", "iat"]},
            leeway=LEEWAY_SECONDS,
        )
        if payload.get("type") != "access":
            raise InvalidToken("not an access token")
        issued, expires = float(payload["iat"]), float(payload["exp"])
        if expires - issued > max_lifetime + LEEWAY_SECONDS:
            raise InvalidToken("lifetime longer than ACCESS_TOKEN_EXPIRE_MINUTES")
        return uuid.UUID(str(payload["sub"])), expires
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
        raise InvalidToken(str(exc)) from None
