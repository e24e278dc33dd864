"""An endpoint on loopback that answers, but not as AWS does: what `taskrouter doctor` and `taskrouter
ops unseen` meet behind a corporate proxy or a wrong AWS_ENDPOINT_URL. Every request gets the one answer
set: a proxy's HTML page at 200 (well-formed, so botocore's XML parser reads it), a gateway's text 500,
an empty 200, a service's own answer cut in half, a redirect to a sign-in page, or a connection reset.

A service's own answer is written by moto's response serializer from the operation's botocore model
(moto.core.serialize: the wire format of each protocol, awsQuery XML, awsJson and restJson1), so a cut
one is the real shape cut short, and the whole one shows the same endpoint is trusted when it answers
as the service does."""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from moto.core.serialize import get_serializer_class
from moto.core.utils import get_service_model

# A corporate web filter's block page, as XHTML: well-formed XML whose root is <html>.
PROXY_PAGE = (b"<html><head><title>Access blocked</title></head><body><h1>Web filter</h1>"
              b"<p>This site is blocked by your organisation's proxy.</p></body></html>")
# Envoy's answer when its upstream is down (a service mesh or an API gateway in front of a wrong host).
GATEWAY_ERROR = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
SIGN_IN = "https://login.proxy.example.net/?continue=aws"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    reset: bool = False  # close the connection with an RST instead of answering


HTML_200 = Answer(200, {"Content-Type": "text/html; charset=utf-8"}, PROXY_PAGE)
TEXT_500 = Answer(500, {"Content-Type": "text/plain"}, GATEWAY_ERROR)
EMPTY_200 = Answer(200, {}, b"")
REDIRECT = Answer(302, {"Location": SIGN_IN, "Content-Type": "text/html"}, b"<html><body>Found</body></html>")
RESET = Answer(0, {}, b"", reset=True)
FOREIGN = {"html 200": HTML_200, "text 500": TEXT_500, "empty 200": EMPTY_200, "redirect": REDIRECT, "reset": RESET}
KINDS = ("cut short", *FOREIGN)  # the reset last: it closes the client's connection


def service_answer(service: str, operation: str, result: dict[str, Any]) -> Answer:
    """`result` on the wire as the service answers `operation` (moto's serializer, botocore's model)."""
    model = get_service_model(service)
    serialized = get_serializer_class(service, model.resolved_protocol)(model.operation_model(operation)).serialize(result)
    body = serialized["body"]
    return Answer(int(serialized["status_code"]), dict(serialized["headers"]),
                  body.encode() if isinstance(body, str) else body)


def cut_short(answer: Answer) -> Answer:
    """The answer's first half: a connection dropped mid-body by a proxy, or a body limit."""
    return Answer(answer.status, answer.headers, answer.body[: len(answer.body) // 2])


def foreign(kind: str, service: str, operation: str, result: dict[str, Any]) -> Answer:
    """One of KINDS, to `operation` (whose answer, cut short, is `result`'s)."""
    return cut_short(service_answer(service, operation, result)) if kind == "cut short" else FOREIGN[kind]


class ForeignEndpoint:
    """`with ForeignEndpoint(HTML_200) as endpoint:` serves on `endpoint.url`; `answer` may be changed
    between calls; `requests` counts what reached it."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> ForeignEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(endpoint: ForeignEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pooled connections expect
        wbufsize = 1 << 16  # headers and body in one segment: no Nagle and delayed-ACK stall on keep-alive

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))  # the whole request, never reset early
            endpoint.requests += 1
            answer = endpoint.answer
            if answer.reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()  # SO_LINGER 0: the peer sees a reset, not a clean close
                return
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def finish(self) -> None:
            try:
                super().finish()
            except OSError:  # the socket a reset closed
                pass

        def log_message(self, *_: Any) -> None:
            pass

    return Handler
