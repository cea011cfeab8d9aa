"""Each process's memory copy of the hottest cache entries (the first pages of the items
listing, the principals), kept coherent by Redis itself.

Redis's server-assisted client-side caching, in broadcasting mode: one connection per
process runs `CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX items:pages: PREFIX
principal:` and subscribes to `__redis__:invalidate`. From then on Redis sends it the name of
every key under those prefixes that anyone changes, deletes, expires or evicts (none: a
flush), and the process drops its copies of that key. redis-py's asyncio client has no
support for this (its client-side cache is the synchronous client's, over RESP3), so the
connection is ours: a plain socket speaking RESP2, with the few replies it needs parsed here,
read without blocking so that a copy is checked against what has already arrived.

Correctness first:
- a copy is served only while the connection is known to be alive (a PING answered within
  FRESH_SECONDS); when it drops, every copy goes, and reads go to Redis until tracking is
  back (on a new connection, which starts from an empty memory);
- before a copy is served, the invalidations already on the socket are read: Redis writes a
  write's invalidation to this connection with the write's own reply, so by the time a
  client has the answer to a write and asks this process, its invalidation is here;
- a fill whose read an invalidation overtook is not kept: every fill takes a ticket before
  it reads from Redis, and an invalidation of its key (or of everything) voids the ticket;
- entries are bounded in number and bytes (least recently used go first) and in age
  (LOCAL_CACHE_SECONDS, a second guard).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from app.core import metrics
from app.core.logging import describe_error, log_fields

logger = logging.getLogger(__name__)

TRACKED_PREFIXES = ("items:pages:", "principal:")
INVALIDATE_CHANNEL = b"__redis__:invalidate"
PING_SECONDS = 0.5  # how often the connection is asked to prove itself alive
FRESH_SECONDS = 1.5  # copies are served while the last answer is at most this old
CONNECT_TIMEOUT_SECONDS = 2.0
WRITE_ECHO_SECONDS = 1.0  # a write waits this long at most for its own invalidation
RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0)  # waits between attempts, the last one repeated


class ProtocolError(Exception):
    """Redis answered something this connection did not ask for, or an error."""


def encode(*args: str | bytes) -> bytes:
    """One command in RESP2: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


_MISSING = object()  # not enough bytes yet


