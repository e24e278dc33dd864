"""One HTTP exchange within a deadline for the whole of it.

A socket timeout bounds each read alone: a server that sends one byte a second would keep a request
alive for ever. Here every connect, send and read is given only what is left of the deadline, so no
server, trickling or silent, can stretch an exchange past it. The answer's size is bounded too."""

from __future__ import annotations

import http.client
import io
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

MAX_ANSWER_BYTES = 1024 * 1024  # far above any answer of the API


class AnswerTooLarge(OSError):
    """An answer over `MAX_ANSWER_BYTES`: not the API's."""

    def __init__(self, status: int) -> None:
        super().__init__(f"an answer over {MAX_ANSWER_BYTES} bytes")
        self.status = status


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes


def exchange(method: str, url: str, body: bytes | None, headers: dict[str, str], timeout_s: float) -> HttpAnswer:
    """Send one request and read its whole answer within `timeout_s`. Raises TimeoutError past the
    deadline, OSError or http.client.HTTPException when the exchange fails, AnswerTooLarge."""
    deadline = time.monotonic() + timeout_s
    parts = urllib.parse.urlsplit(url)
    connection_class = _BoundedHttps if parts.scheme == "https" else _BoundedHttp
    connection = connection_class(parts.hostname or "", parts.port, deadline=deadline)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read(MAX_ANSWER_BYTES + 1)
        if len(data) > MAX_ANSWER_BYTES:
            raise AnswerTooLarge(response.status)
        return HttpAnswer(response.status, data)
    finally:
        connection.close()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the deadline passed")
    return left


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each given only what is left of the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(_remaining(self._deadline))
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """The socket http.client sees: its sends and its reader bounded by the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(_remaining(self._deadline))  # sendall's timeout bounds the whole send
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *_: Any, **__: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def __getattr__(self, name: str) -> Any:  # close, setsockopt and the like: the socket's own
        return getattr(self._sock, name)


class _Bounded:
    """Connects within what is left of the deadline, then hands http.client a bounded socket."""

    sock: Any
    timeout: float | None

    def __init__(self, host: str, port: int | None, *, deadline: float) -> None:
        super().__init__(host, port)  # type: ignore[call-arg]
        self._deadline = deadline

    def connect(self) -> None:
        self.timeout = _remaining(self._deadline)
        super().connect()  # type: ignore[misc]  # for HTTPS, the TLS handshake too
        self.sock = _DeadlineSocket(self.sock, self._deadline)


class _BoundedHttp(_Bounded, http.client.HTTPConnection):
    pass


class _BoundedHttps(_Bounded, http.client.HTTPSConnection):
    pass
