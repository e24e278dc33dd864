"""`make local`: the functions' Lambda handlers behind an HTTP server on 127.0.0.1:$PORT (8080), the
registry in dynalite (a DynamoDB-compatible server) kept under .local/, seeded on first start.

Each connection has a thread of its own and a time limit, and the handlers run in a few Lambda
containers (`containers.py`): requests are served concurrently, and a slow, idle or malformed
client is answered (or let go) without holding up anyone else.

Backends come from the environment with the Lambda's own names (CONTRACT section 3).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from taskrouter.adapters.settings import DEFAULT_RETRY_AFTER_S
from taskrouter.core.errors import NoBackendAvailable
from taskrouter.local.apigw import LambdaContext, proxy_event
from taskrouter.local.containers import ContainerFailed, Containers

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_TASKS_FILE = ROOT / "tasks" / "default_tasks.json"
DYNALITE = ROOT / "node_modules" / ".bin" / "dynalite"
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's own limit; the router enforces the contract's 64 KiB

_LOCAL_DEFAULTS = {
    "TASKROUTER_TABLE_NAME": "taskrouter-local-tasks",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "taskrouter-router",
    "POWERTOOLS_METRICS_NAMESPACE": "TaskRouter",
    "POWERTOOLS_METRICS_DISABLED": "true",  # no EMF documents on a terminal
}


def main() -> None:
    for name, value in _LOCAL_DEFAULTS.items():
        os.environ.setdefault(name, value)
    port = int(os.environ.get("PORT", "8080"))
    state_dir = Path(os.environ.get("TASKROUTER_LOCAL_DIR", ROOT / ".local"))
    containers = int(os.environ.get("TASKROUTER_LOCAL_CONTAINERS", "4"))
    client_timeout_s = float(os.environ.get("TASKROUTER_LOCAL_CLIENT_TIMEOUT_S", "10"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with _registry(state_dir):
        seeded = ensure_registry(os.environ["TASKROUTER_TABLE_NAME"], DEFAULT_TASKS_FILE)
        if seeded:
            _say(f"registry seeded with {seeded} default tasks")
        # The containers start once the environment is complete: they inherit it.
        pool = Containers(containers, timeout_s=LambdaContext.timeout_s)
        server = _Server(("127.0.0.1", port), _handler_class(pool, client_timeout_s))
        _say(f"TaskRouter listening on http://127.0.0.1:{server.server_port} ({containers} Lambda containers)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            pool.close()


@contextlib.contextmanager
def _registry(state_dir: Path) -> Iterator[None]:
    """dynalite under `state_dir`, unless AWS_ENDPOINT_URL_DYNAMODB already names a server."""
    if os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"):
        yield
        return
    # dynalite checks no signature; boto3 still wants credentials to sign with.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    state_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    process = subprocess.Popen(
        [str(DYNALITE), "--host", "127.0.0.1", "--port", str(port), "--path", str(state_dir / "dynalite")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(port, process)
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = f"http://127.0.0.1:{port}"
        _say(f"registry: dynalite at http://127.0.0.1:{port}, data in {state_dir / 'dynalite'}")
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def ensure_registry(table_name: str, tasks_file: Path) -> int:
    """Create the registry table if it does not exist, and then seed it; the number of tasks seeded
    (0 when the table was already there: tasks survive a restart)."""
    import boto3

    from taskrouter.adapters.dynamodb_registry import task_to_item
    from taskrouter.adapters.dynamodb_task_store import utc_now
    from taskrouter.core.task_spec import load_task_file
    from taskrouter.registry_schema import PARTITION_KEY, SORT_KEY

    client = boto3.client("dynamodb")
    try:
        client.describe_table(TableName=table_name)
        return 0
    except client.exceptions.ResourceNotFoundException:
        pass
    client.create_table(
        TableName=table_name,
        KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}, {"AttributeName": SORT_KEY, "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": SORT_KEY, "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    tasks = load_task_file(tasks_file, updated_at=utc_now())
    for task in tasks:
        client.put_item(TableName=table_name, Item=task_to_item(task))
    return len(tasks)


class _Server(ThreadingHTTPServer):
    """One thread per connection, so a slow or idle client holds up nobody but itself."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a burst of clients waits in the kernel, not refused

    def handle_error(self, request: Any, client_address: Any) -> None:
        _say(f"connection from {client_address[0]} failed: {sys.exc_info()[0].__name__}")


_ERROR_CODES = {400: "invalid_request", 413: "request_too_large"}  # the contract's; others from the phrase
_LENGTH = re.compile(r"[0-9]{1,12}")


