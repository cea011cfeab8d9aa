"""The request path's samples, added up in memory (`metrics.Deferred`), reach the metrics
as `inc` and `observe` would have written them, in time, and none is left behind."""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from app.core import metrics

BUCKETS = (0.005, 0.01, 0.025, 0.5, 10.0)
# On a bound (0.005, 0.01, 10.0: the bound's own bucket), just above one, between, above
# the last, zero and negative.
VALUES = [0.005, 0.0051, 0.01, 0.3, 10.0, 10.5, 0.0, -1.0, 0.02, 0.005]


def _exposition(registry: CollectorRegistry) -> list[bytes]:
    """Every sample but the `_created` ones (the time each series was made)."""
    return [line for line in generate_latest(registry).splitlines() if b"_created" not in line]


def _pair(name: str) -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    counter = Counter("requests", "r", ["route"], registry=registry)
    histogram = Histogram("latency", "l", ["route"], buckets=BUCKETS, registry=registry)
    return registry, counter, histogram


def test_the_exposition_is_what_inc_and_observe_write() -> None:
    direct, counter, histogram = _pair("direct")
    for value in VALUES:
        counter.labels("/a").inc()
        histogram.labels("/a").observe(value)
    counter.labels("/b").inc()
    deferred_registry, deferred_counter, deferred_histogram = _pair("deferred")
    deferred = metrics.Deferred()
    for value in VALUES:
        deferred.inc(deferred_counter.labels("/a"))
        deferred.observe(deferred_histogram.labels("/a"), value)
    deferred.inc(deferred_counter.labels("/b"))
    deferred.flush()
    assert _exposition(deferred_registry) == _exposition(direct)
    deferred.flush()  # nothing pending: nothing written twice
    assert _exposition(deferred_registry) == _exposition(direct)


def test_samples_are_written_after_flush_seconds_not_per_request() -> None:
    _registry, counter, _histogram = _pair("timed")
    child = counter.labels("/a")
    deferred = metrics.Deferred()
    deferred.FLUSH_SECONDS = 0.05

    async def run() -> tuple[float, float]:
        for _ in range(100):
            deferred.inc(child)
        pending = child._value.get()  # before the event loop could run anything
        deadline = time.monotonic() + 60
        while child._value.get() < 100 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return pending, child._value.get()

    assert asyncio.run(run()) == (0.0, 100.0)


def test_a_loop_that_closed_before_its_flush_leaves_nothing_behind() -> None:
    _registry, counter, _histogram = _pair("closed")
    child = counter.labels("/a")
    deferred = metrics.Deferred()
    deferred.FLUSH_SECONDS = 3600  # never, in this loop

    async def count() -> None:
        deferred.inc(child)

    asyncio.run(count())  # the loop closes with the flush still due
    deferred.FLUSH_SECONDS = 0.01

    async def count_and_wait() -> None:
        deferred.inc(child)
        deadline = time.monotonic() + 60
        while child._value.get() < 2 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    asyncio.run(count_and_wait())
    assert child._value.get() == 2.0


def test_outside_an_event_loop_a_sample_is_written_at_once() -> None:
    _registry, counter, _histogram = _pair("sync")
    child = counter.labels("/a")
    metrics.Deferred().inc(child)
    assert child._value.get() == 1.0


def test_a_scrape_counts_the_scraping_processs_requests_up_to_the_last(app: FastAPI) -> None:
    with TestClient(app, client=("127.0.0.1", 5000)) as client:  # an operators' network
        _count_seven(client)


def _count_seven(client: TestClient) -> None:
    def served() -> float:
        response = client.get("/metrics")
        assert response.status_code == 200
        text = response.text
        assert "\nhttp_requests_in_progress 1.0\n" in text  # the scrape itself
        prefix = 'http_requests_total{method="GET",route="/live",status="200"} '
        return sum(
            float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)
        )

    before = served()
    for _ in range(7):
        assert client.get("/live").status_code == 200
    assert served() == before + 7
