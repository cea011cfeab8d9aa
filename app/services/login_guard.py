"""Throttling of failed logins, with the `limits` library (memory or Redis storage).

Counters of failures, all moving windows: per account and client address (a guesser is
slowed down on that account from that address, while the real user, from another address,
still logs in: no lockout to abuse), and per client address over every account (password
spraying). A success clears the account's counter for that address.

The per-address counter alone would lock out everybody behind one address (an office, a
shared NAT) once one client there trips it. So a successful login also hands its browser or
client a device token (OWASP's device cookies, "Slow Down Online Guessing Attacks with
Device Cookies"): signed, naming the user. An attempt that presents a valid device token of
the very account it logs in to is not counted nor refused per address; its failures count
per device token instead, and a token that reaches the per-account limit is refused like
an address. A guesser has no device token of the accounts it attacks, so spraying stays
throttled per address; the device token of an attacker's own account opens nothing else.
With Redis configured the counters are shared by every process and replica; without it,
each process counts on its own. When Redis fails, logins are not throttled (and a warning
is logged): an outage of the cache must not lock everybody out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import secrets
import time
import uuid

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from app.core.config import Settings
from app.core.logging import log_fields

logger = logging.getLogger("app.security")


DEVICE_TOKEN_MAX_LENGTH = 128


def _device_signature(key: str, body: str) -> str:
    mac = hmac.new(f"device:{key}".encode(), body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode()


def issue_device_token(settings: Settings, user_id: uuid.UUID) -> str:
    """A device token for the user: `user id.nonce.signature`."""
    body = f"{user_id.hex}.{secrets.token_urlsafe(12)}"
    return f"{body}.{_device_signature(settings.secret_key, body)}"


def device_user(settings: Settings, token: str | None) -> tuple[uuid.UUID, str] | None:
    """The user and nonce of a valid device token, or None."""
    if not token or len(token) > DEVICE_TOKEN_MAX_LENGTH or not token.isascii():
        return None
    body, _, signature = token.rpartition(".")
    user_hex, _, nonce = body.partition(".")
    expected = _device_signature(settings.secret_key, body)
    if not nonce or not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    try:
        return uuid.UUID(hex=user_hex), nonce
    except ValueError:
        return None


class LoginGuard:
    def __init__(self, settings: Settings) -> None:
        self.per_account = parse_many(settings.login_failures_per_account)
        self.per_client = parse_many(settings.login_failures_per_client)
        self.limiter = MovingWindowRateLimiter(_storage(settings))

    def _keys(
        self, login: str, client: str, device: str | None
    ) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        keys: list[tuple[RateLimitItem, tuple[str, ...]]] = [
            (limit, ("account", login.lower(), client)) for limit in self.per_account
        ]
        if device is None:
            keys += [(limit, ("client", client)) for limit in self.per_client]
        else:  # a known device of this account: its own counter instead of the address's
            keys += [(limit, ("device", device)) for limit in self.per_account]
        return keys

    async def retry_after(self, login: str, client: str, device: str | None = None) -> int | None:
        """Seconds until this client may try this login again, or None: go ahead. `device`
        is the nonce of a valid device token of this login's account."""
        wait = 0.0
        try:
            for limit, keys in self._keys(login, client, device):
                if not await self.limiter.test(limit, *keys):
                    stats = await self.limiter.get_window_stats(limit, *keys)
                    wait = max(wait, stats.reset_time - time.time())
        except Exception:
            logger.warning("login throttling unavailable", exc_info=True)
            return None
        if not wait:
            return None
        logger.warning(
            "login throttled",
            extra=log_fields(
                event="login_throttled", login=login[:64], client=client, device=bool(device)
            ),
        )
        return max(1, math.ceil(wait))

    async def failed(self, login: str, client: str, device: str | None = None) -> None:
        logger.info(
            "login failed", extra=log_fields(event="login_failed", login=login[:64], client=client)
        )
        try:
            for limit, keys in self._keys(login, client, device):
                await self.limiter.hit(limit, *keys)
        except Exception:
            logger.warning("login throttling unavailable", exc_info=True)

    async def succeeded(self, login: str, client: str) -> None:
        try:
            for limit in self.per_account:
                await self.limiter.clear(limit, "account", login.lower(), client)
        except Exception:
            logger.warning("login throttling unavailable", exc_info=True)


class RequestLimit:
    """A plain `limits` budget (`5/hour`) per key, in the login guard's storage: True while
    a key has budget left (and the request is counted), False once it has none. When the
    storage fails, requests are let through (and a warning is logged)."""

    def __init__(self, guard: LoginGuard, limits: str, name: str) -> None:
        self.items = parse_many(limits)
        self.limiter = guard.limiter
        self.name = name

    async def take(self, key: str) -> bool:
        try:
            for item in self.items:
                if not await self.limiter.test(item, self.name, key):
                    return False
            for item in self.items:
                await self.limiter.hit(item, self.name, key)
        except Exception:
            logger.warning("request limit unavailable", extra=log_fields(limit=self.name))
        return True


def _storage(settings: Settings) -> Storage:
    url = settings.resolved_redis_url
    storage = (
        storage_from_string("async+memory://")
        if url is None
        else storage_from_string(
            f"async+{url}",
            implementation="redispy",
            key_prefix="shipshape-login",
            socket_timeout=settings.ready_timeout_seconds,
            socket_connect_timeout=settings.ready_timeout_seconds,
        )
    )
    assert isinstance(storage, Storage)  # noqa: S101 - async+ URLs give async storages
    return storage
