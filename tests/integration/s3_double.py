"""An S3 double on 127.0.0.1 for PutObject that is slow or failing on purpose: it answers as S3 answers
(the S3 API Reference: PutObject, path-style `PUT /{bucket}/{key}`, `200` with an `ETag` and an empty
body; "Error responses": an XML `<Error>` with `Code` and `Message`, `500 InternalError`, `503 SlowDown`),
after `100 Continue` when the client asks for it, as S3 does, but at the pace a test scripts:

- `ok`: at once;
- `stall`: nothing after the request, until the double is closed;
- `trickle`: the answer one byte every `TRICKLE_S` seconds, so that no read waits longer than that and a
  per-read timeout never fires (about 20 s for the whole answer);
- `internal_error` / `slow_down`: S3's error answer.

Replies are taken from the script in order, then `default`. Requests are recorded (method, path,
headers, body)."""

from __future__ import annotations

import hashlib
import socket
import socketserver
import threading
import urllib.parse
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Literal

Reply = Literal["ok", "stall", "trickle", "internal_error", "slow_down"]
TRICKLE_S = 0.1
_ERRORS = {
    "internal_error": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    "slow_down": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}


@dataclass(frozen=True)
class PutRequest:
    method: str
    path: str  # decoded, as S3 reads a key
    headers: dict[str, str]  # lower-cased names
    body: bytes


class SlowS3:
    def __init__(self, default: Reply = "ok") -> None:
        self.default: Reply = default
        self.requests: list[PutRequest] = []
        self._script: deque[Reply] = deque()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        double = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                double._serve(self.connection, self.rfile)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    def close(self) -> None:
        self._closed.set()  # a stalled or trickling answer ends
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, connection: socket.socket, reader) -> None:
        while not self._closed.is_set():
            request_line = reader.readline()
            if not request_line:
                return
            method, path, _ = request_line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("expect", "").lower() == "100-continue":
                connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = reader.read(int(headers.get("content-length", "0")))
            with self._lock:
                self.requests.append(PutRequest(method, urllib.parse.unquote(path), headers, body))
                reply = self._script.popleft() if self._script else self.default
            if not self._answer(connection, reply, body):
                return

    def _answer(self, connection: socket.socket, reply: Reply, body: bytes) -> bool:
        request_id = uuid.uuid4().hex[:16].upper()
        if reply in _ERRORS:
            status, reason, code, message = _ERRORS[reply]
            payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                       f"<RequestId>{request_id}</RequestId><HostId>double</HostId></Error>").encode()  # fmt: skip
            head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(payload)}\r\n"
        else:
            payload = b""
            head = f'HTTP/1.1 200 OK\r\nETag: "{hashlib.md5(body).hexdigest()}"\r\nContent-Length: 0\r\n'
        answer = (head + f"x-amz-request-id: {request_id}\r\nServer: AmazonS3\r\n\r\n").encode() + payload
        if reply == "stall":
            self._closed.wait()
            return False
        if reply == "trickle":
            for index in range(len(answer)):
                if self._closed.wait(TRICKLE_S):
                    return False
                try:
                    connection.sendall(answer[index:index + 1])
                except OSError:  # the client gave up
                    return False
            return True
        connection.sendall(answer)
        return True
