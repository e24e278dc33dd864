"""The teacher function for `make local`: a process of its own, as the function is in AWS, that takes
the router's captured turns through the part of Lambda's Invoke API the router uses, and runs the
teacher handler (`handlers/teacher.py`) on them one at a time, as its reserved concurrency of 1 does.

The Invoke API (AWS Lambda API Reference, "Invoke",
https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html): `POST
/2015-03-31/functions/{FunctionName}/invocations`, the payload as the body, the invocation type in
`X-Amz-Invocation-Type`. `Event` (asynchronous): the event is queued and `202` answered at once, with
no body. `RequestResponse` (the default): `200` with the function's result once it ran. `DryRun`:
`204`. An error is answered as Lambda answers it (rest-json): its status, the error's name in
`x-amzn-ErrorType` (where botocore reads it), and `{"Type": "User", "message": ...}` (`Message` for
the errors whose shape spells it so). The payload is limited as Lambda limits it: 1 MB for `Event`,
6 MB for `RequestResponse`.

Unlike Lambda, a handler that raises is not retried here: its error is logged and the event dropped.
The router's containers are frozen between requests; this server is its own process and never waits
on them.

`make local` starts it (local/server.py): `python -m taskrouter.local.teacher_server --port PORT
--function-name NAME`, with the teacher's environment (records under TASKROUTER_CAPTURE_DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from taskrouter.local.apigw import LOCAL_ACCOUNT, LambdaContext
from taskrouter.local.console import ReadableLog, say

DEFAULT_FUNCTION_NAME = "taskrouter-local-teacher"
PAYLOAD_LIMITS = {"Event": 1024 * 1024, "RequestResponse": 6 * 1024 * 1024, "DryRun": 6 * 1024 * 1024}
QUEUED_EVENTS = 10_000  # Lambda's queue has no such bound; a local one needs one
CLIENT_TIMEOUT_S = 10.0
_PATH = re.compile(r"/2015-03-31/functions/(?P<name>[^/]+)/invocations")
_LENGTH = re.compile(r"[0-9]{1,9}")
# Lambda's error shapes spell the message `message`, but for these (botocore's lambda service model)
_CAPITAL_MESSAGE = frozenset({"ResourceNotFoundException", "ServiceException"})

Handler = Callable[[Any, Any], Any]


class InvokeError(Exception):
    """An answer in Lambda's error shape."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message

    def body(self) -> bytes:
        fault = "Service" if self.status >= 500 else "User"
        return json.dumps({"Type": fault, "Message" if self.error_type in _CAPITAL_MESSAGE else "message": self.message}).encode()


@dataclass
class _Invocation:
    event: Any
    request_id: str
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    failed: bool = False


