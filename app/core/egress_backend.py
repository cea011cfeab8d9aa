"""The httpcore network backend of webhook deliveries: every connection goes to an address
that app/core/egress.py checked, and one deadline bounds the whole attempt. A module of its
own, imported when a webhook is sent: the web process need not load httpcore before."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import httpcore

from app.core.egress import checked_addresses


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose reads and writes all end by one deadline: a peer that trickles its
    answer a byte at a time cannot hold the connection past the attempt's timeout."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def _left(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the attempt's time is up")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._stream.start_tls(ssl_context, server_hostname, self._left(timeout))
        return _DeadlineStream(stream, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class EgressBackend(httpcore.SyncBackend):
    """Connects only to checked addresses, within one overall deadline."""

    def __init__(self, *, allow_private: bool, total_timeout: float) -> None:
        self.allow_private = allow_private
        self.deadline = time.monotonic() + total_timeout

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last_error: Exception | None = None
        for ip in checked_addresses(host, port, self.allow_private):
            try:
                stream = super().connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
                continue
            return _DeadlineStream(stream, self.deadline)
        raise last_error or httpcore.ConnectError(f"{host} has no address")
