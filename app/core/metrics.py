"""Prometheus metrics, correct under several gunicorn workers.

With PROMETHEUS_MULTIPROC_DIR set (the image sets it; gunicorn_config.py empties it at start
and marks exited workers dead), every worker process writes its samples to files there and
/metrics aggregates all of them, so a scrape sees the whole server, not one worker. Without
it (`make run`, tests) the process's own registry is used.

Request metrics are labelled by route template (`/api/v1/items/{item_id}`), never by raw
path, so ids do not explode the number of series.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import glob
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any


def _prepare_multiprocess_dir() -> None:
    """prometheus_client picks its mode when imported: make sure the directory exists first
    (migrate, shell, the worker start without gunicorn's preparation), or fall back to the
    single-process mode when it cannot be created."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


_prepare_multiprocess_dir()

from prometheus_client import (  # noqa: E402 - after the directory is prepared
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as mp  # noqa: E402
from prometheus_client.mmap_dict import MmapedDict  # noqa: E402

from app.core._compat import prometheus_process_id  # noqa: E402

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# In multiprocess mode every sample update asks for the process id, to notice a fork; that
# is a system call per update, several per request. The id only changes in a fork, which
# `register_at_fork` reports, so it is read once per process instead.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


def _cached_pid() -> int:
    return _pid


os.register_at_fork(after_in_child=_refresh_pid)
if MULTIPROCESS:
    prometheus_process_id(_cached_pid)

REQUESTS = Counter(
    "http_requests_total", "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
)  # fmt: skip
LATENCY = Histogram(
    "http_request_duration_seconds", "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)  # fmt: skip
IN_PROGRESS = Gauge(
    "http_requests_in_progress", "HTTP requests being served.", multiprocess_mode="livesum"
)
POOL_CHECKED_OUT = Gauge(
    "db_pool_connections_in_use", "Database connections checked out of the pool.",
    multiprocess_mode="livesum",
)  # fmt: skip
POOL_SIZE = Gauge(
    "db_pool_size", "Database connections the pools keep open.", multiprocess_mode="livesum"
)
STORAGE_BYTES = Gauge(
    "storage_bytes", "Bytes of files in the uploads and the exports folder (read at scrape time).",
    ["volume"],
    multiprocess_mode="mostrecent",
)  # fmt: skip
STORAGE_FILES = Gauge(
    "storage_files", "Files in the uploads and the exports folder (read at scrape time).",
    ["volume"],
    multiprocess_mode="mostrecent",
)  # fmt: skip
JOBS = Gauge(
    "jobs", "Unfinished background jobs by state (read from the database at scrape time).",
    ["state"],
    multiprocess_mode="mostrecent",
)  # fmt: skip
JOBS_OLDEST_AGE = Gauge(
    "jobs_oldest_age_seconds",
    "Per unfinished state, how long its oldest job has been in it without a change (a queued "
    "job: waiting for a worker); read at scrape time.",
    ["state"],
    multiprocess_mode="mostrecent",
)  # fmt: skip
JOBS_HEARTBEAT_AGE = Gauge(
    "jobs_heartbeat_age_seconds",
    "The stalest heartbeat of a running job, 0 with none running (read at scrape time).",
    multiprocess_mode="mostrecent",
)  # fmt: skip
JOBS_REDELIVERED = Gauge(
    "jobs_redelivered", "Unfinished jobs delivered more than once (read at scrape time).",
    multiprocess_mode="mostrecent",
)  # fmt: skip
VOLUME_SIZE = Gauge(
    "volume_size_bytes", "Size of each monitored volume's filesystem (read at scrape time).",
    ["volume"],
    multiprocess_mode="mostrecent",
)  # fmt: skip
VOLUME_AVAILABLE = Gauge(
    "volume_available_bytes",
    "Space left to unprivileged writers on each monitored volume (read at scrape time).",
    ["volume"],
    multiprocess_mode="mostrecent",
)  # fmt: skip
BACKUP_FINISHED = Gauge(
    "backup_last_success_timestamp_seconds",
    "When the newest daily backup was made (BACKUP_DIR, read at scrape time).",
    multiprocess_mode="mostrecent",
)  # fmt: skip
BACKUP_SIZE = Gauge(
    "backup_size_bytes", "Size of the newest daily backup (read at scrape time).",
    multiprocess_mode="mostrecent",
)  # fmt: skip
CERTIFICATE_EXPIRY = Gauge(
    "certificate_expiry_timestamp_seconds",
    "When the certificate served at TLS_PROBE_ADDRESS expires (read at scrape time).",
    multiprocess_mode="mostrecent",
)  # fmt: skip

CACHE_LOCAL = Counter(
    "cache_local_reads_total",
    "Reads of a process's memory cache (first pages, principals) by kind and result: hit, "
    "miss (asked Redis), joined (shared a read of the same key already asking Redis), or off "
    "(the invalidation connection was down: asked Redis).",
    ["kind", "result"],
)  # fmt: skip
CACHE_LOCAL_INVALIDATIONS = Counter(
    "cache_local_invalidations_total", "Keys Redis told a process to drop from its memory cache."
)
WORKER_TASKS = Counter(
    "worker_tasks_total",
    "Worker task runs by task and outcome (succeeded, failed, retried: held or to be retried).",
    ["task", "outcome"],
)  # fmt: skip
WORKER_TASK_DURATION = Histogram(
    "worker_task_duration_seconds", "How long each worker task run took, by task.",
    ["task"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)  # fmt: skip
JOBS_FINISHED = Counter(
    "jobs_finished_total", "Jobs that ended, by kind and end state (succeeded or failed).",
    ["kind", "state"],
)  # fmt: skip


class Deferred:
    """Counter increments and histogram observations of the request path, added up in this
    process's memory and written to the samples at most FLUSH_SECONDS later, and at once
    when this process renders /metrics or stops.

    Each write of a sample takes a lock and, in multiprocess mode, packs the value into the
    process's mmap'd file: a request wrote five of them (in progress up and down, its count,
    its latency's bucket and sum), some 5 µs, a twentieth of what `/live` costs. Added up
    here, a second's thousands of requests write each sample once. What a scrape can miss
    is the last FLUSH_SECONDS of the other workers, never a request: every one is written.

    Used from the event loop's thread only (the requests' and the rendering's): no lock.
    Histograms are written through prometheus_client's `_buckets`, `_sum` and
    `_upper_bounds`, which `observe` itself uses (tests/unit/test_deferred_metrics.py compares
    the exposition with `observe`'s, sample for sample)."""

    FLUSH_SECONDS = 0.5

    def __init__(self) -> None:
        self._counts: dict[Any, float] = {}  # counter child: amount not written yet
        self._observed: dict[Any, list[float]] = {}  # histogram child: bucket counts, sum
        self.in_progress = 0
        self._written_in_progress = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # the one a flush is due in
        self.owner: int | None = None  # the thread that uses it

    def inc(self, child: Any) -> None:
        self._counts[child] = self._counts.get(child, 0.0) + 1.0
        self._due()

    def observe(self, child: Any, value: float) -> None:
        pending = self._observed.get(child)
        if pending is None:
            pending = self._observed[child] = [0.0] * (len(child._upper_bounds) + 1)
        # observe(): the first bucket whose upper bound is >= the value.
        pending[bisect.bisect_left(child._upper_bounds, value)] += 1.0
        pending[-1] += value
        self._due()

    def _due(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a script, a test): written at once
            self.flush()
            return
        if self._loop is not loop:  # none due yet, or due in a loop that has since closed
            self._loop = loop
            self.owner = threading.get_ident()
            loop.call_later(self.FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        self._loop = None
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, {}
        for child, amount in counts.items():
            child.inc(amount)
        for child, pending in observed.items():
            for bucket, count in zip(child._buckets, pending, strict=False):
                if count:
                    bucket.inc(count)
            child._sum.inc(pending[-1])
        if self.in_progress != self._written_in_progress:
            IN_PROGRESS.set(self.in_progress)
            self._written_in_progress = self.in_progress


DEFERRED = Deferred()

# labels() validates and locks on every call: keep the children, one per label set.
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def request_started() -> None:
    DEFERRED.in_progress += 1
    DEFERRED._due()


def request_finished(method: str, route: str, status: int, seconds: float) -> None:
    key = (method, route, status)
    children = _request_children.get(key)
    if children is None:
        children = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
        _request_children[key] = children
    DEFERRED.in_progress -= 1
    DEFERRED.inc(children[0])
    DEFERRED.observe(children[1], seconds)


def route_template(scope: Mapping[str, Any]) -> str:
    route = scope.get("route")
    # path_format: the template without convertors (`{item_id}`, not `{item_id:uuid}`)
    path = getattr(route, "path_format", None)
    return str(path) if path else "unmatched"


def render() -> tuple[bytes, str]:
    if DEFERRED.owner in (None, threading.get_ident()):
        DEFERRED.flush()  # this process's requests, up to the last one
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if MULTIPROCESS and directory:
        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        # Under the lock a compaction holds: never a file counted twice or not at all.
        with _directory_lock(directory):
            compact(directory)
            return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if MULTIPROCESS and directory:
        with _directory_lock(directory):
            compact(directory)


# Multiprocess mode writes files per process id. Servers replace their processes (gunicorn's
# MAX_REQUESTS, the worker's WORKER_MAX_TASKS_PER_CHILD), so without this the directory
# would grow for as long as the server runs: the files of processes that exited are folded
# into one archive per kind. prometheus_client has no such step (its mark_process_dead only
# removes the live gauges), hence ours.
_SUMMED_KINDS = ("counter", "histogram", "summary")


@contextlib.contextmanager
def _directory_lock(directory: str) -> Iterator[None]:
    """One process at a time reads or folds the directory (scrapes are seconds apart)."""
    with open(os.path.join(directory, ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _file_owner(path: str) -> tuple[str, int] | None:
    """(kind, process id) of a sample file: `counter_12.db`, `gauge_livesum_12.db`."""
    *kind, owner = os.path.basename(path)[: -len(".db")].split("_")
    return ("_".join(kind), int(owner)) if owner.isdigit() and kind else None


def _exited(pid: int) -> bool:
    """A process id reused by a new process keeps its file live until that one exits too
    (the ids wrap only after pid_max starts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def compact(directory: str) -> None:
    """Fold the sample files of exited processes into the archive files; the caller holds
    the directory lock. Counters, histograms and summaries add up; a most-recent gauge keeps
    its newest value; a live gauge goes (it only counts while its process lives)."""
    for path in sorted(glob.glob(os.path.join(directory, "*.db"))):
        owner = _file_owner(path)
        if owner is None or not _exited(owner[1]):
            continue
        kind = owner[0]
        if kind in _SUMMED_KINDS or kind == "gauge_mostrecent":
            _fold(path, os.path.join(directory, f"{kind}_archive.db"), kind in _SUMMED_KINDS)
        elif not kind.startswith("gauge_live"):
            continue  # a mode this service does not use (all, min, max, sum): left as is
        os.unlink(path)


def _fold(path: str, archive_path: str, summed: bool) -> None:
    """Add the samples of `path` to the archive's, or keep the newer of the two."""
    archive = MmapedDict(archive_path)  # type: ignore[no-untyped-call]
    try:
        found = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
        for key, value, stamp, _ in found:
            kept, kept_stamp = archive.read_value(key)  # type: ignore[no-untyped-call]
            if summed:
                archive.write_value(key, kept + value, max(kept_stamp, stamp))  # type: ignore[no-untyped-call]
            elif stamp >= kept_stamp:
                archive.write_value(key, value, stamp)  # type: ignore[no-untyped-call]
    finally:
        archive.close()  # type: ignore[no-untyped-call]