def parse(buffer: bytes | bytearray, start: int = 0) -> tuple[Any, int]:
    """One RESP2 value from `buffer` at `start`: (value, where the next one starts), or
    (_MISSING, start) when the buffer holds only part of it. Errors come back as
    ProtocolError instances (not raised: the caller decides)."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return _MISSING, start
    kind, line, after = buffer[start : start + 1], bytes(buffer[start + 1 : end]), end + 2
    if kind == b"+":
        return line, after
    if kind == b"-":
        return ProtocolError(line.decode(errors="replace")), after
    if kind == b":":
        return int(line), after
    if kind == b"$":
        length = int(line)
        if length < 0:
            return None, after
        if len(buffer) < after + length + 2:
            return _MISSING, start
        return bytes(buffer[after : after + length]), after + length + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            item, after = parse(buffer, after)
            if item is _MISSING:
                return _MISSING, start
            items.append(item)
        return items, after
    raise ProtocolError(f"unexpected reply type {kind!r}")


@dataclass
class _Entry:
    value: Any
    size: int
    stored_at: float


@dataclass
class LocalCopies:
    """The copies of one process: key -> field -> value, bounded, least recently used first."""

    max_entries: int
    max_bytes: int
    max_age_seconds: float
    _entries: OrderedDict[tuple[str, str], _Entry] = field(default_factory=OrderedDict)
    _fields: dict[str, set[str]] = field(default_factory=dict)  # key -> its cached fields
    _bytes: int = 0
    # Fills in flight: key -> the tickets taken for it. An invalidation empties its set.
    _tickets: dict[str, set[int]] = field(default_factory=dict)
    _next_ticket: int = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: str, field_name: str) -> Any:
        entry = self._entries.get((key, field_name))
        if entry is None:
            return None
        if time.monotonic() - entry.stored_at > self.max_age_seconds:
            self._remove((key, field_name))
            return None
        self._entries.move_to_end((key, field_name))
        return entry.value

    def ticket(self, key: str) -> int:
        """Taken before a fill reads `key` from Redis; `put` keeps the value only if no
        invalidation of `key` came in between."""
        self._next_ticket += 1
        self._tickets.setdefault(key, set()).add(self._next_ticket)
        return self._next_ticket

    def put(self, ticket: int, key: str, field_name: str, value: Any, size: int) -> bool:
        pending = self._tickets.get(key)
        if pending is None or ticket not in pending:
            return False  # invalidated while the fill was reading: the value may be old
        pending.discard(ticket)
        if not pending:
            del self._tickets[key]
        if size > self.max_bytes:
            return False
        self._remove((key, field_name))
        self._entries[(key, field_name)] = _Entry(value, size, time.monotonic())
        self._fields.setdefault(key, set()).add(field_name)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))
        return True

    def release(self, ticket: int, key: str) -> None:
        """A fill that stores nothing (Redis had no value, or failed) gives its ticket back."""
        pending = self._tickets.get(key)
        if pending is not None:
            pending.discard(ticket)
            if not pending:
                del self._tickets[key]

    def invalidate(self, key: str) -> None:
        self._tickets.pop(key, None)
        for field_name in list(self._fields.get(key, ())):
            self._remove((key, field_name))

    def clear(self) -> None:
        self._entries.clear()
        self._fields.clear()
        self._tickets.clear()
        self._bytes = 0

    def _remove(self, position: tuple[str, str]) -> None:
        entry = self._entries.pop(position, None)
        if entry is None:
            return
        self._bytes -= entry.size
        key, field_name = position
        fields = self._fields.get(key)
        if fields is not None:
            fields.discard(field_name)
            if not fields:
                del self._fields[key]


@dataclass
class RedisAddress:
    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None


def listener_for(
    redis: Any, max_age_seconds: float, max_entries: int, max_bytes: int
) -> InvalidationListener | None:
    """The listener for the Redis this client talks to, over plain TCP; None (no memory
    cache) for TLS or a Unix socket, which this connection does not speak, or when it is off."""
    from redis.asyncio.connection import Connection

    pool = redis.connection_pool
    if max_age_seconds <= 0 or pool.connection_class is not Connection:
        return None
    kwargs = pool.connection_kwargs
    address = RedisAddress(
        host=kwargs.get("host", "localhost"), port=int(kwargs.get("port", 6379)),
        db=int(kwargs.get("db", 0)), username=kwargs.get("username"),
        password=kwargs.get("password"),
    )  # fmt: skip
    return InvalidationListener(address, LocalCopies(max_entries, max_bytes, max_age_seconds))


class InvalidationListener:
    """The tracking connection of this process, and its copies. `fresh()` says whether the
    copies may be served now, after reading what has arrived."""

    def __init__(self, address: RedisAddress, copies: LocalCopies) -> None:
        self.address = address
        self.copies = copies
        self._socket: socket.socket | None = None
        self._buffer = bytearray()
        self._last_answer = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Writes of this process waiting for their invalidation to come back, by key.
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}

    @property
    def tracking(self) -> bool:
        return self._socket is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cache-invalidations")

    async def stop(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._drop("stopped")

    def fresh(self) -> bool:
        """Read the invalidations that have arrived; True when the copies may be served."""
        if self._socket is None:
            return False
        self._read_available()
        if self._socket is None:
            return False
        if time.monotonic() - self._last_answer > FRESH_SECONDS:
            # Silent: what it would have said is not known. Nothing kept, nothing served.
            self.copies.clear()
            return False
        return True

    async def written(self, keys: list[str]) -> None:
        """After this process wrote `keys`: return once their invalidation has come back on
        this connection. Redis sends it to every tracking connection in the same pass, so
        by then every other process's copy is on its way out too, before the write's answer
        reaches anyone. Without an invalidation within WRITE_ECHO_SECONDS the connection is
        taken for broken (its copies go)."""
        keys = [key for key in keys if key.startswith(TRACKED_PREFIXES)]
        if self._socket is None or not keys:
            return
        loop = asyncio.get_running_loop()
        waits = []
        for key in keys:
            future: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(key, []).append(future)
            waits.append(future)
        self._read_available()  # it may be here already
        try:
            async with asyncio.timeout(WRITE_ECHO_SECONDS):
                await asyncio.gather(*waits)
        except TimeoutError:
            self._drop(f"no invalidation within {WRITE_ECHO_SECONDS:g}s of a write")
        finally:
            for key, future in zip(keys, waits, strict=True):
                pending = self._waiting.get(key)
                if pending is not None and future in pending:
                    pending.remove(future)
                    if not pending:
                        del self._waiting[key]

    def _release_waits(self, key: str | None) -> None:
        """An invalidation of `key` (None: of everything, or the connection went) arrived."""
        keys = list(self._waiting) if key is None else [key]
        for name in keys:
            for future in self._waiting.pop(name, []):
                if not future.done():
                    future.set_result(None)

    async def _run(self) -> None:
        failures = 0
        while not self._closed:
            try:
                await self._connect()
                failures = 0
                await self._keep_alive()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away or refusing: copies off until it is back
                self._drop(describe_error(exc))
                wait = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                await asyncio.sleep(wait)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self.address.host, self.address.port, type=socket.SOCK_STREAM
        )
        family, kind, proto, _, where = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                await loop.sock_connect(sock, where)
                if self.address.password is not None:
                    credentials = [self.address.password]
                    if self.address.username:
                        credentials.insert(0, self.address.username)
                    await self._ask(sock, "AUTH", *credentials)
                if self.address.db:
                    await self._ask(sock, "SELECT", str(self.address.db))
                client_id = await self._ask(sock, "CLIENT", "ID")
                prefixes = [part for p in TRACKED_PREFIXES for part in ("PREFIX", p)]
                await self._ask(
                    sock, "CLIENT", "TRACKING", "ON", "REDIRECT", str(client_id), "BCAST",
                    *prefixes,
                )  # fmt: skip
                subscribed = await self._ask(sock, "SUBSCRIBE", INVALIDATE_CHANNEL)
                if not (isinstance(subscribed, list) and subscribed[:1] == [b"subscribe"]):
                    raise ProtocolError(f"unexpected answer to SUBSCRIBE: {subscribed!r}")
        except BaseException:
            sock.close()
            raise
        # Copies made before this connection may have missed invalidations: none are kept.
        self.copies.clear()
        self._socket = sock
        self._last_answer = time.monotonic()
        loop.add_reader(sock.fileno(), self._read_available)
        logger.info("cache tracking on", extra=log_fields(client_id=client_id))

    async def _ask(self, sock: socket.socket, *command: str | bytes) -> Any:
        """Send one command during the handshake and read its one answer."""
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, encode(*command))
        while True:
            value, used = parse(self._buffer)
            if value is not _MISSING:
                del self._buffer[:used]
                if isinstance(value, ProtocolError):
                    raise value
                return value
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self._buffer += chunk

    async def _keep_alive(self) -> None:
        while self._socket is not None:
            await asyncio.sleep(PING_SECONDS)
            sock = self._socket
            if sock is None:
                break
            if time.monotonic() - self._last_answer > FRESH_SECONDS + PING_SECONDS:
                raise ConnectionError("no answer to PING")
            # A full send buffer: the next round tries again.
            with contextlib.suppress(BlockingIOError):
                sock.send(encode("PING"))
        raise ConnectionError("the tracking connection was dropped")

    def _read_available(self) -> None:
        sock = self._socket
        if sock is None:
            return
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    self._drop("Redis closed the connection")
                    return
                self._buffer += chunk
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._drop(describe_error(exc))
            return
        self._handle_messages()

    def _handle_messages(self) -> None:
        start = 0
        while True:
            try:
                value, start_after = parse(self._buffer, start)
            except (ProtocolError, ValueError) as exc:
                self._drop(describe_error(exc))
                return
            if value is _MISSING:
                break
            start = start_after
            self._last_answer = time.monotonic()
            if isinstance(value, list) and len(value) == 3 and value[0] == b"message":
                keys = value[2]
                if keys is None:  # FLUSHDB, FLUSHALL: every key
                    self.copies.clear()
                    self._release_waits(None)
                    metrics.CACHE_LOCAL_INVALIDATIONS.inc()
                    continue
                for key in keys if isinstance(keys, list) else [keys]:
                    self.copies.invalidate(key.decode())
                    self._release_waits(key.decode())
                    metrics.CACHE_LOCAL_INVALIDATIONS.inc()
            # anything else: the answer to a PING ([b"pong", b""]): alive
        del self._buffer[:start]

    def _drop(self, reason: str) -> None:
        """Off until a new connection is up: no copy is served or kept meanwhile."""
        sock, self._socket = self._socket, None
        self.copies.clear()
        self._buffer.clear()
        self._release_waits(None)  # no copy is served until a new connection is up
        if sock is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        if not self._closed:
            logger.warning("cache tracking off", extra=log_fields(reason=reason))
