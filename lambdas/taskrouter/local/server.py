"""`make local`: the functions' Lambda handlers behind an HTTP server on 127.0.0.1:$PORT (8080), the
registry in dynalite (a DynamoDB-compatible server) kept under .local/, seeded on first start, and the
teacher function as a process of its own (`teacher_server.py`) writing captured turns under .local/capture/.

API Gateway's part is `gateway.py` (a thread and a time limit per connection, strict framing), and
the handlers run in a few Lambda containers (`containers.py`): requests are served concurrently,
and a slow, idle or malformed client is answered (or let go) without holding up anyone else.

Backends come from the environment with the Lambda's own names (docs/configuration.md); every variable
and its default is in docs/configuration.md. At start it prints a banner: the URL, which backends
can decide (and what to set to change that), whether the API key check is on, the timeouts in force
and where the state lives. The functions' JSON log lines are shown as text (`console.py`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from taskrouter.adapters.settings import RuntimeSettings, SettingsError
from taskrouter.adapters.teacher_settings import TeacherSettings
from taskrouter.extras import missing_extra
from taskrouter.local.apigw import LambdaContext
from taskrouter.local.console import LOG_FORMATS, CaptureShown, banner, say
from taskrouter.local.containers import Containers
from taskrouter.local.gateway import Server, handler_class
from taskrouter.model_server.local import start_local_model
from taskrouter.local.teacher_server import DEFAULT_FUNCTION_NAME
from taskrouter.repository import DEFAULT_TASKS_FILE, ROOT, local_state_dir, set_serving_defaults

DYNALITE = ROOT / "node_modules" / ".bin" / "dynalite"
DEFAULT_PORT = 8080
# Sent as the key when OPENAI_BASE_URL names a server and OPENAI_API_KEY is unset: the `openai` client
# refuses to start without one, and local servers (Ollama, llama.cpp, vLLM) take any.
PLACEHOLDER_OPENAI_KEY = "unused-local-placeholder"

_LOCAL_DEFAULTS = {
    "TASKROUTER_TABLE_NAME": "taskrouter-local-tasks",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "taskrouter-router",
    "POWERTOOLS_METRICS_NAMESPACE": "TaskRouter",
    "POWERTOOLS_METRICS_DISABLED": "true",  # no EMF documents on a terminal
}


class _NotReady(BaseHTTPRequestHandler):
    """The listening socket's handler until the containers are up (serving starts only then)."""


def main() -> None:
    """`make local`. A setting it cannot use, a port in use or a missing tool ends it with one line
    on stderr and a non-zero status, not a traceback."""
    try:
        _serve()
    except KeyboardInterrupt:  # Ctrl-C while starting
        raise SystemExit(130) from None


