"""`make local`: the router's Lambda handler behind an HTTP server on 127.0.0.1:$PORT (8080), the
registry in dynalite (a DynamoDB-compatible server) kept under .local/, seeded on first start.

Backends come from the environment with the Lambda's own names (CONTRACT section 3).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from taskrouter.core.errors import RequestTooLarge
from taskrouter.local.apigw import LambdaContext, proxy_event

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
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with _registry(state_dir):
        seeded = ensure_registry(os.environ["TASKROUTER_TABLE_NAME"], DEFAULT_TASKS_FILE)
        if seeded:
            _say(f"registry seeded with {seeded} default tasks")
        from taskrouter.handlers import registry, router  # imported once the environment is complete

        server = HTTPServer(("127.0.0.1", port), _handler_class(router.handler, registry.handler))
        _say(f"TaskRouter listening on http://127.0.0.1:{server.server_port}")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


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


def _handler_class(router_handler: Any, registry_handler: Any) -> type[BaseHTTPRequestHandler]:
    """API Gateway's part: /tasks to the registry function, everything else to the router's."""

    class Handler(BaseHTTPRequestHandler):
        # One request at a time per connection and process, as one Lambda container serves them.
        protocol_version = "HTTP/1.0"
        server_version = "TaskRouterLocal"

        def __getattr__(self, name: str) -> Any:
            # Every method (GET, PUT, QUERY, TRACE…) reaches the handlers, which refuse what they
            # do not serve in the contract's shape, as API Gateway answers for undefined methods.
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

        def _serve(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health" and self.command == "GET":
                return self._send(HTTPStatus.OK, {"Content-Type": "application/json"}, b'{"status": "ok"}')
            if path == "/openapi.json" and self.command == "GET":
                from taskrouter.openapi import document

                return self._send(HTTPStatus.OK, {"Content-Type": "application/json"}, json.dumps(document()).encode())
            api_key = os.environ.get("TASKROUTER_API_KEY")
            if api_key and self.headers.get("x-api-key") != api_key:
                return self._send(HTTPStatus.FORBIDDEN, {"Content-Type": "application/json"}, b'{"message": "Forbidden"}')
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                body = json.dumps(RequestTooLarge("body: over the size limit").body()).encode()
                return self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"Content-Type": "application/json"}, body)
            body = self.rfile.read(length) if length else None
            event = proxy_event(self.command, path, dict(self.headers.items()), body)
            is_registry = path == "/tasks" or path.startswith("/tasks/")
            if is_registry:  # the resource, with its path parameter, as API Gateway sets them
                name = path.removeprefix("/tasks/") if path != "/tasks" else None
                event["resource"] = "/tasks/{name}" if name is not None else "/tasks"
                event["pathParameters"] = {"name": name} if name is not None else None
            response = (registry_handler if is_registry else router_handler)(event, LambdaContext())
            payload = response.get("body") or ""
            raw = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode("utf-8")
            headers = dict(response.get("headers") or {})
            for name, values in (response.get("multiValueHeaders") or {}).items():
                headers[name] = ", ".join(values)
            self._send(response["statusCode"], headers, raw)

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # method, path and status only
            _say(f"{self.command} {self.path.split('?', 1)[0]} {args[1] if len(args) > 1 else ''}")

    return Handler


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