class _Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _handler_class(containers: Containers, client_timeout_s: float) -> type[BaseHTTPRequestHandler]:
    """API Gateway's part: /health and /openapi.json itself, /tasks to the registry function and
    everything else to the router's, each run in a free Lambda container."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length
        default_request_version = "HTTP/1.0"  # an unparseable request line still gets a status line
        server_version = "TaskRouterLocal"
        timeout = client_timeout_s  # an idle or slow client is let go after this long
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

        def __getattr__(self, name: str) -> Any:
            # Every method (GET, PUT, QUERY, TRACE…) reaches the handlers, which refuse what they
            # do not serve in the contract's shape, as API Gateway answers for undefined methods.
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

        def parse_request(self) -> bool:
            try:
                parsed = super().parse_request()
            except TimeoutError:  # the headers never finished
                self.send_error(HTTPStatus.REQUEST_TIMEOUT, "the request's headers did not arrive in time")
                return False
            if parsed and self.headers.defects:  # e.g. a line with no colon, which would end the headers early
                self.send_error(HTTPStatus.BAD_REQUEST, "headers: malformed header line")
                return False
            return parsed

        def _serve(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health" and self.command == "GET":
                return self._send(HTTPStatus.OK, {"Content-Type": "application/json"}, b'{"status": "ok"}')
            if path == "/openapi.json" and self.command == "GET":  # public: it describes, holds no data
                from taskrouter.openapi import document

                return self._send(HTTPStatus.OK, {"Content-Type": "application/json"}, json.dumps(document()).encode())
            if not _key_accepted(self.headers.get("x-api-key")):
                return self._send(HTTPStatus.FORBIDDEN, {"Content-Type": "application/json"}, b'{"message": "Forbidden"}')
            try:
                body = self._body()
            except _Refused as refused:
                return self.send_error(refused.status, refused.message)
            if body is None:
                return  # the client went away mid-body: nobody to answer
            event = proxy_event(self.command, path, dict(self.headers.items()), body)
            if path == "/tasks" or path.startswith("/tasks/"):  # the resource and its parameter, as API Gateway sets them
                name = urllib.parse.unquote(path.removeprefix("/tasks/")) if path != "/tasks" else None
                event["resource"] = "/tasks/{name}" if name is not None else "/tasks"
                event["pathParameters"] = {"name": name} if name is not None else None
            try:
                response = containers.invoke(event)
            except ContainerFailed as failure:
                _say(f"{self.command} {path}: {failure}")
                error = NoBackendAvailable("the router is unavailable", retry_after_s=DEFAULT_RETRY_AFTER_S)
                return self._send(error.status, {"Content-Type": "application/json", **error.headers}, json.dumps(error.body()).encode())
            payload = response.get("body") or ""
            raw = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode("utf-8")
            headers = dict(response.get("headers") or {})
            for name, values in (response.get("multiValueHeaders") or {}).items():
                headers[name] = ", ".join(values)
            self._send(response["statusCode"], headers, raw)

        def _body(self) -> bytes | None:
            """The body, read only as far as a length it can trust; None if the client hung up."""
            if self.headers.get("Transfer-Encoding") is not None:
                raise _Refused(HTTPStatus.LENGTH_REQUIRED, "Transfer-Encoding: send the body with a Content-Length")
            lengths = {value.strip() for value in self.headers.get_all("Content-Length") or []}
            if not lengths:
                return b""
            if len(lengths) > 1 or not _LENGTH.fullmatch(next(iter(lengths))):
                raise _Refused(HTTPStatus.BAD_REQUEST, "Content-Length: must be one non-negative integer")
            length = int(lengths.pop())
            if length > MAX_BODY_BYTES:
                raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body: over the size limit")
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                raise _Refused(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time") from None
            if len(body) < length:
                self.close_connection = True
                return None
            return body

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """Every refusal of the HTTP layer in the contract's error shape, then the connection closes
            (what is left of the request cannot be trusted)."""
            status = HTTPStatus(code)
            self.log_message("%s", f"{status.value} {message or status.phrase}")
            self.close_connection = True
            error = {"code": _ERROR_CODES.get(status.value, status.phrase.lower().replace(" ", "_").replace("-", "_")),
                     "message": message or status.phrase}
            self._send(status, {"Content-Type": "application/json", "Connection": "close"},
                       json.dumps({"error": error}).encode())

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_request(self, code: Any = "-", size: Any = "-") -> None:  # method, path and status only
            path = getattr(self, "path", "")  # unset when the request line itself was refused
            _say(f"{self.command or '-'} {path.split('?', 1)[0]} {int(code)}")

        def log_message(self, format: str, *args: Any) -> None:
            _say(f"{self.client_address[0]} {format % args}")

    return Handler


def _key_accepted(given: str | None) -> bool:
    """The API key check, on when TASKROUTER_API_KEY is set; compared in constant time."""
    expected = os.environ.get("TASKROUTER_API_KEY")
    if not expected:
        return True
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"dynalite exited: {process.stderr.read().decode(errors='replace') if process.stderr else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"dynalite did not listen on port {port} within {timeout_s:.0f} s")


def _say(message: str) -> None:
    print(f"[taskrouter-local] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
