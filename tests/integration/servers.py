"""HTTP test doubles of the router's backends, served on 127.0.0.1 by `ThreadingHTTPServer`.

Each double speaks the wire protocol the real client uses (botocore's `sagemaker-runtime`
rest-json client; the official `openai` client), records what it receives, and answers from a
script: replies queued with `script(...)` are used first, in order, then the `default` reply.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer: wait `delay_s`, then send `status`, `headers` and `body`."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    """A request as the double saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    raw_body: bytes

    def json(self) -> Any:
        return json.loads(self.raw_body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None, delay_s: float = 0.0) -> Reply:
    return Reply(
        status=status,
        body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        delay_s=delay_s,
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services; every reply has Content-Length
    disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle/delayed-ACK stall
    wbufsize = -1  # buffer the reply; handle_one_request flushes it in one go
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve()

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        received = Received(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            raw_body=raw,
        )
        reply = self.server.double._handle(received)
        if reply.delay_s and self.server.double._wake.wait(reply.delay_s):
            self.close_connection = True  # the double was reset or closed: drop this late request
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting (a timeout test)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output clean


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    double: HttpDouble

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up on a delayed reply is expected, not an error


class HttpDouble:
    """A scriptable HTTP server on 127.0.0.1, on a free port, in a background thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._received: list[Received] = []
        self._wake = threading.Event()
        self.default = self.unscripted()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.double = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=type(self).__name__
        )
        self._thread.start()

    # -- control ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Reply) -> None:
        """Queue replies, used once each in order before falling back to `default`."""
        with self._lock:
            self._queue.extend(replies)

    def always(self, reply: Reply) -> None:
        """Answer every request (after any queued replies) with `reply`."""
        self.default = reply

    def reset(self) -> None:
        """Forget the script and what was received; release any request still sleeping."""
        self._wake.set()
        with self._lock:
            self._queue.clear()
            self._received.clear()
            self.default = self.unscripted()
        self._wake = threading.Event()

    def close(self) -> None:
        self._wake.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    # -- serving ---------------------------------------------------------------------------------
    def _handle(self, received: Received) -> Reply:
        with self._lock:
            self._received.append(received)
            if not self._accepts(received):
                return self.not_found(received)
            return self._queue.popleft() if self._queue else self.default

    def _accepts(self, received: Received) -> bool:
        raise NotImplementedError

    def not_found(self, received: Received) -> Reply:
        return _json_reply(404, {"message": f"no route for {received.method} {received.path}"})

    def unscripted(self) -> Reply:
        return _json_reply(500, {"message": f"{type(self).__name__}: no reply was scripted"})


# ---------------------------------------------------------------------------------------------------
class SageMakerRuntimeDouble(HttpDouble):
    """`InvokeEndpoint` as botocore's `sagemaker-runtime` client calls it (rest-json protocol).

    Set `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME` to `url`. Errors carry `x-amzn-ErrorType`, from which
    botocore's RestJSONParser takes the `ClientError` code, as with the real service.
    """

    PATH_PREFIX = "/endpoints/"
    PATH_SUFFIX = "/invocations"

    def _accepts(self, received: Received) -> bool:
        path = urllib.parse.urlsplit(received.path).path
        return received.method == "POST" and path.startswith(self.PATH_PREFIX) and path.endswith(self.PATH_SUFFIX)

    def not_found(self, received: Received) -> Reply:
        return self.error(404, "UnknownOperationException", "unknown operation")

    # -- what was invoked ------------------------------------------------------------------------
    @staticmethod
    def endpoint_of(received: Received) -> str:
        path = urllib.parse.urlsplit(received.path).path
        return urllib.parse.unquote(path[len(SageMakerRuntimeDouble.PATH_PREFIX) : -len(SageMakerRuntimeDouble.PATH_SUFFIX)])

    @staticmethod
    def component_of(received: Received) -> str | None:
        return received.header("X-Amzn-SageMaker-Inference-Component")

    # -- replies ---------------------------------------------------------------------------------
    @staticmethod
    def answer(text: str, *, delay_s: float = 0.0) -> Reply:
        """A successful LMI answer: `{"generated_text": text}`."""
        return _json_reply(
            200,
            {"generated_text": text},
            {"X-Amzn-Invoked-Production-Variant": "AllTraffic"},
            delay_s=delay_s,
        )

    @staticmethod
    def error(status: int, error_type: str, message: str, extra: dict[str, Any] | None = None) -> Reply:
        return _json_reply(
            status,
            {"ErrorCode": error_type, "Message": message, **(extra or {})},
            # the real service appends a namespace, which botocore strips at ':'
            {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.sagemaker/"},
        )

    @classmethod
    def model_error(cls, original_status: int = 500) -> Reply:
        """The container answered an error: SageMaker's `ModelError` (HTTP 424)."""
        return cls.error(
            424,
            "ModelError",
            f"Received server error ({original_status}) from primary with message \"model crashed\".",
            {
                "OriginalStatusCode": original_status,
                "OriginalMessage": "model crashed",
                "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/x",
            },
        )

    @classmethod
    def internal_failure(cls) -> Reply:
        return cls.error(500, "InternalFailure", "An internal error occurred.")

    @classmethod
    def throttling(cls) -> Reply:
        """Throttled by SageMaker: HTTP 400 with error type `ThrottlingException`."""
        return cls.error(400, "ThrottlingException", "Rate exceeded")

    @staticmethod
    def too_many_requests() -> Reply:
        """A bare HTTP 429 with no error type (botocore's code is then "429")."""
        return _json_reply(429, {"message": "Too Many Requests"})


# ---------------------------------------------------------------------------------------------------
class OpenAIDouble(HttpDouble):
    """`POST /v1/chat/completions` as the official `openai` client calls it.

    Set `OPENAI_BASE_URL` to `base_url` (which ends in `/v1`).
    """

    PATH = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _accepts(self, received: Received) -> bool:
        return received.method == "POST" and urllib.parse.urlsplit(received.path).path == self.PATH

    def not_found(self, received: Received) -> Reply:
        return self.error(404, "invalid_request_error", f"Unknown request URL: {received.method} {received.path}")

    @staticmethod
    def completion(content: str, *, model: str = "gpt-4.1-mini", delay_s: float = 0.0) -> Reply:
        """A valid `chat.completion` object whose message content is `content`."""
        return _json_reply(
            200,
            {
                "id": "chatcmpl-test0001",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 321, "completion_tokens": 7, "total_tokens": 328},
                "system_fingerprint": "fp_test",
            },
            {"x-request-id": "req_test0001"},
            delay_s=delay_s,
        )

    @classmethod
    def answer(cls, task: str | None, *, delay_s: float = 0.0) -> Reply:
        """The structured answer `{"task": task}` (None: "none")."""
        return cls.completion(json.dumps({"task": "none" if task is None else task}), delay_s=delay_s)

    @staticmethod
    def error(status: int, error_type: str, message: str, code: str | None = None) -> Reply:
        return _json_reply(status, {"error": {"message": message, "type": error_type, "param": None, "code": code}})

    @classmethod
    def server_error(cls) -> Reply:
        return cls.error(500, "server_error", "The server had an error while processing your request.")

    @classmethod
    def rate_limited(cls) -> Reply:
        return cls.error(429, "requests", "Rate limit reached for requests", "rate_limit_exceeded")
