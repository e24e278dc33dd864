"""API Gateway's part of `make local`: an HTTP/1.1 server on loopback in front of the Lambda containers.

Every connection has a thread of its own, so a slow, idle or malformed client holds up nobody but
itself. A client gets `client_timeout_s` to start a request, then as long again to finish sending
it (request line, headers and body), or it is answered 408 and let go. Framing is trusted only when
it is unambiguous: one decimal Content-Length within the size limit; anything else is a 4xx in the
contract's error shape, before any body is read (also in answer to `Expect: 100-continue`), and the
connection then closes gracefully, reading what the client still sends for a moment so that it sees
the answer rather than a reset.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from taskrouter.adapters.settings import DEFAULT_RETRY_AFTER_S
from taskrouter.core.errors import ApiError, NoBackendAvailable, RegistryUnavailableError
from taskrouter.local.apigw import proxy_event
from taskrouter.local.console import say
from taskrouter.local.containers import ContainerFailed, Containers

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's own limit; the router enforces the contract's 64 KiB
PUBLIC_PATHS = ("/health", "/openapi.json")  # no key: they describe the server and hold no data
_ERROR_CODES = {400: "invalid_request", 413: "request_too_large"}  # the contract's; others from the phrase
_LENGTH = re.compile(r"[0-9]{1,12}")
_BLANK_LINES = (b"\r\n", b"\n")
# A refused request's remaining body is read and dropped before closing, so that the client, which
# may be writing it all before it reads (urllib, requests), sees the answer rather than a reset: up
# to what it announced (at most _LINGER_BYTES), while it keeps sending (a pause of _LINGER_IDLE_S
# ends it) and for _LINGER_S at most. Loopback moves 64 MiB in well under a second.
_LINGER_S = 10.0
_LINGER_IDLE_S = 1.0
_LINGER_BYTES = 64 * 1024 * 1024


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a burst of clients waits in the kernel, not refused

    def handle_error(self, request: Any, client_address: Any) -> None:
        say(f"connection from {client_address[0]} failed: {sys.exc_info()[0].__name__}")


class _Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _ReadDeadline:
    """Bounds the reading of one request: past it, the client is answered 408 and the connection shut
    (which ends the handler thread's blocked read)."""

    _BODY = b'{"error": {"code": "request_timeout", "message": "the request did not arrive in time"}}'
    _ANSWER = (
        b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(_BODY)}\r\n\r\n".encode()
        + _BODY
    )

    def __init__(self, connection: socket.socket, seconds: float) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._state = "reading"
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            if self._state != "reading":
                return
            self._state = "expired"
        with contextlib.suppress(OSError):
            self._connection.sendall(self._ANSWER)
            self._connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> bool:
        """Stop the clock; False when it had already run out (the client has its answer)."""
        self._timer.cancel()
        with self._lock:
            if self._state == "expired":
                return False
            self._state = "done"
            return True