class TeacherFunction:
    """One execution environment: its handler run on one invocation after another, in order."""

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self._handler = handler
        self._queue: queue.Queue[_Invocation] = queue.Queue(maxsize=QUEUED_EVENTS)
        threading.Thread(target=self._run, name="teacher-function", daemon=True).start()

    def submit(self, event: Any) -> _Invocation:
        invocation = _Invocation(event, str(uuid.uuid4()))
        try:
            self._queue.put_nowait(invocation)
        except queue.Full:
            raise InvokeError(429, "TooManyRequestsException", "Rate Exceeded.") from None
        return invocation

    def join(self) -> None:
        """Until every queued invocation ran (tests)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            invocation = self._queue.get()
            context = LambdaContext(
                function_name=self.name,
                invoked_function_arn=f"arn:aws:lambda:us-east-1:{LOCAL_ACCOUNT}:function:{self.name}",
                aws_request_id=invocation.request_id,
            )
            try:
                invocation.result = self._handler(invocation.event, context)
            except Exception as error:  # Lambda would retry an asynchronous one; here it is dropped
                invocation.failed = True
                say(f"teacher function failed on {invocation.request_id}: {type(error).__name__}")
            finally:
                invocation.done.set()
                self._queue.task_done()


def function_name_of(path_name: str) -> str:
    """FunctionName as Invoke takes it (a name, a partial or full ARN, any of them with a qualifier),
    reduced to the name."""
    name = urllib.parse.unquote(path_name)
    parts = name.split(":")
    if "function" in parts[:-1]:  # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER], ACCOUNT:function:NAME
        return parts[parts.index("function") + 1]
    return parts[0]  # NAME[:QUALIFIER]


class InvokeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], function: TeacherFunction) -> None:
        super().__init__(address, _InvokeHandler)
        self.function = function

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        say(f"teacher server: a connection failed: {sys.exc_info()[0].__name__}")


class _InvokeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pooled connections expect
    disable_nagle_algorithm = True  # no Nagle/delayed-ACK stall on a small answer: the router's send is bounded
    wbufsize = -1  # the answer buffered, then written in one go
    timeout = CLIENT_TIMEOUT_S
    server: InvokeServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        request_id = str(uuid.uuid4())
        try:
            status, body = self._invoke()
        except InvokeError as error:
            self._refuse(error, request_id)
            return
        self._answer(status, body, request_id)

    def do_GET(self) -> None:  # noqa: N802
        path = urllib.parse.urlsplit(self.path).path
        self._refuse(InvokeError(404, "UnknownOperationException", f"no {self.command} {path}: only Invoke is served"))

    do_PUT = do_DELETE = do_GET  # noqa: N815

    def _refuse(self, error: InvokeError, request_id: str | None = None) -> None:
        self.close_connection = True  # a refused request's body may not have been read
        self._answer(error.status, error.body(), request_id or str(uuid.uuid4()), {"x-amzn-ErrorType": error.error_type})

    def _invoke(self) -> tuple[int, bytes]:
        match = _PATH.fullmatch(urllib.parse.urlsplit(self.path).path)
        if match is None:
            raise InvokeError(404, "UnknownOperationException", "only Invoke is served here")
        function = self.server.function
        name = function_name_of(match.group("name"))
        if name != function.name:
            raise InvokeError(
                404, "ResourceNotFoundException",
                f"Function not found: arn:aws:lambda:us-east-1:{LOCAL_ACCOUNT}:function:{name}",
            )  # fmt: skip
        invocation_type = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if invocation_type not in PAYLOAD_LIMITS:
            raise InvokeError(
                400, "InvalidParameterValueException",
                f"1 validation error detected: Value '{invocation_type}' at 'invocationType' failed to satisfy "
                "constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]",
            )  # fmt: skip
        payload = self._payload(PAYLOAD_LIMITS[invocation_type], invocation_type)
        if invocation_type == "DryRun":
            return 204, b""
        invocation = function.submit(payload)
        if invocation_type == "Event":
            return 202, b""
        invocation.done.wait()
        if invocation.failed:
            raise InvokeError(500, "ServiceException", "the function failed: see the teacher's log")
        return 200, json.dumps(invocation.result).encode()

    def _payload(self, limit: int, invocation_type: str) -> Any:
        raw_length = self.headers.get("Content-Length", "0")
        if not _LENGTH.fullmatch(raw_length.strip()):
            raise InvokeError(400, "InvalidRequestContentException", "Could not read the request body: bad Content-Length")
        length = int(raw_length)
        if length > limit:
            raise InvokeError(
                413, "RequestTooLargeException",
                f"{length} byte payload is too large for the {invocation_type} invocation type (limit {limit} bytes)",
            )  # fmt: skip
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError:  # its own message would quote the payload, a conversation
            raise InvokeError(400, "InvalidRequestContentException", "Could not parse request body into json") from None

    def _answer(self, status: int, body: bytes, request_id: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-RequestId", request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per invocation would drown the router's; the handler logs each record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m taskrouter.local.teacher_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--function-name", default=DEFAULT_FUNCTION_NAME)
    arguments = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is make local's to handle: it stops this process
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if os.environ.get("TASKROUTER_LOCAL_LOG_FORMAT", "text") != "json":
        # Before the handler imports: its Powertools logger takes the sys.stdout of its creation.
        metrics = os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() not in ("true", "1")
        sys.stdout = ReadableLog(sys.stdout, metrics=metrics)  # type: ignore[assignment]
    from taskrouter.handlers import teacher  # the init phase: the teacher's client, its key, the store

    server = InvokeServer(("127.0.0.1", arguments.port), TeacherFunction(arguments.function_name, teacher.handler))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
