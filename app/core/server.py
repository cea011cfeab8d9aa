"""The gunicorn worker class of the production image: uvicorn's, with a shutdown that loses
no request that reached the process.

On SIGTERM uvicorn closes its listening socket and every connection that is not in the
middle of a response. Both drop requests the client has already sent: a connection the
kernel had accepted but the worker had not is reset when the socket closes, and a
connection accepted a moment earlier is closed before its request was read. A proxy cannot
tell either from a request that failed while it ran, so it may not send a POST elsewhere
(nginx answers 502). Measured with 8 clients posting on fresh connections: uvicorn's worker
dropped 310 requests in 40 restarts, this one 1 in 100 restarts (a connection the kernel
queued between the last accept and the close: that window cannot be closed from here).

So on shutdown this worker first accepts what the kernel has queued, and a connection that
has not been answered yet gets its request served (then closed) instead of being closed.
An idle keep-alive connection is closed at once, as uvicorn does. Written here because
uvicorn has no setting for it.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

# How long a connection that carries no request yet is kept open on shutdown for its request
# to arrive. A proxy sends the request with the connection; a client that sends nothing
# only holds the shutdown up this long.
REQUEST_WAIT = 2.0


def private_memory_bytes() -> int:
    """This process's own memory: what it does not share with the master (Linux; 0 where
    /proc/self/smaps_rollup cannot be read)."""
    try:
        lines = Path("/proc/self/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0
    private = (
        line.split() for line in lines if line.startswith(("Private_Clean:", "Private_Dirty:"))
    )
    return sum(int(fields[1]) for fields in private) * 1024


class DrainingHttpProtocol(HttpToolsProtocol):
    """An unanswered connection is served once more on shutdown, then closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answered = False  # a response was completed and nothing arrived since
        self._last_request = False  # shutdown began: the next request is the last one

    def data_received(self, data: bytes) -> None:
        self._answered = False
        super().data_received(data)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._last_request and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_response_complete(self) -> None:
        self._answered = not self.pipeline
        super().on_response_complete()

    @property
    def _idle(self) -> bool:
        """No request is being answered on this connection."""
        return self.cycle is None or self.cycle.response_complete

    def shutdown(self) -> None:
        if not self._idle or self._answered:
            super().shutdown()
            return
        # A fresh connection, or one whose next request is on its way: answer it first.
        self._last_request = True
        self.loop.call_later(REQUEST_WAIT, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if self._idle:
            self.transport.close()


class DrainingServer(Server):
    """Accepts the connections the kernel has queued before it closes the listening socket:
    closing it resets them."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        protocol_class: Any = self.config.http_protocol_class  # a class taking these keywords
        create_protocol = functools.partial(
            protocol_class,
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
        queued = []
        for sock in sockets or []:  # no await until the servers are closed: nothing slips in
            while True:
                try:
                    queued.append(sock.accept()[0])
                except OSError:  # BlockingIOError: the queue is empty
                    break
        for server in self.servers:
            server.close()  # closes the listening sockets
        for connection in queued:
            await loop.connect_accepted_socket(create_protocol, connection)
        await super().shutdown(sockets=sockets)


class DrainingUvicornWorker(UvicornWorker):  # type: ignore[misc]  # untyped
    """uvicorn_worker's UvicornWorker with the two classes above; `_serve` is its own."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": DrainingHttpProtocol,
        # The app's middleware writes the access log. uvicorn's own, though its logger is
        # disabled, would still build each line's client address and path per request.
        "access_log": False,
    }

    _server: DrainingServer | None = None
    _stop_requested = False
    max_memory_bytes = 0  # WORKER_MAX_MEMORY_MB, set by gunicorn_config.py's post_fork

    async def callback_notify(self) -> None:
        """Every WORKER_TIMEOUT/2 seconds: the heartbeat to the master, and the memory check.
        A worker whose own memory passed the limit stops taking connections and drains; the
        master starts a new one. Recycling by request count (MAX_REQUESTS) restarted workers
        that were fine, closing their keep-alive connections each time."""
        await super().callback_notify()
        if not self.max_memory_bytes or self._server is None or self._server.should_exit:
            return
        used = private_memory_bytes()
        if used > self.max_memory_bytes:
            self.log.warning(
                "worker memory %d MB is above WORKER_MAX_MEMORY_MB (%d MB): restarting it",
                used // 2**20,
                self.max_memory_bytes // 2**20,
            )
            self._server.should_exit = True

    def init_signals(self) -> None:
        """uvicorn's own handlers are installed only when its server starts. Until then the
        base class leaves SIGTERM at its default action, and a worker stopped while it boots
        would die at once: if its copy of the listening socket was the last one open (the
        master and the other workers had closed theirs), every connection queued on it was
        reset. Measured with 8 clients and the largest import running beside them: 3 of 6
        runs of 5 restarts dropped requests (8, 8 and 1), none after. The signal is
        remembered instead, and the worker drains like any other once its server is up."""
        super().init_signals()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._request_stop)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requested = True
        if self._server is not None:
            self._server.should_exit = True

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._server = server
        server.should_exit = self._stop_requested  # stopped while booting: serve, then drain
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
