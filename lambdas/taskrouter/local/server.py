"""`make local`: the functions' Lambda handlers behind an HTTP server on 127.0.0.1:$PORT (8080), the
registry in dynalite (a DynamoDB-compatible server) kept under .local/, seeded on first start.

API Gateway's part is `gateway.py` (a thread and a time limit per connection, strict framing), and
the handlers run in a few Lambda containers (`containers.py`): requests are served concurrently,
and a slow, idle or malformed client is answered (or let go) without holding up anyone else.

Backends come from the environment with the Lambda's own names (CONTRACT section 3).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from taskrouter.local.apigw import LambdaContext
from taskrouter.local.containers import Containers
from taskrouter.local.console import say
from taskrouter.local.gateway import Server, handler_class
from taskrouter.repository import DEFAULT_TASKS_FILE, ROOT

DYNALITE = ROOT / "node_modules" / ".bin" / "dynalite"

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
    if containers < 1 or client_timeout_s <= 0:
        raise SystemExit("TASKROUTER_LOCAL_CONTAINERS must be at least 1, TASKROUTER_LOCAL_CLIENT_TIMEOUT_S above 0")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with _registry(state_dir):
        seeded = ensure_registry(os.environ["TASKROUTER_TABLE_NAME"], DEFAULT_TASKS_FILE)
        if seeded:
            say(f"registry seeded with {seeded} default tasks")
        # The containers start once the environment is complete: they inherit it.
        pool = Containers(containers, timeout_s=LambdaContext.timeout_s)
        server = Server(("127.0.0.1", port), handler_class(pool, client_timeout_s))
        say(f"TaskRouter listening on http://127.0.0.1:{server.server_port} ({containers} Lambda containers)")
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
        say(f"registry: dynalite at http://127.0.0.1:{port}, data in {state_dir / 'dynalite'}")
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


if __name__ == "__main__":
    main()
