"""An httpx2 transport (the `openai` client's HTTP layer) that bounds each request in total by its
timeout, not each read alone.

The client turns a call's `timeout=` into `request.extensions["timeout"]` (connect, read, write and
pool seconds), which httpcore2 applies to every socket operation on its own: a server that sends a
byte now and then never exceeds a read timeout and holds the call for ever. Here the request gets a
deadline, its timeout from when it is sent, and every connect, send and read of it, its answer's body
included, is given only what is left (as evaluation/bounded_http.py does for the standard library's
client). The deadline reaches the socket operations through a context variable, set while this
request's own code runs: a pooled connection serves one request at a time, in its caller's thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore2
import httpx2

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("taskrouter_http_deadline", default=None)


class DeadlineTransport(httpx2.HTTPTransport):
    """For `openai.OpenAI(http_client=openai.DefaultHttpxClient(transport=DeadlineTransport()))`."""

    def __init__(self) -> None:
        super().__init__()
        # httpx2 builds its connection pool without a network backend parameter; httpcore2's pool takes
        # one (`network_backend`), which this gives it around the one it made.
        pool: Any = self._pool
        pool._network_backend = _DeadlineBackend(pool._network_backend)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        total_s = _total_timeout(request.extensions.get("timeout") or {})
        deadline = None if total_s is None else time.monotonic() + total_s
        with _until(deadline):
            response = super().handle_request(request)
        response.stream = _BoundedBody(response.stream, deadline)  # read later, by the client
        return response


def _total_timeout(timeouts: dict[str, float | None]) -> float | None:
    """The request's whole timeout: the longest it names (the `openai` client gives one for all)."""
    given = [seconds for seconds in timeouts.values() if seconds is not None]
    return max(given) if given else None


@contextlib.contextmanager
def _until(deadline: float | None) -> Iterator[None]:
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    """What a socket operation may take: its own timeout, cut to what is left of the deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _BoundedBody(httpx2.SyncByteStream):
    def __init__(self, stream: Any, deadline: float | None) -> None:
        self._stream, self._deadline = stream, deadline

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._stream)
        while True:
            with _until(self._deadline):
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        self._stream.close()


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, stream: httpcore2.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, _left(timeout, httpcore2.ConnectTimeout))
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    def __init__(self, backend: httpcore2.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:  # fmt: skip
        connect_s = _left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, connect_s, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        connect_s = _left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, connect_s, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)
