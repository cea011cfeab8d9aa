"""Read-through cache in Redis for the hot reads, that never turns a Redis problem into an error.

`principal:{id}` holds what authorization needs of a user (active, superuser, credential
version), so a request with a cached principal and a cached page touches no database at
all. A change to a user made through the service (new password, deactivation) replaces
the cached principal once it is committed, so every process of every replica refuses a
revoked token from the next request on; a read that missed the cache only fills the key
when it is absent (`SET NX`), so a read that started before the change cannot put the old
principal back. A change made in the database directly is seen after at most
CACHE_TTL_SECONDS.

In front of Redis, each process keeps the first pages and the principals it read in its
memory (app/services/local_cache.py), which Redis itself takes back: any write of one of
those keys, by any process, drops every copy of it before the write's answer reaches anyone.

Keys: `item:{id}` for one item; `items:pages:{scope}` for the first pages of a listing, a
hash with one field per page size (`{limit}:cursor`), where `scope` is an owner id or `all`
(superusers). Every write to an owner's items deletes that owner's and the superusers' hashes, so a
cached page costs one round trip to read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.core import metrics
from app.core.logging import log_fields
from app.services.access import Principal
from app.services.local_cache import InvalidationListener, LocalCopies

logger = logging.getLogger(__name__)


# After a failed call, reads and fills skip Redis for this long: during an outage each
# request would otherwise wait for Redis' timeout, twice, before going to the database.
# Invalidations are always tried: a skipped one could leave a stale page once Redis is back.
SKIP_AFTER_FAILURE_SECONDS = 5.0
CACHE_CALL_TIMEOUT_SECONDS = 0.5
_ALWAYS_TRIED = frozenset({"delete"})


# labels() validates and locks on every call: the children, one per (kind, result).
_counted: dict[tuple[str, str], Any] = {}


def _count(kind: str, result: str) -> None:
    """A memory-cache read, counted with the request's other samples (metrics.Deferred)."""
    child = _counted.get((kind, result))
    if child is None:
        child = _counted[kind, result] = metrics.CACHE_LOCAL.labels(kind, result)
    metrics.DEFERRED.inc(child)


def _page_field(limit: int) -> str:
    """A page's field in its listing's hash. The value holds the page's cursor before its
    body; the field name says so, and differs from the bare page size that releases before
    cursors used, so a release reading one shape never serves the other during a rolling
    update (both shapes share the hash, so every release's writes drop both)."""
    return f"{limit}:cursor"


def _store_page(key: str, field: str, value: bytes, ttl: int) -> Callable[[Pipeline], Any]:
    def store(pipe: Pipeline) -> Any:
        pipe.hset(key, field, value)
        pipe.expire(key, ttl, nx=True)

    return store


def _delete_each(keys: list[str]) -> Callable[[Pipeline], Any]:
    def delete(pipe: Pipeline) -> Any:
        for key in keys:
            pipe.delete(key)

    return delete


