"""A Redis that accepts connections but never answers (paused, partitioned) costs a request a
bounded wait, however many requests there are: each cache call, and each job submission as a
whole. The fault: with Redis paused, submissions took up to 10.2 s, and some were accepted
when Redis came back instead of being refused."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi import BackgroundTasks

from app.services.cache import CACHE_CALL_TIMEOUT_SECONDS, ReadCache
from app.services.errors import Unavailable
from app.worker import dispatch
from tests.helpers import make_settings

EVENTUALLY = 60.0  # far above every bound under test: only a missing bound reaches it


class SilentRedis:
    """Every command waits for an answer that never comes."""

    def __getattr__(self, name: str) -> Any:
        async def wait(*_: Any, **__: Any) -> Any:
            await asyncio.Event().wait()

        return wait


def test_a_cache_read_from_a_redis_that_never_answers_gives_up_in_bounded_time() -> None:
    cache = ReadCache(SilentRedis(), ttl_seconds=60)  # type: ignore[arg-type]

    async def read() -> object:
        return await asyncio.wait_for(cache.get_principal(uuid.uuid4()), EVENTUALLY)

    assert asyncio.run(read()) is None
    assert CACHE_CALL_TIMEOUT_SECONDS <= 1


def test_a_submission_to_a_broker_that_never_answers_is_refused_in_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/app.db",
                             redis_url="redis://127.0.0.1:1/0")  # fmt: skip
    assert not settings.jobs_run_in_process
    released = threading.Event()
    sends: list[str] = []

    def stuck(_settings: object, _task: str, job_id: str) -> None:
        sends.append(job_id)
        released.wait(EVENTUALLY)  # as a send waiting for a pooled connection

    monkeypatch.setattr(dispatch, "_send", stuck)
    monkeypatch.setattr(dispatch, "_broker", dispatch._BrokerState())

    async def submit() -> None:
        await asyncio.wait_for(
            dispatch.enqueue(BackgroundTasks(), None, settings, None, uuid.uuid4()),  # type: ignore[arg-type]
            EVENTUALLY,
        )

    async def three_submissions() -> None:
        try:
            with pytest.raises(Unavailable, match="the job queue is unavailable"):
                await submit()
            # The next submissions are refused at once, without another send, for a while.
            with pytest.raises(Unavailable):
                await submit()
            assert len(sends) == 1
            dispatch._broker.down_until = 0.0  # the while is over: the broker is tried again
            with pytest.raises(Unavailable):
                await submit()
            assert len(sends) == 2
        finally:
            released.set()  # the stuck sends end, and the loop's threads with them

    asyncio.run(three_submissions())