def _serve() -> None:
    for name, value in _LOCAL_DEFAULTS.items():
        os.environ.setdefault(name, value)
    local_model = start_local_model(os.environ)  # TASKROUTER_LOCAL_MODEL (docs/local-model.md): before the settings
    try:  # the catalogue's budget follows the model served: read while the model server loads it
        set_serving_defaults()
    except (ValueError, OSError, ImportError) as error:
        said = missing_extra(error) if isinstance(error, ImportError) else str(error)
        raise SystemExit(f"cannot start: TASKROUTER_LOCAL_MODEL: {said or error}") from None
    port = _integer("PORT", DEFAULT_PORT, 0, 65535)
    state_dir = local_state_dir()
    containers = _integer("TASKROUTER_LOCAL_CONTAINERS", 4, 1, 64)
    client_timeout_s = _seconds("TASKROUTER_LOCAL_CLIENT_TIMEOUT_S", 10.0)
    log_format = os.environ.get("TASKROUTER_LOCAL_LOG_FORMAT") or "text"
    if log_format not in LOG_FORMATS:
        raise SystemExit(f"TASKROUTER_LOCAL_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    placeholder_key = bool(os.environ.get("OPENAI_BASE_URL")) and not os.environ.get("OPENAI_API_KEY")
    if placeholder_key:
        os.environ["OPENAI_API_KEY"] = PLACEHOLDER_OPENAI_KEY
    try:  # the containers read the same settings: a bad one is said here, once, not in every 503
        settings = RuntimeSettings.from_env()
    except SettingsError as error:
        raise SystemExit(f"cannot start: {error} (every setting: docs/configuration.md)") from None
    server = _listen(port)  # first: a port in use is said at once, before anything starts
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with _registry(state_dir):
            seeded = ensure_registry(os.environ["TASKROUTER_TABLE_NAME"], DEFAULT_TASKS_FILE)
            if seeded:
                say(f"registry seeded with {seeded} default tasks")
            with _capture(state_dir) as capture_started:
                # The containers start once the environment is complete: they inherit it.
                pool = Containers(containers, timeout_s=LambdaContext.timeout_s)
                try:
                    capture = capture_started()  # the teacher started beside them: listening by now
                    server.RequestHandlerClass = handler_class(pool, client_timeout_s)
                    url = f"http://127.0.0.1:{server.server_port}"
                    local_model.wait_ready()
                    lines = banner(
                        url, settings, os.environ, state_dir, containers,
                        placeholder_key=placeholder_key, capture=capture,
                    )  # fmt: skip
                    print("\n".join(lines), flush=True)
                    with contextlib.suppress(KeyboardInterrupt):
                        server.serve_forever()
                finally:
                    pool.close()
    finally:
        server.server_close()


def _listen(port: int) -> Server:
    """The API's socket, bound and listening; a port that cannot be had ends `make local` in one line."""
    try:
        return Server(("127.0.0.1", port), _NotReady)
    except OSError as error:
        free = _free_port()
        if error.errno == errno.EADDRINUSE:
            raise SystemExit(f"port {port} is in use: set PORT to a free one, e.g. PORT={free} make local") from None
        reason = error.strerror or type(error).__name__
        raise SystemExit(f"cannot listen on 127.0.0.1:{port} ({reason}): set PORT, e.g. PORT={free} make local") from None


def _share(name: str) -> float:
    raw = os.environ.get(name) or ""
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise SystemExit(f"{name} must be a number from 0 to 1, got {raw!r}")
    return value


def _integer(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise SystemExit(f"{name} must be a whole number from {low} to {high}, got {raw!r}")
    return value


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise SystemExit(f"{name} must be a number of seconds above 0, got {raw!r}")
    return value


@contextlib.contextmanager
def _registry(state_dir: Path) -> Iterator[None]:
    """dynalite under `state_dir`, unless AWS_ENDPOINT_URL_DYNAMODB already names a server."""
    if os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"):
        yield
        return
    if not DYNALITE.exists():
        raise SystemExit(f"{DYNALITE.relative_to(ROOT)} not found: run `make local` (it installs it), or `npm ci`")
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
        say(f"registry: dynalite at http://127.0.0.1:{port}, data in {state_dir / 'dynalite'}")
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def _capture(state_dir: Path) -> Iterator[Callable[[], CaptureShown]]:
    """The teacher function started as a process of its own, as it is in AWS (its records under
    `state_dir`/capture), and the router's containers pointed at it (AWS_ENDPOINT_URL_LAMBDA,
    TASKROUTER_CAPTURE_FUNCTION, TASKROUTER_CAPTURE_SHARE default 1); none with a share of 0, nor when
    AWS_ENDPOINT_URL_LAMBDA already names a Lambda endpoint of the user's own. Started before the
    containers, which take the environment when they start; what it yields waits until it listens."""
    if not os.environ.get("TASKROUTER_CAPTURE_SHARE"):  # the user's value wins
        os.environ["TASKROUTER_CAPTURE_SHARE"] = "1"
    share = _share("TASKROUTER_CAPTURE_SHARE")
    if share == 0:  # no function named: the router captures nothing, the fallback's turns included
        yield lambda: CaptureShown(share)
        return
    function = os.environ.get("TASKROUTER_CAPTURE_FUNCTION") or DEFAULT_FUNCTION_NAME
    os.environ["TASKROUTER_CAPTURE_FUNCTION"] = function
    if os.environ.get("AWS_ENDPOINT_URL_LAMBDA"):
        yield lambda: CaptureShown(share, function, os.environ["AWS_ENDPOINT_URL_LAMBDA"])
        return
    environment = {**os.environ, "POWERTOOLS_SERVICE_NAME": "taskrouter-teacher"}
    environment.setdefault("TASKROUTER_CAPTURE_DIR", str(state_dir / "capture"))
    try:  # said here in one line, as the router's settings are, not by the process in a traceback
        teacher = TeacherSettings.from_env(environment)
    except SettingsError as error:
        raise SystemExit(f"cannot start: {error} (every setting: docs/configuration.md)") from None
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "taskrouter.local.teacher_server", "--port", str(port), "--function-name", function],
        env=environment,
    )
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL_LAMBDA"] = endpoint

    def started() -> CaptureShown:
        _wait_for_port(port, process, "the teacher function", timeout_s=60.0)
        return CaptureShown(share, function, endpoint, teacher)

    try:
        yield started
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, name: str = "dynalite", timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = f": {process.stderr.read().decode(errors='replace')}" if process.stderr else " (its output is above)"
            raise SystemExit(f"{name} exited{said}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"{name} did not listen on port {port} within {timeout_s:.0f} s")


if __name__ == "__main__":
    main()