class ReadCache:
    def __init__(
        self, redis: Redis | None, ttl_seconds: int, local: InvalidationListener | None = None
    ) -> None:
        self.redis = redis if ttl_seconds > 0 else None
        self.ttl = ttl_seconds
        self.local = local if self.redis is not None else None
        self._skip_until = 0.0
        self._reading: dict[tuple[str, str], asyncio.Future[Any]] = {}  # reads in flight

    def _copies(self, kind: str) -> LocalCopies | None:
        """This process's memory copies, when they may be served now."""
        if self.local is None:
            return None
        if self.local.fresh():
            return self.local.copies
        _count(kind, "off")
        return None

    async def _read_through(
        self, kind: str, key: str, field: str, read: Callable[[], Any], decode: Callable[[Any], Any]
    ) -> Any:
        """The value of `key`/`field`: from memory, else from Redis (`read`, then `decode`),
        kept in memory unless an invalidation of `key` overtook the read."""
        copies = self._copies(kind)
        if copies is None:
            raw = await read()
            return decode(raw) if raw else None
        found = copies.get(key, field)
        if found is not None:
            _count(kind, "hit")
            return found
        # One read per key in flight: requests that miss the same key meanwhile share it
        # (a burst of requests for one user made one Redis read each).
        pending = self._reading.get((key, field))
        if pending is not None:
            _count(kind, "joined")
            return await asyncio.shield(pending)
        _count(kind, "miss")
        shared: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._reading[(key, field)] = shared
        ticket = copies.ticket(key)
        value = None
        try:
            raw = await read()
            value = decode(raw) if raw else None
            if value is not None:
                copies.put(ticket, key, field, value, len(raw))
            return value
        finally:
            copies.release(ticket, key)
            del self._reading[(key, field)]
            shared.set_result(value)  # None (a miss) if this read failed or was cancelled

    async def _forget(self, *keys: str) -> None:
        """After a write of these keys by this process: its own copies go at once, and the
        write's answer waits until Redis's invalidation of them is back, which drops every
        other process's copies in the same pass."""
        if self.local is not None:
            for key in keys:
                self.local.copies.invalidate(key)
            await self.local.written(list(keys))

    async def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        if self.redis is None:
            return None
        always = kwargs.pop("always_try", False) or operation in _ALWAYS_TRIED
        if not always and time.monotonic() < self._skip_until:
            return None
        try:
            # A Redis that answers does so in a millisecond; one that does not (paused,
            # partitioned) costs each request this much at most, not the client's 2 s.
            async with asyncio.timeout(CACHE_CALL_TIMEOUT_SECONDS):
                return await getattr(self.redis, operation)(*args, **kwargs)
        except Exception as exc:  # the database answers instead; the cache is an optimisation
            self._skip_until = time.monotonic() + SKIP_AFTER_FAILURE_SECONDS
            logger.warning(
                "cache unavailable", extra=log_fields(operation=operation, error=str(exc)[:200])
            )
            return None

    async def get_item(self, item_id: uuid.UUID) -> dict[str, Any] | None:
        raw = await self._call("get", f"item:{item_id}")
        return json.loads(raw) if raw else None

    async def set_item(self, item_id: uuid.UUID, data: dict[str, Any]) -> None:
        await self._call("set", f"item:{item_id}", json.dumps(data, default=str), ex=self.ttl)

    async def get_principal(self, user_id: uuid.UUID) -> Principal | None:
        key = f"principal:{user_id}"

        def decode(raw: bytes) -> Principal | None:
            try:
                active, superuser, version = json.loads(raw)
            except ValueError:  # written by an older release: a miss, refilled from the database
                return None
            return Principal(
                id=user_id, is_active=active, is_superuser=superuser, credential_version=version
            )

        found: Principal | None = await self._read_through(
            "principal", key, "", lambda: self._call("get", key), decode
        )
        return found

    async def set_principal(self, principal: Principal, *, changed: bool = False) -> None:
        """Store the principal read from the database (only where none is cached: a change
        committed meanwhile wins), or, with `changed`, the principal a change just committed
        (always)."""
        value = json.dumps(
            [principal.is_active, principal.is_superuser, principal.credential_version]
        )
        stored = await self._call(
            "set",
            f"principal:{principal.id}",
            value,
            ex=self.ttl,
            nx=not changed,
            always_try=changed,  # like an invalidation: skipped, it would leave a stale one
        )
        if changed and stored is not None:
            await self._forget(f"principal:{principal.id}")
        if changed and stored is None and self.local is not None:
            # Redis keeps the old one until it expires; this process at least stops using it.
            self.local.copies.invalidate(f"principal:{principal.id}")
        if changed and stored is None and self.redis is not None:
            logger.error(
                "a changed user was not stored in the cache; its cached principal may be "
                "used until it expires",
                extra=log_fields(user_id=str(principal.id), expires_in_seconds=self.ttl),
            )

    async def get_first_page(self, scope: str, limit: int) -> tuple[bytes, str | None] | None:
        """The page's JSON exactly as it was stored (it goes out as the response body), and
        its `next` cursor (for the Link header)."""
        key, field = f"items:pages:{scope}", _page_field(limit)

        def decode(raw: bytes) -> tuple[bytes, str | None]:
            following, _, body = bytes(raw).partition(b"\n")
            return body, following.decode() or None

        found: tuple[bytes, str | None] | None = await self._read_through(
            "page", key, field, lambda: self._call("hget", key, field), decode
        )
        return found

    async def set_first_page(
        self, scope: str, limit: int, body: bytes, following: str | None
    ) -> None:
        if self.redis is None:
            return
        key = f"items:pages:{scope}"
        # One value, one round trip to read: the cursor (base64url, no newline), then the body.
        value = (following or "").encode() + b"\n" + body
        # In one transaction: a hash stored without its expiry (Redis failed between the
        # two commands) would never be evicted, as Redis evicts only keys with a TTL
        # (`volatile-lru`, docs/operations.md). The first page stored sets the expiry.
        await self._call("transaction", _store_page(key, _page_field(limit), value, self.ttl))

    async def invalidate(self, owner_id: uuid.UUID, item_id: uuid.UUID | None = None) -> None:
        """After a write: drop the item and the owner's and superusers' cached pages."""
        keys = [f"items:pages:{owner_id}", "items:pages:all"]
        if item_id is not None:
            keys.append(f"item:{item_id}")
        # One DEL per key, to know which existed: only a key that existed sends an
        # invalidation for the write to wait for.
        deleted = await self._call("transaction", _delete_each(keys), always_try=True)
        if deleted is not None:
            await self._forget(*(key for key, gone in zip(keys, deleted, strict=True) if gone))
        elif self.local is not None:
            for key in keys:
                self.local.copies.invalidate(key)
