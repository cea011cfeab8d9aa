"""Throttling of failed logins, with the `limits` library (memory or Redis storage).

Two counters of failures, both moving windows: per account and client address (a
guesser is slowed down on that account from that address, while the real user, from
another address, still logs in: no lockout to abuse), and per client address over every
account (password spraying). A success clears the account's counter for that address.
With Redis configured the counters are shared by every process and replica; without it,
each process counts on its own. When Redis fails, logins are not throttled (and a warning
is logged): an outage of the cache must not lock everybody out.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from app.core.config import Settings
from app.core.logging import log_fields

logger = logging.getLogger("app.security")


class LoginGuard:
    def __init__(self, settings: Settings) -> None:
        self.per_account = parse_many(settings.login_failures_per_account)
        self.per_client = parse_many(settings.login_failures_per_client)
        self.limiter = MovingWindowRateLimiter(_storage(settings))

    async def retry_after(self, login: str, client: str) -> int | None:
        """Seconds until this client may try this login again, or None: go ahead."""
        checks: list[tuple[RateLimitItem, tuple[str, ...]]] = [
            (limit, ("account", login.lower(), client)) for limit in self.per_account
        ]
        checks += [(limit, ("client", client)) for limit in self.per_client]
        wait = 0.0
        try:
            for limit, keys in checks:
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
            extra=log_fields(event="login_throttled", login=login[:64], client=client),
        )
        return max(1, math.ceil(wait))

    async def failed(self, login: str, client: str) -> None:
        logger.info(
            "login failed", extra=log_fields(event="login_failed", login=login[:64], client=client)
        )
        await self._hit(self.per_account, "account", login.lower(), client)
        await self._hit(self.per_client, "client", client)

    async def succeeded(self, login: str, client: str) -> None:
        try:
            for limit in self.per_account:
                await self.limiter.clear(limit, "account", login.lower(), client)
        except Exception:
            logger.warning("login throttling unavailable", exc_info=True)

    async def _hit(self, limits: list[RateLimitItem], *keys: str) -> None:
        try:
            for limit in limits:
                await self.limiter.hit(limit, *keys)
        except Exception:
            logger.warning("login throttling unavailable", exc_info=True)


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
