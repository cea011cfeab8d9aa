"""Password hashing (argon2 via pwdlib) and access tokens (JWT)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import secrets
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from app.core.config import Settings

# OWASP's argon2id baseline: 19 MiB, two passes, one lane.
DEFAULT_MEMORY_KIB = 19 * 1024
DEFAULT_TIME_COST = 2


# A random token the service hands out (a web UI session's cookie, a password reset link):
# 32 bytes, URL-safe base64, 43 characters. Only its SHA-256 is stored; anything longer than
# this bound is not one of them and is refused before it is hashed or compared.
MAX_TOKEN_LENGTH = 64


def operator_allowed(settings: Settings, authorization: str, client_host: str | None) -> bool:
    """May this caller read the operators' views (the app's and the worker's /metrics, the
    /health report)? With the METRICS_TOKEN as bearer token, or from a
    METRICS_ALLOWED_NETWORKS address."""
    scheme, _, credentials = authorization.partition(" ")
    if settings.metrics_token and scheme.lower() == "bearer":
        return hmac.compare_digest(credentials.encode(), settings.metrics_token.encode())
    try:
        client = ipaddress.ip_address(client_host or "")
    except ValueError:
        return False
    return any(client in network for network in settings.metrics_network_list)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What is stored of a token: a copy of the table grants nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


def plausible_token(token: str) -> bool:
    """Could this be one of our tokens? Anything else is not looked up at all."""
    return bool(token) and len(token) <= MAX_TOKEN_LENGTH and token.isascii()


class InvalidToken(Exception):
    """The token is malformed, expired or signed with another key."""


class HashingBusy(Exception):
    """Every password-hashing slot of this process stayed taken for the whole wait."""


@dataclass(frozen=True)
class _Hashing:
    params: tuple[int, int, int]  # memory (KiB), time cost, concurrency
    hasher: PasswordHash
    dummy_hash: str
    wait_seconds: float = 1.0

    @property
    def concurrency(self) -> int:
        return self.params[2]


def _hashing_for(memory_kib: int, time_cost: int, concurrency: int) -> _Hashing:
    hasher = PasswordHash(
        (Argon2Hasher(memory_cost=memory_kib, time_cost=time_cost, parallelism=1),)
    )
    # Verifying against this hash when a user does not exist keeps the response time of a
    # failed login the same whether or not the name is known.
    params = (memory_kib, time_cost, concurrency)
    return _Hashing(params, hasher, hasher.hash("not-a-real-password"))


_hashing = _hashing_for(DEFAULT_MEMORY_KIB, DEFAULT_TIME_COST, 2)
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def configure_password_hashing(settings: Settings) -> None:
    """Argon2id parameters and the number of hashes this process runs at once."""
    global _hashing
    params = (
        settings.password_hash_memory_kib,
        settings.password_hash_time_cost,
        settings.hash_concurrency,
    )
    if _hashing.params != params:
        _hashing = _hashing_for(*params)
        _gates.clear()


@asynccontextmanager
async def _hashing_slot() -> AsyncIterator[_Hashing]:
    """One of the process's hashing slots. Each argon2 hash holds its memory cost (19 MiB
    by default) while it runs in a thread: unbounded, a burst of failed logins takes the
    process past its memory limit. Beyond the slots a request waits a second at most,
    then gets HashingBusy (a 503) instead of a crash for everybody."""
    hashing = _hashing
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(hashing.concurrency)
    try:
        await asyncio.wait_for(gate.acquire(), hashing.wait_seconds)
    except TimeoutError:
        raise HashingBusy from None
    try:
        yield hashing
    finally:
        gate.release()


async def hash_password(password: str) -> str:
    async with _hashing_slot() as hashing:
        # argon2 releases the GIL: in a thread, hashing does not stall the event loop.
        return await asyncio.to_thread(hashing.hasher.hash, password)


async def verify_password(password: str, hashed: str | None) -> tuple[bool, str | None]:
    """(matches, a new hash when the stored one has other parameters than configured)."""
    async with _hashing_slot() as hashing:
        return await asyncio.to_thread(_verify, hashing, password, hashed)


def _verify(hashing: _Hashing, password: str, hashed: str | None) -> tuple[bool, str | None]:
    if hashed is None:
        hashing.hasher.verify(password, hashing.dummy_hash)
        return False, None
    try:
        return hashing.hasher.verify_and_update(password, hashed)
    except Exception:  # a corrupt stored hash is a failed login, not a 500
        return False, None


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """Who a valid access token speaks for, and the credential version it was issued under:
    refused once the user's version has moved on (a new password, deactivation)."""

    user_id: uuid.UUID
    credential_version: int


def create_access_token(settings: Settings, subject: uuid.UUID, credential_version: int) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": str(subject),
        "iat": now,
        "exp": now + timedelta(minutes=settings.access_token_expire_minutes),
        "type": "access",
        "cv": credential_version,
    }
    return jwt.encode(payload, settings.jwt_secret_key, algorithm=settings.jwt_algorithm)


# Clocks of the servers that issue and check a token may differ by this much.
LEEWAY_SECONDS = 30


def decode_access_token(settings: Settings, token: str) -> TokenClaims:
    claims, expires = _verified_claims(
        settings.jwt_secret_key,
        settings.jwt_algorithm,
        settings.access_token_expire_minutes * 60,
        token,
    )
    if expires <= time.time():  # checked on every use: a cached token still expires
        raise InvalidToken("Signature has expired")
    return claims


# A client sends the same token on every request until it expires: checking its signature
# and claims once per process instead of once per request saves a noticeable share of an
# authenticated request. Failures raise and are not cached.
@functools.lru_cache(maxsize=4096)
def _verified_claims(
    secret: str, algorithm: str, max_lifetime: int, token: str
) -> tuple[TokenClaims, float]:
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
        # A token issued before credential versions existed was issued under version 0.
        version = payload.get("cv", 0)
        if type(version) is not int:
            raise InvalidToken("credential version is not an integer")
        return TokenClaims(uuid.UUID(str(payload["sub"])), version), expires
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
        raise InvalidToken(str(exc)) from None
