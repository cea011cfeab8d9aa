"""Read-through cache for item reads, in Redis, that never turns a Redis problem into an error.

Keys: `item:{id}` for one item; `items:v{version}:{scope}:{limit}` for the first page of a
listing, where `scope` is an owner id or `all` (superusers) and `version` is a counter that
every write to that owner's items bumps: old pages are never read again and expire by TTL.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from redis.asyncio import Redis

from app.core.logging import log_fields

logger = logging.getLogger(__name__)


class ItemCache:
    def __init__(self, redis: Redis | None, ttl_seconds: int) -> None:
        self.redis = redis if ttl_seconds > 0 else None
        self.ttl = ttl_seconds

    async def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        if self.redis is None:
            return None
        try:
            return await getattr(self.redis, operation)(*args, **kwargs)
        except Exception as exc:  # the database answers instead; the cache is an optimisation
            logger.warning(
                "cache unavailable", extra=log_fields(operation=operation, error=str(exc)[:200])
            )
            return None

    async def get_item(self, item_id: uuid.UUID) -> dict[str, Any] | None:
        raw = await self._call("get", f"item:{item_id}")
        return json.loads(raw) if raw else None

    async def set_item(self, item_id: uuid.UUID, data: dict[str, Any]) -> None:
        await self._call("set", f"item:{item_id}", json.dumps(data, default=str), ex=self.ttl)

    async def _page_key(self, scope: str, limit: int) -> str | None:
        if self.redis is None:
            return None
        version = await self._call("get", f"items:version:{scope}")
        return f"items:v{int(version or 0)}:{scope}:{limit}"

    async def get_first_page(self, scope: str, limit: int) -> dict[str, Any] | None:
        key = await self._page_key(scope, limit)
        raw = await self._call("get", key) if key else None
        return json.loads(raw) if raw else None

    async def set_first_page(self, scope: str, limit: int, page: dict[str, Any]) -> None:
        key = await self._page_key(scope, limit)
        if key:
            await self._call("set", key, json.dumps(page, default=str), ex=self.ttl)

    async def invalidate(self, owner_id: uuid.UUID, item_id: uuid.UUID | None = None) -> None:
        """After a write: drop the item and move the owner's and superusers' pages on."""
        if item_id is not None:
            await self._call("delete", f"item:{item_id}")
        await self._call("incr", f"items:version:{owner_id}")
        await self._call("incr", "items:version:all")