def handler_class(containers: Containers, client_timeout_s: float) -> type[BaseHTTPRequestHandler]:
    """/health and /openapi.json answered here, /tasks to the registry function and everything else
    to the router's, each run in a free Lambda container."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length
        default_request_version = "HTTP/1.0"  # an unparseable request line still gets a status line
        server_version = "TaskRouterLocal"
        timeout = client_timeout_s  # how long an idle connection may wait to start a request
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
        _deadline: _ReadDeadline | None = None
        _body_pending = False  # a body was announced and not read
        _announced = 0  # the Content-Length announced, once it could be parsed
        _answered = False

        def __getattr__(self, name: str) -> Any:
            # Every method (GET, PUT, QUERY, TRACE…) reaches the handlers, which refuse what they
            # do not serve in the contract's shape, as API Gateway answers for undefined methods.
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

        # -- reading the request -------------------------------------------------------------------
        def parse_request(self) -> bool:
            for _ in range(8):  # RFC 9112 2.2: a server should ignore blank lines before a request
                if self.raw_requestline not in _BLANK_LINES:
                    break
                self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline or self.raw_requestline in _BLANK_LINES:
                self.close_connection = True
                return False
            self._deadline = _ReadDeadline(self.connection, client_timeout_s)
            self._body_pending = self._answered = False
            self._announced = 0
            try:
                parsed = super().parse_request()
            except (TimeoutError, OSError):  # the headers never finished, or the deadline shut them
                self.send_error(HTTPStatus.REQUEST_TIMEOUT, "the request's headers did not arrive in time")
                return False
            if not parsed:
                if not self._answered:  # http.server gives up silently on a request line of blanks
                    self.send_error(HTTPStatus.BAD_REQUEST, "request line: empty")
                return False
            if self.request_version == "HTTP/0.9":
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "HTTP/0.9 is not served")
                return False
            if self.headers.defects:  # e.g. a line with no colon, which would end the headers early
                self.send_error(HTTPStatus.BAD_REQUEST, "headers: malformed header line")
                return False
            return True

        def handle_expect_100(self) -> bool:
            """Refuse before the client sends its body, rather than after."""
            try:
                self._check_before_body()
            except _Refused as refused:
                self.send_error(refused.status, refused.message)
                return False
            return super().handle_expect_100()

        def _check_before_body(self) -> int:
            """The announced body's length, once the framing and the credentials are acceptable."""
            if self.headers.get("Transfer-Encoding") is not None:
                self._body_pending = True
                raise _Refused(HTTPStatus.LENGTH_REQUIRED, "Transfer-Encoding: send the body with a Content-Length")
            lengths = {value.strip() for value in self.headers.get_all("Content-Length") or []}
            if len(lengths) > 1 or (lengths and not _LENGTH.fullmatch(next(iter(lengths)))):
                self._body_pending = True
                raise _Refused(HTTPStatus.BAD_REQUEST, "Content-Length: must be one non-negative integer")
            length = int(lengths.pop()) if lengths else 0
            self._body_pending, self._announced = length > 0, length
            if length > MAX_BODY_BYTES:
                raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body: over the size limit")
            if not self._public() and not _key_accepted(self.headers.get("x-api-key")):
                raise _Refused(HTTPStatus.FORBIDDEN, "Forbidden")
            return length

        def _read_body(self, length: int) -> bytes | None:
            """The body; None if the client hung up or ran out of time (nobody left to answer)."""
            try:
                body = self.rfile.read(length) if length else b""
            except TimeoutError:
                # The socket's own time limit (the same length) can run out just before the request's
                # deadline fires: then the answer is given here, as the deadline would have given it.
                if self._stop_deadline():
                    self.send_error(HTTPStatus.REQUEST_TIMEOUT, "the request did not arrive in time")
                self.close_connection = True
                return None
            except OSError:
                body = b""
            if len(body) < length:
                self.close_connection = True
                return None
            self._body_pending = False
            return body

        def _public(self) -> bool:
            return self._path() in PUBLIC_PATHS and self.command in ("GET", "HEAD")

        def _path(self) -> str:
            return self.path.split("?", 1)[0]

        # -- serving -----------------------------------------------------------------------------
        def _serve(self) -> None:
            try:
                length = self._check_before_body()
                body = None if self._public() else self._read_body(length)
            except _Refused as refused:
                return self.send_error(refused.status, refused.message)
            if not self._stop_deadline():
                return  # answered 408 by the deadline
            path = self._path()
            if path == "/health":
                return self._send(HTTPStatus.OK, {"Content-Type": "application/json"}, b'{"status": "ok"}')
            if path == "/openapi.json":
                from taskrouter.openapi import document

                return self._send(HTTPStatus.OK, {"Content-Type": "application/json"}, json.dumps(document()).encode())
            if body is None:
                return  # the client went away mid-body
            event = proxy_event(self.command, path, dict(self.headers.items()), body)
            is_registry = path == "/tasks" or path.startswith("/tasks/")
            if is_registry:  # the resource and its parameter, as API Gateway sets them (decoded)
                name = urllib.parse.unquote(path.removeprefix("/tasks/")) if path != "/tasks" else None
                event["resource"] = "/tasks/{name}" if name is not None else "/tasks"
                event["pathParameters"] = {"name": name} if name is not None else None
            try:
                response = containers.invoke(event)
            except ContainerFailed as failure:
                say(f"{self.command} {path}: {failure}")
                unavailable = RegistryUnavailableError if is_registry else NoBackendAvailable
                message = f"the function's Lambda container failed: {failure}"
                return self._answer_error(unavailable(message, retry_after_s=DEFAULT_RETRY_AFTER_S))
            payload = response.get("body") or ""
            raw = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode("utf-8")
            headers = dict(response.get("headers") or {})
            for name, values in (response.get("multiValueHeaders") or {}).items():
                headers[name] = ", ".join(values)
            self._send(response["statusCode"], headers, raw)

        # -- answering -----------------------------------------------------------------------------
        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """Every refusal of the HTTP layer in the contract's error shape (API Gateway's own
            `{"message"}` for a 403), then the connection closes: what is left of the request cannot
            be trusted."""
            status = HTTPStatus(code)
            self.log_message("%s", f"{status.value} {message or status.phrase}")
            self.close_connection = True
            if status is HTTPStatus.FORBIDDEN:
                body = json.dumps({"message": "Forbidden"}).encode()
            else:
                code_name = _ERROR_CODES.get(status.value, status.phrase.lower().replace(" ", "_").replace("-", "_"))
                body = json.dumps({"error": {"code": code_name, "message": message or status.phrase}}).encode()
            self._send(status, {"Content-Type": "application/json", "Connection": "close"}, body)
            self._linger()

        def _answer_error(self, error: ApiError) -> None:
            self._send(error.status, {"Content-Type": "application/json", **error.headers}, json.dumps(error.body()).encode())

        def _stop_deadline(self) -> bool:
            """Stop the request's reading deadline; False if it had run out (and answered 408)."""
            if self._deadline is not None and not self._deadline.finish():
                self.close_connection = True
                return False
            return True

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            if not self._stop_deadline():
                return  # the deadline has answered and shut the connection
            self._answered = True
            if self._body_pending:
                self.close_connection = True  # its body was never read: the stream cannot be reused
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def send_response_only(self, code: int, message: str | None = None) -> None:
            if self.request_version == "HTTP/0.9":  # http.server would send no status line at all
                self.request_version = "HTTP/1.0"
            super().send_response_only(code, message)

        def _linger(self) -> None:
            """Close gracefully after refusing a request whose body is still coming: send what was
            written, then read and drop the rest, so the client sees the answer."""
            if not self._body_pending:
                return
            with contextlib.suppress(OSError):
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(_LINGER_IDLE_S)
                budget = min(self._announced or _LINGER_BYTES, _LINGER_BYTES) + 65536  # + headers read ahead
                ends, dropped = time.monotonic() + _LINGER_S, 0
                while time.monotonic() < ends and dropped < budget:
                    chunk = self.connection.recv(65536)  # a pause of _LINGER_IDLE_S raises and ends it
                    if not chunk:
                        break
                    dropped += len(chunk)

        def log_request(self, code: Any = "-", size: Any = "-") -> None:  # method, path and status only
            path = getattr(self, "path", "")  # unset when the request line itself was refused
            say(f"{self.command or '-'} {path.split('?', 1)[0]} {int(code)}")

        def log_message(self, format: str, *args: Any) -> None:
            say(f"{self.client_address[0]} {format % args}")

    return Handler


def _key_accepted(given: str | None) -> bool:
    """The API key check, on when TASKROUTER_API_KEY is set; compared in constant time, as bytes: the
    header's as they came (http.server decodes them as latin-1), the key's as a client sends it."""
    expected = os.environ.get("TASKROUTER_API_KEY")
    if not expected:
        return True
    return given is not None and hmac.compare_digest(given.encode("latin-1"), expected.encode("utf-8", "surrogatepass"))
